"""The receiver's protocol state machine (sans-IO; docs/protocol.md §4-§12).

Invariants:
- At most one session is bound; it is bound to one session id and one peer address, and
  nothing from elsewhere changes its state (it is counted and dropped).
- Nothing is bound, written or reserved before the sender has proved its address (§4.3): a
  first HELLO is answered with a RETRY ACCEPT carrying a token that only the HELLO's source
  address can have read, computed from a secret (so the receiver keeps no state per HELLO),
  and only a HELLO that echoes it binds the session. Until then every answer is smaller than
  the HELLO it answers, and answers that bind nothing go at a bounded rate.
- After that, NAK bytes are paid from a credit of ``NAK_CREDIT`` times the bytes received
  (capped), so a sender that falls silent cannot keep the receiver talking.
- ``window_limit`` never decreases; DATA at or past it is dropped, so an in-order output holds
  at most ``window_adus`` ADUs beyond what it has consumed. Where the driver names its read
  buffer, the limit also stays within one flow window of ``highest`` (what has been read), so a
  receiver slower than its sender is never overrun in its socket buffer (§6).
- A NAK round names only indices below the frontier recorded one round earlier (§7.2), so a
  reordered ADU is not asked for again, and every hole is asked for again each round it stays.
- The outcome is set exactly once; the verdict compares the digest computed over the output
  with the sender's FINAL digest.
The core deals in runs of indices; payloads stay with the driver and the sink.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from alf import fec, resume, wire
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
    SendFailed,
)
from alf.gapmap import GapMap
from alf.ranges import append_range, ceil_div
from alf.resume import Placement
from alf.verdict import (
    FINAL_CONTRADICTS,
    INCONSISTENT_FINAL,
    final_contradicts,
    judge,
    key_mismatch,
    unsupported_reason,
)

MIN_ROUND = 0.010
STATUS_EVERY = 0.050
MAX_NAK_DATAGRAMS = 64
MAX_AHEAD_ADUS = 1 << 26  # output written at offsets: bound on how far ahead of cum we accept
WINDOW_UPDATE = 4  # a STATUS goes early once the flow window has moved by 1/this of itself
FLOW_FLOOR = 4 << 20  # the flow window never falls below this much of the read buffer
ABORT_COPIES = 3
TOKEN_EPOCH = 30.0  # §4.3: a RETRY token is good in the epoch it was made in and the next
ANSWER_RATE = 200.0  # answers per second to HELLOs that bind nothing (RETRY, rejections)
ANSWER_BURST = 50.0
JOIN_RATE = 8.0  # §15 rule 1: JOINs a second at most, in bursts of up to JOIN_BURST
JOIN_BURST = 4.0
NAK_CREDIT = 3  # §7.2: NAK bytes allowed per byte of new data (and control) from the peer
NAK_CREDIT_CAP = 256 << 10  # ... saved up to at most this
MAX_PATHS = 8  # §14: addresses one session may use
NAK_BACKOFF_MIN = 0.005  # §15 rule 8: a group member's NAK waits up to max(this, K srtt) ...
NAK_BACKOFF_RTTS = 3.0  # ... K = this x (ln N + 1), N the members receiving
KEYS_ASK_GAP = 0.25  # §17 rule 8: a sealed group's member without its secret asks this often
FEC_MAX_NEED = 32  # §16: a block that needs more symbols than this asks for its ADUs instead

if TYPE_CHECKING:
    from alf import seal

Addr = Hashable
Span = tuple[int, int]


@dataclass(frozen=True)
class ReceiverConfig:
    checkphrase: str = ""
    in_order: bool = True  # the output consumes ADUs in order (a pipe): flow control applies
    window_bytes: int = 256 << 20
    timeout: float = 30.0
    wait_timeout: float | None = None  # bound on the wait for the first HELLO; None: forever
    fec: bool = False  # §16: decode parity when a group's sender offers it (the driver has a codec)
    key: bytes | None = None  # §17: the pre-shared key: only a sealed session is served
    kept: resume.Kept | None = None  # §18: what the output holds of an earlier transfer
    resume_strict: bool = False  # §18: a sender of another content is refused, not started afresh


@dataclass
class ReceiverStats:
    datagrams: int = 0
    wire_bytes: int = 0  # DATA datagram bytes as they arrived (before --drop): what --rate paces
    adus_received: int = 0
    bytes_received: int = 0
    duplicates: int = 0
    malformed: int = 0
    foreign: int = 0
    beyond_window: int = 0
    bad_checksum: int = 0
    violations: int = 0
    dropped_injected: int = 0
    rejected_hellos: int = 0
    retries_sent: int = 0  # RETRY ACCEPTs: the HELLO's source must prove its address (§4.3)
    bad_tokens: int = 0  # HELLOs with a token that is stale or was never ours
    answers_held: int = 0  # answers to HELLOs not sent for the rate bound (a flood)
    nak_rounds_held: int = 0  # NAK rounds deferred for want of credit (§7.2)
    adus_nak_suppressed: int = 0  # §15 rule 8: holes a backed-off NAK no longer needed
    naks_sent: int = 0
    nak_rounds: int = 0
    adus_nakked: int = 0
    status_sent: int = 0
    control_lost: int = 0  # STATUS/NAK/DONE the socket would not take (ENOBUFS, full): not sent
    send_errors: int = 0  # sends the local stack refused (a firewall rule, a route): lost
    receive_rate_Bps: int = 0
    socket_overflows: int = 0  # datagrams the kernel dropped because our socket buffer was full
    paths_joined: int = 0  # §14: addresses that joined the session after the first
    parity_received: int = 0  # §16: PARITY datagrams of the session
    parity_unused: int = 0  # ... of a block held whole, or beyond what it lacked
    adus_decoded: int = 0  # ADUs restored from parity
    naks_need: int = 0  # NEED blocks sent (§16): symbols asked for by count, not by index
    unauthenticated: int = 0  # §17: datagrams that failed to open under the session's keys: dropped
    adus_resumed: int = 0  # §18: ADUs the output held from an earlier transfer (not sent again)


class State(Enum):
    IDLE = "idle"
    RECEIVING = "receiving"
    FINISHED = "finished"
    CLOSED = "closed"


def _terms(h: wire.Hello) -> tuple[object, ...]:
    """What a HELLO asks for, without its timestamp and token: every path of a session asks
    for the same (§14)."""
    return (
        h.adu_size,
        h.kind,
        h.total_bytes,
        h.tag,
        h.digest_alg,
        h.checksum,
        h.features,
        h.offset,
        h.source,
    )


class _Bucket:
    """A token bucket of ``rate`` tokens a second, holding at most ``burst``."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """One token, if there is one now."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Receiver:
    """``secret`` keys the RETRY tokens (random unless a test fixes it)."""

    def __init__(self, config: ReceiverConfig, now: float, secret: bytes | None = None) -> None:
        self.cfg = config
        self._secret = secret if secret is not None else secrets.token_bytes(16)
        self._answers = _Bucket(ANSWER_RATE, ANSWER_BURST, now)  # answers that bind nothing
        self._joins = _Bucket(JOIN_RATE, JOIN_BURST, now)  # §15: the JOINs' own bucket
        self._nak_credit = 0.0
        self._credited = 0  # bytes received from the peer already turned into credit
        self._control_bytes = 0  # control bytes received from the peer
        self.state = State.IDLE
        self.outcome: Outcome | None = None
        self.stats = ReceiverStats()
        self.session_id = 0
        self.peer: Addr | None = None  # where answers go: the address the session was bound from
        # The addresses validated for this session (a HELLO answered with ACCEPT from each: the
        # first, and with MULTIPATH each path's, §14); DATA and control from any other are foreign.
        self.peers: set[Addr] = set()
        self.multipath = False  # the session asked for MULTIPATH (§14)
        self.multicast = False  # the session is a group's (§15)
        self.fec = False  # we decode the session's parity (§16)
        self.keys: seal.Keys | None = None  # §17: the bound session's keys
        self.sender_keyed = False  # §17: a sealed datagram from the sender opened: it has them too
        self.group_keys: seal.Keys | None = None  # §17 rule 8: a sealed group's, from its KEYS
        self._keys_ask_at = 0.0  # ... asked for again (our ACCEPT again) until they come
        self._hello_ts = 0  # the latest HELLO stamp of the bound session (a replay is not news)
        self._responder: seal.Responder | None = None
        if config.key is not None:
            from alf import seal as _seal  # (cryptography costs 70 ms to import: only with a key)

            self._responder = _seal.Responder(config.key)
        self._parity: dict[int, dict[int, bytes]] = {}  # block -> row -> symbol, while it lacks ADUs
        self.decodable: set[int] = set()  # blocks that hold as many symbols as they lack ADUs
        self._parity_bytes = 0  # the symbols held, at most window_bytes
        self._rows_seen: dict[int, int] = {}  # block -> one past the highest parity row received
        self._group_size = 1  # the members receiving, as the latest PROBE said (§15)
        self._backoff_rng = random.Random(self._secret)
        self._nak_due: float | None = None  # §15 rule 8: when the NAK a round drew is sent
        self._nak_pending: list[tuple[int, int]] = []  # ... and what it would name
        self._probes_seen = self._backoff_rng.randrange(1 << 16)  # §15 rule 9: whose turn
        self.path_bytes: dict[Addr, int] = {}  # multipath: DATA datagram bytes from each address
        # multipath: one past the highest index each address delivered, and when that last rose
        self._path_high: dict[Addr, tuple[int, float]] = {}
        self._path_rate: dict[Addr, tuple[int, float, int]] = {}  # (bytes, when, rate) at its last STATUS
        self.hello: wire.Hello | None = None
        self._answering: wire.Hello | None = None  # the tokened HELLO our ACCEPTs answer (§15 rule 1)
        self.place = Placement()  # §18: where the bound session's content goes, what is there
        self.keepable = True  # §18: on failure, what is held may be kept for a resume
        self._data_seen = False  # DATA of the session arrived
        self.in_order = config.in_order  # ... and compressed blocks (§19), restored in order
        self._held: tuple[Span, ...] = ()  # §18: what our ACCEPT says is held
        self.began: float | None = None  # when the sender's HELLO was taken: the transfer's start
        self.events = EventLog()  # what the driver and the library learn (alf.events)
        self.adu = 0
        self.gaps = GapMap()
        self.end_adus: int | None = None
        self.total_bytes: int | None = None
        self.final_digest: bytes | None = None
        self.consumed = 0
        self._limit = 0
        self._out: list[tuple[bytes, Addr]] = []
        self._tag = wire.checkphrase_tag(config.checkphrase)
        self._start = now
        self._last_heard = now
        self._srtt = 0.0
        self._round_at = now
        self._round_began: float | None = None  # when the latest NAK round ran
        self._frontier = 0  # what we know was sent: max(highest held, PROBE next_index, end)
        self._nak_below = 0  # the frontier recorded at the previous round
        self._status_at = now
        self._data_since_status = False
        self._rate_bytes = 0  # stats.wire_bytes when the current rate interval began
        self._rate_since = now
        self._probe_echo = (0, now)  # (timestamp_us of the latest PROBE, its arrival)
        self._done: bytes | None = None
        self._linger_until = 0.0
        self._end_tentative = False  # the end came from a short DATA, not yet from FINAL
        self._buffer_bytes = 0  # the driver's read buffer (0: not named, no overrun guard)
        self._flow_adus = 0  # the flow window beyond ``highest``, in ADUs (§6)
        self._base_rtt = 0.0  # the smallest srtt the sender reported: the path without our queue
        self._overflowed = False  # our socket overflowed: the flow window is the buffer alone
        self._queue_wait = 0.0  # how long the latest PROBE waited in our socket before it was read
        self._advertised = 0  # the window_limit of the latest STATUS or ACCEPT

    # ------------------------------------------------------------ queries

    @property
    def needs_verification(self) -> bool:
        """Every ADU is held and FINAL is known: the driver must compute the digest now."""
        return (
            self.state == State.RECEIVING
            and self.final_digest is not None
            and self.end_adus is not None
            and self.gaps.cum >= self.end_adus
        )

    @property
    def window_limit(self) -> int:
        if self.end_adus is not None and not self._end_tentative and not self.in_order:
            limit = self.end_adus
        elif self.in_order:
            limit = self.consumed + max(1, self.cfg.window_bytes // max(self.adu, 1))
        else:
            limit = self.gaps.cum + MAX_AHEAD_ADUS
        if self._flow_adus:  # (from the highest held: a sender passing over held runs, §18, never waits)
            limit = min(limit, self.gaps.highest + self._flow_adus)
        if limit > self._limit:
            self._limit = limit
        return self._limit

    # ------------------------------------------------------------ the data path

    def on_data_run(self, first: int, count: int, last_len: int, now: float) -> list[tuple[int, int]]:
        """DATA for [first, first+count) arrived, all ADUs full but the last (``last_len``).

        The driver has checked header, session and address. Returns the sub-ranges to store.
        """
        if self.state != State.RECEIVING:
            self.stats.duplicates += count
            return []
        self._last_heard = now
        self._data_since_status = True
        stop = first + count
        if last_len != self.adu and not self._short_adu_ok(stop - 1, last_len):
            self.stats.violations += 1
            stop -= 1
            if stop <= first:
                return []
        if self.end_adus is not None and stop > self.end_adus:
            self.stats.violations += stop - max(first, self.end_adus)
            stop = self.end_adus
        limit = self.window_limit
        if stop > limit:
            self.stats.beyond_window += stop - max(first, limit)
            stop = limit
        if stop <= first:
            return []
        if not self._data_seen:  # (not gaps.count: what a resume holds is counted there, §18)
            self._data_seen = True
            self.events.add(DataArrived())
        new = self.gaps.add_run(first, stop - first)
        if (self._parity or self._rows_seen) and new:
            # a block with parity held may lack no more than it holds now, or be whole
            for block in range(fec.block_of(new[0][0]), fec.block_of(new[-1][1] - 1) + 1):
                if block in self._parity or block in self._rows_seen:
                    self._check_decodable(block)
        got = sum(b - a for a, b in new)
        self.stats.duplicates += stop - first - got
        self.stats.adus_received += got
        nbytes = got * self.adu
        if new and new[-1][1] == stop and last_len != self.adu:
            nbytes += last_len - self.adu
        self.stats.bytes_received += nbytes
        if stop > self._frontier:  # (what was sent: not what is held from before, §18)
            self._frontier = stop
        return new

    # ------------------------------------------------------------ parity (§16)

    def block_missing(self, block: int) -> list[int]:
        """The positions in ``block`` of the ADUs it lacks."""
        assert self.end_adus is not None
        first, k = fec.block_span(block, self.end_adus)
        return [i - first for a, b in self.gaps.missing(first, first + k) for i in range(a, b)]

    def on_parity(self, block: int, row: int, payload: bytes, now: float) -> None:
        """A PARITY symbol of the session arrived (the driver checked header, session and
        address). Keeps it while the block lacks more ADUs than it holds symbols; once it
        holds as many, the block is in ``decodable`` (``parity_for`` has what it needs)."""
        if self.state != State.RECEIVING:
            self.stats.duplicates += 1
            return
        self._last_heard = now
        self._data_since_status = True
        self.stats.parity_received += 1
        if not self.fec or self.end_adus is None:
            self.stats.parity_unused += 1  # a group's parity, to a member that does not decode
            return
        first, k = fec.block_span(block, self.end_adus)
        if k == 0 or row >= fec.max_rows(k) or len(payload) != self.adu:
            self.stats.violations += 1
            return
        if first >= self.window_limit or self._parity_bytes + len(payload) > self.cfg.window_bytes:
            # beyond the window, as DATA would be; or more held than the window's worth (a
            # member whose NAKs wait, --slow catch-up, holds the group's parity): asked again later
            self.stats.parity_unused += 1
            return
        held = self._parity.setdefault(block, {})
        lacks = self._lacks(first, k)
        if lacks and row >= self._rows_seen.get(block, 0):
            self._rows_seen[block] = row + 1  # (the NEED says so: what the sender sent since is on its way)
        if lacks == 0 or row in held or len(held) >= lacks:
            self.stats.parity_unused += 1
            if not held:
                del self._parity[block]
            return
        held[row] = payload
        self._parity_bytes += len(payload)
        if len(held) >= lacks:
            self.decodable.add(block)

    def _drop_parity(self, block: int) -> dict[int, bytes]:
        """Forget the symbols held for ``block`` (it is whole, or they could not decode it)."""
        held = self._parity.pop(block, {})
        self._parity_bytes -= sum(len(p) for p in held.values())
        self.decodable.discard(block)
        return held

    def undecodable(self, block: int) -> None:
        """The codec refused ``block``'s symbols: they are dropped, its holes asked for again."""
        self.stats.parity_unused += len(self._drop_parity(block))

    def _lacks(self, first: int, k: int) -> int:
        """How many ADUs the block of ``k`` from ``first`` lacks."""
        return k - self.gaps.held_in(first, first + k)

    def _check_decodable(self, block: int) -> None:
        """After DATA for ``block``: whole, it lets go of its parity; else it may decode now."""
        assert self.end_adus is not None
        first, k = fec.block_span(block, self.end_adus)
        lacks = self._lacks(first, k)
        if not lacks:
            self.stats.parity_unused += len(self._drop_parity(block))
            self._rows_seen.pop(block, None)
        elif len(self._parity.get(block, ())) >= lacks:
            self.decodable.add(block)

    def parity_for(self, block: int) -> tuple[list[int], list[int], list[bytes]]:
        """What decodes ``block``: its missing positions, and as many rows and their symbols."""
        missing = self.block_missing(block)
        held = self._parity.get(block, {})
        rows = sorted(held)[: len(missing)]
        return missing, rows, [held[r] for r in rows]

    def on_decoded(self, block: int, missing: list[int], now: float) -> list[tuple[int, int]]:
        """The driver restored and wrote ``missing`` of ``block``: they are held now. Returns
        the runs it marked."""
        assert self.end_adus is not None and self.total_bytes is not None
        first, _k = fec.block_span(block, self.end_adus)
        self._drop_parity(block)
        self._rows_seen.pop(block, None)
        runs: list[tuple[int, int]] = []
        for j in missing:
            append_range(runs, first + j, first + j + 1)
        for a, b in runs:
            self.gaps.add_run(a, b - a)
        got = len(missing)
        self.stats.adus_decoded += got
        self.stats.adus_received += got
        nbytes = got * self.adu
        if runs and runs[-1][1] == self.end_adus:
            nbytes -= self.end_adus * self.adu - self.total_bytes
        self.stats.bytes_received += nbytes
        if runs and runs[-1][1] > self._frontier:  # (what was sent, not a held tail: §18)
            self._frontier = runs[-1][1]
        return runs

    def _nak_plan(self, missing: list[Span]) -> tuple[list[tuple[int, int, int]], list[Span]]:
        """§16: what a round asks for: NEEDs (block, symbols) for the blocks whose holes, less
        the symbols held, are few; the ADUs themselves for the others (a group of one, or a
        block mostly missing: as many of its holes as it needs)."""
        by_block: dict[int, list[tuple[int, int]]] = {}
        for a, b in missing:
            while a < b:
                end = min(b, (fec.block_of(a) + 1) * fec.BLOCK)
                by_block.setdefault(fec.block_of(a), []).append((a, end))
                a = end
        needs: list[tuple[int, int, int]] = []
        ranges: list[tuple[int, int]] = []
        many = self._group_size >= 2
        for block, holes in by_block.items():
            need = sum(b - a for a, b in holes) - len(self._parity.get(block, ()))
            if need <= 0:
                continue
            if many and need <= FEC_MAX_NEED:
                needs.append((block, need, self._rows_seen.get(block, 0)))
                continue
            for a, b in holes:  # the first ``need`` of its holes
                b = min(b, a + need)
                need -= b - a
                append_range(ranges, a, b)
                if not need:
                    break
        return needs, ranges

    def _short_adu_ok(self, index: int, length: int) -> bool:
        if not 0 < length < self.adu:
            return False
        if self.end_adus is not None:
            total = self.total_bytes or 0
            return index == self.end_adus - 1 and length == total - index * self.adu
        if self.gaps.highest > index + 1:
            return False
        self.end_adus = index + 1
        self.total_bytes = index * self.adu + length
        self._end_tentative = True
        return True

    def set_consumed(self, n_adus: int) -> None:
        """The in-order output has taken ADUs [0, n_adus) and no longer holds them."""
        if n_adus > self.consumed:
            self.consumed = n_adus

    def set_read_buffer(self, nbytes: int) -> None:
        """The driver's socket holds about ``nbytes`` of DATA datagrams it has not read yet: keep
        what the sender may have beyond ``highest`` within that plus what arrives while feedback
        is on its way (§6), so a slow receiver slows its sender instead of overflowing."""
        self._buffer_bytes = max(0, nbytes)
        self._update_flow()

    def set_socket_drops(self, total: int) -> None:
        """The driver's socket has dropped ``total`` datagrams so far for want of room. The first
        drop ends the round-trip term of the flow window: from then on the sender may have only
        what the buffer holds beyond what we have read."""
        if total > self.stats.socket_overflows:
            self.stats.socket_overflows = total
            if not self._overflowed:
                self._overflowed = True
                self._update_flow()

    def _update_flow(self) -> None:
        """flow = max(min(B, FLOW_FLOOR), 2 R (rtt + PROBE spacing)), in ADUs, and at most B once
        our socket has overflowed. At the rate R that we read, R (rtt + spacing) arrives between
        a STATUS and the next: twice that keeps the sender from waiting on the window and lets
        its rate double per round, on a long path too, where that data is on the wire and not in
        our buffer. A window of the whole buffer (32 MiB) kept a standing queue of up to 30 ms in
        our socket whenever the sender was the faster: repairs waited behind it and holes were
        NAKed again before their repair could arrive. The floor lets a transfer start. The rtt
        is the smallest srtt seen. A receiver that cannot keep up and overflows gets B at most
        from then on, and nothing more queues than the buffer holds; but not with a buffer below
        the floor (Linux's default rmem_max, 208 KB, without root): a window that small held
        loopback to 0.18 GB/s, where repairing what overflows still made 0.34-0.58.
        """
        if not self._buffer_bytes or not self.adu:
            return
        rtt = self._base_rtt
        ahead = 2 * self.stats.receive_rate_Bps * (rtt + wire.probe_spacing(rtt))
        flow = max(min(self._buffer_bytes, FLOW_FLOOR), ahead)
        if self._overflowed and self._buffer_bytes >= FLOW_FLOOR:
            flow = min(flow, self._buffer_bytes)
        self._flow_adus = max(1, int(flow) // (self.adu + wire.DATA_HEADER_SIZE))

    def verify(self, nbytes: int, digest: bytes, now: float) -> None:
        """The driver computed the digest of everything written; send the verdict."""
        if self.state != State.RECEIVING:
            return
        verdict, self.outcome = judge(nbytes, digest, self.total_bytes, self.final_digest)
        self._done = wire.encode_done(wire.Done(self.session_id, verdict, nbytes, digest))
        self._send(self._done)
        self.state = State.FINISHED
        self._linger_until = now + wire.linger_time(self._srtt)
        self.events.add(Finished(self.outcome))

    def fail_local(self, reason: str, now: float) -> None:
        """This side cannot go on (output unwritable): tell the peer and stop."""
        if self.outcome is None:
            self._abort(wire.AbortCode.LOCAL_IO, reason, Outcome(ExitCode.LOCAL_IO, reason))

    def cancel(self, reason: str) -> None:
        if self.outcome is None:
            self._abort(wire.AbortCode.CANCELLED, reason, Outcome(ExitCode.CANCELLED, reason))

    # ------------------------------------------------------------ control messages

    def handle_control(
        self, buf: bytes | bytearray | memoryview, addr: Addr, now: float, arrived: float | None = None
    ) -> None:
        """A control datagram read at ``now``; ``arrived``, if the driver knows it, is when it
        reached our host (before it waited in our socket): a PROBE's echo counts from then."""
        if self.keys is not None and len(buf) > 1 and buf[1] != wire.MsgType.HELLO:
            opened = self._open_control(buf)  # §17: sealed, or not ours
            if opened is None:
                self.stats.unauthenticated += 1
                return
            buf = opened
            self.sender_keyed = True
        try:
            msg = wire.decode_untrusted(buf)
        except wire.BadPacket:
            self.stats.malformed += 1
            return
        if isinstance(msg, wire.Hello):
            if self.keys is not None and not self._binds_hello(msg):
                self.stats.unauthenticated += 1
                return
            self._on_hello(msg, addr, now)
            return
        if isinstance(msg, wire.Unsupported):
            if self.keys is not None and msg.session_id == self.session_id:
                self.stats.unauthenticated += 1  # §17: no answer carries the session's id for it
                return
            self._reject(msg.session_id, addr, wire.AbortCode.UNSUPPORTED, unsupported_reason(msg), now)
            return
        if self.state == State.IDLE or msg.session_id != self.session_id or addr not in self.peers:
            self.stats.foreign += 1
            return
        if self.state == State.CLOSED:
            return
        self._last_heard = now
        self._control_bytes += len(buf)
        if isinstance(msg, wire.Probe):
            if self.multipath:
                self.peer = addr  # §14: unprompted feedback goes where the latest PROBE came from
            self._on_probe(msg, now, now if arrived is None else arrived, addr)
        elif isinstance(msg, wire.Close):
            if self.state == State.FINISHED:
                self.state = State.CLOSED
        elif isinstance(msg, wire.Keys) and self.multicast and self.keys is not None:
            self._on_keys(msg)
        elif isinstance(msg, wire.Abort):
            self.events.add(PeerAborted(msg.code, msg.reason))
            self._end(aborted_by("sender", msg.code.name, msg.reason))
            self.state = State.CLOSED
            self.keepable = resume.keepable_after(msg.code)
        else:
            self.stats.violations += 1  # a message only a receiver sends

    @property
    def data_keys(self) -> seal.Keys | None:
        """§17: the keys the sender's DATA and PARITY open under: the session's, or in a sealed
        group the group's (rule 8: None until its KEYS came)."""
        return self.group_keys if self.multicast else self.keys

    def _open_control(self, buf: bytes | bytearray | memoryview) -> bytes | None:
        """§17: a sealed control datagram opened, or None. In a group (rule 8) a PROBE opens
        under the group's keys, a KEYS or CLOSE under our own, an ABORT under either."""
        assert self.keys is not None
        kind = buf[1]
        if self.multicast and kind != wire.MsgType.KEYS and kind != wire.MsgType.CLOSE:
            group = self.group_keys
            opened = group.into.open(buf, wire.HEADER_SIZE) if group is not None else None
            if opened is not None or kind != wire.MsgType.ABORT:
                return opened
        return self.keys.into.open(buf, wire.HEADER_SIZE)

    def _on_keys(self, msg: wire.Keys) -> None:
        """§17 rule 8: the group's secret (it came sealed under our keys): its DATA, PARITY and
        PROBEs open from the numbers it names on. Later copies change nothing."""
        if self.group_keys is not None or self.hello is None:
            return
        from alf import seal

        keys = seal.group_keys(msg.secret, wire.encode_hello(self.hello), sender=False)
        assert keys.data_in is not None
        keys.data_in.start_at(msg.data_pn)
        keys.into.start_at(msg.control_pn)
        self.group_keys = keys

    def _reject(self, session_id: int, addr: Addr, code: wire.AbortCode, reason: str, now: float) -> None:
        self.stats.rejected_hellos += 1
        if self._may_answer(now):
            self.events.add(Rejected(addr, reason))
            self._send_abort_to(session_id, addr, code, reason)

    def _may_answer(self, now: float) -> bool:
        """The rate bound on answers that bind nothing: a flood of HELLOs (forged ones too)
        gets ANSWER_RATE answers a second, not one each."""
        if not self._answers.take(now):
            self.stats.answers_held += 1
            return False
        return True

    def _may_join(self, now: float) -> bool:
        """§15 rule 1: JOINs go at JOIN_RATE a second at most (the sender announces 4 times a
        second): a forged announcement from a third party's address, sent to the group, makes
        each receiver send that address little, not one JOIN of its size per announcement."""
        if not self._joins.take(now):
            self.stats.answers_held += 1
            return False
        return True

    def _token(self, msg: wire.Hello, addr: Addr, epoch: int) -> int:
        """§4.3: what only ``addr`` can echo: a MAC of the HELLO's terms, its source address
        and the epoch, under this receiver's secret (never 0)."""
        h = hashlib.blake2b(key=self._secret, digest_size=8)
        h.update(repr((msg.session_id, msg.adu_size, int(msg.kind), msg.total_bytes)).encode())
        h.update(repr((int(msg.digest_alg), msg.checksum, msg.features, msg.tag, addr, epoch)).encode())
        return int.from_bytes(h.digest(), "big") or 1

    def _on_hello(self, msg: wire.Hello, addr: Addr, now: float) -> None:
        if self.state == State.CLOSED and self.hello is None:
            return  # refused (§17 rule 4) and ending: the refused sender's HELLO copies are not news
        if self.state != State.IDLE:
            if msg.session_id == self.session_id and addr in self.peers:
                if msg.timestamp_us > self._hello_ts:  # (a replayed HELLO is no sign of life)
                    self._hello_ts = msg.timestamp_us
                    self._last_heard = now  # (a group's announcements go on while it waits to start)
                if self.state == State.RECEIVING and self.group_keys is None:
                    # a group's member answers an announcement as it answered the HELLO that
                    # bound it (whose token and stamp the sender checks); §17 rule 8: one that
                    # holds the group's secret has been accepted, and answers no more
                    self._out.append((self._accept(self._answer_to(msg, addr, now)), addr))
                return
            if msg.session_id == self.session_id and self.multipath:
                self._on_path_hello(msg, addr, now)
                return
            reason = "receiver is busy with another transfer"
            self._reject(msg.session_id, addr, wire.AbortCode.BUSY, reason, now)
            return
        if msg.tag != self._tag:
            self._reject(
                msg.session_id, addr, wire.AbortCode.CHECKPHRASE_MISMATCH, "checkphrase mismatch", now
            )
            return
        if not self._address_proven(msg, addr, now):
            return
        if not self._key_agrees(msg, addr, now):
            return
        held = self._take_up(msg, addr)
        if held is None:
            return
        self.state = State.RECEIVING
        self.session_id = msg.session_id
        self.peer = addr
        self.peers.add(addr)
        self.multipath = bool(msg.features & wire.FEATURE_MULTIPATH)
        self.multicast = bool(msg.features & wire.FEATURE_MULTICAST)
        self.in_order = self.cfg.in_order or bool(msg.features & wire.FEATURE_COMPRESS)
        offered = bool(msg.features & wire.FEATURE_FEC) and msg.kind == wire.Kind.FILE
        self.fec = self.cfg.fec and offered
        self.hello = self._answering = msg
        self._hello_ts = msg.timestamp_us
        self.began = now
        self.adu = msg.adu_size
        self._update_flow()
        if msg.kind == wire.Kind.FILE:
            self.total_bytes = msg.total_bytes
            self.end_adus = ceil_div(msg.total_bytes, msg.adu_size)
        if not self.place.compressed:  # (§19: what it holds are blocks of input, not ADUs)
            for a, b in held:  # §18: what the output holds already counts as received
                self.gaps.add_run(a, b - a)
                self.stats.adus_resumed += b - a
        self._held = resume.claim(held)
        self._last_heard = now
        self._round_at = now + MIN_ROUND
        self._rate_since = now
        self._send(self._accept(msg))
        self._keys_ask_at = now + KEYS_ASK_GAP
        self.events.add(Joined(addr, msg.session_id))

    def _take_up(self, msg: wire.Hello, addr: Addr) -> list[Span] | None:
        """§18: what the output holds of the content ``msg`` offers (ADU ranges), and where
        the content goes; None: refused (``resume_strict``, and what is held is of another)."""
        kept = self.cfg.kept
        held, why = resume.take_up(kept, msg)
        if why is not None and self.cfg.resume_strict:
            reason, said = resume.refusal(why)
            self.stats.rejected_hellos += 1
            self.events.add(Rejected(addr, reason))
            for _ in range(ABORT_COPIES):
                self._send_abort_to(msg.session_id, addr, wire.AbortCode.NOT_RESUMABLE, reason)
            self._end(Outcome(ExitCode.NOT_RESUMABLE, said))
            self.state = State.CLOSED
            return None
        self.place, event = resume.decided(kept, msg, held, why)
        if event is not None:
            self.events.add(event)
        return held

    def _binds_hello(self, msg: wire.Hello) -> bool:
        assert self._responder is not None
        return self._responder.binds_hello(msg)

    def _key_agrees(self, msg: wire.Hello, addr: Addr, now: float) -> bool:
        """§17 rule 4: a HELLO from a proven address whose key is not ours (or that has none
        where we have one, or the other way round) ends the wait: ABORT KEY_MISMATCH, exit 4
        on both sides, nothing written. A matching one gives the session's keys."""
        keyed = bool(msg.features & wire.FEATURE_KEY)
        reason = key_mismatch(self._responder is not None, keyed, lambda: self._binds_hello(msg))
        if reason is None and self._responder is None:
            return True
        if reason is None:
            assert self._responder is not None
            self.keys = self._responder.respond(wire.encode_hello(msg), msg.share)
            if self.keys is not None:
                return True
            self.stats.unauthenticated += 1  # a share no key can come from: forged
            return False
        self.stats.rejected_hellos += 1
        self.events.add(Rejected(addr, reason))
        for _ in range(ABORT_COPIES):  # (it ends us: one lost copy must not leave the sender waiting)
            self._send_abort_to(msg.session_id, addr, wire.AbortCode.KEY_MISMATCH, reason)
        self._end(Outcome(ExitCode.PEER_ABORTED, f"refused the sender: {reason}"))
        self.state = State.CLOSED
        return False

    def _answer_to(self, msg: wire.Hello, addr: Addr, now: float) -> wire.Hello:
        """The HELLO a member's ACCEPT answers: a group's, the latest one with our token (a
        receiver that JOINed a backlog of announcements gets a HELLO for each, and the sender
        remembers the stamps of its last few only), else the one that bound us."""
        if not self.multicast or self._answering is None:
            return msg
        if (
            msg.timestamp_us > self._answering.timestamp_us
            and _terms(msg) == _terms(self._answering)
            and msg.share == self._answering.share
            and self._token_ok(msg, addr, now)
        ):
            self._answering = msg
        return self._answering

    def _token_ok(self, msg: wire.Hello, addr: Addr, now: float) -> bool:
        """§4.3: ``msg`` carries the token only ``addr`` can have read (this epoch's or the last)."""
        epoch = int((now - self._start) // TOKEN_EPOCH)
        return bool(msg.token) and msg.token in (
            self._token(msg, addr, epoch),
            self._token(msg, addr, epoch - 1),
        )

    def _address_proven(self, msg: wire.Hello, addr: Addr, now: float) -> bool:
        """§4.3: the HELLO carries the token only ``addr`` can have read (this epoch's or the
        last); if not, it gets a RETRY with one (within the answer rate) and binds nothing."""
        if self._token_ok(msg, addr, now):
            return True
        token = self._token(msg, addr, int((now - self._start) // TOKEN_EPOCH))
        if msg.token:
            self.stats.bad_tokens += 1
        join = bool(msg.features & wire.FEATURE_MULTICAST)  # §15: a group's announcement
        if join and not self._may_join(now):
            return False
        if self._may_answer(now):
            retry = wire.Accept(msg.session_id, msg.timestamp_us, 0, token, True, join)
            self._out.append((wire.encode_accept(retry), addr))
            self.stats.retries_sent += 1
        return False

    def _on_path_hello(self, msg: wire.Hello, addr: Addr, now: float) -> None:
        """§14: a HELLO of the bound session from an address not validated yet: another path
        joins as the session was bound (a RETRY first, then the HELLO with its token)."""
        bound = self.hello
        assert bound is not None
        if (
            self.state != State.RECEIVING
            or _terms(msg) != _terms(bound)
            or msg.share != bound.share
            or len(self.peers) >= MAX_PATHS
        ):
            self.stats.foreign += 1
            return
        if not self._address_proven(msg, addr, now):
            return
        self.peers.add(addr)
        self.stats.paths_joined += 1
        self._out.append((self._accept(msg), addr))

    def _accept(self, msg: wire.Hello) -> bytes:
        self._advertised = self.window_limit
        accept = wire.Accept(
            self.session_id, msg.timestamp_us, self._advertised, msg.token, fec=self.fec, held=self._held
        )
        if self._responder is None:
            return wire.encode_accept(accept)
        return self._responder.accept(accept)  # §17: our share, the transcript's finished MAC

    def _on_probe(self, msg: wire.Probe, now: float, arrived: float, addr: Addr) -> None:
        srtt = msg.srtt_us / 1e6
        if self.multipath and srtt > self._srtt and self._round_began is not None:
            # a longer round trip (a slower path joined, §14 rule 3) stretches the round under
            # way too: what it sends later is not taken for loss by a round timed for the old one
            self._round_at = max(self._round_at, self._round_began + 2 * srtt + self._queue_wait)
        self._srtt = srtt
        if msg.srtt_us and (not self._base_rtt or self._srtt < self._base_rtt):
            self._base_rtt = self._srtt
            self._update_flow()
        if self.multicast and msg.receivers:
            self._group_size = msg.receivers
        self._probe_echo = (msg.timestamp_us, min(arrived, now))
        self._queue_wait = now - self._probe_echo[1]
        if self.state == State.FINISHED:
            if msg.final and self._done is not None:
                self._send(self._done)
                self._linger_until = now + wire.linger_time(self._srtt)
            return
        nxt = min(msg.next_index, self.window_limit)
        if msg.final:
            end = ceil_div(msg.total_bytes, self.adu)
            if final_contradicts(msg, self.adu, self.total_bytes, self.gaps.highest, self.final_digest):
                self._abort(wire.AbortCode.PROTOCOL, FINAL_CONTRADICTS, INCONSISTENT_FINAL)
                return
            self.total_bytes, self.end_adus, self._end_tentative = msg.total_bytes, end, False
            self.final_digest = msg.digest
            nxt = end
        if nxt > self._frontier:
            self._frontier = nxt
        self._probes_seen += 1
        if self._probes_seen % self._answer_every() == 0:  # §15 rule 9: a large group in turns
            self._send_status(now, addr)

    def _answer_every(self) -> int:
        return wire.answer_every(self._group_size) if self.multicast else 1

    # ------------------------------------------------------------ timers and output

    def poll(self, now: float) -> list[tuple[bytes, Addr]]:
        """Control datagrams due at ``now`` with their destinations."""
        if self.outcome is None or self.state == State.FINISHED:
            self._timers(now)
        out, self._out = self._out, []
        if self.state == State.CLOSED:
            self.events.add(Ended())  # the last DONE, ABORT or STATUS are in ``out``
        return out

    def take_events(self) -> list[Event]:
        return self.events.take()

    def on_send_error(self, reason: str) -> None:
        """The driver's send failed in the local stack: a lost datagram (said once per reason)."""
        self.stats.send_errors += 1
        self.events.once(SendFailed(reason))

    def _timers(self, now: float) -> None:
        if self.state == State.IDLE:
            wait = self.cfg.wait_timeout
            if wait is not None and now - self._start >= wait:
                self._end(Outcome(ExitCode.PEER_UNREACHABLE, f"no sender arrived within {wait:g} s"))
                self.state = State.CLOSED
            return
        if self.state == State.FINISHED:
            if now >= self._linger_until:
                self.state = State.CLOSED
            return
        if now - self._last_heard >= self.cfg.timeout:
            msg = f"the sender went silent for {self.cfg.timeout:g} s"
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            return
        if self._keys_wanted() and now >= self._keys_ask_at:
            assert self._answering is not None
            self._send(self._accept(self._answering))  # §17 rule 8: the sender answers with KEYS
            self._keys_ask_at = now + KEYS_ASK_GAP
        if self._nak_due is not None and now >= self._nak_due:
            self._backed_off_naks()
        if now >= self._round_at:
            self._nak_round(now)
        if self._data_since_status and (now >= self._status_at or self._window_update_due()):
            self._send_status(now)

    def _keys_wanted(self) -> bool:
        """§17 rule 8: a member of a sealed group that has not got the group's secret yet."""
        keyed = self.keys is not None and self.group_keys is None
        return self.multicast and keyed and self.state == State.RECEIVING

    def _window_update_due(self) -> bool:
        """The flow window moved by a quarter of itself since the limit last advertised."""
        step = self._flow_adus // WINDOW_UPDATE
        return 0 < step <= self.window_limit - self._advertised

    def path_data(self, addr: Addr, nbytes: int, high: int, now: float) -> None:
        """§14: ``nbytes`` of DATA datagrams, up to index ``high`` - 1, arrived from ``addr`` (the
        session checked them): for that address's receive rate and its frontier (rule 3)."""
        self.path_bytes[addr] = self.path_bytes.get(addr, 0) + nbytes
        got = self._path_high.get(addr)
        if got is None or high > got[0]:
            self._path_high[addr] = (high, now)

    def _paths_frontier(self, now: float, stale: float) -> int | None:
        """§14 rule 3: the lowest of the paths' highest indices, over the paths whose highest
        rose within ``stale``: a hole below it was passed on every path that is delivering new
        data, so it is lost, not on its way on a slower path. (Each path delivers in order; a
        path that has stopped moving, dead or idle, holds nothing back.)"""
        moving = [high for high, at in self._path_high.values() if now - at <= stale]
        return min(moving) if len(moving) > 1 else None

    def _nak_round(self, now: float) -> None:
        # a repair crosses the path and then waits in our socket as the PROBE did
        self._round_began = now
        interval = max(MIN_ROUND, 2 * self._srtt + self._queue_wait)
        backoff = self._nak_backoff()
        self._round_at = now + interval + backoff
        below = min(self._nak_below, self.window_limit)
        self._nak_below = self._frontier
        if self.multipath:
            passed = self._paths_frontier(now, 2 * interval)
            if passed is not None and passed < below:
                below = passed  # the rest waits in _nak_below (the frontier) until the paths pass it
        if below <= self.gaps.cum:
            return
        missing = self.gaps.missing(self.gaps.cum, below)
        if not missing:
            return
        if backoff:
            # §15 rule 8: the NAK waits a random while; what the repairs of another member's
            # NAK bring meanwhile is not asked for again
            self._nak_pending = missing
            self._nak_due = now + self._draw_backoff(backoff)
            return
        self._send_naks(missing, below)

    def _nak_backoff(self) -> float:
        """§15 rule 8: the longest a group member's NAK waits (0: not a group, or alone)."""
        n = self._group_size
        if not self.multicast or n < 2:
            return 0.0
        return max(NAK_BACKOFF_MIN, NAK_BACKOFF_RTTS * (math.log(n) + 1) * self._srtt)

    def _draw_backoff(self, limit: float) -> float:
        """A wait in [0, limit) from the truncated exponential of RFC 5401 (NORM's NAK timer):
        few members draw a short wait, so the first NAK's repair reaches the rest first."""
        lam = math.log(self._group_size) + 1
        x = self._backoff_rng.random()
        return limit / lam * math.log((math.exp(lam) - 1) * x + 1)

    def _backed_off_naks(self) -> None:
        """The NAK a round drew, for what is still missing of it."""
        pending, self._nak_pending, self._nak_due = self._nak_pending, [], None
        missing = [r for a, b in pending for r in self.gaps.missing(a, b)]
        asked = sum(b - a for a, b in pending)
        self.stats.adus_nak_suppressed += asked - sum(b - a for a, b in missing)
        if missing:
            self._send_naks(missing, None)

    def _send_naks(self, missing: list[tuple[int, int]], below: int | None) -> None:
        """One round's NAK datagrams for ``missing``, as far as the credit pays (``below``:
        the round's bound, kept for the next round when the credit holds it back)."""
        # §7.2: NAKs are paid from what the peer sent (a silent sender is not NAKed for ever)
        received = self.stats.bytes_received + self._control_bytes  # new data, and control
        credit = self._nak_credit + NAK_CREDIT * (received - self._credited)
        self._credited = received
        self._nak_credit = min(float(NAK_CREDIT_CAP), credit)
        allowed = min(MAX_NAK_DATAGRAMS, int(self._nak_credit // wire.MAX_NAK_SIZE))
        if allowed < 1:
            self.stats.nak_rounds_held += 1
            if below is not None:
                self._nak_below = below  # the same holes, once credit comes
            return
        needs: list[tuple[int, int, int]] = []
        if self.fec:
            needs, missing = self._nak_plan(missing)
            if not needs and not missing:
                return
        datagrams, covered = wire.encode_naks(self.session_id, missing, allowed, needs)
        self.stats.nak_rounds += 1
        self.stats.naks_sent += len(datagrams)
        self.stats.naks_need += len(needs)
        self.stats.adus_nakked += sum(b - a for a, b in missing[:covered])
        for d in datagrams:
            self._nak_credit -= len(d)
            self._send(d)

    def _send_status(self, now: float, to: Addr | None = None) -> None:
        """A STATUS to ``to`` (None: the peer's address; a PROBE is answered where it came from)."""
        elapsed = now - self._rate_since
        if elapsed >= 0.02:
            # §6: every DATA byte that arrived, duplicates included: what the path delivers
            # (counting only new data read near zero while repairs crossed, and the sender's
            # rate control took that for congestion)
            self.stats.receive_rate_Bps = int((self.stats.wire_bytes - self._rate_bytes) / elapsed)
            self._rate_bytes, self._rate_since = self.stats.wire_bytes, now
            self._update_flow()
        target = self.peer if to is None else to
        rate = self._rate_of(target, now) if self.multipath else self.stats.receive_rate_Bps
        echo_ts, arrived = self._probe_echo
        delay_us = int((now - arrived) * 1e6) if echo_ts else 0
        self._advertised = self.window_limit
        status = wire.Status(
            self.session_id,
            self.gaps.cum,
            self.gaps.highest,
            self.gaps.count,
            self._advertised,
            rate,
            echo_ts,
            min(delay_us, 0xFFFFFFFF),
        )
        self._out.append((self._own(wire.encode_status(status)), target))
        self.stats.status_sent += 1
        self._status_at = now + STATUS_EVERY * self._answer_every()
        self._data_since_status = False

    def _rate_of(self, addr: Addr, now: float) -> int:
        """§14: the rate of the DATA that came from ``addr``, over the time since its last
        STATUS (at least 20 ms; until then the rate that STATUS reported)."""
        nbytes = self.path_bytes.get(addr, 0)
        before, since, rate = self._path_rate.get(addr, (0, self.began or now, 0))
        if now - since >= 0.02:
            rate = int((nbytes - before) / (now - since))
            self._path_rate[addr] = (nbytes, now, rate)
        return rate

    def next_deadline(self, now: float) -> float:
        if self.outcome is not None and self.state != State.FINISHED:
            return now + 3600.0
        if self.state == State.IDLE:
            wait = self.cfg.wait_timeout
            return now + 3600.0 if wait is None else self._start + wait
        if self.state == State.FINISHED:
            return self._linger_until
        t = min(self._last_heard + self.cfg.timeout, self._round_at)
        if self._keys_wanted():
            t = min(t, self._keys_ask_at)
        if self._nak_due is not None:
            t = min(t, self._nak_due)
        if self._data_since_status:
            t = min(t, self._status_at)
            if self._window_update_due():
                t = now
        return t

    def _own(self, datagram: bytes) -> bytes:
        """§17: a message of the bound session, sealed once the keys are known (an ACCEPT
        never is). Answers to HELLOs that bind nothing (RETRY, rejections) do not come here:
        they stay in clear, so nothing sealed is ever made because of a datagram in clear."""
        if self.keys is None or datagram[1] == wire.MsgType.ACCEPT:
            return datagram
        return self.keys.out.seal(datagram, wire.HEADER_SIZE)

    def _send(self, datagram: bytes) -> None:
        assert self.peer is not None
        self._out.append((self._own(datagram), self.peer))

    def _send_abort_to(self, session_id: int, addr: Addr, code: wire.AbortCode, reason: str) -> None:
        self._out.append((wire.encode_abort(wire.Abort(session_id, code, reason)), addr))

    def _abort(self, code: wire.AbortCode, reason: str, outcome: Outcome) -> None:
        if self.peer is not None:
            d = wire.encode_abort(wire.Abort(self.session_id, code, reason))
            self._out.extend([(self._own(d), self.peer) for _ in range(ABORT_COPIES)])
            if self.keys is not None and not self.sender_keyed:  # it may not have the keys yet
                self._out.extend([(d, self.peer)] * ABORT_COPIES)
        self._end(outcome)
        self.state = State.CLOSED

    def _end(self, outcome: Outcome) -> None:
        """The outcome is known (the first one stands)."""
        if self.outcome is None:
            self.outcome = outcome
            self.events.add(Finished(outcome))
