"""UDP driver: sockets, the monotonic clock and the loop that pumps a session.

This is the only place (with the CLI) that touches sockets and time. It moves datagrams one
system call each (``sendmsg`` with a header/payload scatter list, ``recvfrom_into``
preallocated slots); the cores already hand it whole runs, so a batching driver (GSO/GRO) can
replace these calls without touching them. Every loop is bounded by the session's own
deadlines and timeouts.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alf import wire
from alf.errors import ExitCode, Outcome
from alf.session import RecvSession, SendSession

SOCKET_BUFFER = 32 << 20
RECV_SLOTS = 64
SLOT_SIZE = 65536
SEND_BUDGET_ADUS = 512  # per loop turn, so incoming feedback is read often
SEND_RETRY_LIMIT = 200  # EAGAIN retries (x 5 ms) before a datagram is given up as lost


class DriverError(Exception):
    """A socket could not be set up; the message is for the user."""


@dataclass
class Hooks:
    """What the CLI plugs into a loop: periodic reporting and cancellation."""

    tick: Callable[[float], None] = lambda now: None
    cancelled: Callable[[], bool] = lambda: False
    wake_fd: int | None = None
    notes: list[str] = field(default_factory=list)


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise DriverError(f"cannot resolve {host}: {e.strerror}") from None
    family, _t, _p, _c, addr = infos[0]
    return family, addr  # type: ignore[return-value]


def _tune(sock: socket.socket) -> None:
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except PermissionError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            except OSError:
                pass
    sock.setblocking(False)


def sender_socket(host: str, port: int, bind: str | None = None) -> socket.socket:
    family, addr = resolve(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    _tune(sock)
    try:
        if bind is not None:
            sock.bind((bind, 0))
        sock.connect(addr)
    except OSError as e:
        sock.close()
        raise DriverError(f"cannot reach {host} port {port}: {e.strerror}") from None
    return sock


def receiver_socket(bind: str | None, port: int) -> socket.socket:
    """Bind the receiver; with no address, both IPv6 and IPv4 where the system allows."""
    if bind is None:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError as e:
                sock.close()
                raise DriverError(f"cannot listen on port {port}: {e.strerror}") from None
    else:
        family, addr = resolve(bind, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise DriverError(f"cannot listen on {bind} port {port}: {e.strerror}") from None
    _tune(sock)
    return sock


def _send(sock: socket.socket, buffers: list[bytes | memoryview], addr: Any = None) -> bool:
    """Send one datagram; False when it had to be given up (it then counts as lost)."""
    for _ in range(SEND_RETRY_LIMIT):
        try:
            if addr is None:
                sock.sendmsg(buffers)
            else:
                sock.sendmsg(buffers, [], 0, addr)
            return True
        except BlockingIOError:
            select.select([], [sock], [], 0.005)
        except ConnectionRefusedError:
            return False  # an ICMP error from an earlier datagram: the peer's port is closed
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return False
            raise
    return False


def _drain(fd: int | None) -> None:
    if fd is not None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass


def run_sender(session: SendSession, sock: socket.socket, hooks: Hooks) -> Outcome:
    sender = session.sender
    clock = time.monotonic
    buf = bytearray(SLOT_SIZE)
    view = memoryview(buf)
    refused = False
    watch = [sock] + ([hooks.wake_fd] if hooks.wake_fd is not None else [])
    while True:
        now = clock()
        if hooks.cancelled():
            sender.cancel(wire.AbortCode.CANCELLED, "the sender was interrupted", ExitCode.CANCELLED)
        for _ in range(RECV_SLOTS):
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                refused = True
                continue
            session.on_datagram(view[:n], now)
        budget = SEND_BUDGET_ADUS
        while True:
            control, run, datagrams = session.step(now)
            for c in control:
                _send(sock, [c])
            for header, payload in datagrams:
                _send(sock, [header, payload])
            if run is None:
                break
            budget -= run.count
            if budget <= 0:
                break
            now = clock()
        hooks.tick(now)
        if sender.finished:
            break
        if budget > 0:
            timeout = max(0.0, sender.next_deadline(now) - clock())
            ready, _w, _x = select.select(watch, [], [], timeout)
            if hooks.wake_fd is not None and hooks.wake_fd in ready:
                _drain(hooks.wake_fd)
    outcome = sender.outcome
    assert outcome is not None
    if refused and outcome.code == ExitCode.PEER_UNREACHABLE and sender.next_new == 0:
        outcome = Outcome(outcome.code, outcome.message + " (the port is closed: nothing listens there)")
    return outcome


def run_receiver(session: RecvSession, sock: socket.socket, hooks: Hooks) -> Outcome:
    receiver = session.receiver
    clock = time.monotonic
    store = bytearray(RECV_SLOTS * SLOT_SIZE)
    slots = [memoryview(store)[k * SLOT_SIZE : (k + 1) * SLOT_SIZE] for k in range(RECV_SLOTS)]
    cancel_sent = False
    watch = [sock] + ([hooks.wake_fd] if hooks.wake_fd is not None else [])
    while True:
        now = clock()
        if hooks.cancelled() and not cancel_sent:
            receiver.cancel("the receiver was interrupted")
            cancel_sent = True
        items: list[tuple[memoryview, object]] = []
        for slot in slots:
            try:
                n, addr = sock.recvfrom_into(slot)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue
            items.append((slot[:n], addr))
        if items:
            session.on_datagrams(items, now)  # type: ignore[arg-type]
        for datagram, addr in session.poll(now):
            _send(sock, [datagram], addr)
        hooks.tick(now)
        if receiver.finished or (receiver.outcome is not None and receiver.state.value == "closed"):
            break
        if len(items) < RECV_SLOTS:
            timeout = max(0.0, receiver.next_deadline(now) - clock())
            ready, _w, _x = select.select(watch, [], [], min(timeout, 0.5))
            if hooks.wake_fd is not None and hooks.wake_fd in ready:
                _drain(hooks.wake_fd)
    outcome = receiver.outcome
    assert outcome is not None
    return outcome
