"""What happened in a transfer, as its core tells it: typed events, in the order they happened.

A core (UDP or TCP, sending or receiving) appends events as it decides things; its driver takes
them after each turn (``take_events``), acts on the few it must (``Joined`` marks a TCP
connection usable, ``Ended`` ends the loop) and hands every one to its ``Hooks.event``, through
which the library (``alf.api``) and the CLI learn what happened. Nobody outside a core reads
its state to find out: no flags, no state names compared as strings.

Invariants: ``Finished`` comes exactly once per core, before its ``Ended``; ``Ended`` comes
once, last, and only after every datagram or frame the core still wanted sent was handed out.
"""

from __future__ import annotations

from dataclasses import dataclass

from alf import wire
from alf.errors import Outcome


class Event:
    """The base of every event."""

    __slots__ = ()


@dataclass(frozen=True)
class Joined(Event):
    """The handshake is done: the receiver accepted this sender (on UDP), or one TCP connection
    joined the session. ``peer`` is the address (UDP) or the connection id (TCP cores; the
    TCP drivers name the address)."""

    peer: object
    session_id: int


@dataclass(frozen=True)
class Rejected(Event):
    """The receiver turned a sender's HELLO away (busy, checkphrase, unsupported, ...)."""

    peer: object
    reason: str


@dataclass(frozen=True)
class DataArrived(Event):
    """The receiver holds its first ADU of the session (so the sender will not move to TCP)."""


@dataclass(frozen=True)
class PeerAborted(Event):
    """The other side ended the session with an ABORT."""

    code: wire.AbortCode
    reason: str


@dataclass(frozen=True)
class FallBack(Event):
    """The sender gave up on UDP before any of the data got through (no answer, or only small
    datagrams pass): with ``--transport auto`` TCP is tried next. ``refused_since`` is when the
    receiver's UDP port first said 'unreachable', if it did."""

    reason: str
    refused_since: float | None


@dataclass(frozen=True)
class SendFailed(Event):
    """The local stack refused to send (a firewall rule, a prohibit or blackhole route): the
    datagrams are lost, and are repaired once sending works again, or the peer's silence ends
    the transfer after the timeout. Said once for each reason."""

    reason: str


@dataclass(frozen=True)
class MemberEnded(Event):
    """A receiver of a multicast group ended its part (alf.group): ``fate`` is ok, mismatch,
    lost or aborted, ``reason`` says why."""

    peer: object
    fate: str
    reason: str


@dataclass(frozen=True)
class MemberSlow(Event):
    """A receiver of a group is far slower than the others (``--slow catch-up``): the others
    go on at their pace, and it gets what it missed after them."""

    peer: object
    why: str


@dataclass(frozen=True)
class Resumed(Event):
    """§18: the receiver was to take up what it holds of an earlier transfer: ``held_bytes``
    of the content's ``total_bytes`` are there; ``why``: why nothing is (it starts afresh)."""

    held_bytes: int
    total_bytes: int
    why: str | None


@dataclass(frozen=True)
class Verifying(Event):
    """The receiver holds every ADU and knows the sender's FINAL: the output is being finished
    and its digest checked (a slow consumer can make this last)."""


@dataclass(frozen=True)
class Finished(Event):
    """The transfer's outcome is known on this side."""

    outcome: Outcome


@dataclass(frozen=True)
class Ended(Event):
    """The core has nothing more to send or answer: its driver leaves the loop."""


class EventLog:
    """A core's queue of events, which keeps ``Finished`` and ``Ended`` to one each."""

    __slots__ = ("_items", "_said", "finished", "ended")

    def __init__(self) -> None:
        self._items: list[Event] = []
        self._said: set[Event] = set()
        self.finished = False
        self.ended = False

    def once(self, event: Event) -> None:
        """Add ``event`` unless an equal one was added before (a notice worth one line)."""
        if event not in self._said:
            self._said.add(event)
            self.add(event)

    def add(self, event: Event) -> None:
        if isinstance(event, Finished):
            if self.finished:
                return
            self.finished = True
        elif isinstance(event, Ended):
            if self.ended:
                return
            self.ended = True
        self._items.append(event)

    def take(self) -> list[Event]:
        out, self._items = self._items, []
        return out
