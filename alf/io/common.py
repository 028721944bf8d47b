"""What the UDP and TCP drivers share: the error a socket set-up raises, the hooks the library
plugs into a loop (and the events it gets through them), and draining the wake-up pipe. Neither
driver imports the other.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from alf.events import Ended, Event

STALL_NOTICE = 2.0  # seconds a loop's turn may overrun its wait before it counts as a stall


class DriverError(Exception):
    """A socket could not be set up; the message is for the user."""


class LocalAddressError(DriverError):
    """The local address asked for (``--bind``) cannot be used here: a fault of this side, not
    of the path or the peer."""


def check_local_address(bind: str) -> None:
    """Raise LocalAddressError unless a socket can be bound to ``bind`` (port 0)."""
    try:
        infos = socket.getaddrinfo(bind, 0, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise LocalAddressError(f"cannot resolve the local address {bind}: {e.strerror}") from None
    family, _t, _p, _c, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind(addr)
        except OSError as e:
            raise LocalAddressError(f"cannot send from {bind}: {e.strerror}") from None


@dataclass
class Hooks:
    """What the library plugs into a loop: periodic reporting, cancellation, and what the core
    says happened (alf.events)."""

    tick: Callable[[float], None] = lambda now: None
    cancelled: Callable[[], bool] = lambda: False
    wake_fd: int | None = None
    event: Callable[[Event], None] = lambda event: None
    stalled: Callable[[float], None] = lambda seconds: None  # see ``turn``
    _last_turn: tuple[float, float] | None = field(default=None, repr=False)

    def turn(self, now: float, wait: float) -> None:
        """Each loop calls this once a turn, before it waits up to ``wait`` seconds. A turn
        that took ``STALL_NOTICE`` longer than it waited means this process did not run
        (SIGSTOP, a paused VM, a starved machine): ``stalled`` hears for how long, so that a
        peer's silence that follows can be put in context."""
        last = self._last_turn
        if last is not None:
            lost = now - last[0] - last[1]
            if lost > STALL_NOTICE:
                self.stalled(lost)
        self._last_turn = (now, wait)

    def forward(self, events: list[Event]) -> bool:
        """Hand a core's events on; True once the core said it has ended."""
        ended = False
        for ev in events:
            self.event(ev)
            ended = ended or isinstance(ev, Ended)
        return ended


def drain(fd: int | None) -> None:
    """Empty a non-blocking wake-up pipe (the signal handler's), if there is one."""
    if fd is not None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
