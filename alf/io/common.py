"""What the UDP and TCP drivers share: the error a socket set-up raises, the hooks the library
plugs into a loop (and the events it gets through them), and draining the wake-up pipe. Neither
driver imports the other.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from alf.events import Ended, Event
from alf.units import parse_rate

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


@dataclass(frozen=True)
class Path:
    """One way to the receiver (``--path``): its address and port, and optionally the local
    side to leave from (an address, or an interface by name), whether it is a backup, and
    the most it may carry (UDP)."""

    host: str
    port: int
    local: str | None = None  # a local address to bind to
    device: str | None = None  # a local interface (SO_BINDTODEVICE)
    backup: bool = False
    rate_bps: float | None = None  # ,rate=RATE: this path's ceiling, within --rate's total

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        """As the user wrote it, all of it (for messages and the statistics)."""
        via = f"@{self.local}" if self.local else ""
        via += f"%{self.device}" if self.device else ""
        via += ",backup" if self.backup else ""
        return f"{self}{via}{f',rate={_rate_text(self.rate_bps)}' if self.rate_bps is not None else ''}"


def _rate_text(bps: float) -> str:
    """A rate as --rate takes it: 1e8 as 100M."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bps >= size:
            return f"{bps / size:g}{unit}"
    return f"{bps:g}"


def parse_path(text: str, default_port: int) -> Path:
    """``HOST[:PORT][@LOCAL][%IFACE][,backup][,rate=RATE]``: HOST as a name, an IPv4 address,
    a bare IPv6 address or ``[V6]`` (brackets are needed with a port, a local side or an
    interface); LOCAL a local address (IPv6 in brackets), IFACE an interface name; RATE as
    ``--rate`` takes it (``100M``)."""
    t, *options = text.strip().split(",")
    backup, rate = False, None
    for o in options:
        if (o == "backup" and backup) or (o.startswith("rate=") and rate is not None):
            raise ValueError(f"{text!r}: {o.partition('=')[0]!r} is given twice")
        if o == "backup":
            backup = True
        elif o.startswith("rate="):
            try:
                rate = parse_rate(o[len("rate=") :])
            except ValueError as e:
                raise ValueError(f"{text!r}: {e}") from None
        else:
            raise ValueError(f"{text!r}: {o!r} is not an option of a path (backup, rate=RATE)")
    device = None
    if "%" in t and not t.startswith("[") or t.rfind("%") > t.rfind("]"):
        t, _pct, device = t.rpartition("%")
        if not device:
            raise ValueError(f"{text!r}: no interface after %")
    local = None
    if "@" in t:
        t, _at, local = t.rpartition("@")
        if local.startswith("[") and local.endswith("]"):
            local = local[1:-1]
        if not local:
            raise ValueError(f"{text!r}: no local address after @")
    if t.startswith("["):
        host, closed, rest = t[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ADDRESS]:PORT")
        port = rest[1:] if rest.startswith(":") else ""
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, ""
    if not host:
        raise ValueError(f"{text!r}: no host")
    if not port.isdigit() and port:
        raise ValueError(f"{text!r}: port {port!r} is not a number")
    p = int(port) if port else default_port
    if not 1 <= p <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return Path(host, p, local, device, backup, rate)


Update = Callable[[bytes | bytearray | memoryview], object]


class TrailingHash:
    """Hashes a file's bytes from its start, in order, in a thread, by reading them (again) up
    to where ``extend`` says they are: what a resumed transfer holds of a compressed content
    (§18 with §19) is hashed while the transfer goes on, so neither the network nor the writer
    waits for a long held part to be read from disk (a peer would see silence). ``read(update,
    offset, n)`` feeds bytes ``[offset, offset + n)`` to ``update`` (raises OSError)."""

    CHUNK = 8 << 20

    def __init__(self, update: Update, read: Callable[[Update, int, int], None]) -> None:
        self._update, self._read = update, read
        self._upto = 0  # what may be hashed: there, in the file
        self._hashed = 0
        self._end = self._stopped = False
        self.error: str | None = None
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="alf-hash", daemon=True)
        self._thread.start()

    @property
    def hashed(self) -> int:
        return self._hashed

    def extend(self, upto: int) -> None:
        with self._cv:
            if upto > self._upto:
                self._upto = upto
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._hashed >= self._upto and not self._end and not self._stopped:
                    self._cv.wait()
                if self._stopped or self._hashed >= self._upto:
                    return
                upto = self._upto
            n = min(self.CHUNK, upto - self._hashed)
            try:
                self._read(self._update, self._hashed, n)
            except OSError as e:
                self.error = f"cannot read what is held, to hash it: {e.strerror}"
                return
            except Exception as e:  # (a file that shrank: the reader's own error)
                self.error = str(e)
                return
            self._hashed += n

    def finish(self, timeout: float | None = None) -> bool:
        """Hash up to the last ``extend`` and end; whether it all was (not: see ``error``)."""
        with self._cv:
            self._end = True
            self._cv.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive() and self.error is None and self._hashed >= self._upto

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(10)
