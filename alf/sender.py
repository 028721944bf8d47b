"""The sender's protocol state machine (sans-IO; docs/protocol.md §4-§11).

Invariants:
- No DATA leaves before an ACCEPT echoed our random session id (§4.3 rule 2).
- Every index below ``next_new`` has been handed out at least once; repairs name only such
  indices and never one below ``acked``.
- New data never goes past the receiver's window limit, the known end, or what the source has
  made available.
- Every wait is bounded by ``timeout`` of silence from the peer, or of no progress while data
  is outstanding (a peer that answers but gets none of the DATA); the outcome is set exactly once.
The core deals in runs of ADU indices; it never touches payload bytes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

import cc
from alf import fec, resume, stripe, wire
from alf.errors import ExitCode, Outcome, aborted_by
from alf.events import Ended, Event, EventLog, FallBack, Finished, Joined, PeerAborted, SendFailed
from alf.pacing import Pacer, bucket_bytes
from alf.ranges import before_held, ceil_div, merge_ranges, skip_held, subtract_ranges, trim_ranges
from alf.verdict import verdict_outcome

if TYPE_CHECKING:
    from alf import seal

DEFAULT_RATE_BPS = 800e6  # --cc fixed
DEFAULT_CEILING_BPS = 40e9  # --cc adaptive: above what one host sends (docs/performance.md)
HELLO_FIRST_RETRY = 0.2
HELLO_MAX_RETRY = 2.0
FINAL_MIN = 0.02
ABORT_COPIES = 3
CLOSE_COPIES = 3

# A handshake answered only by ICMP 'port unreachable' this long ends: the port is closed (a
# receiver started a moment after its sender still makes it; a silent path waits --timeout).
REFUSED_GIVE_UP = 2.5
REFUSED_RETRY = 0.02  # the next HELLO after a refusal (so at most 1/this HELLOs a second while refused)
# §14: a path silent this long while it has data outstanding is down (at most, and at least)
PATH_DOWN_MAX = 1.0
PATH_DOWN_MIN = 0.3
REVIVE_FIRST = 0.2  # a down path is probed after this, doubling ...
REVIVE_MAX = 1.0  # ... up to this: a path back is back within a second
REPAIR_WAIT = 0.005  # a repair waits this long at most for the healthiest path's pacer
# §16 --fec auto, unicast: parity goes with the last round trips' blocks on a path whose round
# trip is at least FEC_AUTO_RTT and that lost at least FEC_AUTO_LOSS of what it sent after the
# start-up (LossMeter: over FEC_AUTO_HISTORY ADUs or more), at FEC_AUTO_GAIN times that loss
# (at most FEC_AUTO_MAX), plus FEC_AUTO_EXTRA symbols (losses come in bursts: a block's share
# varies far more than a Bernoulli loss's would)
FEC_AUTO_RTT = 0.1
FEC_AUTO_LOSS = 0.002
FEC_AUTO_HISTORY = 1000
FEC_AUTO_MAX = 0.25
FEC_AUTO_GAIN = 6.0
FEC_AUTO_EXTRA = 2
FEC_AUTO_TAIL_RTTS = 6.0  # ... for the blocks of the last this many round trips
PATH_JOIN_WAIT = 5.0  # a further path whose HELLOs get no ACCEPT in this long is dropped


class LossMeter:
    """§16 --fec auto: the share of the data a path loses, from the first ADU sent after the
    controller's start-up (``start``) on: what a start-up's overshoot lost says nothing of the
    path. Counted by the NAKs that name ADUs from ``start`` on (less those already waiting to
    be resent), over the span up to the highest ADU any NAK named; before enough NAKs, by the
    holes the receiver's STATUS shows beyond where it was once it reached ``start`` (``_base``,
    taken while no resend is on its way), as long as nothing has been resent since (a resend on
    its way is still a hole: a count of holes and resends would count it twice). The share the
    first parity was sized by is kept from then on (``_kept``): holes that parity heals are
    never seen."""

    def __init__(self) -> None:
        self.start: int | None = None
        # the receiver's highest and holes, and the ADUs resent, once it reached start
        self._base: tuple[int, int, int] | None = None
        self._nakked = 0  # ADUs from start on named by NAKs
        self.named = 0  # one past the highest ADU a NAK named
        self._kept: float | None = None
        self._started = False  # the controller was seen in its start-up

    def on_status(self, starting: bool, next_new: int, peer: PeerState, resent: int, quiet: bool) -> None:
        """After a STATUS; ``quiet``: nothing was resent for a round trip."""
        if self.start is None:
            if starting:
                self._started = True
            else:  # (a controller with no start-up: from the first ADU)
                self.start = next_new if self._started else 0
        elif self._base is None and peer.highest >= self.start and quiet:  # (all before it is in)
            self._base = (peer.highest, peer.highest - peer.received, resent)

    def on_nak(self, fresh: list[tuple[int, int]]) -> None:
        """``fresh``: what a NAK named that is not already waiting to be resent."""
        if fresh:
            self.named = max(self.named, fresh[-1][1])
            if self.start is not None:
                self._nakked += sum(max(0, b - max(a, self.start)) for a, b in fresh)

    def keep(self, share: float) -> None:
        """The first parity was sized by ``share``."""
        if self._kept is None:
            self._kept = share

    def share(self, peer: PeerState, resent: int) -> float | None:
        """The share lost, or None if not known yet."""
        if self._kept is not None:
            return self._kept
        if self.start is None:
            return None
        if self.named - self.start >= FEC_AUTO_HISTORY:
            return min(1.0, self._nakked / (self.named - self.start))
        if self._base is None:
            return None
        highest, holes, was_resent = self._base
        seen = peer.highest - highest
        if resent != was_resent or seen < FEC_AUTO_HISTORY:
            return None
        return max(0.0, (peer.highest - peer.received - holes) / seen)


def rtt_sample(now: float, echo_us: int, delay_us: int) -> float | None:
    """The round trip an echo of our timestamp ``echo_us`` measures, arriving at ``now`` after
    the peer held it ``delay_us`` (protocol §6); None if it is not plausible."""
    sample = (wire.to_us(now) - echo_us - delay_us) / 1e6
    return sample if 0 < sample < 60 else None


def smooth_rtt(srtt: float | None, rttvar: float, sample: float) -> tuple[float, float]:
    """The smoothed RTT and its variation after ``sample`` (RFC 6298's weights)."""
    if srtt is None:
        return sample, sample / 2
    return 0.875 * srtt + 0.125 * sample, 0.75 * rttvar + 0.25 * abs(srtt - sample)


@dataclass(frozen=True)
class SenderConfig:
    adu_size: int = wire.DEFAULT_ADU_SIZE
    rate_bps: float = DEFAULT_RATE_BPS
    checkphrase: str = ""
    checksum: bool = False
    timeout: float = 30.0
    digest: wire.DigestAlg = wire.DigestAlg.XXH3_128
    cc: str = "fixed"  # a name from cc.names(); rate_bps is its ceiling
    min_rate_bps: float = 1e6  # the floor for adaptive controllers
    hello_timeout: float | None = None  # give up the handshake sooner (--transport auto)
    features: int = 0  # §4.4: what the HELLO asks for beyond what the paths need (tests offer bits)
    paths: int = 1  # §14: paths to the receiver (more than one asks for MULTIPATH)
    backup: tuple[int, ...] = ()  # the paths that carry data only while no other is up
    stripe: str = "prefer"  # alf.stripe's policy for new data
    path_rates: tuple[float | None, ...] = ()  # a path's own ceiling below rate_bps (None: none)
    fec: bool = False  # §16: a file may be repaired with parity (the driver has a codec)
    fec_ratio: float | None = None  # §16: unicast, parity sent with every block; None: "auto"
    key: bytes | None = None  # §17: the pre-shared key: the session is sealed (None: in clear)


@dataclass(frozen=True)
class Run:
    """Send ADUs [first, first+count) on path ``path``; or (``row`` >= 0, §16) ``count``
    parity symbols, rows ``row`` on, of the block whose first ADU is ``first``."""

    first: int
    count: int
    path: int
    repair: bool
    row: int = -1


@dataclass
class SenderStats:
    adus_new: int = 0
    adus_repair: int = 0  # repairs sent: ADUs again, and parity symbols (§16)
    adus_parity: int = 0  # ... of which parity symbols
    blocks_resent: int = 0  # §16: blocks whose parity rows ran out, sent again whole
    parity_proactive: int = 0  # §16: parity symbols sent unasked, with their blocks (unicast)
    wire_bytes: int = 0  # datagram bytes handed to the socket, headers and repairs included
    naks_received: int = 0
    adus_nak_requested: int = 0
    probes_sent: int = 0
    hellos_sent: int = 0
    retries_received: int = 0  # RETRY ACCEPTs: the receiver validating our address (§4.3)
    send_errors: int = 0  # sends the local stack refused (a firewall rule, a route): lost
    malformed: int = 0
    foreign: int = 0
    unexpected: int = 0
    unauthenticated: int = 0  # §17: datagrams that failed to open under the session's keys: dropped
    keys_sent: int = 0  # §17 rule 8: a sealed group's secret sent to a member (KEYS)
    dropped_injected: int = 0
    adus_held: int = 0  # §18: ADUs the receiver held already (resumed): hashed, not sent
    bytes_held: int = 0  # ... their bytes
    srtt_ms: float = 0.0
    acked_adus: int = 0
    receiver_rate_Bps: int = 0
    paths_joined: int = 0  # §14: paths beyond the first that an ACCEPT validated
    path_downs: int = 0  # paths declared down (silent with data outstanding)


class Datagram(NamedTuple):
    """A control datagram the core hands its driver: the bytes, the path they go on, and the
    address (None: the connected socket's peer)."""

    data: bytes
    path: int
    addr: object | None


@dataclass(eq=False)  # one path is itself only: `in` and == go by identity, not by 25 fields
class PathState:
    """What belongs to one network path: its pacer and rate controller, its round trip, its
    PROBE timer, and what was issued on it: ``in_flight`` holds the runs sent on it, in the
    order sent, until the peer's cumulative acknowledgement passes them (a run leaves once it
    and every run before it are acknowledged), so a path that dies can name what it carried."""

    id: int
    cc: cc.Controller
    pacer: Pacer
    probe_at: float  # when the next PROBE goes on this path
    final_gap: float = FINAL_MIN  # between FINAL PROBEs, doubling while unanswered
    heard_since_final: bool = False
    srtt: float | None = None
    rttvar: float = 0.0
    issued_adus: int = 0  # ADUs sent on this path, first sends and repairs
    in_flight: deque[Run] = field(default_factory=deque)
    backup: bool = False
    addr: object | None = None  # the receiver's address on it (its ACCEPT's source; None: connected)
    joined: bool = False  # an ACCEPT arrived on it (§4.3 rule 2, §14): it may carry DATA
    up: bool = False  # joined, and not down
    failed: str = ""  # it never joined: why (it is no longer tried)
    heard_at: float = 0.0  # when a datagram last arrived on it
    token: int = 0  # §4.3: the receiver's address-validation token for it, once a RETRY brought one
    hello_at: float = 0.0  # when its next HELLO goes (until it joined)
    hello_gap: float = HELLO_FIRST_RETRY
    hello_since: float = 0.0  # when its first HELLO went
    extra_hellos: int = 0  # copies beyond one of its next HELLO
    new_adus: int = 0
    repair_adus: int = 0
    nakked_adus: int = 0  # NAKed ADUs it had carried (its controller is charged with them)
    app_limited: bool = False  # since its last STATUS it could have sent more (cc.Feedback)
    receive_rate_Bps: int = 0  # what the receiver said this path delivers (§14)
    down_after: float = PATH_DOWN_MIN  # silent this long with data outstanding: down (_rtt_sample sets it)
    revive_gap: float = 0.0  # while down: between its PROBEs, doubling
    downs: int = 0

    @property
    def loss(self) -> float:
        """The share of what it carried that the receiver NAKed."""
        return self.nakked_adus / self.issued_adus if self.issued_adus else 0.0

    @property
    def usable(self) -> bool:
        """It may carry DATA (``alf.stripe.eligible`` asks)."""
        return self.up

    @property
    def state(self) -> str:
        if self.failed:
            return "failed"
        if not self.joined:
            return "joining"
        return "up" if self.up else "down"


@dataclass
class PeerState:
    """What belongs to one receiver: what it may take, has acknowledged and holds, when it
    was last heard, and where it answers from (None: the connected socket's peer)."""

    last_heard: float
    addr: object | None = None
    window_limit: int = 0  # it may be sent ADU indices below this (protocol §6)
    acked: int = 0  # it holds every ADU below this
    received: int = 0  # the most distinct ADUs it reported holding
    highest: int = 0  # one past the highest index it reported holding
    progress_at: float = 0.0  # when it last showed it got more of our data
    verdict: Outcome | None = None  # what its DONE said

    def __post_init__(self) -> None:
        self.progress_at = self.last_heard


class State(Enum):
    HANDSHAKE = "handshake"
    SENDING = "sending"
    FINISHING = "finishing"
    DONE = "done"


class Sender:
    def __init__(
        self,
        config: SenderConfig,
        session_id: int,
        kind: wire.Kind,
        total_bytes: int | None,
        now: float,
        offset: int | None = None,
        source: tuple[int, int, int] | None = None,
    ) -> None:
        """``offset``: the content is a range of its source from there (§18; None: all of it); ``source``: the
        source file's size, mtime_ns and inode (§18: a receiver may hold part of it already)."""
        if not 1 <= config.adu_size <= wire.MAX_ADU_SIZE:
            raise ValueError("ADU size out of range")
        if (kind == wire.Kind.FILE) != (total_bytes is not None):
            raise ValueError("a file has a length, a stream has none")
        self.cfg = config
        self.session_id = session_id
        self.kind = kind
        self.state = State.HANDSHAKE
        self.outcome: Outcome | None = None
        self.events = EventLog()  # what the driver and the library learn (alf.events)
        self.began: float | None = None  # when the receiver's ACCEPT came: the transfer's start
        self._refused_since: float | None = None  # the handshake met 'port unreachable' since then
        self.stats = SenderStats()
        self.adu = config.adu_size
        # §17: sealed, every DATA carries a packet number and a tag as well
        self.overhead = wire.SEAL_OVERHEAD if config.key is not None else 0
        self._dgram = wire.DATA_HEADER_SIZE + self.overhead + config.adu_size
        if config.paths < 1 or any(not 0 <= b < config.paths for b in config.backup):
            raise ValueError("paths: at least one; backups among them")
        # Paths and peers: every run records its path, every answer is judged against its peer
        # (one peer today: multicast adds to the list).
        self.paths = [self._new_path(p, now) for p in range(config.paths)]
        for b in config.backup:
            self.paths[b].backup = True
        self.multipath = config.paths > 1
        self._features = config.features | (wire.FEATURE_MULTIPATH if self.multipath else 0)
        self.offset = offset or 0
        self.source = source or (0, 0, 0)
        if offset is not None:
            self._features |= wire.FEATURE_RANGE
        if source is not None and (kind == wire.Kind.FILE or self._features & wire.FEATURE_COMPRESS):
            self._features |= wire.FEATURE_RESUME  # (§19: a file's compressed blocks name it too)
        self._held: list[tuple[int, int]] = []  # §18: what the receiver holds, not sent yet passed
        self.peer_held: tuple[tuple[int, int], ...] | None = None  # what the first ACCEPT named held
        if config.fec and kind == wire.Kind.FILE and not self.multipath:
            self._features |= wire.FEATURE_FEC
        self.peer_fec = False  # §16: the receiver decodes parity (its ACCEPT said so)
        self.keys: seal.Keys | None = None  # §17: the session's keys, once an ACCEPT proved them
        self._initiator: seal.Initiator | None = None
        if config.key is not None:
            from alf import seal as _seal  # (cryptography costs 70 ms to import: only with a key)

            self._initiator = _seal.Initiator(config.key)
            self._features |= wire.FEATURE_KEY
        # --rate caps the sum of the paths' rates (each path's controller has it as its ceiling)
        self._total = Pacer(config.rate_bps, self._burst(config.rate_bps), now) if self.multipath else None
        self._shares = stripe.Shares(config.paths)
        # which path each new run went on (first indices ascending) and each repair: a NAKed
        # ADU is charged to the path that last carried it (multipath only)
        self._new_firsts: list[int] = []
        self._new_paths: list[int] = []
        self._repaired_on: dict[int, int] = {}
        self.peers = [PeerState(now)]
        self.total_bytes = total_bytes
        self.end_adus: int | None = None if total_bytes is None else ceil_div(total_bytes, self.adu)
        self.available = self.end_adus or 0
        self.source_window: int | None = None  # the most unacknowledged ADUs the source holds
        self._carrier_list: list[PathState] | None = None  # _carriers, until what it depends on moves
        self.digest: bytes | None = None
        self.next_new = 0
        self._repairs: list[tuple[int, int]] = []  # sorted, disjoint [a, b)
        self._parity: dict[int, int] = {}  # §16: block -> parity symbols queued for it
        self._parity_row: dict[int, int] = {}  # block -> its next fresh parity row
        self._loss = LossMeter()  # --fec auto: the path's loss since start-up
        self._undecided: list[int] = []  # --fec auto: blocks of the tail sent before it was known
        self._last_resend = float("-inf")  # when an ADU was last resent
        self._shared_repair = 0  # ADUs sent as repairs while new data waited too
        self._shared_new = 0  # ADUs of new data sent while repairs waited too
        self._out: list[Datagram] = []
        self._start = now
        self.paths[0].hello_at = self.paths[0].hello_since = now
        self._tag = wire.checkphrase_tag(config.checkphrase)

    def _new_path(self, p: int, now: float) -> PathState:
        controller = self._controller(p, now)
        return PathState(
            p, controller, Pacer(controller.rate_bps, self._burst(controller.rate_bps), now), now
        )

    def _controller(self, p: int, now: float) -> cc.Controller:
        """Path ``p``'s rate controller, fresh: ``--cc`` with ``--rate`` as its ceiling, or the
        path's own rate if it has one and that is less."""
        cfg = self.cfg
        own = cfg.path_rates[p] if p < len(cfg.path_rates) else None
        ceiling = cfg.rate_bps if own is None else min(own, cfg.rate_bps)
        return cc.create(cfg.cc, ceiling, min(cfg.min_rate_bps, ceiling), now)

    def _to_peer(self, data: bytes, path: int = 0) -> Datagram:
        """A control datagram for the peer, on ``path`` (to its address there)."""
        return Datagram(data, path, self.paths[path].addr)

    def _to_all(self, data: bytes) -> list[Datagram]:
        """One copy on every path that joined (the last words of a session: CLOSE, ABORT)."""
        return [self._to_peer(data, p.id) for p in self.paths if p.joined] or [self._to_peer(data)]

    @property
    def path(self) -> PathState:
        """The first path (the only one of a single-path transfer)."""
        return self.paths[0]

    @property
    def peer(self) -> PeerState:
        """The one receiver of a unicast transfer."""
        return self.peers[0]

    def _burst(self, rate_bps: float) -> int:
        """The pacer's bucket: ``alf.pacing.BURST_TIME`` at the rate, or 64 datagrams if more."""
        return bucket_bytes(rate_bps, 64 * self._dgram)  # 4 ms at the rate, or 64 datagrams

    # ------------------------------------------------------------ input from the source

    def add_available(self, n_adus: int) -> None:
        """The source can now provide ADUs [0, n_adus)."""
        if n_adus > self.available:
            self.available = n_adus

    def set_end(self, total_bytes: int) -> None:
        """The content is ``total_bytes`` long (a stream reached its end)."""
        if self.total_bytes is not None and self.total_bytes != total_bytes:
            raise ValueError("content length changed")
        self.total_bytes = total_bytes
        self.end_adus = ceil_div(total_bytes, self.adu)
        self.available = self.end_adus
        self._carrier_list = None

    def set_digest(self, digest: bytes) -> None:
        self.digest = digest

    # ------------------------------------------------------------ outputs

    def poll(self, now: float) -> list[Datagram]:
        """Control datagrams due at ``now`` (HELLO, PROBE, CLOSE, ABORT), each with the path it
        goes on and its address (None: the connected socket's peer)."""
        if self.outcome is None:
            self._timers(now)
        out, self._out = self._out, []
        if self.keys is not None:  # §17: all but HELLOs go sealed once the keys are known
            out = [self._sealed(d) for d in out]
        if self.outcome is not None:
            self.events.add(Ended())  # the last ABORT or CLOSE copies are in ``out``
        return out

    def _sealed(self, d: Datagram) -> Datagram:
        """§17: a datagram of ours as it goes (a HELLO in clear, the rest sealed)."""
        assert self.keys is not None
        if d.data[1] == wire.MsgType.HELLO:
            return d
        return d._replace(data=self.keys.out.seal(d.data, wire.HEADER_SIZE))

    def take_events(self) -> list[Event]:
        return self.events.take()

    def on_send_error(self, reason: str) -> None:
        """The driver's send failed in the local stack: a lost datagram (said once per reason)."""
        self.stats.send_errors += 1
        self.events.once(SendFailed(reason))

    def on_refused(self, now: float) -> None:
        """The socket reported ICMP 'port unreachable' (ECONNREFUSED): during the handshake,
        nothing listens on the receiver's port; later it is a late echo, and silence decides.
        A receiver started with us binds its port any moment (`alf recv & alf send`: 6 of 15
        such 1 KB transfers waited out the first HELLO gap), so while the port refuses, the
        next HELLO goes REFUSED_RETRY after the refusal, not a whole gap later."""
        if self.state == State.HANDSHAKE:
            if self._refused_since is None:
                self._refused_since = now
            self.path.hello_at = min(self.path.hello_at, now + REFUSED_RETRY)

    def _timers(self, now: float) -> None:
        wait = self.cfg.hello_timeout
        closed = " (the port is closed: nothing listens there)" if self._refused_since is not None else ""
        if self.state == State.HANDSHAKE and wait is not None and now - self.peer.last_heard >= wait:
            msg = f"no answer over UDP within {wait:g} s{closed}"
            self.events.add(FallBack(msg, self._refused_since))
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            return
        refused_for = None if self._refused_since is None else now - self._refused_since
        if self.state == State.HANDSHAKE and refused_for is not None and refused_for >= REFUSED_GIVE_UP:
            msg = f"nothing listens on the receiver's UDP port (port unreachable for {refused_for:.1f} s)"
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            return
        if now - self.peer.last_heard >= self.cfg.timeout:
            if self.state == State.HANDSHAKE:
                msg = f"no receiver answered within {self.cfg.timeout:g} s{closed}"
            elif self.state == State.FINISHING and self.peer.acked >= (self.end_adus or 0):
                # it acknowledged every ADU: only its DONE is missing (lost, or it is stuck)
                msg = (
                    f"no verdict came from the receiver within {self.cfg.timeout:g} s of its last "
                    "answer, after it acknowledged the whole content: nothing says it was verified"
                )
            else:
                msg = f"the receiver went silent for {self.cfg.timeout:g} s"
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            return
        if self.state == State.HANDSHAKE:
            self._hello_due(self.path, now)
            return
        # With --transport auto and not one ADU through yet, TCP may carry what UDP does not:
        # give up on UDP sooner (the receiver follows a sender whose ABORT says TIMEOUT to TCP
        # while it holds no DATA).
        hello_wait = self.cfg.hello_timeout
        auto = hello_wait is not None and self.peer.received == 0
        limit = min(self.cfg.timeout, 2 * hello_wait) if auto and hello_wait is not None else self.cfg.timeout
        if self.peer.acked >= self.next_new:
            self.peer.progress_at = now  # nothing outstanding: nothing to wait for
        elif now - self.peer.progress_at >= limit:
            # The receiver answers (STATUS, NAKs) but holds no more of the data than it did: a
            # path that carries small datagrams and drops DATA, as a path-MTU black hole does.
            what = "none" if self.peer.received == 0 else "no more"
            msg = (
                f"the receiver answers but got {what} of the data for {limit:g} s "
                f"(a path that drops large datagrams? try a smaller --adu-size than {self.adu})"
            )
            if auto:
                self.events.add(FallBack(msg, self._refused_since))
            self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(ExitCode.PEER_UNREACHABLE, msg))
            return
        self._maybe_finishing(now)
        if self.multipath:
            self._path_timers(now)
        slowest = max((p.srtt or 0.0) for p in self.paths if p.up or p is self.path)  # §14 rule 3
        srtt_us = int(slowest * 1e6) & 0xFFFFFFFF
        for path in self.paths:
            if path.up:
                path.cc.on_silence(now, now - (path.heard_at if self.multipath else self.peer.last_heard))
                self._follow_cc(path, now)
            if path.joined and now >= path.probe_at:  # a down path: on its own (doubling) timer
                self._probe(path, now, srtt_us)

    def _probe(self, path: PathState, now: float, srtt_us: int) -> None:
        """A PROBE on ``path`` (§8; FINAL once everything was sent). ``srtt_us``: the largest
        smoothed RTT of the paths in use (§14 rule 3: the receiver's NAK rounds outlast the
        difference between the paths)."""
        final = self.state == State.FINISHING
        probe = wire.Probe(
            self.session_id,
            self.next_new,
            wire.to_us(now),
            srtt_us,
            final,
            (self.total_bytes or 0) if final else 0,
            (self.digest or bytes(32)) if final else bytes(32),
            self._group_size(),
        )
        self._out.append(self._to_peer(wire.encode_probe(probe), path.id))
        self.stats.probes_sent += 1
        if not path.up:  # down: probed on a doubling timer until it answers
            path.revive_gap = min(max(path.revive_gap * 2, REVIVE_FIRST), REVIVE_MAX)
            path.probe_at = now + path.revive_gap
        elif final:
            if not path.heard_since_final:
                gap_max = wire.final_gap_max(path.srtt or 0.0)
                path.final_gap = min(path.final_gap * 2, gap_max)
            path.heard_since_final = False
            path.probe_at = now + path.final_gap
        else:
            path.probe_at = now + wire.probe_spacing(path.srtt or 0.0)

    def _hello_due(self, path: PathState, now: float) -> None:
        """HELLO on ``path`` when its timer says (the handshake, or a further path joining)."""
        if now < path.hello_at:
            return
        copies = 1 + path.extra_hellos
        path.extra_hellos = 0
        self._out.extend([self._to_peer(self._hello(now, path.token), path.id)] * copies)
        self.stats.hellos_sent += copies
        path.hello_at = now + path.hello_gap
        path.hello_gap = min(path.hello_gap * 2, HELLO_MAX_RETRY)

    def _hello(self, now: float, token: int) -> bytes:
        """Our HELLO (§4.1), stamped ``now``, carrying ``token`` (0: none yet)."""
        hello = wire.Hello(
            self.session_id,
            self.adu,
            self.kind,
            wire.UNKNOWN_LENGTH if self.kind == wire.Kind.STREAM else (self.total_bytes or 0),
            wire.to_us(now),
            self._tag,
            self.cfg.digest,
            self.cfg.checksum and not self.overhead,  # §17: sealed, the tag is the check
            self._features,
            token,
            self._initiator.share if self._initiator is not None else b"",
            offset=self.offset,
            source=self.source,
        )
        encoded = wire.encode_hello(hello)
        return encoded if self._initiator is None else self._initiator.bind(encoded)

    def _path_timers(self, now: float) -> None:
        """§14: further paths join; a path silent with data outstanding goes down."""
        for path in self.paths:
            if path.failed:
                continue
            if not path.joined:
                if now - path.hello_since >= min(PATH_JOIN_WAIT, self.cfg.timeout):
                    path.failed = f"no answer within {min(PATH_JOIN_WAIT, self.cfg.timeout):g} s"
                    self.events.add(SendFailed(f"path {path.id + 1}: {path.failed}; going on without it"))
                else:
                    self._hello_due(path, now)
                continue
            if path.up and path.in_flight and now - path.heard_at >= path.down_after:
                self._path_down(path, now)

    def _path_down(self, path: PathState, now: float) -> None:
        """Nothing came back on ``path`` for too long: what it carried and is not acknowledged
        goes to the repair queue, for the other paths, and the path is probed until it answers."""
        path.up = False
        self._carrier_list = None
        path.downs += 1
        self.stats.path_downs += 1
        acked = self.peer.acked
        lost = [(max(r.first, acked), r.first + r.count) for r in path.in_flight if r.first + r.count > acked]
        path.in_flight.clear()
        if lost:
            self._repairs = merge_ranges(self._repairs + lost)
        path.revive_gap = 0.0
        path.probe_at = now + REVIVE_FIRST
        self.events.add(SendFailed(f"path {path.id + 1} went silent; its data goes on the other paths"))

    def _path_back(self, path: PathState, now: float) -> None:
        """A down path answers again: it carries data from its controller's start-up."""
        self._shares.level([p.id for p in self.paths if p.up])  # it comes back level with the rest
        path.up = True
        self._carrier_list = None
        path.cc = self._controller(path.id, now)
        path.pacer = Pacer(path.cc.rate_bps, self._burst(path.cc.rate_bps), now)
        path.probe_at = now
        path.final_gap = max(2 * (path.srtt or 0), FINAL_MIN)

    def _maybe_finishing(self, now: float) -> None:
        if (
            self.state == State.SENDING
            and self.end_adus is not None
            and self.next_new >= self.end_adus
            and self.digest is not None
        ):
            self.state = State.FINISHING
            for path in self.paths:
                if path.up:
                    path.final_gap = max(2 * (path.srtt or 0), FINAL_MIN)
                    path.heard_since_final = True
                    path.probe_at = now

    def next_run(self, now: float, max_count: int, on: int | None = None) -> Run | None:
        """The next run of ADUs to send now, within the pacers' allowance; None if nothing.
        ``on``: only a run for that path (the rest of a batch goes where its first run went)."""
        if self.state not in (State.SENDING, State.FINISHING) or self.outcome is not None:
            return None
        new_limit = self._new_limit()
        queued = bool(self._repairs or self._parity)
        new_first = bool(queued and self.next_new < new_limit and self._shared_repair > 3 * self._shared_new)
        repair = queued and not new_first
        if not repair and self.next_new >= new_limit:
            self._nothing_to_send(now)
            return None
        if repair and self._parity:
            need = next(iter(self._parity.values()))
        elif repair:
            need = self._repairs[0][1] - self._repairs[0][0]
        else:
            need = new_limit - self.next_new
        path, n = self._pick(now, max_count, repair, on, need)
        if path is None and repair and self.multipath and self.next_new < new_limit:
            # the healthiest path is busy for a moment: the repair waits for it, and new data
            # goes meanwhile on a path that can take it
            repair = False
            path, n = self._pick(now, max_count, False, on, new_limit - self.next_new)
        if path is None or n <= 0:
            return None
        if new_first:
            # Both wait: repairs go first, but get at most three ADUs for each new one, counted
            # in ADUs (repairs of random loss are runs of one ADU; counted in turns they fell
            # behind, and the re-NAKed backlog ate the sender: 1 GiB at 5% loss took 130 s).
            run = self._new_run(now, n, new_limit, path)
            self._shared_new += run.count
            return run
        if not repair:
            return self._new_run(now, n, new_limit, path)
        if self._parity:
            return self._parity_run(now, n, path, new_limit)
        a, b = self._repairs[0]
        count = min(n, b - a)
        if a + count == b:
            self._repairs.pop(0)
        else:
            self._repairs[0] = (a + count, b)
        run = Run(a, count, path, True)
        self.stats.adus_repair += count
        self._last_resend = now
        self.paths[path].repair_adus += count
        if self.next_new < new_limit:
            self._shared_repair += count
        if self.multipath:
            for i in range(a, a + count):
                self._repaired_on[i] = path
        return self._issued(run, now)

    def _parity_run(self, now: float, n: int, path: int, new_limit: int) -> Run:
        """§16: fresh parity symbols of the first block queued, as many as it needs and the
        pacer allows (rows were checked to last when they were queued)."""
        block, want = next(iter(self._parity.items()))
        count = min(n, want)
        if count == want:
            del self._parity[block]
        else:
            self._parity[block] = want - count
        row = self._parity_row.get(block, 0)
        self._parity_row[block] = row + count
        run = Run(block * fec.BLOCK, count, path, True, row)
        self.stats.adus_repair += count
        self.stats.adus_parity += count
        self.paths[path].repair_adus += count
        if self.next_new < new_limit:
            self._shared_repair += count
        return self._issued(run, now)

    def _pick(
        self, now: float, max_count: int, repair: bool, on: int | None, need: int = 1
    ) -> tuple[int | None, int]:
        """The path for the next run and how many ADUs may go on it now: in alf.stripe's
        order, the first whose pacer allows the whole run; if none does, the one that allows
        the most. (The first that allowed one ADU was always the first path under prefer: its
        bucket refills an ADU's worth while the loop turns, so it sent runs of one and the
        second path was never given anything, its controller idling at 500 Mbit/s.)"""
        dgram = self._dgram
        if not self.multipath:
            return 0, min(max_count, int(self.path.pacer.available(now) // dgram))
        assert self._total is not None
        room = min(max_count, int(self._total.available(now) // dgram))
        if room <= 0:
            return None, 0
        want = min(room, max(1, need))
        if on is not None:
            candidates = [on] if self.paths[on] in self._carriers() else []
        else:
            views = self._views(now, timed=repair or self.cfg.stripe == "minrtt")
            candidates = stripe.repair_order(views) if repair else stripe.order(self.cfg.stripe, views)
        if repair and on is None and candidates:
            # repairs go on the healthiest path: what its pacer allows now, or they wait for it a
            # moment (new data meanwhile goes elsewhere); only a path busy for longer is passed
            pacer = self.paths[candidates[0]].pacer
            n = min(room, want, int(pacer.available(now) // dgram))
            if n > 0:
                return candidates[0], n
            if pacer.delay_for(dgram, now) <= REPAIR_WAIT:
                return None, 0
        best, most = None, 0
        for p in candidates:
            n = min(room, int(self.paths[p].pacer.available(now) // dgram))
            if n >= want:
                return p, n
            if n > most:
                best, most = p, n
        return best, most

    def _window(self, usable: list[PathState]) -> int | None:
        """With more than one ``usable`` path, the ADUs that may be unacknowledged at once: the
        receiver's window (its limit less what it acknowledged; a pipe's output buffer), the
        source's ring, or what is left before the end, whichever is smallest. None: one path,
        nothing to choose."""
        if len(usable) < 2:
            return None
        peer = self.peer
        limit = peer.window_limit if self.end_adus is None else min(peer.window_limit, self.end_adus)
        window = limit - peer.acked
        return window if self.source_window is None else min(window, self.source_window)

    def _holds_up_window(self, path: PathState, usable: list[PathState], window: int) -> bool:
        """The BLEST rule (Ferlin et al., 2016): an ADU sent on ``path`` holds the window's
        left edge until the receiver's answer to it is back, half ``path``'s round trip out and
        half a faster path's back. The paths faster than it go on sending meanwhile: if what
        they send in that time is more than the window, they would stand waiting for this ADU
        (and a pipe's stdout behind it), so it is theirs to carry, not this path's. Near the
        end the window is what is left: the last ADUs do not go on a slow path the others
        would outrun. A window larger than that never holds anything up (a file's, but for
        its end). A faster path that loses more does not count: the window would wait for its
        repairs (and, dropping DATA, it would keep a clean path idle while the transfer dies)."""
        if path.srtt is None:
            return False
        need = 0.0
        own_loss = round(path.loss / stripe.LOSS_STEP)
        for f in usable:
            if f is not path and f.srtt is not None and f.srtt < path.srtt:
                if round(f.loss / stripe.LOSS_STEP) <= own_loss:
                    need += max(f.pacer.rate_Bps, f.receive_rate_Bps) * (path.srtt + f.srtt) / 2
        return need > window * self._dgram

    def _views(self, now: float, timed: bool) -> list[stripe.PathView]:
        """The paths as alf.stripe sees them; ``timed``: with their pacers' waits (only
        ``minrtt`` and the repair order read them, and a wait per path per run is not free)."""
        dgram = self._dgram
        carriers = self._carriers()
        return [
            stripe.PathView(
                p.id,
                usable=p in carriers,
                backup=p.backup,
                ready_in=p.pacer.delay_for(dgram, now) if timed else 0.0,
                used=self._shares.used[p.id],
                srtt=p.srtt,
                loss=p.loss,
            )
            for p in self.paths
        ]

    def next_runs(self, now: float, max_count: int) -> list[Run]:
        """Runs for one batch of at most ``max_count`` ADUs, all on one path: a run of new
        data, or repairs (each often one ADU, scattered) gathered so that they share system
        calls, perhaps followed by the new run the sharing rule lets through. A run that ends
        with the content's short last ADU ends the batch: a GSO send needs every datagram
        full-size but its last. (Repairs go in index order and nothing new follows the last
        ADU, so it comes last anyway; the check keeps that true whatever the order becomes.)"""
        runs: list[Run] = []
        room = max_count
        on: int | None = None
        while room > 0:
            run = self.next_run(now, room, on)
            if run is None:
                break
            runs.append(run)
            on = run.path
            room -= run.count
            if not run.repair or self._ends_short(run):
                break
        return runs

    def _ends_short(self, run: Run) -> bool:
        total = self.total_bytes
        return (
            run.row < 0
            and total is not None
            and total % self.adu != 0
            and run.first + run.count == self.end_adus
        )

    def _new_run(self, now: float, n: int, new_limit: int, path: int = 0) -> Run:
        count = before_held(self._held, self.next_new, min(n, new_limit - self.next_new))
        run = Run(self.next_new, count, path, False)
        if self.multipath and (not self._new_paths or self._new_paths[-1] != path):
            self._new_firsts.append(self.next_new)  # (a run on the path of the one before needs none)
            self._new_paths.append(path)
        self.next_new = skip_held(self._held, self.next_new + count)
        self.stats.adus_new += count
        self.paths[path].new_adus += count
        if self.peer_fec and self.end_adus is not None:
            self._proactive(run.first, run.first + count)
        return self._issued(run, now)

    def _proactive(self, before: int, after: int) -> None:
        """§16: parity for each block that [before, after) completed, unasked (unicast): with
        ``--fec RATIO`` that share of every block; with "auto" only for the blocks of the last
        few round trips of a long, lossy path, whose holes would otherwise cost NAK rounds after
        the end (the repairs of earlier blocks overlap the sending of later ones)."""
        assert self.end_adus is not None
        end = self.end_adus
        for block in range(fec.block_of(before), fec.block_of(after - 1) + 1):
            first, k = fec.block_span(block, end)
            if first + k > after:
                break  # not complete yet
            if first + k <= before:
                continue
            ratio = self.cfg.fec_ratio
            if ratio is not None:
                self._add_parity(block, min(fec.max_rows(k), ceil_div(int(ratio * k * 1000), 1000)))
            elif self._loss.start is not None and first >= self._loss.start and self._in_tail(first, k):
                loss = self._auto_loss()
                if loss is None:
                    self._undecided.append(block)  # decided once the loss is known
                else:
                    self._auto_parity(block, k, loss)

    def _add_parity(self, block: int, n: int) -> None:
        if n:
            self._parity[block] = self._parity.get(block, 0) + n
            self.stats.parity_proactive += n

    def _in_tail(self, first: int, k: int) -> bool:
        """--fec auto: the block is among the data whose holes would be NAKed after the end on
        a long path: a hole waits up to two NAK rounds of two round trips each before it is
        named, and its repair one more round trip."""
        srtt = self.path.srtt
        assert self.end_adus is not None
        if srtt is None or srtt < FEC_AUTO_RTT:
            return False
        tail = FEC_AUTO_TAIL_RTTS * self.path.pacer.rate_Bps * srtt / self._dgram
        return first + k >= self.end_adus - tail

    def _auto_loss(self) -> float | None:
        return self._loss.share(self.peer, self._resent_adus())

    def _resent_adus(self) -> int:
        """ADUs sent again as themselves (repairs less parity)."""
        return self.stats.adus_repair - self.stats.adus_parity

    def _auto_parity(self, block: int, k: int, loss: float) -> None:
        if loss >= FEC_AUTO_LOSS:
            rows = int(k * min(FEC_AUTO_MAX, FEC_AUTO_GAIN * loss)) + FEC_AUTO_EXTRA
            self._add_parity(block, min(fec.max_rows(k), rows))
            self._loss.keep(loss)

    def _decide_parity(self) -> None:
        """--fec auto: the blocks of the tail sent before the path's loss was known get their
        parity now that it is (sooner than a NAK round would name their holes), unless the
        receiver holds them whole or a NAK has already named what they lack."""
        loss = self._auto_loss()
        if loss is None:
            return
        assert self.end_adus is not None
        blocks, self._undecided = self._undecided, []
        for block in blocks:
            first, k = fec.block_span(block, self.end_adus)
            if first + k > self.peer.acked and first >= self._loss.named:
                self._auto_parity(block, k, loss)

    def _issued(self, run: Run, now: float) -> Run:
        on = self.paths[run.path]
        on.issued_adus += run.count
        if run.row < 0:  # (parity names no ADU a dead path would owe)
            on.in_flight.append(run)
        nbytes = run.count * self._dgram
        on.pacer.consume(nbytes, now)
        if self._total is not None:
            self._total.consume(nbytes, now)
            self._shares.charge(on.id, nbytes, on.cc.rate_bps)
        self.stats.wire_bytes += nbytes
        self._maybe_finishing(now)
        return run

    def _new_limit(self) -> int:
        limit = min(self.available, self.peer.window_limit)
        return limit if self.end_adus is None else min(limit, self.end_adus)

    def has_data_to_send(self) -> bool:
        return bool(self._repairs or self._parity) or self.next_new < self._new_limit()

    def pending_count(self) -> int:
        """ADUs waiting to go: queued repairs and new data within every limit."""
        if self.state not in (State.SENDING, State.FINISHING) or self.outcome is not None:
            return 0
        return self.repair_pending() + max(0, self._new_limit() - self.next_new)

    def _carriers(self) -> list[PathState]:
        """The paths that may carry DATA now, new or repairs: those up, but for any that would
        hold up the window (``_holds_up_window``). The pacers, the deadline and the striping
        policy all see this one list (counting a path's tokens as sendable while the policy
        gave it nothing spun the loop). Everything it depends on (which paths are up, their
        RTTs and rates, the window, the end) changes only when a datagram arrives, a path
        goes down or comes back, a rate follows its controller or the end becomes known: it
        is worked out again after each of those, not on every call (four calls a loop turn
        took 8% of a two-path sender's CPU)."""
        if self._carrier_list is None:
            up = stripe.eligible(self.paths)  # a backup carries only while no other path is up
            window = self._window(up)
            carriers = up if window is None else [p for p in up if not self._holds_up_window(p, up, window)]
            for p in up:
                if p not in carriers:
                    p.app_limited = True  # kept idle by choice: its quiet says nothing of the path
            self._carrier_list = carriers
        return self._carrier_list

    def ready_count(self, now: float) -> int:
        """ADUs that may go right now: pending ones the pacers allow (on the paths that may
        carry them, within --rate's total)."""
        pending = self.pending_count()
        if not pending:
            self._nothing_to_send(now)
        dgram = self._dgram
        if not self.multipath:
            return min(pending, int(self.path.pacer.available(now) // dgram))
        assert self._total is not None
        allowed = 0
        for p in self._carriers():
            allowed += int(p.pacer.available(now) // dgram)
        return min(pending, allowed, int(self._total.available(now) // dgram))

    def _nothing_to_send(self, now: float) -> None:
        """Nothing waits (the source, or the window, has nothing more): every path whose pacer
        would send is app-limited until its next STATUS."""
        if self.state == State.SENDING:
            for p in self._carriers() if self.multipath else (self.path,):
                if p.pacer.available(now) >= self._dgram:
                    p.app_limited = True

    @property
    def burst_adus(self) -> int:
        """The most ADUs one path's pacer bucket can hold: no batch can be larger than this."""
        paths = (self._carriers() or [self.path]) if self.multipath else [self.path]
        return max(1, int(max(p.pacer.burst_bytes for p in paths) // self._dgram))

    @property
    def sent_count(self) -> int:
        return self.stats.adus_new + self.stats.adus_repair

    def next_deadline(self, now: float, want: int = 1) -> float:
        """The latest time by which ``poll``/``next_run`` must be called again; with data
        waiting, no later than when the pacer allows ``want`` more ADUs."""
        if self.outcome is not None:
            return now
        t = self.peer.last_heard + self.cfg.timeout
        if self.state == State.HANDSHAKE:
            if self.cfg.hello_timeout is not None:
                t = min(t, self.peer.last_heard + self.cfg.hello_timeout)
            if self._refused_since is not None:
                t = min(t, self._refused_since + REFUSED_GIVE_UP)
            return min(t, self.path.hello_at)
        if not self.multipath:
            t = min(t, self.path.probe_at)
            if self.has_data_to_send():
                want = min(want, self.burst_adus)  # waiting for more than the bucket holds never ends
                t = min(t, now + self.path.pacer.delay_for(want * self._dgram, now))
            return t
        assert self._total is not None
        for path in self.paths:
            if path.failed:
                continue
            if not path.joined:
                t = min(t, path.hello_at, path.hello_since + PATH_JOIN_WAIT)
                continue
            t = min(t, path.probe_at)
            if path.up and path.in_flight:
                t = min(t, path.heard_at + path.down_after)
        wait = None
        if self.has_data_to_send():
            nbytes = min(want, self.burst_adus) * self._dgram
            for path in self._carriers():
                w = path.pacer.delay_for(nbytes, now)
                wait = w if wait is None else min(wait, w)
        if wait is not None:
            total = self._total.delay_for(nbytes, now)
            t = min(t, now + max(wait, total))
        return t

    # ------------------------------------------------------------ input from the network

    def handle_datagram(
        self,
        buf: bytes | bytearray | memoryview,
        now: float,
        arrived: float | None = None,
        path: int = 0,
        addr: object | None = None,
    ) -> None:
        """A datagram read at ``now`` on ``path`` from ``addr`` (None: the connected socket's
        peer); ``arrived``, if the driver knows it, is when it reached our host: an RTT sample
        ends there, not after it waited in our socket (protocol §6). An answer from another
        address than the peer's is foreign; the first ACCEPT fixes that address."""
        got = now if arrived is None else min(arrived, now)
        self._carrier_list = None  # (the window, the RTTs and the paths may all move)
        if self._initiator is not None and len(buf) > 1 and buf[1] != wire.MsgType.ACCEPT:
            # §17: once keyed, only a sealed datagram counts; before, an ABORT may end the
            # handshake (a receiver without our key cannot seal it: rule 4)
            if self.keys is not None:
                opened = self.keys.into.open(buf, wire.HEADER_SIZE)
                if opened is None:
                    self.stats.unauthenticated += 1
                    return
                buf = opened
            elif buf[1] != wire.MsgType.ABORT:
                self.stats.unauthenticated += 1
                return
        try:
            msg = wire.decode_untrusted(buf)
        except wire.BadPacket:
            self.stats.malformed += 1
            return
        peer = self.peer
        on = self.paths[path]
        if msg.session_id != self.session_id or (addr is not None and on.addr not in (None, addr)):
            self.stats.foreign += 1
            return
        if self.outcome is not None:
            return
        if isinstance(msg, wire.Abort):
            self.events.add(PeerAborted(msg.code, msg.reason))
            self._end(aborted_by("receiver", msg.code.name, msg.reason))
            return
        if isinstance(msg, wire.Accept) and (self.state == State.HANDSHAKE or not on.joined):
            self._on_accept(msg, on, now, got, addr)
            return
        if self.state == State.HANDSHAKE:
            self.stats.unexpected += 1
            return
        if isinstance(msg, wire.Accept) and self._initiator is not None:
            return  # §17: an ACCEPT is in clear (perhaps a replay): it says nothing of liveness
        peer.last_heard = now
        on.heard_at = now
        on.heard_since_final = True
        if on.joined and not on.up and not on.failed:
            self._path_back(on, now)
        if isinstance(msg, wire.Status):
            self._on_status(msg, now, got, on)
        elif isinstance(msg, wire.Nak):
            self._on_nak(msg)
        elif isinstance(msg, wire.Done):
            peer.verdict = verdict_outcome(msg)
            self._end(peer.verdict)
            self._out.extend(self._to_all(wire.encode_close(wire.Close(self.session_id))) * CLOSE_COPIES)
        elif not isinstance(msg, wire.Accept):
            self.stats.unexpected += 1

    def _on_accept(
        self, msg: wire.Accept, on: PathState, now: float, got: float, addr: object | None
    ) -> None:
        """An ACCEPT on ``on``: the session's (the handshake, on the first path), or a further
        path's (§14); a RETRY asks for the HELLO again with its token."""
        peer = self.peer
        if on.failed:
            return
        if msg.retry:
            # §4.3: the receiver asks us to prove our address: the HELLO again, at once, with its
            # token (and on the HELLO timer after that, until the ACCEPT)
            on.token = msg.token
            if self.state == State.HANDSHAKE:
                peer.last_heard = now  # it answers: the handshake's timers count from here
            if self._initiator is None:  # (§17 rule 4: sealed, a RETRY only makes us send the HELLO again)
                self._rtt_sample(on, got, msg.echo_timestamp_us, 0)
            on.hello_at = now
            on.hello_gap = HELLO_FIRST_RETRY
            on.extra_hellos = 1  # two copies: one lost HELLO costs a HELLO gap
            self.stats.retries_received += 1
            return
        if self._initiator is not None:  # §17: the finished MAC, and the token of this path's HELLO
            if msg.token != on.token or self._initiator.accepts(self._hello(0.0, 0), msg) is None:
                self.stats.unauthenticated += 1
                return
            self.keys = self._initiator.keys
        further = self.state != State.HANDSHAKE  # a further path joins the session (§14)
        if further:
            self._shares.level([p.id for p in self.paths if p.up])  # it joins level with the rest
        on.joined = on.up = True
        self._carrier_list = None
        on.addr = addr  # the ACCEPT echoed our session id: the receiver's address on this path
        on.heard_at = now
        on.probe_at = now
        self._rtt_sample(on, got, msg.echo_timestamp_us, 0)
        if further:
            self.stats.paths_joined += 1
            for p in self.paths:  # the receiver learns the largest RTT before the new path's DATA
                if p.up:
                    p.probe_at = now
            return
        peer.addr = addr  # the ACCEPT echoed our session id: this address is the peer's
        self.peer_fec = msg.fec and bool(self._features & wire.FEATURE_FEC)
        peer.last_heard = now
        peer.window_limit = msg.window_limit
        self.peer_held = msg.held if self._features & wire.FEATURE_RESUME else ()
        if (
            msg.held
            and self._features & wire.FEATURE_RESUME
            and self.kind == wire.Kind.FILE
            and self.end_adus is not None
        ):
            # §18: what the receiver holds of our file is not sent (it is hashed all the same)
            self._held, self.stats.adus_held, self.stats.bytes_held = resume.held_by_peer(
                msg.held, self.end_adus, self.adu, self.total_bytes or 0
            )
            self.next_new = skip_held(self._held, self.next_new)
        self.state = State.SENDING
        self.began = now
        peer.progress_at = now
        for other in self.paths[1:]:  # the other paths join now (§14)
            other.hello_at = other.hello_since = now
        self.events.add(Joined(addr, self.session_id))

    def _on_status(self, msg: wire.Status, now: float, arrived: float, on: PathState) -> None:
        # (§18: what the receiver holds counts as sent, named in its ACCEPT or not)
        sent = self.end_adus if self.stats.adus_held and self.end_adus is not None else self.next_new
        if msg.cum_ack > sent or msg.highest > sent:
            self.stats.unexpected += 1  # acknowledges what was never sent: ignore it whole
            return
        if msg.received > self.peer.received:
            self.peer.progress_at, self.peer.received = now, msg.received
        self.peer.highest = max(self.peer.highest, msg.highest)
        if msg.cum_ack > self.peer.acked:
            acked = self.peer.acked = msg.cum_ack
            self.stats.acked_adus = acked
            trim_ranges(self._repairs, acked)
            for path in self.paths:
                runs = path.in_flight
                while runs and runs[0].first + runs[0].count <= acked:
                    runs.popleft()
            if self.multipath:
                self._forget_below(acked)
        if msg.window_limit > self.peer.window_limit:
            self.peer.window_limit = msg.window_limit
        sample = None
        if msg.echo_timestamp_us:
            sample = self._rtt_sample(on, arrived, msg.echo_timestamp_us, msg.echo_delay_us)
        if self.multipath:  # §14: the rate this path delivers; its own sends and losses
            on.receive_rate_Bps = msg.receive_rate
            self.stats.receiver_rate_Bps = sum(p.receive_rate_Bps for p in self.paths if p.up)
            sent, nakked = on.issued_adus, on.nakked_adus
        else:
            self.stats.receiver_rate_Bps = msg.receive_rate
            sent, nakked = self.sent_count, self.stats.adus_nak_requested
        on.cc.on_feedback(cc.Feedback(now, sample, msg.receive_rate * 8.0, sent, nakked, on.app_limited))
        on.app_limited = False
        if self.peer_fec and self.cfg.fec_ratio is None:
            quiet = now - self._last_resend > (self.path.srtt or 0.0)
            self._loss.on_status(self.path.cc.starting, self.next_new, self.peer, self._resent_adus(), quiet)
        if self._undecided:
            self._decide_parity()
        self._follow_cc(on, now)

    def _follow_cc(self, path: PathState, now: float) -> None:
        rate = path.cc.rate_bps
        if rate != path.pacer.rate_Bps * 8:
            path.pacer.set_rate(rate, self._burst(rate), now)
            self._carrier_list = None

    def _on_nak(self, msg: wire.Nak) -> None:
        self.stats.naks_received += 1
        lo, hi = self.peer.acked, self.next_new
        added = [(max(a, lo), min(b, hi)) for a, b in msg.ranges if a < hi and b > lo]
        if not added:
            return
        self.stats.adus_nak_requested += sum(b - a for a, b in added)
        self._loss.on_nak(subtract_ranges(merge_ranges(added), self._repairs))
        if self._undecided:
            self._decide_parity()
        self._repairs = merge_ranges(self._repairs + added)
        if self.multipath:
            for a, b in added:
                self._charge_loss(a, b)

    def _charge_loss(self, a: int, b: int) -> None:
        """§14: the NAKed ADUs [a, b) count against the paths that last carried them."""
        firsts, paths = self._new_firsts, self._new_paths
        if b - a <= 64:
            for i in range(a, b):
                p = self._repaired_on.get(i)
                if p is None:
                    k = bisect_right(firsts, i) - 1
                    if k < 0:
                        continue
                    p = paths[k]
                self.paths[p].nakked_adus += 1
            return
        # a long range (a path that went silent): by the runs of first sends alone
        k = max(0, bisect_right(firsts, a) - 1)
        i = a
        while i < b and k < len(firsts):
            end = min(b, firsts[k + 1] if k + 1 < len(firsts) else b)
            if end > i:
                self.paths[paths[k]].nakked_adus += end - i
                i = end
            k += 1

    def _forget_below(self, acked: int) -> None:
        """Drop what says which path carried ADUs the receiver holds (now and then, in bulk)."""
        k = bisect_right(self._new_firsts, acked) - 1
        if k > 1024:
            del self._new_firsts[:k]
            del self._new_paths[:k]
        if len(self._repaired_on) > 4096:
            self._repaired_on = {i: p for i, p in self._repaired_on.items() if i >= acked}

    def held_passed(self) -> int:
        """§18: the bytes the receiver held that the first pass has passed over (not sent):
        those held less those still ahead of it (``_held`` keeps only these)."""
        ahead = resume.held_bytes(self._held, self.adu, self.total_bytes or 0)
        return self.stats.bytes_held - sum(b - a for a, b in ahead)

    def shown_acked(self) -> int:
        """The acknowledged ADUs the statistics show (a group's: its members that keep pace)."""
        return self.peer.acked

    def _group_size(self) -> int:
        """What a PROBE says in its receivers field (§15; 0: not a group)."""
        return 0

    def member_stats(self) -> list[dict[str, object]] | None:
        """Each receiver of a group (alf.group); None: one receiver."""
        return None

    def repair_pending(self) -> int:
        return sum(b - a for a, b in self._repairs) + sum(self._parity.values())

    def _rtt_sample(self, path: PathState, now: float, echo_us: int, delay_us: int) -> float | None:
        """A round-trip sample of ``path``, folded into its smoothed RTT (RFC 6298 weights)."""
        sample = rtt_sample(now, echo_us, delay_us)
        if sample is None:
            return None
        path.srtt, path.rttvar = smooth_rtt(path.srtt, path.rttvar, sample)
        srtt = path.srtt
        path.down_after = min(PATH_DOWN_MAX, max(PATH_DOWN_MIN, 2 * srtt + 3 * wire.probe_spacing(srtt)))
        self.stats.srtt_ms = path.srtt * 1e3
        return sample

    # ------------------------------------------------------------ local decisions

    def cancel(self, code: wire.AbortCode, reason: str, exit_code: ExitCode) -> None:
        """End the session from this side (user interrupt, local I/O error)."""
        if self.outcome is None:
            self._abort(code, reason, Outcome(exit_code, reason))

    def _abort(self, code: wire.AbortCode, reason: str, outcome: Outcome) -> None:
        abort = self._to_all(wire.encode_abort(wire.Abort(self.session_id, code, reason)))
        self._out.extend(abort * ABORT_COPIES)
        self._end(outcome)

    def _end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.state = State.DONE
        self.events.add(Finished(outcome))
