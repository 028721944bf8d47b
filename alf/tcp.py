"""TCP transport cores (docs/protocol.md §12): alf's messages framed on parallel TCP streams.

No sockets and no clock here: the driver (``alf/io/tcp.py``) owns the connections and hands the
cores whole frames and ``now``. A frame is a 4-byte length and one alf message as on UDP; a DATA
frame carries a run of consecutive ADUs after one §5 header whose index is the run's first, so
any connection can carry any run and the receiver places it by position alone.

Invariants:
- Sender: every ADU below ``next_new`` was handed to a connection; an ADU handed to a connection
  that was lost before the receiver's ``cum_ack`` passed it is queued again (``_resend``), so
  losing connections costs resends, never data. The FINAL goes out only when nothing is queued.
- Receiver: a run is written only for the ADUs the gap map did not hold (duplicates from resends
  are dropped), so the sink sees each ADU once; the verdict is computed from what the sink
  wrote, and sent only once every ADU below the FINAL's end is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alf import resume, wire
from alf.content import WHOLE, Buffer, Sink, SinkError, Source, source_failure
from alf.digest import NAMES as digest_names
from alf.errors import ExitCode, Outcome, aborted_by
from alf.events import (
    DataArrived,
    Ended,
    Event,
    EventLog,
    Finished,
    Joined,
    PeerAborted,
    Rejected,
    Verifying,
)
from alf.gapmap import GapMap
from alf.ranges import before_held, ceil_div, merge_ranges, skip_held, trim_ranges
from alf.verdict import (
    FINAL_CONTRADICTS,
    INCONSISTENT_FINAL,
    final_contradicts,
    judge,
    key_mismatch,
    unsupported_reason,
    verdict_outcome,
)

if TYPE_CHECKING:
    from alf import seal

FRAME_BYTES = 1 << 20  # payload bytes per DATA frame the sender aims for
MAX_FRAME_PAYLOAD = 16 << 20  # the receiver refuses longer frames (memory bound per connection)
STATUS_EVERY = 0.02  # the receiver's STATUS spacing while data moves (s)
KEEPALIVE = 1.0  # ... and while nothing moves, so the sender knows it is alive
ANY = -1  # reply on any joined connection
ALL = -2  # reply on every joined connection
HELLO_WAIT = 10.0  # the receiver closes a connection that sends no HELLO within this
# Before any connection joined, every path refusing this long ends the transfer: nothing
# listens (a receiver started a moment after its sender still makes it).
REFUSED_GIVE_UP = 2.5


def paced_frame_bytes(rate_bps: float, adu: int) -> int:
    """Payload bytes per DATA frame under ``--rate``: about 10 ms at the rate, whole ADUs, one
    ADU at least and ``FRAME_BYTES`` at most (a paced 1 MiB frame is a 42 ms burst at 200M)."""
    return max(1, min(FRAME_BYTES, int(rate_bps / 8 / 100)) // adu) * adu


# ---------------------------------------------------------------- sender


@dataclass
class TcpSenderStats:
    bytes_sent: int = 0  # payload bytes of first sends
    bytes_resent: int = 0
    frames_sent: int = 0
    frames_resent: int = 0
    acked_bytes: int = 0
    connection_losses: int = 0
    unexpected: int = 0
    unauthenticated: int = 0  # §17: frames that did not open under the session's keys
    adus_held: int = 0  # §18: ADUs the receiver held already (resumed): hashed, not sent
    bytes_held: int = 0  # ... their bytes


@dataclass
class TcpSenderConfig:
    adu_size: int = wire.DEFAULT_ADU_SIZE
    checkphrase: str = ""
    digest: wire.DigestAlg = wire.DigestAlg.XXH3_128
    frame_bytes: int = FRAME_BYTES
    features: int = 0  # §4.4: what the HELLO asks for (none is defined yet: tests offer bits)
    timeout: float = 30.0  # silence (or no answer at all) for this long ends the transfer
    key: bytes | None = None  # §17: the pre-shared key: every frame is sealed (§13 with §17)


class TcpSender:
    """What goes on which connection; the driver calls ``next_frame`` whenever one can take more,
    ``poll`` every turn (timers; the goodbye frame once the outcome is known) and tells it about
    connections (``conn_opened``, ``conn_lost``) and paths that failed (``path_failed``).

    ``paths`` names the driver's paths (for messages); ``now`` is when the transfer started (a
    UDP attempt before it counts: the silence timeout runs from there); ``udp_refused_since`` is
    when UDP's port said 'unreachable' (auto), so 'nothing listens' can name both transports.
    """

    def __init__(
        self,
        cfg: TcpSenderConfig,
        session_id: int,
        kind: wire.Kind,
        total: int | None,
        source: Source,
        now: float = 0.0,
        paths: Sequence[str] = ("the receiver",),
        udp_refused_since: float | None = None,
        offset: int | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.session_id = session_id
        self.kind = kind
        self.total = total
        self.source = source
        self.adu = cfg.adu_size
        self.frame_adus = max(1, cfg.frame_bytes // self.adu)
        self.next_new = 0
        self.acked = 0
        self.window_limit = 0
        self.accepted = False
        self.began: float | None = None  # when the first ACCEPT came: the transfer's start
        self.outcome: Outcome | None = None
        self.events = EventLog()
        self.stats = TcpSenderStats()
        self.paths = list(paths)
        self._path_error = [""] * len(self.paths)  # why each path last failed to connect
        self._path_refused = [False] * len(self.paths)  # ... and whether that was a refusal
        self._refused_since = udp_refused_since
        self._udp_refused = udp_refused_since is not None
        self._last_heard = now
        self._goodbye: bytes | None = None  # the ABORT this side ended with, for every connection
        self._joined: set[int] = set()
        self._inflight: dict[int, deque[tuple[int, int]]] = {}
        self._resend: list[tuple[int, int]] = []  # sorted, disjoint
        self._final_sent: set[int] = set()
        self._tag = wire.checkphrase_tag(cfg.checkphrase)
        self.keys: seal.Keys | None = None  # §17: once an ACCEPT's finished MAC checked
        self._initiator: seal.Initiator | None = None
        self._features = cfg.features
        if cfg.key is not None:
            from alf import seal as _seal  # (cryptography costs 70 ms to import: only with a key)

            self._initiator = _seal.Initiator(cfg.key)
            self._features |= wire.FEATURE_KEY
        self.offset, self.stamp = offset or 0, stamp or (0, 0, 0)  # §18, as the UDP sender's
        if offset is not None:
            self._features |= wire.FEATURE_RANGE
        if stamp is not None and (kind == wire.Kind.FILE or self._features & wire.FEATURE_COMPRESS):
            self._features |= wire.FEATURE_RESUME  # (§19: a file's compressed blocks name it too)
        self._held: list[tuple[int, int]] = []  # §18: what the receiver holds, not yet passed

    # -- connections
    def _hello(self, now: float) -> bytes:
        total = self.total if self.total is not None else wire.UNKNOWN_LENGTH
        share = self._initiator.share if self._initiator is not None else b""
        hello = wire.Hello(
            self.session_id,
            self.adu,
            self.kind,
            total,
            wire.to_us(now),
            self._tag,
            self.cfg.digest,
            features=self._features,
            share=share,
            offset=self.offset,
            source=self.stamp,
        )
        encoded = wire.encode_hello(hello)
        return encoded if self._initiator is None else self._initiator.bind(encoded)

    def hello(self, now: float) -> bytes:
        return wire.frame(self._hello(now))

    def _control(self, msg: bytes) -> bytes:
        """A control message as its frame: sealed once the keys are known (§17)."""
        if self.keys is not None:
            msg = self.keys.out.seal(msg, wire.HEADER_SIZE)
        return wire.frame(msg)

    def _data_frame(self, first: int, data: Buffer) -> tuple[bytes, Buffer]:
        """§13's DATA frame head and payload; sealed (§17), the head carries the packet number
        and the payload is the run encrypted with its tag (one AES-GCM call per frame)."""
        if self.keys is None or self.keys.data is None:
            return wire.frame_data_head(self.session_id, first, len(data)), data
        head = wire.frame_data_head(self.session_id, first, len(data) + wire.SEAL_OVERHEAD)
        clear, sealed = self.keys.data.seal_body(head[wire.FRAME_HEAD :], data)
        return head + clear[wire.DATA_HEADER_SIZE :], sealed

    def conn_opened(self, cid: int) -> None:
        self._inflight[cid] = deque()

    def path_failed(self, path: int, why: str, now: float, refused: bool = False) -> None:
        """A connection on ``path`` failed before it joined (``refused``: nothing listened)."""
        if refused and self._refused_since is None:
            self._refused_since = now
        self._path_error[path] = why
        self._path_refused[path] = refused

    def carries(self, cid: int) -> bool:
        """Whether connection ``cid`` carried runs the receiver has not acknowledged yet."""
        return bool(self._inflight.get(cid))

    def conn_lost(self, cid: int) -> None:
        """Queue again every run the connection carried that the receiver has not acknowledged."""
        runs = self._inflight.pop(cid, None)
        self._final_sent.discard(cid)
        self._joined.discard(cid)
        if runs is None:
            return
        self.stats.connection_losses += 1
        for first, count in runs:
            self._queue_resend(first, count)

    def _queue_resend(self, first: int, count: int) -> None:
        stop = first + count
        first = max(first, self.acked)
        if stop > first:
            self._resend = merge_ranges(self._resend + [(first, stop)])

    # -- what to send
    def end_adus(self) -> int | None:
        total = self.source.total_bytes()
        return None if total is None else ceil_div(total, self.adu)

    def has_work(self) -> bool:
        if self.outcome is not None or not self.accepted:
            return False
        return bool(self._resend) or self._new_count() > 0 or self._final_ready()

    def _new_count(self) -> int:
        limit = min(self.source.available(), self.window_limit)
        return max(0, before_held(self._held, self.next_new, min(self.frame_adus, limit - self.next_new)))

    def _final_ready(self) -> bool:
        end = self.end_adus()
        return end is not None and self.next_new >= end and not self._resend

    def next_frame(self, cid: int, now: float) -> tuple[bytes, Buffer | None] | None:
        """The next frame for connection ``cid`` (header bytes, payload), or None for now."""
        runs = self._inflight.get(cid)
        if runs is None or self.outcome is not None or not self.accepted:
            return None
        try:
            data = self._next_data(runs)
        except OSError as e:  # the input shrank or changed under us: a clean end, not a crash
            err = self.source.error() or f"cannot read the input: {e}"
            self._abort(wire.AbortCode.LOCAL_IO, err, Outcome(source_failure(err), err))
            return None
        return data if data is not None else self._next_final(cid, now)

    def _next_data(self, runs: deque[tuple[int, int]]) -> tuple[bytes, Buffer | None] | None:
        if self._resend:
            a, b = self._resend[0]
            data = self.source.block(a, min(b - a, self.frame_adus))
            count = ceil_div(len(data), self.adu)  # a stream's block stops where its ring wraps
            if a + count >= b:
                self._resend.pop(0)
            else:
                self._resend[0] = (a + count, b)
            self.stats.bytes_resent += len(data)
            self.stats.frames_resent += 1
            runs.append((a, count))
            return self._data_frame(a, data)
        count = self._new_count()
        if count:
            first = self.next_new
            data = self.source.block(first, count)
            count = ceil_div(len(data), self.adu)
            self.next_new = skip_held(self._held, self.next_new + count)
            self.stats.bytes_sent += len(data)
            self.stats.frames_sent += 1
            runs.append((first, count))
            return self._data_frame(first, data)
        return None

    def _next_final(self, cid: int, now: float) -> tuple[bytes, Buffer | None] | None:
        if self._final_ready() and cid not in self._final_sent:
            digest = self.source.digest()
            total = self.source.total_bytes()
            if digest is None or total is None:
                return None
            self._final_sent.add(cid)
            end = ceil_div(total, self.adu)
            probe = wire.Probe(self.session_id, end, wire.to_us(now), 0, True, total, digest)
            return self._control(wire.encode_probe(probe)), None
        return None

    # -- what the receiver says
    def on_message(self, cid: int, buf: bytes | bytearray | memoryview, now: float) -> None:
        """A control frame from the receiver; raises ``wire.BadPacket`` for one that is not."""
        if self._initiator is not None and len(buf) > 1 and buf[1] != wire.MsgType.ACCEPT:
            if self.keys is not None:  # §17: sealed, or not the receiver's
                opened = self.keys.into.open(buf, wire.HEADER_SIZE)
                if opened is None:
                    self.stats.unauthenticated += 1
                    return
                buf = opened
            elif buf[1] != wire.MsgType.ABORT:  # (a receiver without our key cannot seal it)
                self.stats.unauthenticated += 1
                return
        try:
            msg = wire.decode_untrusted(buf)
            if msg.session_id != self.session_id:
                raise wire.BadPacket("another session's message")
        except wire.BadPacket:
            self.stats.unexpected += 1
            raise
        if self.outcome is not None:
            return
        self._last_heard = now
        if isinstance(msg, wire.Accept):
            if self._initiator is not None:  # §17: the finished MAC, with the session's share
                if self._initiator.accepts(self._hello(0.0), msg) is None:
                    self.stats.unauthenticated += 1
                    return
                self.keys = self._initiator.keys
            if cid in self._inflight and cid not in self._joined:
                self._joined.add(cid)
                self.events.add(Joined(cid, self.session_id))
            if not self.accepted:
                self.accepted = True
                self.began = now
                self.window_limit = msg.window_limit
                self.source.accepted(msg.held if self._features & wire.FEATURE_RESUME else ())
                end = self.end_adus()
                if (
                    msg.held
                    and self._features & wire.FEATURE_RESUME
                    and self.kind == wire.Kind.FILE
                    and end is not None
                ):
                    # §18: what the receiver holds is hashed, not sent
                    self._held, self.stats.adus_held, self.stats.bytes_held = resume.held_by_peer(
                        msg.held, end, self.adu, self.source.total_bytes() or 0
                    )
                    self.next_new = skip_held(self._held, self.next_new)
                    self.source.skipping()
            return
        if isinstance(msg, wire.Status):
            self._on_status(msg)
        elif isinstance(msg, wire.Done):
            outcome = verdict_outcome(msg)
            if outcome.ok:
                self.stats.acked_bytes = msg.received_bytes  # a verified DONE acknowledges it all
            self._end(outcome)
        elif isinstance(msg, wire.Abort):
            self.events.add(PeerAborted(msg.code, msg.reason))
            self._end(aborted_by("receiver", msg.code.name, msg.reason))
        else:
            self.stats.unexpected += 1

    def bad_frame(self) -> None:
        """The driver could not even frame what a connection sent (its length is wrong)."""
        self.stats.unexpected += 1

    def _on_status(self, msg: wire.Status) -> None:
        if msg.cum_ack > self.next_new:
            self.stats.unexpected += 1  # acknowledges what was never sent: ignore it whole
            return
        if msg.window_limit > self.window_limit:
            self.window_limit = msg.window_limit
        if msg.cum_ack > self.acked:
            self.acked = msg.cum_ack
            self.stats.acked_bytes = min(self.acked * self.adu, self.source.total_bytes() or 1 << 62)
            self.source.release(self.acked)
            for runs in self._inflight.values():
                while runs and runs[0][0] + runs[0][1] <= self.acked:
                    runs.popleft()
            trim_ranges(self._resend, self.acked)

    def cancel(self, code: wire.AbortCode, reason: str, exit_code: ExitCode) -> None:
        """End the session from this side (user interrupt, local I/O error)."""
        if self.outcome is None:
            self._abort(code, reason, Outcome(exit_code, reason))

    def _abort(self, code: wire.AbortCode, reason: str, outcome: Outcome) -> None:
        self._goodbye = wire.encode_abort(wire.Abort(self.session_id, code, reason))
        self._end(outcome)

    def _end(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.events.add(Finished(outcome))

    # -- timers
    def poll(self, now: float) -> list[tuple[int, bytes]]:
        """Frames due now, each for a connection or ``ALL`` joined ones: once the outcome is
        known, the goodbye (CLOSE after a verified DONE, else the ABORT), and ``Ended``."""
        if self.outcome is None:
            err = self.source.error()
            if err is not None:
                self._abort(wire.AbortCode.LOCAL_IO, err, Outcome(source_failure(err), err))
            else:
                self._timers(now)
        if self.outcome is None or self.events.ended:
            return []
        self.events.add(Ended())
        if self.outcome.ok:
            return self._to_all(wire.encode_close(wire.Close(self.session_id)))
        return self._to_all(self._goodbye) if self._goodbye is not None else []

    def _to_all(self, msg: bytes) -> list[tuple[int, bytes]]:
        """``msg`` on every connection: sealed (§17), one record for each joined one (a record
        sent twice is a replay)."""
        if self.keys is None:
            return [(ALL, wire.frame(msg))]
        return [(cid, self._control(msg)) for cid in sorted(self._joined)]

    def _timers(self, now: float) -> None:
        refused_for = None if self._refused_since is None else now - self._refused_since
        if (
            not self.accepted
            and refused_for is not None
            and refused_for >= REFUSED_GIVE_UP
            and all(self._path_refused)
        ):
            udp = "UDP: port unreachable, " if self._udp_refused else ""
            msg = f"nothing listens at {', '.join(self.paths)} ({udp}TCP: connection refused)"
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
        elif now - self._last_heard > self.cfg.timeout:
            if not self.accepted:
                why = "; ".join(f"{p}: {e}" for p, e in zip(self.paths, self._path_error, strict=True) if e)
                msg = f"no receiver answered within {self.cfg.timeout:g} s" + (f" (TCP {why})" if why else "")
            elif not self._inflight:
                msg = f"lost every connection to the receiver for {self.cfg.timeout:g} s"
            else:
                msg = f"the receiver went silent for {self.cfg.timeout:g} s"
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))

    def next_deadline(self, now: float) -> float:
        if self.outcome is not None:
            return now
        t = self._last_heard + self.cfg.timeout
        if not self.accepted and self._refused_since is not None:
            t = min(t, self._refused_since + REFUSED_GIVE_UP)
        return max(now, t)

    def take_events(self) -> list[Event]:
        return self.events.take()


# ---------------------------------------------------------------- receiver


@dataclass
class TcpReceiverStats:
    bytes_received: int = 0  # payload bytes new to the output
    adus_resumed: int = 0  # §18: ADUs the output held from an earlier transfer (not sent again)
    duplicate_bytes: int = 0
    frames: int = 0
    joins: int = 0
    connection_losses: int = 0  # joined connections lost before the verdict
    rejected_hellos: int = 0
    malformed: int = 0
    violations: int = 0
    unauthenticated: int = 0  # §17: frames that did not open under the session's keys


@dataclass
class TcpReceiverConfig:
    checkphrase: str = ""
    window_bytes: int = 256 << 20
    timeout: float = 30.0
    wait_timeout: float | None = None
    key: bytes | None = None  # §17: only a sealed session is served
    kept: resume.Kept | None = None  # §18: what the output holds of an earlier transfer
    resume_strict: bool = False  # §18: a sender of another content is refused


@dataclass
class _Replies:
    items: list[tuple[int, bytes]] = field(default_factory=list)
    close: set[int] = field(default_factory=set)


class TcpReceiver:
    """One session; connections join it with a HELLO carrying its id and parameters."""

    def __init__(self, cfg: TcpReceiverConfig, sink: Sink, now: float) -> None:
        self.cfg = cfg
        self.sink = sink
        self.stats = TcpReceiverStats()
        self.session_id = 0
        self.hello: wire.Hello | None = None
        self.began: float | None = None  # when the first HELLO was taken: the transfer's start
        self.events = EventLog()
        self.adu = 0
        self.gaps = GapMap()
        self.total_bytes: int | None = None
        self.end_adus: int | None = None
        self.final_digest: bytes | None = None
        self._short_end: int | None = None  # byte end set by a short last ADU
        self.consumed = 0
        self.outcome: Outcome | None = None
        self._closed = False  # nothing more to answer: the sender said CLOSE, or we may leave
        self.joined: set[int] = set()
        self._waiting: dict[int, float] = {}  # connections yet to send their HELLO: since when
        self._tag = wire.checkphrase_tag(cfg.checkphrase)
        self._start = now
        self._last_heard = now
        self._status_at = now
        self._status_cum = -1
        self._status_limit = -1
        self._done: bytes | None = None  # our DONE, once the verdict is out
        self._out = _Replies()
        self._last_conn = ANY
        self._verifying = False
        self.keys: seal.Keys | None = None  # §17: the session's keys
        self._responder: seal.Responder | None = None
        self._sender_keyed = False  # a sealed frame from the sender opened: it has the keys too
        self._sink_started = False
        self.place = WHOLE  # §18: where the content goes, what of it is there
        self.keepable = True  # §18: on failure, what is held may be kept for a resume
        self._held: tuple[tuple[int, int], ...] = ()  # §18: what our ACCEPT says is held
        if cfg.key is not None:
            from alf import seal as _seal  # (cryptography costs 70 ms to import: only with a key)

            self._responder = _seal.Responder(cfg.key)

    @property
    def finished(self) -> bool:
        """The verdict is out."""
        return self._done is not None

    @property
    def window_limit(self) -> int:
        # (a compressed content, §19, is restored in order: its ACCEPT, which may leave before
        # the sink starts (§17: once the sender proved its key), must already say so)
        compressed = self.hello is not None and bool(self.hello.features & wire.FEATURE_COMPRESS)
        if not self.sink.in_order and not compressed:
            return wire.NO_LIMIT
        return self.consumed + max(1, self.cfg.window_bytes // max(1, self.adu))

    def max_frame(self, cid: int) -> int:
        """The longest frame acceptable now on connection ``cid`` (before a HELLO: a HELLO)."""
        if cid in self.joined:
            return wire.DATA_HEADER_SIZE + MAX_FRAME_PAYLOAD + (wire.SEAL_OVERHEAD if self.keys else 0)
        return wire.MAX_CONTROL

    def on_frame(self, cid: int, body: memoryview, now: float) -> bool:
        """One whole frame from connection ``cid``. True: the sink kept ``body`` (an in-order
        sink holds it until written), so the driver must not reuse its buffer."""
        if self.outcome is not None and not self.finished:
            return False  # aborted: nothing more to do
        mtype = body[1] if len(body) > 1 else 0
        if self.keys is not None and mtype != wire.MsgType.HELLO:  # §17: sealed, or refused
            if mtype == wire.MsgType.DATA and cid in self.joined:
                assert self.keys.data_in is not None
                if self.keys.data_in.open_in_place(body, wire.DATA_HEADER_SIZE):
                    if not self._sender_keyed and not self._proven(cid):
                        return False
                    return self._on_data(cid, body[8 : len(body) - 16], now)
                opened = None
            else:
                opened = self.keys.into.open(body, wire.HEADER_SIZE)
            if opened is None:
                self.stats.unauthenticated += 1
                self._out.close.add(cid)  # a stream that carries a forgery is not trusted again
                return False
            body = memoryview(opened)
            if not self._sender_keyed and not self._proven(cid):
                return False
        elif mtype == wire.MsgType.DATA and cid in self.joined:
            return self._on_data(cid, body, now)
        try:
            msg = wire.decode_untrusted(body)
        except wire.BadPacket:
            self.bad_frame(cid)
            return False
        if isinstance(msg, wire.Hello):
            self._on_hello(cid, msg, now)
            return False
        if isinstance(msg, wire.Unsupported):
            self._reject(cid, msg.session_id, wire.AbortCode.UNSUPPORTED, unsupported_reason(msg))
            return False
        if cid not in self.joined or msg.session_id != self.session_id:
            self.stats.violations += 1
            self._out.close.add(cid)
            return False
        self._last_heard = now
        if isinstance(msg, wire.Probe) and msg.final:
            self._on_final(msg, now)
        elif isinstance(msg, wire.Close):
            if self.finished:
                self._closed = True
        elif isinstance(msg, wire.Abort):
            self.events.add(PeerAborted(msg.code, msg.reason))
            self._end(aborted_by("sender", msg.code.name, msg.reason))
            self._closed = True
            self.keepable = resume.keepable_after(msg.code)
        else:
            self.stats.violations += 1
        return False

    def _on_hello(self, cid: int, msg: wire.Hello, now: float) -> None:
        if self.hello is None:
            if msg.tag != self._tag:
                self._reject(cid, msg.session_id, wire.AbortCode.CHECKPHRASE_MISMATCH, "checkphrase mismatch")
                return
            if not self._key_agrees(cid, msg):
                return
            held = self._take_up(cid, msg)
            if held is None:
                return
            self.hello, self.session_id, self.adu = msg, msg.session_id, msg.adu_size
            self.began = now
            if msg.kind == wire.Kind.FILE:
                self.total_bytes = msg.total_bytes
                self.end_adus = ceil_div(msg.total_bytes, msg.adu_size)
            self.gaps = GapMap()
            if not self.place.compressed:  # (§19: what it holds are blocks of input, not ADUs)
                for a, b in held:  # §18: what the output holds already counts as received
                    self.gaps.add_run(a, b - a)
                self.stats.adus_resumed = sum(b - a for a, b in held)
            self._held = resume.claim(held)
            if self._responder is None and not self._start_sink(cid):
                return
        elif self._displaces(msg):
            self._on_hello(cid, msg, now)  # (the HELLO held the place of an older one, replayed)
            return
        elif msg.session_id != self.session_id or self.outcome is not None and not self.finished:
            self._reject(cid, msg.session_id, wire.AbortCode.BUSY, "receiver is busy with another transfer")
            return
        elif msg.tag != self._tag or (msg.adu_size, msg.kind, msg.digest_alg) != (
            self.hello.adu_size,
            self.hello.kind,
            self.hello.digest_alg,
        ):
            self._reject(cid, msg.session_id, wire.AbortCode.PROTOCOL, "HELLO differs from the session's")
            return
        elif self._responder is not None and (msg.share != self.hello.share or not self._binds(msg)):
            self.stats.unauthenticated += 1  # §17: another connection of the session proves the key
            self._out.close.add(cid)
            return
        self.joined.add(cid)
        self._waiting.pop(cid, None)
        self.stats.joins += 1
        self._last_heard = now
        self.events.add(Joined(cid, self.session_id))
        accept = wire.Accept(self.session_id, msg.timestamp_us, self.window_limit, held=self._held)
        if self._responder is None:
            self._out.items.append((cid, wire.frame(wire.encode_accept(accept))))
        else:  # §17: the share and the transcript's finished MAC
            self._out.items.append((cid, wire.frame(self._responder.accept(accept))))
        if self._done is not None:
            self._own(cid, self._done)

    def _proven(self, cid: int) -> bool:
        """The first sealed frame from the sender opened: it holds the keys of this session,
        made with our fresh share, so the session is its and the output starts."""
        self._sender_keyed = True
        return self._sink_started or self._start_sink(cid)

    def _start_sink(self, cid: int) -> bool:
        """The output starts: at the first HELLO, or (§17) once the sender proved it holds the
        session's keys, so a replayed HELLO of an older session reserves nothing."""
        assert self.hello is not None
        self._sink_started = True
        try:
            self.sink.start(self.hello.adu_size, self.total_bytes, self.hello.digest_alg, self.place)
        except SinkError as e:
            self.joined.add(cid)
            self._abort(wire.AbortCode.LOCAL_IO, str(e), Outcome(ExitCode.LOCAL_IO, str(e)))
            return False
        return True

    def _take_up(self, cid: int, msg: wire.Hello) -> list[tuple[int, int]] | None:
        """§18 over TCP, as the UDP receiver's: what the output holds of the content (ADU
        ranges) and where it goes; None: refused (``resume_strict``, another content)."""
        kept = self.cfg.kept
        held, why = resume.take_up(kept, msg)
        if why is not None and self.cfg.resume_strict:
            reason, said = resume.refusal(why)
            self._reject(cid, msg.session_id, wire.AbortCode.NOT_RESUMABLE, reason)
            self._end(Outcome(ExitCode.NOT_RESUMABLE, said))
            self._closed = True
            return None
        self.place, event = resume.decided(kept, msg, held, why)
        if event is not None:
            self.events.add(event)
        return held

    def _displaces(self, msg: wire.Hello) -> bool:
        """§17 over TCP: a HELLO has no token to show it is fresh, so a session stays open to
        another one until its sender has sealed something: a HELLO of another session whose
        binder checks takes its place (the one held may be a replay of an older session's),
        and the connections of the one held are closed."""
        if self._responder is None or self._sender_keyed or self.outcome is not None:
            return False
        if msg.session_id == self.session_id or msg.tag != self._tag or not self._binds(msg):
            return False
        self._out.close.update(self.joined)
        self.joined.clear()
        self.gaps, self.stats.adus_resumed, self._held = GapMap(), 0, ()  # (taken up for the one held)
        self.hello, self.keys, self.session_id, self.total_bytes, self.end_adus = None, None, 0, None, None
        self.stats.unauthenticated += 1  # (the one held never proved it was fresh)
        return True

    def _binds(self, msg: wire.Hello) -> bool:
        assert self._responder is not None
        return self._responder.binds_hello(msg)

    def _key_agrees(self, cid: int, msg: wire.Hello) -> bool:
        """§17 rule 4 over TCP (the connection proved the address): a HELLO whose key is not
        ours, or that has none where we have one or the other way round, ends the wait with
        ABORT KEY_MISMATCH, exit 4 on both sides; a matching one gives the keys."""
        keyed = bool(msg.features & wire.FEATURE_KEY)
        reason = key_mismatch(self._responder is not None, keyed, lambda: self._binds(msg))
        if reason is None and self._responder is None:
            return True
        if reason is None:
            assert self._responder is not None
            self.keys = self._responder.respond(wire.encode_hello(msg), msg.share, data_replay=True)
            if self.keys is not None:
                return True
            self.stats.unauthenticated += 1
            self._out.close.add(cid)
            return False
        self._reject(cid, msg.session_id, wire.AbortCode.KEY_MISMATCH, reason)
        self._end(Outcome(ExitCode.PEER_ABORTED, f"refused the sender: {reason}"))
        self._closed = True
        return False

    def _reject(self, cid: int, session_id: int, code: wire.AbortCode, reason: str) -> None:
        self.stats.rejected_hellos += 1
        self.events.add(Rejected(cid, reason))
        self._out.items.append((cid, wire.frame(wire.encode_abort(wire.Abort(session_id, code, reason)))))
        self._out.close.add(cid)

    def _on_data(self, cid: int, body: memoryview, now: float) -> bool:
        n = len(body) - wire.DATA_HEADER_SIZE
        _v, _t, flags, reserved, aux, session, first = wire.DATA_HEADER.unpack_from(body, 0)
        if session != self.session_id or flags or reserved or aux or n <= 0 or body[0] != wire.VERSION:
            self.stats.malformed += 1
            self._out.close.add(cid)
            return False
        self._last_heard = now
        self._last_conn = cid
        if self.finished:  # a resend that crossed our DONE
            self.stats.duplicate_bytes += n
            return False
        adu = self.adu
        count = ceil_div(n, adu)
        stop = first + count
        short = n % adu != 0
        end = first * adu + n
        if (
            (self.end_adus is not None and stop > self.end_adus)
            or (short and self.total_bytes is not None and end != self.total_bytes)
            or (self._short_end is not None and (end > self._short_end or short and end != self._short_end))
            or (self.sink.in_order and stop > self.window_limit)
        ):
            self._abort(
                wire.AbortCode.PROTOCOL,
                "DATA beyond the content's end or the window",
                Outcome(
                    ExitCode.PEER_ABORTED, "the sender broke the protocol: DATA beyond the end or window"
                ),
            )
            return False
        if short:
            self._short_end = end
        if not self.stats.frames:
            self.events.add(DataArrived())
        self.stats.frames += 1
        new = self.gaps.add_run(first, count)
        payload = body[wire.DATA_HEADER_SIZE :]
        kept = False
        fresh = 0
        try:
            if new == [(first, stop)]:  # the usual case: all of it is new
                self.sink.write_block(first, count, payload)
                kept, fresh = self.sink.in_order, n
            else:  # a resend that overlaps what arrived: only the parts not held, copied
                failed: SinkError | None = None
                for a, b in new:  # (each is tried: the sink records which failed, §18)
                    part = payload[(a - first) * adu : min(n, (b - first) * adu)]
                    try:
                        self.sink.write_block(a, b - a, bytes(part) if self.sink.in_order else part)
                    except SinkError as e:
                        failed = failed or e
                    fresh += len(part)
                if failed is not None:
                    raise failed
            self.stats.bytes_received += fresh
            self.stats.duplicate_bytes += n - fresh
            self.consumed = max(self.consumed, self.sink.advance(self.gaps.cum))  # (never back: §19)
        except SinkError as e:
            self._abort(wire.AbortCode.LOCAL_IO, str(e), Outcome(ExitCode.LOCAL_IO, str(e)))
            return kept
        self._maybe_verify(now)
        return kept

    def _on_final(self, msg: wire.Probe, now: float) -> None:
        if self._done is not None:
            self._own(ALL, self._done)
            return
        end = ceil_div(msg.total_bytes, self.adu)
        if final_contradicts(msg, self.adu, self.total_bytes, self.gaps.highest, self.final_digest) or (
            self._short_end is not None and self._short_end != msg.total_bytes
        ):
            self._abort(wire.AbortCode.PROTOCOL, FINAL_CONTRADICTS, INCONSISTENT_FINAL)
            return
        self.total_bytes, self.end_adus, self.final_digest = msg.total_bytes, end, msg.digest
        self._maybe_verify(now)

    @property
    def output_pending(self) -> bool:
        """Everything is held and FINAL known, but the writer has not written it all (a consumer
        slower than the sender): the verdict waits, and so does the sender; it is not silent."""
        return (
            self.sink.in_order
            and self.end_adus is not None
            and self.final_digest is not None
            and self.gaps.cum >= self.end_adus
            and self.consumed < self.end_adus
        )

    def _maybe_verify(self, now: float) -> None:
        if self.end_adus is None or self.final_digest is None or self.gaps.cum < self.end_adus:
            return
        if not self._verifying:
            self._verifying = True
            self.events.add(Verifying())
        if self.output_pending:
            return  # the writer is still at it: poll() comes back, keepalives go on
        assert self.total_bytes is not None
        try:
            self.sink.advance(self.gaps.cum)
            nbytes, digest = self.sink.finish(self.total_bytes, self.final_digest)
        except SinkError as e:
            self._abort(wire.AbortCode.LOCAL_IO, str(e), Outcome(ExitCode.LOCAL_IO, str(e)))
            return
        verdict, outcome = judge(nbytes, digest, self.total_bytes, self.final_digest)
        self._end(outcome)
        self._done = wire.encode_done(wire.Done(self.session_id, verdict, nbytes, digest))
        self._own(ALL, self._done)
        self._last_heard = now

    def _end(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.events.add(Finished(outcome))

    def _abort(self, code: wire.AbortCode, reason: str, outcome: Outcome) -> None:
        self._end(outcome)
        self._own(ALL, wire.encode_abort(wire.Abort(self.session_id, code, reason)))
        self._closed = True

    def _own(self, target: int, msg: bytes) -> None:
        """§17: a message of the session to ``target``: sealed once the keys are known, one
        record per joined connection for ``ALL`` (a record sent twice is a replay). An ABORT
        goes in clear as well while the sender has shown no keys (it may have none yet)."""
        if self.keys is None:
            self._out.items.append((target, wire.frame(msg)))
            return
        for c in sorted(self.joined) if target == ALL else [target]:
            self._out.items.append((c, wire.frame(self.keys.out.seal(msg, wire.HEADER_SIZE))))
        if msg[1] == wire.MsgType.ABORT and not self._sender_keyed:
            self._out.items.append((target, wire.frame(msg)))

    def fail_local(self, reason: str) -> None:
        self._abort(wire.AbortCode.LOCAL_IO, reason, Outcome(ExitCode.LOCAL_IO, reason))

    def cancel(self, reason: str) -> None:
        if self.outcome is None or self.finished:
            self._abort(wire.AbortCode.CANCELLED, reason, Outcome(ExitCode.CANCELLED, reason))

    def conn_opened(self, cid: int, now: float) -> None:
        """A connection was accepted; it has ``HELLO_WAIT`` to send its HELLO."""
        self._waiting[cid] = now

    def bad_frame(self, cid: int) -> None:
        """What ``cid`` sent cannot be an alf frame (a length out of bounds, undecodable)."""
        self.stats.malformed += 1
        self._out.close.add(cid)

    def conn_lost(self, cid: int) -> None:
        """The connection is gone; once the verdict is out and no joined one is left, there is
        nobody to answer."""
        self._waiting.pop(cid, None)
        if cid in self.joined:
            self.joined.discard(cid)
            if not self.finished:
                self.stats.connection_losses += 1
            elif not self.joined:
                self._closed = True

    def take_events(self) -> list[Event]:
        return self.events.take()

    def poll(self, now: float) -> _Replies:
        """Replies due now (and connections to close); timers run here."""
        for cid, since in list(self._waiting.items()):
            if now - since > HELLO_WAIT:
                del self._waiting[cid]
                self._out.close.add(cid)
        if self.outcome is None:
            if self.hello is None:
                wait = self.cfg.wait_timeout
                if wait is not None and now - self._start >= wait:
                    msg = f"no sender arrived within {wait:g} s"
                    self._end(Outcome(ExitCode.PEER_UNREACHABLE, msg))
                    self._closed = True
            elif now - self._last_heard >= self.cfg.timeout and not self.output_pending:
                msg = f"the sender went silent for {self.cfg.timeout:g} s"
                self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            elif self._sink_started:
                try:  # the writer thread moves on while no data arrives: the window with it
                    self.consumed = max(self.consumed, self.sink.advance(self.gaps.cum))
                except SinkError as e:
                    self.fail_local(str(e))
                    return self._take()
                self._maybe_verify(now)  # (with every connection lost too: what is held is written)
                cum = self.gaps.cum
                if self.joined and not self.finished and now >= self._status_due():
                    self._status_at, self._status_cum, self._status_limit = now, cum, self.window_limit
                    status = wire.Status(
                        self.session_id,
                        cum,
                        max(self.gaps.highest, cum),
                        max(self.gaps.count, cum),
                        self.window_limit,
                        0,
                        0,
                        0,
                    )
                    target = self._last_conn if self._last_conn in self.joined else ANY
                    self._own(target, wire.encode_status(status))
        elif self.finished and not self._closed and now - self._last_heard >= wire.linger_time(0.0):
            self._closed = True  # the sender never said CLOSE: it has what it needs or will time out
        return self._take()

    def _take(self) -> _Replies:
        out, self._out = self._out, _Replies()
        if self._closed:
            self.events.add(Ended())  # the last DONE or ABORT is in ``out``
        return out

    def next_deadline(self, now: float) -> float:
        if self.outcome is not None:
            return now + (0.5 if self.finished and not self._closed else 0.0)
        if self.hello is None:
            wait = self.cfg.wait_timeout
            return now + 0.5 if wait is None else min(now + 0.5, self._start + wait)
        due = self._status_due() if self.joined else now + KEEPALIVE
        return min(due, self._last_heard + self.cfg.timeout)

    def _status_due(self) -> float:
        """A STATUS goes STATUS_EVERY after the last one if it has news (cum or the window
        moved), else KEEPALIVE after it."""
        news = self.gaps.cum != self._status_cum or self.window_limit != self._status_limit
        return self._status_at + (STATUS_EVERY if news else KEEPALIVE)

    def stats_dict(self) -> dict[str, object]:
        return {
            "transport": "tcp",
            "role": "recv",
            "total_bytes": self.total_bytes,
            "digest": digest_names[self.hello.digest_alg] if self.hello else None,
            "began": self.began,
            "state": "closed"
            if self._closed
            else "finished"
            if self.finished
            else "receiving"
            if self.hello
            else "waiting",
            "bytes_received": self.stats.bytes_received,
            "duplicate_bytes": self.stats.duplicate_bytes,
            "frames": self.stats.frames,
            "joins": self.stats.joins,
            "connection_losses": self.stats.connection_losses,
            "connections": len(self.joined),
            "rejected_hellos": self.stats.rejected_hellos,
            "malformed": self.stats.malformed,
            "violations": self.stats.violations,
            "unauthenticated": self.stats.unauthenticated,
            "sealed": self.keys is not None,
            "cum_ack_adus": self.gaps.cum,
            "adus_resumed": self.stats.adus_resumed,
        }
