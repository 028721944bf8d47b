"""TCP driver: parallel connections, next-available queueing, preference order, reconnects.

The sender opens ``streams`` connections to each path (``--path``, in order of preference).
Whenever a connection can take more, it takes the next run from the core: the connections of
the first path are filled before any later path gets a frame, so later paths carry only what
the first cannot take (viamillipede's rule). A connection that fails (reset, refused,
``TCP_USER_TIMEOUT`` on a dead link, a stall) is closed, the core queues its unacknowledged
runs again, and a replacement is opened on the same path, or on the most preferred path that
still answers. ``chaos`` resets a seeded choice of connection every ``chaos`` payload bytes
(one that carries unacknowledged data, where one does).

One thread, non-blocking sockets, one ``select`` per turn; every wait is bounded by the cores'
deadlines. The cores decide everything the protocol decides (who joined, liveness, the end, the
goodbye); the drivers move frames and learn what happened from the cores' events.
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alf import stripe, wire
from alf.digest import NAMES as digest_names
from alf.errors import ExitCode, Outcome
from alf.events import Ended, Joined, Rejected
from alf.io.common import DriverError, Hooks, Path, drain
from alf.pacing import Pacer, bucket_bytes
from alf.tcp import ALL, ANY, FRAME_BYTES, HELLO_WAIT, TcpReceiver, TcpSender
from alf.verdict import unsupported_reason
from alf.wire import FRAME_HEAD, HELLO_SIZE, MAX_CONTROL, frame_length_untrusted

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
STALL_TIMEOUT = 5.0  # unacknowledged data older than this ends a connection (kernel and ours)
CONNECT_TIMEOUT = 3.0
RECONNECT_DELAY = 0.05
PATH_RETRY = 2.0  # a path that refused or timed out is tried again after this
REFUSED = os.strerror(errno.ECONNREFUSED)
TURN_BUDGET = 8 << 20  # bytes moved per connection per turn, so no connection starves the rest
MAX_PENDING_CONNS = 64
GOODBYE_WAIT = 2.0  # each side waits this long, at most, for its peer to close after its last frame


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(STALL_TIMEOUT * 1000))
    except OSError:
        pass  # not Linux: our own stall check still applies


def _reset(sock: socket.socket) -> None:
    """Close abruptly (RST), as a broken link or a crashed peer would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def close_gracefully(conns: list[_Conn], deadline: float) -> None:
    """Make sure what is queued on ``conns`` (a last ABORT, DONE or CLOSE) reaches the peer:
    flush it, shut our side down, and read (and drop) what the peer still sends until it
    closes, or until ``deadline``; the caller closes the sockets then. Closing a socket with
    unread data in it sends a reset, and a reset makes the peer's kernel drop what its program
    had not read yet: the ABORT with it (a sender into a full disk was not told in about 1 run
    in 6, and timed out 30 s later)."""
    while True:
        pending = [c for c in conns if c.out]
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            break
        for c in pending:
            try:
                c.flush(time.monotonic())
            except OSError:
                c.out = []
        select.select([], [c.sock for c in pending if c.out], [], min(left, 0.05))
    waiting = []
    for c in conns:
        try:
            c.sock.shutdown(socket.SHUT_WR)
            waiting.append(c.sock)
        except OSError:
            pass
    scratch = bytearray(1 << 16)
    while waiting and (left := deadline - time.monotonic()) > 0:
        readable, _w, _x = select.select(waiting, [], [], left)
        for sock in readable:
            try:
                n = sock.recv_into(scratch)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if not n:
                waiting.remove(sock)


class FramePool:
    """Reusable receive buffers of one size: a fresh 1 MiB bytearray per frame is zero-filled
    and faulted in page by page (a fifth of the receiver's CPU in a perf profile). Buffers come
    back from the driver (frames the sink did not keep) and from the stdout writer thread (once
    written); list append/pop are atomic, so both may return them."""

    def __init__(self, size: int, keep: int = 32) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []

    def get(self, length: int) -> memoryview:
        if length > self.size:
            return memoryview(bytearray(length))
        try:
            buf = self._free.pop()
        except IndexError:
            buf = bytearray(self.size)
        return memoryview(buf)[:length]

    def put(self, view: Any) -> None:
        buf = view.obj if isinstance(view, memoryview) else view
        if isinstance(buf, bytearray) and len(buf) == self.size and len(self._free) < self.keep:
            self._free.append(buf)


class _Conn:
    """One TCP connection: an output queue of buffers and an input frame parser."""

    def __init__(self, sock: socket.socket, cid: int, now: float, pool: FramePool | None = None) -> None:
        self.sock = sock
        self.id = cid
        self.pool = pool or FramePool(MAX_CONTROL, keep=0)
        self.out: list[memoryview] = []
        self.head = bytearray(FRAME_HEAD)
        self.hpos = 0
        self.body: memoryview | None = None
        self.bpos = 0
        self.opened = now
        self.progress = now  # last time our output moved
        self.joined = False
        self.closing = False  # close once the output is flushed

    def queue(self, *bufs: Any) -> None:
        self.out.extend(memoryview(b).cast("B") for b in bufs if b is not None and len(b))

    def flush(self, now: float, budget: int = TURN_BUDGET) -> int:
        """Send what is queued until the socket is full; returns bytes sent. Raises OSError."""
        sent = 0
        out = self.out
        while out and sent < budget:
            try:
                n = self.sock.sendmsg(out[:64])
            except BlockingIOError:
                break
            sent += n
            self.progress = now
            while n:
                first = out[0]
                if n >= len(first):
                    n -= len(first)
                    out.pop(0)
                else:
                    out[0] = first[n:]
                    n = 0
        return sent

    def read_frames(self, max_frame: Any, budget: int = TURN_BUDGET) -> tuple[list[memoryview], bool]:
        """Whole frames available now, and whether the peer closed. ``max_frame()`` bounds the
        next frame's length; a longer one raises ``wire.BadPacket``."""
        frames: list[memoryview] = []
        got = 0
        while got < budget:
            try:
                if self.body is None:
                    n = self.sock.recv_into(memoryview(self.head)[self.hpos :])
                    if not n:
                        return frames, True
                    got += n
                    self.hpos += n
                    if self.hpos < FRAME_HEAD:
                        continue
                    length = frame_length_untrusted(self.head, max_frame())
                    self.hpos = 0
                    self.body, self.bpos = self.pool.get(length), 0
                    continue
                n = self.sock.recv_into(self.body[self.bpos :], min(len(self.body) - self.bpos, 1 << 22))
                if not n:
                    return frames, True
                got += n
                self.bpos += n
                if self.bpos == len(self.body):
                    frames.append(self.body)
                    self.body = None
            except BlockingIOError:
                break
        return frames, False


# ---------------------------------------------------------------- sender


@dataclass
class SendStats:
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    chaos_resets: int = 0
    stalls: int = 0
    path_bytes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Slot:
    home: int  # index of its preferred path
    path: int = 0
    conn: _Conn | None = None
    connecting: bool = False
    retry_at: float = 0.0


class TcpSendDriver:
    """``paths`` are the core's paths, in the same order (the core names them in messages)."""

    def __init__(
        self,
        core: TcpSender,
        paths: Sequence[Path],
        streams: int,
        hooks: Hooks,
        chaos: int = 0,
        seed: int = 1,
        bind: str | None = None,
        rate_bps: float | None = None,
        policy: str = "prefer",
    ) -> None:
        self.core = core
        self.stripe = policy
        # --rate caps TCP too: a frame goes to a connection when a token bucket holds a whole
        # one (payload and frame header bytes). The bucket holds two at least, so a turn that
        # comes late loses no tokens (one frame's worth: 1.3% under the rate at 200M).
        self._frame_cost = FRAME_HEAD + wire.DATA_HEADER_SIZE + core.frame_adus * core.adu
        self.pacer = (
            Pacer(rate_bps, bucket_bytes(rate_bps, 2 * self._frame_cost), time.monotonic())
            if rate_bps
            else None
        )
        self.paths = list(paths)
        self.hooks = hooks
        self.chaos = chaos
        self.rng = random.Random(seed)
        self.bind = bind
        self.stats = SendStats(path_bytes={p.describe(): 0 for p in self.paths})
        self.slots = [_Slot(home=p, path=p) for p in range(len(self.paths)) for _ in range(streams)]
        self.path_down_until = [0.0] * len(self.paths)
        self._addrs: list[list[tuple[Any, ...]] | None] = [None] * len(self.paths)
        self._next_cid = 1
        self._chaos_left = chaos

    # -- connections
    def _resolve(self, p: int) -> list[tuple[Any, ...]]:
        if self._addrs[p] is None:
            path = self.paths[p]
            try:
                infos = socket.getaddrinfo(path.host, path.port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise DriverError(f"cannot resolve {path.host}: {e.strerror}") from None
            self._addrs[p] = [(i[0], i[4]) for i in infos]
        return self._addrs[p] or []

    def _views(self, now: float) -> list[stripe.PathView]:
        return [
            stripe.PathView(p, usable=self.path_down_until[p] <= now, backup=path.backup)
            for p, path in enumerate(self.paths)
        ]

    def _pick_path(self, slot: _Slot, now: float) -> int | None:
        """The slot's own path while it is up; else the best other (alf.stripe), backups
        only while no other path is up."""
        return stripe.pick(self.stripe, self._views(now), slot.home)

    def _open(self, slot: _Slot, now: float) -> None:
        p = self._pick_path(slot, now)
        if p is None:
            slot.retry_at = min(self.path_down_until)
            return
        if p != slot.home and self.paths[slot.home].backup:
            slot.retry_at = now + PATH_RETRY  # a backup's connections wait for their path's turn
            return
        family, addr = self._resolve(p)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        _tune(sock)
        path = self.paths[p]
        try:
            if path.device is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, path.device.encode())
            local = path.local or self.bind
            if local is not None:
                sock.bind((local, 0))
            err = sock.connect_ex(addr)
        except OSError as e:
            err = e.errno or errno.EINVAL
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._path_failed(p, os.strerror(err), now)
            slot.retry_at = now + RECONNECT_DELAY
            return
        slot.path = p
        slot.conn = _Conn(sock, self._next_cid, now)
        self._next_cid += 1
        slot.connecting = True

    def _path_failed(self, p: int, why: str, now: float) -> None:
        self.core.path_failed(p, why, now, refused=why == REFUSED)
        self.stats.connect_failures += 1
        self.path_down_until[p] = now + PATH_RETRY

    def _connected(self, slot: _Slot, now: float) -> None:
        assert slot.conn is not None
        err = slot.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._lose(slot, now, os.strerror(err))
            return
        slot.connecting = False
        self.stats.connects += 1
        if self.core.accepted:
            self.stats.reconnects += 1
        self.core.conn_opened(slot.conn.id)
        slot.conn.queue(self.core.hello(now))

    def _lose(self, slot: _Slot, now: float, why: str, reset: bool = False) -> None:
        """Close the slot's connection (or attempt) and retry soon; the core queues again what
        it carried; a connection that never joined counts against its path."""
        conn = slot.conn
        if conn is None:
            return
        if reset:
            _reset(conn.sock)
        else:
            conn.sock.close()
        self.core.conn_lost(conn.id)
        slot.conn, slot.connecting = None, False
        slot.retry_at = now + RECONNECT_DELAY
        if not conn.joined:
            self._path_failed(slot.path, why, now)

    # -- the loop
    def run(self) -> Outcome:
        core, hooks = self.core, self.hooks
        clock = time.monotonic
        start = clock()
        for slot in self.slots:
            self._open(slot, start)
        while True:
            now = clock()
            if hooks.cancelled():
                core.cancel(wire.AbortCode.CANCELLED, "the sender was interrupted", ExitCode.CANCELLED)
            self._timers(now)
            goodbye = core.poll(now)
            if self._events():
                hooks.turn(clock(), 0.0)  # a stall in the last turn
                return self._finish(goodbye)
            self._fill(now)
            hooks.tick(now)
            rlist: list[Any] = [hooks.wake_fd] if hooks.wake_fd is not None else []
            wlist: list[Any] = []
            for slot in self.slots:
                if slot.conn is None:
                    continue
                rlist.append(slot.conn.sock)
                if slot.connecting or slot.conn.out:
                    wlist.append(slot.conn.sock)
            wait = max(0.0, self._deadline(now) - clock())
            hooks.turn(now, wait)
            try:
                r, w, _x = select.select(rlist, wlist, [], wait)
            except InterruptedError:
                continue
            if hooks.wake_fd is not None and hooks.wake_fd in r:
                drain(hooks.wake_fd)
            now = clock()
            ready_r, ready_w = set(r), set(w)
            for slot in self.slots:
                conn = slot.conn
                if conn is None:
                    continue
                if slot.connecting:
                    if conn.sock in ready_w or conn.sock in ready_r:
                        self._connected(slot, now)
                    continue
                if conn.sock in ready_r:
                    self._read(slot, now)
                if slot.conn is not None and slot.conn.sock in ready_w:
                    self._flush(slot, now)

    def _events(self) -> bool:
        """Act on the core's events (a connection joined) and hand them on; True: it ended."""
        ended = False
        for ev in self.core.take_events():
            if isinstance(ev, Joined):
                slot = next((s for s in self.slots if s.conn is not None and s.conn.id == ev.peer), None)
                if slot is None or slot.conn is None:
                    continue  # lost already (the core heard of it only afterwards)
                slot.conn.joined = True
                ev = Joined(str(self.paths[slot.path]), ev.session_id)
            ended = ended or isinstance(ev, Ended)
            self.hooks.event(ev)
        return ended

    def _deadline(self, now: float) -> float:
        t = min(now + 0.25, self.core.next_deadline(now))
        if self.pacer is not None and self.core.has_work():
            t = min(t, now + self.pacer.delay_for(self._frame_cost, now))
        for slot in self.slots:
            if slot.conn is None:
                t = min(t, slot.retry_at)
        return max(now, t)

    def _timers(self, now: float) -> None:
        """Socket timers: reconnects due, connects that take too long, stalled output."""
        for slot in self.slots:
            conn = slot.conn
            if conn is None:
                if now >= slot.retry_at:
                    self._open(slot, now)
                continue
            if slot.connecting and now - conn.opened > CONNECT_TIMEOUT:
                self._lose(slot, now, "connection timed out")
            elif conn.out and now - conn.progress > STALL_TIMEOUT:
                self.stats.stalls += 1
                self._lose(slot, now, "stalled", reset=True)

    def _fill(self, now: float) -> None:
        """Give the next runs to connections that can take them, most preferred path first."""
        core = self.core
        if not core.has_work():
            return
        rank = {p: i for i, p in enumerate(stripe.order(self.stripe, self._views(now)))}
        # stable: keeps stream order within a path; a slot on a path the policy leaves out
        # (a backup while another is up) finishes what it has and takes nothing new
        for slot in sorted(self.slots, key=lambda s: rank.get(s.path, len(rank))):
            if slot.path not in rank:
                continue
            conn = slot.conn
            if conn is None or slot.connecting or not conn.joined:
                continue
            while not conn.out:
                pacer = self.pacer
                if pacer is not None and pacer.available(now) < self._frame_cost:
                    return  # _deadline wakes the loop when a frame's tokens are there
                item = core.next_frame(conn.id, now)
                if item is None:
                    return
                head, payload = item
                conn.queue(head, payload)
                if pacer is not None:
                    pacer.consume(len(head) + (len(payload) if payload is not None else 0), now)
                if payload is not None:
                    self.stats.path_bytes[self.paths[slot.path].describe()] += len(payload)
                    if self.chaos:
                        self._chaos_left -= len(payload)
                self._flush(slot, now)
                if self.chaos and self._chaos_left <= 0:
                    # here, not after the loop: the loop is left by a return whenever the input
                    # or the pacer's tokens run out, and under --rate chaos then never came
                    self._chaos_reset(now)
                if slot.conn is None:
                    break

    def _chaos_reset(self, now: float) -> None:
        self._chaos_left += self.chaos
        victims = [s for s in self.slots if s.conn is not None and s.conn.joined]
        # one that carries unacknowledged data, where one does: that is what a lost connection
        # costs, and what the resend path must recover (an idle victim tested only the reconnect)
        loaded = [s for s in victims if s.conn is not None and self.core.carries(s.conn.id)]
        victims = loaded or victims
        if victims:
            self.stats.chaos_resets += 1
            self._lose(self.rng.choice(victims), now, "chaos", reset=True)

    def _flush(self, slot: _Slot, now: float) -> None:
        conn = slot.conn
        assert conn is not None
        try:
            conn.flush(now)
        except OSError as e:
            self._lose(slot, now, e.strerror or str(e))

    def _read(self, slot: _Slot, now: float) -> None:
        conn = slot.conn
        assert conn is not None
        try:
            frames, eof = conn.read_frames(lambda: MAX_CONTROL)
        except wire.BadPacket as e:
            self.core.bad_frame()
            self._lose(slot, now, f"the receiver sent a bad frame: {e}")
            return
        except OSError as e:
            self._lose(slot, now, e.strerror or str(e))
            return
        for body in frames:
            try:
                self.core.on_message(conn.id, body, now)
            except wire.BadPacket:
                continue  # counted by the core
        if eof:
            self._lose(slot, now, "closed by the receiver")

    def _finish(self, frames: list[tuple[int, bytes]]) -> Outcome:
        """Send the core's last frames (CLOSE or ABORT) on every joined connection, after what
        is queued there (at most one frame: cut short, it would garble the goodbye), and close
        them all gracefully (``close_gracefully``)."""
        outcome = self.core.outcome
        assert outcome is not None
        joined = []
        for slot in self.slots:
            conn = slot.conn
            if conn is None:
                continue
            if slot.connecting or not conn.joined:
                conn.sock.close()
                continue
            # each frame to its own connection, or to all (a sealed goodbye is one record per
            # connection: the same record on two would be a replay, protocol §17 rule 7)
            goodbye = b"".join(data for target, data in frames if target in (ALL, conn.id))
            if goodbye:
                conn.queue(goodbye)
            joined.append(conn)
        close_gracefully(joined, time.monotonic() + GOODBYE_WAIT)
        for conn in joined:
            conn.sock.close()
        return outcome

    def stats_dict(self) -> dict[str, Any]:
        c = self.core
        live = [s for s in self.slots if s.conn is not None and s.conn.joined]
        return {
            "transport": "tcp",
            "role": "send",
            "state": "done" if c.outcome else "sending" if c.accepted else "handshake",
            "total_bytes": c.total,
            "digest": digest_names[c.cfg.digest],
            "began": c.began,
            "bytes_sent": c.stats.bytes_sent,
            "bytes_resent": c.stats.bytes_resent,
            "acked_bytes": c.stats.acked_bytes,
            "frames_sent": c.stats.frames_sent,
            "frames_resent": c.stats.frames_resent,
            "unauthenticated": c.stats.unauthenticated,
            "adus_held": c.stats.adus_held,
            "bytes_held": c.stats.bytes_held,
            "sealed": c.keys is not None,
            "connections": len(live),
            "connects": self.stats.connects,
            "reconnects": self.stats.reconnects,
            "connection_losses": c.stats.connection_losses,
            "connect_failures": self.stats.connect_failures,
            "chaos_resets": self.stats.chaos_resets,
            "stalls": self.stats.stalls,
            "unexpected": c.stats.unexpected,
            "path_bytes": dict(self.stats.path_bytes),
        }


# ---------------------------------------------------------------- receiver


def listener_socket(bind: str | None, port: int) -> socket.socket:
    """Listen for TCP on ``port``; with no address, IPv6 and IPv4 where the system allows."""
    candidates: list[tuple[socket.AddressFamily, Any]] = []
    if bind is None:
        candidates = [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    else:
        try:
            infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise DriverError(f"cannot resolve {bind}: {e.strerror}") from None
        candidates = [(infos[0][0], infos[0][4])]
    last = ""
    for family, addr in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and bind is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(128)
        except OSError as e:
            sock.close()
            last = e.strerror or str(e)
            continue
        sock.setblocking(False)
        return sock
    where = f"{bind} port {port}" if bind else f"port {port}"
    raise DriverError(f"cannot listen on {where} (TCP): {last}")


class TcpRecvDriver:
    def __init__(self, core: TcpReceiver, listener: socket.socket, hooks: Hooks) -> None:
        self.pool = FramePool(wire.DATA_HEADER_SIZE + wire.SEAL_OVERHEAD + FRAME_BYTES)  # (sealed, §17)
        writer = getattr(getattr(core.sink, "active", core.sink), "writer", None)  # (EitherSink's)
        if writer is not None and hasattr(writer, "recycle"):
            writer.recycle = self.pool.put
        self.core = core
        self.listener = listener
        self.hooks = hooks
        self.conns: dict[int, _Conn] = {}
        self._next_cid = 1
        self.accepted = 0
        self.peers: dict[int, Any] = {}  # connection id -> the peer's address, for messages
        self._ended = False

    def _accept(self, now: float) -> None:
        for _ in range(16):
            try:
                sock, _addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # e.g. EMFILE: the pending connection waits in the backlog
            self.adopt(sock, now)
            waiting = [c for c in self.conns.values() if not c.joined]
            if len(waiting) > MAX_PENDING_CONNS:
                self._drop(min(waiting, key=lambda c: c.opened).id)

    def adopt(self, sock: socket.socket, now: float | None = None) -> None:
        """Serve an accepted connection (also one accepted elsewhere, its HELLO still unread)."""
        _tune(sock)
        now = time.monotonic() if now is None else now
        conn = _Conn(sock, self._next_cid, now, self.pool)
        self._next_cid += 1
        self.conns[conn.id] = conn
        try:
            self.peers[conn.id] = sock.getpeername()
        except OSError:
            pass
        self.accepted += 1
        self.core.conn_opened(conn.id, now)

    def _drop(self, cid: int, reset: bool = False) -> None:
        conn = self.conns.pop(cid, None)
        if conn is None:
            return
        self._events()  # they may name this connection: while its address is known
        self.peers.pop(cid, None)
        self.core.conn_lost(cid)
        if reset:
            _reset(conn.sock)
        else:
            conn.sock.close()

    def _deliver(self, now: float) -> None:
        replies = self.core.poll(now)
        self._events()
        joined = [c for c in self.conns.values() if c.joined]
        for target, data in replies.items:
            if target == ALL:
                targets = joined
            elif target == ANY:
                targets = joined[-1:]
            else:
                targets = [self.conns[target]] if target in self.conns else []
            for conn in targets:
                conn.queue(data)
        for cid in replies.close:
            if cid in self.conns:
                self.conns[cid].closing = True
        for conn in list(self.conns.values()):
            if conn.out:
                try:
                    conn.flush(now)
                except OSError:
                    self._drop(conn.id)
                    continue
            if conn.closing and not conn.out:
                self._drop(conn.id)

    def run(self) -> Outcome:
        core, hooks = self.core, self.hooks
        clock = time.monotonic
        cancel_sent = False
        while True:
            now = clock()
            if hooks.cancelled() and not cancel_sent:
                core.cancel("the receiver was interrupted")
                cancel_sent = True
            self._deliver(now)
            hooks.tick(now)
            if self._ended:
                break
            rlist: list[Any] = [self.listener] + [c.sock for c in self.conns.values()]
            if hooks.wake_fd is not None:
                rlist.append(hooks.wake_fd)
            wlist = [c.sock for c in self.conns.values() if c.out]
            timeout = max(0.0, min(core.next_deadline(now), now + 0.5) - clock())
            hooks.turn(now, timeout)
            try:
                r, w, _x = select.select(rlist, wlist, [], timeout)
            except InterruptedError:
                continue
            now = clock()
            if hooks.wake_fd is not None and hooks.wake_fd in r:
                drain(hooks.wake_fd)
            if self.listener in r:
                self._accept(now)
            ready = set(r)
            for conn in list(self.conns.values()):
                if conn.sock not in ready:
                    continue
                cid = conn.id
                try:
                    frames, eof = conn.read_frames(lambda cid=cid: core.max_frame(cid))
                except wire.BadPacket:
                    core.bad_frame(cid)
                    self._drop(cid, reset=True)
                    continue
                except OSError:
                    self._drop(cid)
                    continue
                for body in frames:
                    if not core.on_frame(cid, body, now):
                        self.pool.put(body)
                if eof:
                    self._drop(cid)
        hooks.turn(clock(), 0.0)  # a stall in the last turn
        self._deliver(clock())  # a last ABORT or DONE
        self._goodbye()
        for cid in list(self.conns):
            self._drop(cid)
        outcome = core.outcome
        assert outcome is not None
        return outcome

    def _goodbye(self) -> None:
        """The last frames (an ABORT, a DONE) must reach the sender (``close_gracefully``)."""
        close_gracefully(list(self.conns.values()), time.monotonic() + GOODBYE_WAIT)

    def _events(self) -> None:
        """Act on the core's events and hand them on; the core names connections, the events
        handed on name the peer's address (while its connection exists)."""
        for ev in self.core.take_events():
            if isinstance(ev, Joined | Rejected):
                cid = ev.peer if isinstance(ev.peer, int) else -1
                who = self.peers.get(cid, "?")
                if isinstance(ev, Joined):
                    if cid in self.conns:
                        self.conns[cid].joined = True
                    ev = Joined(who, ev.session_id)
                else:
                    ev = Rejected(who, ev.reason)
            elif isinstance(ev, Ended):
                self._ended = True
            self.hooks.event(ev)

    def stats_dict(self) -> dict[str, Any]:
        s = self.core.stats_dict()
        s["connections_accepted"] = self.accepted
        return s


class HelloGate:
    """Connections accepted before a transport is chosen, each kept until it shows a whole
    HELLO frame (of ``session_id``; None: of any session). Nothing blocks: a connection that
    stays silent (a port scan, a stray connect) is closed after ``HELLO_WAIT``, and one that
    sends anything else at once. ``--transport auto`` commits to TCP only on a HELLO."""

    def __init__(
        self,
        listener: socket.socket,
        session_id: int | None = None,
        rejected: Callable[[Any, str], None] = lambda peer, why: None,
    ) -> None:
        self.listener = listener
        self.session_id = session_id
        self.rejected = rejected  # an offer refused by name (§4.4): who, and why
        self.pending: dict[socket.socket, float] = {}  # accepted -> when

    def watch(self) -> list[socket.socket]:
        return [self.listener, *self.pending]

    def step(self, readable: Sequence[Any], now: float) -> list[socket.socket] | None:
        """After a ``select`` on ``watch()``: the connection with the HELLO first, then the
        others still pending (a sender opens several streams at once), or None."""
        if self.listener in readable:
            for _ in range(16):
                try:
                    sock, _addr = self.listener.accept()
                except OSError:  # BlockingIOError, or e.g. EMFILE: it waits in the backlog
                    break
                sock.setblocking(False)
                # readable only once a whole HELLO frame is there (or at EOF): a connection
                # that trickles bytes cannot make the loop spin
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, FRAME_HEAD + HELLO_SIZE)
                self.pending[sock] = now
                if len(self.pending) > MAX_PENDING_CONNS:
                    self._close(min(self.pending, key=self.pending.__getitem__))
        for sock, since in list(self.pending.items()):
            if sock in readable and self._shows_hello(sock):
                del self.pending[sock]
                chosen = [sock, *self.pending]
                self.pending.clear()
                for s in chosen:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                return chosen
            if sock in self.pending and now - since > HELLO_WAIT:
                self._close(sock)
        return None

    def _shows_hello(self, sock: socket.socket) -> bool:
        """True: a whole HELLO of the session waits, unread; a connection that closed or sent
        something else is closed."""
        want = FRAME_HEAD + HELLO_SIZE
        try:
            head = sock.recv(want, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            self._close(sock)
            return False
        try:
            if head and frame_length_untrusted(head[:FRAME_HEAD], HELLO_SIZE) != HELLO_SIZE:
                raise wire.BadPacket("not a HELLO frame")
            if len(head) < want:
                if not head:
                    self._close(sock)  # EOF before a HELLO
                return False
            msg = wire.decode_untrusted(head[FRAME_HEAD:])
            if isinstance(msg, wire.Hello) and self.session_id in (None, msg.session_id):
                return True
            if isinstance(msg, wire.Unsupported):  # §4.4: refused by name, as the cores do
                why = unsupported_reason(msg)
                abort = wire.frame(
                    wire.encode_abort(wire.Abort(msg.session_id, wire.AbortCode.UNSUPPORTED, why))
                )
                sock.recv(want)  # read, so that closing sends a FIN and not a reset over the answer
                sock.send(abort)  # small: the socket's buffer takes it whole
                self.rejected(sock.getpeername(), why)
                sock.shutdown(socket.SHUT_WR)
        except (wire.BadPacket, OSError):
            pass
        self._close(sock)
        return False

    def _close(self, sock: socket.socket) -> None:
        self.pending.pop(sock, None)
        sock.close()

    def close(self) -> None:
        for sock in list(self.pending):
            self._close(sock)


def take_hello(listener: socket.socket, session_id: int | None, wait: float) -> list[socket.socket]:
    """Accept connections for up to ``wait`` seconds until one opens with a HELLO of
    ``session_id`` (None: of any session), left unread in the socket; returns it first and
    then the connections still pending, or nothing. --transport auto uses it to follow a
    sender that gave up on UDP."""
    gate = HelloGate(listener, session_id)
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            gate.close()
            return []
        ready, _w, _x = select.select(gate.watch(), [], [], left)
        got = gate.step(ready, time.monotonic())
        if got:
            return got
