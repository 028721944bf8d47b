"""The group sender: one stream to a multicast group, each receiver a member with its own
state (sans-IO; docs/protocol.md §15).

It is the unicast ``Sender`` with its one peer replaced by members: DATA, PROBEs and the
announcements go on the one path, to the group; each member's JOIN, ACCEPT, STATUS, NAK and
DONE come by unicast from its own address and change only that member, and what the data
path reads of "the peer" (window, acknowledgement) is the group's, worked out from the
members still receiving. The pacer follows the slowest member's rate controller.

Invariants:
- No DATA leaves before the start rule holds (``receivers`` members, or the join window
  passed with one); a JOIN is answered only with a HELLO no larger than it (§15 rule 1).
- The group's acknowledgement of a stream never decreases (no member joins a stream late).
- The outcome is success only if the members whose verdict is OK reach the quorum; it is set
  once, when every member has ended.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

import cc
from alf import fec, wire
from alf.errors import ExitCode, Outcome
from alf.events import Joined, MemberEnded, MemberSlow
from alf.ranges import merge_ranges, subtract_ranges, trim_ranges
from alf.receiver import FEC_MAX_NEED
from alf.sender import CLOSE_COPIES, Datagram, Run, Sender, SenderConfig, State, rtt_sample, smooth_rtt
from alf.verdict import verdict_outcome

if TYPE_CHECKING:
    from alf import seal

ANNOUNCE_GAP = 0.25  # §15 rule 1: the HELLO to the group, until the start
LATE_ANNOUNCE_GAP = 1.0  # ... and after it, for late members (file kind)
MAX_MEMBERS = 1024
# The stamps of the last HELLOs sent to one joining receiver that its ACCEPT may echo: a
# receiver short of CPU JOINs a backlog of announcements (8 a second at most, §15 rule 1) and
# may read only the older answers; four were too few once (a member stuck joining in CI).
HELLO_STAMPS = 32
# A receiver started again at a lost or aborted member's address: it may try this many times,
# each try JOINING_WAIT long from its first JOIN (later JOINs in it are answered as a joining
# receiver's), and the verdict waits for a try under way. A forged JOIN cannot change the
# verdict; it can use up a try, and hold the verdict back by JOINING_WAIT per try at most.
MAX_SUCCESSORS = 3
KEYS_GAP = 0.2  # §17 rule 8: a member's ACCEPT draws one KEYS this often at most (it asks every 0.25 s)
MAX_REFUSALS = 16  # receivers that refused our key named in the outcome (the rest counted)
REPAIR_HOLD_MIN = 0.005  # §15 rule 6
RECENT_MAX = 4096  # repairs remembered before the old ones are let go
JOINING_WAIT = 5.0  # a JOIN whose ACCEPT did not follow in this long is forgotten
DEFAULT_WAIT = 5.0  # the join window when no number of receivers is named
STALL_MIN = 0.25  # a member silent this long (or 4 group RTTs) no longer sets the group's pace
SLOW_POLICIES = ("catch-up", "drop", "wait")
SLOW_SHARE = 0.25  # --slow: a member under this share of the members' median rate ...
SLOW_HOLD = 0.5  # ... for this long (or 20 group RTTs) is slow
APP_LIMITED_SHARE = 0.95  # a member's rate above the group's by more than this: app-limited
SENT_RATE_SPAN = 0.05  # the group's actual send rate is measured over this much time at least
PARITY_LATE_RTTS, PARITY_LATE_MIN = 4.0, 0.05  # §16: a parity symbol sent longer ago has arrived
PARITY_SENDS_KEPT = 16  # parity runs remembered per block (the older ones have arrived)
SHORT_SHARE = 0.5  # a member receiving less than this share of what the group is sent is congested


class Fate(Enum):
    JOINING = "joining"  # its JOIN came; its ACCEPT not yet
    RECEIVING = "receiving"
    OK = "ok"
    MISMATCH = "mismatch"
    LOST = "lost"
    ABORTED = "aborted"
    DROPPED_SLOW = "dropped-slow"  # --slow drop: too slow for the group, sent away


@dataclass(eq=False)
class Member:
    """One receiver of the group: its address, rate controller, round trip and progress."""

    addr: object
    cc: cc.Controller
    heard_at: float
    token: int = 0
    fate: Fate = Fate.JOINING
    joined_at: float | None = None
    late: bool = False  # it joined after the start
    stalled: bool = False  # silent for a while (not yet for the timeout): it sets no pace
    slow: bool = False  # --slow catch-up: far slower than the others; served after them
    slow_since: float | None = None  # since when its rate is below SLOW_SHARE of the median
    hellos: tuple[int, ...] = ()  # stamps of the last HELLO_STAMPS HELLOs to it (its ACCEPT echoes one)
    progress_at: float = 0.0  # when it last showed it holds more of the data
    srtt: float | None = None
    rttvar: float = 0.0
    acked: int = 0
    received: int = 0
    window_limit: int = 0
    receive_rate_Bps: int = 0
    naks: int = 0
    nakked_adus: int = 0
    fec: bool = False  # §16: it decodes parity (its ACCEPT said so)
    keys: seal.Keys | None = None  # §17 rule 8: its own keys, from its keyed ACCEPT
    share: bytes = b""  # ... and the share that ACCEPT carried (every later one carries it too)
    keys_at: float = float("-inf")  # when the group's secret was last sent to it (KEYS)
    app_limited: bool = False
    received_bytes: int = 0
    ended_at: float | None = None
    reason: str = ""
    # (lost or aborted) a new receiver at its address, JOINed but not yet proved, since when,
    # and how many such have tried (``_on_join``, ``_successor_accepts``)
    successor: Member | None = None
    successor_since: float = 0.0
    successors: int = 0

    @property
    def receiving(self) -> bool:
        return self.fate == Fate.RECEIVING

    @property
    def keeps_pace(self) -> bool:
        """It sets the group's window and rate (receiving, neither stalled nor slow)."""
        return self.fate == Fate.RECEIVING and not self.stalled and not self.slow


class _Slowest(cc.Controller):
    """The group's rate: the smallest of the receiving members' controllers (§15 rule 5).
    Feedback goes to each member's own controller, not here."""

    name = "group"

    def __init__(self, group: GroupSender, idle: cc.Controller) -> None:
        self._group = group
        self._idle = idle  # a fresh controller's rate, while no member receives
        self.ceiling_bps, self.floor_bps = idle.ceiling_bps, idle.floor_bps

    @property
    def rate_bps(self) -> float:
        members = self._group.members.values()
        rates = [m.cc.rate_bps for m in members if m.keeps_pace]
        if not rates:  # only slow or stalled ones: the least of them
            rates = [m.cc.rate_bps for m in members if m.receiving]
        if not rates:  # none receiving: what the last ones got (the final statistics show it)
            rates = [m.cc.rate_bps for m in members if m.joined_at is not None]
        return min(rates) if rates else self._idle.rate_bps

    def on_feedback(self, fb: cc.Feedback) -> None:
        pass

    def on_silence(self, now: float, silent_for: float) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {"cc": self._idle.name, "rate_bps": round(self.rate_bps)}


class GroupSender(Sender):
    def __init__(
        self,
        config: SenderConfig,
        session_id: int,
        kind: wire.Kind,
        total_bytes: int | None,
        now: float,
        group: object,
        receivers: int | None = None,
        wait: float | None = None,
        quorum: int | None = None,
        slow: str = "catch-up",
    ) -> None:
        if config.paths != 1:
            raise ValueError("a group sender has one path, to the group")
        if receivers is not None and receivers < 1 or quorum is not None and quorum < 1:
            raise ValueError("receivers and quorum: at least 1")
        if receivers is not None and quorum is not None and quorum > receivers:
            raise ValueError("the quorum cannot exceed the receivers expected")
        super().__init__(
            replace(config, features=config.features | wire.FEATURE_MULTICAST),
            session_id,
            kind,
            total_bytes,
            now,
        )
        self.members: dict[object, Member] = {}
        self.expected = receivers
        self.join_wait = wait if wait is not None or receivers is not None else DEFAULT_WAIT
        self.quorum = quorum
        self.joins_refused = 0  # JOINs beyond the members admitted, or after a stream began
        self.repairs_held = 0  # NAKed ADUs not queued again: a repair for them was just sent
        path = self.path
        path.addr = group
        path.cc = _Slowest(self, self._controller(0, now))
        path.hello_gap = ANNOUNCE_GAP
        self._recent: deque[tuple[float, int, int]] = deque()  # repairs sent: (when, a, b)
        # §16: per block, its parity runs sent as (when, the rows sent by then)
        self._parity_sent: dict[int, list[tuple[float, int]]] = {}
        self._resent_at: dict[int, float] = {}  # §16: blocks sent again whole, and when
        self._sent_mark = (now, 0)  # (when, stats.wire_bytes then): for _sent_rate
        self._sent_bps = float("inf")
        if slow not in SLOW_POLICIES:
            raise ValueError(f"slow: one of {', '.join(SLOW_POLICIES)}")
        self.slow_policy = slow
        self.naks_deferred = 0  # NAKs of slow members while the others still received
        self.refusals: list[str] = []  # receivers that refused the session over its key (§17) ...
        self.refused = 0  # ... and how many did (the list names MAX_REFUSALS at most)
        self._group_secret = b""
        self._keys_of: dict[bytes, tuple[object, seal.Keys]] = {}  # §17: a share's address and keys
        if config.key is not None:  # §17 rule 8: the group's keys, from a secret drawn for it
            from alf import seal as _seal

            self._group_secret = _seal.new_group_secret()
            self.keys = _seal.group_keys(self._group_secret, self._hello(0.0, 0), sender=True)

    # ------------------------------------------------------------ the group's view

    def _receiving(self) -> list[Member]:
        return [m for m in self.members.values() if m.receiving]

    def _regroup(self) -> None:
        """What the data path reads of its peer, from the members still receiving: the
        smallest window and acknowledgement, the largest round trip (§15 rules 4-5)."""
        live = self._receiving()
        if not live:
            return
        # A stalled member (silent a while) holds back neither the window nor the pace: the
        # others go on, and what it misses meanwhile it NAKs if it comes back. It still holds
        # the acknowledgement, so a stream's ring keeps what it may ask for.
        pace = [m for m in live if m.keeps_pace] or live
        peer = self.peer
        acked = min(m.acked for m in live)
        if self.kind == wire.Kind.STREAM:
            acked = max(acked, peer.acked)  # its ring released below it: never again
        peer.acked = self.stats.acked_adus = acked
        peer.window_limit = max(peer.window_limit, min(m.window_limit for m in pace))
        peer.received = min(m.received for m in live)
        trim_ranges(self._repairs, acked)
        for table in (self._parity, self._parity_sent, self._resent_at):
            if table:
                for block in [b for b in table if (b + 1) * fec.BLOCK <= acked]:
                    del table[block]
        runs = self.path.in_flight
        while runs and runs[0].first + runs[0].count <= acked:
            runs.popleft()
        rtts = [m.srtt for m in pace if m.srtt is not None]
        if rtts:
            self.path.srtt = max(rtts)
            self.stats.srtt_ms = self.path.srtt * 1e3

    def _open(self) -> bool:
        """The transfer can still take a member: before the start, or a file's while it lasts."""
        return self.state == State.HANDSHAKE or (
            self.kind == wire.Kind.FILE and self.state in (State.SENDING, State.FINISHING)
        )

    def _admitting(self) -> bool:
        """A JOIN may be answered: the transfer can still take a member, there is room for
        one, and not too many JOINs wait."""
        return self._open() and self._room() and len(self.members) < MAX_MEMBERS

    def _announcing(self) -> bool:
        """The group is told of the session while a JOIN may be answered, and while a member
        lost or aborted may be taken again: a receiver started again at its address hears
        us and JOINs (``_on_join``)."""
        if self._admitting():
            return True
        return self._open() and any(self._retakeable(m) for m in self.members.values())

    @staticmethod
    def _retakeable(m: Member) -> bool:
        return m.fate in (Fate.LOST, Fate.ABORTED) and m.successors < MAX_SUCCESSORS

    def _room(self) -> bool:
        """Fewer members than ``--receivers`` (or MAX_MEMBERS) have joined so far."""
        joined = sum(1 for m in self.members.values() if m.joined_at is not None)
        return joined < (self.expected or MAX_MEMBERS)

    # ------------------------------------------------------------ timers

    def _timers(self, now: float) -> None:
        path = self.path
        timeout = self.cfg.timeout
        for m in list(self.members.values()):
            if m.fate == Fate.JOINING and now - m.heard_at >= min(timeout, JOINING_WAIT):
                del self.members[m.addr]  # not a member yet: it frees its place
            elif m.successor is not None and now - m.successor_since >= JOINING_WAIT:
                m.successor = None  # its ACCEPT never proved it: the member stays as it ended
        if self.state == State.HANDSHAKE:
            if now >= path.hello_at:
                self._hello_due(path, now)
                path.hello_gap = ANNOUNCE_GAP
            self._maybe_start(now)
            return
        srtt = self.path.srtt or 0.0
        # §15 rule 9: in a large group each member answers one PROBE in k: that much quiet is
        # its turn coming round, not silence
        turn = (wire.answer_every(len(self._receiving())) - 1) * wire.probe_spacing(srtt)
        stall = max(STALL_MIN, 4 * srtt) + 2 * turn
        for m in list(self.members.values()):
            if m.receiving and now - m.heard_at >= timeout:
                self._member_ends(m, Fate.LOST, f"silent for {timeout:g} s", now)
            elif m.receiving and m.acked < self.next_new and now - m.progress_at >= timeout:
                # it answers, but holds no more of the data (a path that drops DATA and passes
                # small datagrams, as a path-MTU black hole does)
                what = "none" if m.received == 0 else "no more"
                self._member_ends(m, Fate.LOST, f"answers but got {what} of the data for {timeout:g} s", now)
            elif m.receiving and not m.stalled and now - m.heard_at >= stall:
                m.stalled = True  # the others go on at their pace until it answers, or is lost
                self._regroup()
        if self._settled(now):
            return
        if self._announcing() and now >= path.hello_at:
            self._hello_due(path, now)
            path.hello_gap = LATE_ANNOUNCE_GAP
        self._judge_slow(now)
        if self.outcome is not None:
            return
        self._maybe_finishing(now)
        for m in self._receiving():
            if not m.stalled:  # (a stalled one sets no pace: halving it on would drag it back)
                m.cc.on_silence(now, now - m.heard_at - turn)
        self._follow_cc(path, now)
        if now >= path.probe_at:
            self._probe(path, now, int((path.srtt or 0.0) * 1e6) & 0xFFFFFFFF)

    def _judge_slow(self, now: float) -> None:
        """--slow: a member whose controller stays below SLOW_SHARE of the members' median rate
        for SLOW_HOLD (or 20 group RTTs) is slow: with catch-up it no longer sets the pace and
        its repairs wait until the others are done (a file only: a stream's ring cannot wait
        for it); with drop it is sent away; with wait the group keeps its pace."""
        policy = self.slow_policy
        if policy == "wait" or (policy == "catch-up" and self.kind == wire.Kind.STREAM):
            return
        live = [m for m in self._receiving() if not m.stalled]
        if len(live) < 2:
            return
        rates = sorted(m.cc.rate_bps for m in live)
        median = rates[len(rates) // 2]
        rtts = sorted(m.srtt or 0.0 for m in live)  # (the slow one's own queue makes its RTT long)
        hold = max(SLOW_HOLD, 20 * rtts[len(rtts) // 2])
        for m in live:
            if m.slow or m.cc.rate_bps >= SLOW_SHARE * median:
                m.slow_since = None
                continue
            if m.slow_since is None:
                m.slow_since = now
            elif now - m.slow_since >= hold:
                why = f"{m.cc.rate_bps / 1e6:.3g} Mbit/s where the group's median is {median / 1e6:.3g}"
                if policy == "drop":
                    abort = wire.Abort(
                        self.session_id, wire.AbortCode.CANCELLED, f"too slow for the group: {why}"
                    )
                    self._out.extend(self._to_member(wire.encode_abort(abort), m, CLOSE_COPIES))
                    self._member_ends(m, Fate.DROPPED_SLOW, f"too slow: {why}", now)
                    if self.outcome is not None:
                        return
                else:
                    m.slow = True
                    self.events.add(MemberSlow(m.addr, why))
                    self._regroup()

    def _maybe_start(self, now: float) -> None:
        """§15 rule 3: DATA once the receivers named have joined, or the join window passed
        with at least one (or, past the timeout, as many as the quorum)."""
        joined = len(self._receiving())
        waited = now - self._start
        enough = self.expected is not None and joined >= self.expected
        window = self.join_wait is not None and waited >= self.join_wait and joined >= 1
        if not (enough or window):
            limit = max(self.cfg.timeout, self.join_wait or 0.0)
            if waited < limit:
                return
            if not joined or self.quorum is None or joined < self.quorum:
                some = f"only {joined} of {self.expected}" if self.expected else "no"
                msg = f"{some} receivers joined the group within {limit:g} s"
                code = ExitCode.PEER_UNREACHABLE
                if self.refused:  # §17 rule 4: those that came refused our key (or its absence)
                    msg += f"; {self.refused} refused it: " + "; ".join(self.refusals[:4])
                    code = ExitCode.PEER_ABORTED if not joined else code
                self._abort(wire.AbortCode.TIMEOUT, msg, Outcome(code, msg))
                return
        path = self.path
        for m in self._receiving():  # (silence, and progress, count from the start)
            m.heard_at = m.progress_at = now
        self.state = State.SENDING
        self.began = self.peer.progress_at = now
        path.joined = path.up = True
        path.probe_at = now
        path.hello_at = now + LATE_ANNOUNCE_GAP
        self._carrier_list = None
        self._regroup()

    def _settled(self, now: float) -> bool:
        """Every member has ended: the sender's outcome, from their verdicts (§15 rule 7)."""
        if self.outcome is not None or any(m.receiving or m.successor for m in self.members.values()):
            return self.outcome is not None  # (a receiver started again may yet take a place)
        ended = [m for m in self.members.values() if m.joined_at is not None]
        ok = [m for m in ended if m.fate == Fate.OK]
        need = self.quorum or self.expected or len(ended)
        if len(ok) >= need and ok:
            text = f"{len(ok)} of {len(ended)} receivers verified the content"
            self._end(Outcome(ExitCode.OK, text))
            return True
        failed = [m for m in ended if m.fate != Fate.OK]
        missing = (self.expected or 0) - len(ended)
        why = [f"{_addr(m.addr)} {m.fate.value} ({m.reason})" for m in failed]
        if missing > 0:
            why.append(f"{missing} never joined")
        fates = {m.fate for m in failed}
        # (dropped-slow counts as unreachable: the peer could not take the data in time)
        code = (
            ExitCode.VERIFY_FAILED
            if Fate.MISMATCH in fates
            else ExitCode.PEER_ABORTED
            if Fate.ABORTED in fates and Fate.LOST not in fates
            else ExitCode.PEER_UNREACHABLE
        )
        text = f"{len(ok)} of {need} receivers verified the content: " + "; ".join(why)
        self._end(Outcome(code, text))
        return True

    def next_deadline(self, now: float, want: int = 1) -> float:
        t = super().next_deadline(now, want)
        if self.outcome is not None:
            return t
        path = self.path
        if self.state == State.HANDSHAKE:
            t = min(t, path.hello_at, self._start + max(self.cfg.timeout, self.join_wait or 0.0))
            if self.join_wait is not None:
                t = min(t, self._start + self.join_wait)
            return t
        if not self._receiving():
            # none to hear from (the verdict waits for a receiver started again, _settled): the
            # base's silence and probe times have passed and mean nothing; a loop woken by
            # them at once would spin until the try ran out
            t = float("inf")
        if self._announcing():
            t = min(t, path.hello_at)
        for m in self.members.values():
            if m.receiving:
                t = min(t, m.heard_at + self.cfg.timeout)
            elif m.fate == Fate.JOINING:
                t = min(t, m.heard_at + min(self.cfg.timeout, JOINING_WAIT))
            if m.successor is not None:
                t = min(t, m.successor_since + JOINING_WAIT)
        return t if t < float("inf") else now + JOINING_WAIT

    def _nothing_to_send(self, now: float) -> None:
        super()._nothing_to_send(now)
        if self.path.app_limited:
            for m in self.members.values():
                m.app_limited = True

    # ------------------------------------------------------------ input from the network

    def handle_datagram(
        self,
        buf: bytes | bytearray | memoryview,
        now: float,
        arrived: float | None = None,
        path: int = 0,
        addr: object | None = None,
    ) -> None:
        got = now if arrived is None else min(arrived, now)
        self._carrier_list = None
        if self.keys is not None and len(buf) > 1 and buf[1] != wire.MsgType.ACCEPT:
            if addr not in self.members:
                self.stats.foreign += 1  # (a receiver that left: the further copies of its ABORT)
                return
            opened = self._open_from(buf, addr)
            if opened is None:
                self.stats.unauthenticated += 1
                return
            buf = opened
        if len(buf) > 16 and buf[1] == wire.MsgType.NAK and self._deferred_nak(buf, now, addr):
            return
        try:
            msg = wire.decode_untrusted(buf)
        except wire.BadPacket:
            self.stats.malformed += 1
            return
        if msg.session_id != self.session_id or addr is None:
            self.stats.foreign += 1
            return
        if self.outcome is not None:
            return
        m = self.members.get(addr)
        if isinstance(msg, wire.Accept) and msg.retry:
            self._on_join(msg, m, addr, now, got)
            return
        if isinstance(msg, wire.Accept) and m is not None and m.successor is not None:
            self._successor_accepts(msg, m, now, got)
            return
        if isinstance(msg, wire.Accept) and self.keys is not None:
            if not self._sealed_accept(msg, m):
                self.stats.unauthenticated += 1
                return
            assert m is not None
            if m.fate != Fate.JOINING:  # (a joining one's goes on below, as in clear)
                if m.fate == Fate.RECEIVING and now - m.keys_at >= KEYS_GAP:
                    # it has not got the group's secret (one that has answers no announcement);
                    # an ACCEPT is in clear and may be a replay, so it says nothing of the
                    # member's liveness, and draws one KEYS per KEYS_GAP at most
                    self._send_keys(m, now)
                return
        if m is None or m.fate not in (Fate.JOINING, Fate.RECEIVING):
            if m is not None and isinstance(msg, wire.Done) and m.fate in (Fate.OK, Fate.MISMATCH):
                self._out.extend(self._to_member(wire.encode_close(wire.Close(self.session_id)), m))
            else:
                self.stats.foreign += 1
            return
        m.heard_at = now
        m.stalled = False
        self.peer.last_heard = now
        self.path.heard_since_final = True
        if isinstance(msg, wire.Accept):
            if m.fate == Fate.JOINING:
                self._on_accept_member(msg, m, now, got)
            return
        if m.fate == Fate.JOINING and isinstance(msg, wire.Abort):
            self._left(m, msg)  # it refused our HELLO (§17 rule 4: a key mismatch, in clear)
            return
        if m.fate != Fate.RECEIVING:
            self.stats.unexpected += 1
            return
        if isinstance(msg, wire.Status):
            self._on_member_status(msg, m, now, got)
        elif isinstance(msg, wire.Nak):
            self._on_member_nak(msg, m, now)
        elif isinstance(msg, wire.Done):
            if self.state != State.FINISHING:
                self.stats.unexpected += 1  # a verdict before the FINAL: on nothing it could check
                return
            m.received_bytes = msg.received_bytes
            verdict = verdict_outcome(msg)
            fate = Fate.OK if verdict.ok else Fate.MISMATCH
            if fate == Fate.OK and (msg.received_bytes != self.total_bytes or msg.digest != self.digest):
                # an OK that names another length or digest than ours verifies nothing
                fate, verdict = (
                    Fate.MISMATCH,
                    Outcome(ExitCode.VERIFY_FAILED, "its DONE names another content"),
                )
            self._member_ends(m, fate, verdict.message, now)
            self._out.extend(self._to_member(wire.encode_close(wire.Close(self.session_id)), m, CLOSE_COPIES))
        elif isinstance(msg, wire.Abort):
            if self.state == State.HANDSHAKE:  # it left before the start: its place is free again
                self._left(m, msg)
                return
            self._member_ends(m, Fate.ABORTED, f"{msg.code.name}: {msg.reason}", now)
        else:
            self.stats.unexpected += 1

    def _abort(self, code: wire.AbortCode, reason: str, outcome: Outcome) -> None:
        """The sender's ABORT to the group; sealed, also to each member under its own keys
        (one whose KEYS were lost could not open the group's copies)."""
        super()._abort(code, reason, outcome)
        if self.keys is not None:
            abort = wire.encode_abort(wire.Abort(self.session_id, code, reason))
            for m in self.members.values():
                if m.keys is not None and m.fate in (Fate.JOINING, Fate.RECEIVING):
                    self._out.extend(self._to_member(abort, m, CLOSE_COPIES))

    def _left(self, m: Member, msg: wire.Abort) -> None:
        """A receiver that is no member (yet) aborted: it is forgotten, its place free again."""
        del self.members[m.addr]
        if msg.code == wire.AbortCode.KEY_MISMATCH:
            self.refused += 1
            if len(self.refusals) < MAX_REFUSALS:
                self.refusals.append(f"{_addr(m.addr)}: {msg.reason[:200]}")
        self.events.add(MemberEnded(m.addr, Fate.ABORTED.value, f"{msg.code.name}: {msg.reason}"))

    def _deferred_nak(self, buf: bytes | bytearray | memoryview, now: float, addr: object) -> bool:
        """--slow catch-up: a slow member's NAK while the others still receive is not even
        decoded (it can name most of the content, and decoding it each round cost the loop
        the others' pace); it says the member is alive. Its later rounds ask again."""
        m = self.members.get(addr)
        if m is None or not m.slow or not m.receiving or int.from_bytes(buf[8:16], "big") != self.session_id:
            return False
        if not any(x.keeps_pace for x in self.members.values()):
            return False
        m.heard_at = now
        self.naks_deferred += 1
        return True

    def _open_from(self, buf: bytes | bytearray | memoryview, addr: object) -> bytes | None:
        """§17 rule 8: a member's datagram opened under its own keys; None if it does not
        open. Before it has keys only an ABORT in clear counts (a receiver with another key,
        or none, refuses us in clear: rule 4), and it ends only that receiver's part."""
        m = self.members[addr]
        if m.keys is None:
            return bytes(buf) if buf[1] == wire.MsgType.ABORT and m.fate == Fate.JOINING else None
        return m.keys.into.open(buf, wire.HEADER_SIZE)

    def _sealed_accept(self, msg: wire.Accept, m: Member | None) -> bool:
        """§17 rule 8: a keyed ACCEPT that proves itself: a joining receiver's first (its
        finished MAC over our HELLO and its share, echoing the token we sent it) gives its
        keys; a member's later ones carry the same share and a MAC that checks."""
        from alf import seal

        if m is None or not msg.share:
            return False
        head = wire.encode_accept(replace(msg, mac=b""))[: -wire.MAC_SIZE]
        if m.keys is not None:
            return msg.share == m.share and seal.proves(m.keys, head, msg.mac)
        assert self._initiator is not None
        if m.fate != Fate.JOINING or msg.token != m.token or msg.echo_timestamp_us not in m.hellos:
            return False
        known = self._keys_of.get(msg.share)
        if known is not None:
            # A share is one receiver's: another address with it is a copy of that receiver's
            # ACCEPT (an on-path clone); the same address again is a replay of its JOIN and
            # ACCEPT after it left, whose keys go on from the numbers they reached (a number
            # is never sealed twice under one key).
            addr, keys = known
            if addr != m.addr or not seal.proves(keys, head, msg.mac):
                return False
        else:
            if len(self._keys_of) >= 4 * MAX_MEMBERS:
                return False  # (no room to remember another share: refused, never unbound)
            got = self._initiator.complete(self._hello(0.0, 0), head, msg.share, msg.mac)
            if got is None:
                return False
            keys = got
            self._keys_of[msg.share] = (m.addr, keys)
        m.keys, m.share = keys, msg.share
        return True

    def _send_keys(self, m: Member, now: float, copies: int = 1) -> None:
        """§17 rule 8: the group's secret to one member, under its own keys, with the numbers
        the group's directions are at (a member that joins late opens from there)."""
        assert self.keys is not None and self.keys.data is not None
        keys = wire.Keys(self.session_id, self._group_secret, self.keys.data.pn, self.keys.out.pn)
        self._out.extend(self._to_member(wire.encode_keys(keys), m, copies))
        self.stats.keys_sent += copies
        m.keys_at = now

    def _to_member(self, data: bytes, m: Member, copies: int = 1) -> list[Datagram]:
        """``copies`` of a datagram to one member; with a key each sealed under that member's
        keys now (it may be forgotten before they leave) with a number of its own (a copy of
        one sealed datagram would be refused as a replay), but for a HELLO."""
        if self.keys is None or data[1] == wire.MsgType.HELLO:
            return [Datagram(data, 0, m.addr)] * copies
        assert m.keys is not None, "only a HELLO goes to a receiver without its keys"
        return [Datagram(m.keys.out.seal(data, wire.HEADER_SIZE), 0, m.addr) for _ in range(copies)]

    def _sealed(self, d: Datagram) -> Datagram:
        """§17 rule 8: what goes to the group is sealed under the group's keys; what goes to
        one member was sealed under its own (``_to_member``)."""
        return super()._sealed(d) if d.addr == self.path.addr else d

    def _on_join(self, msg: wire.Accept, m: Member | None, addr: object, now: float, got: float) -> None:
        """§15 rule 1: a receiver read our announcement; it gets the HELLO with its token, by
        unicast, no larger than its JOIN (a RETRY without JOIN's padding is not answered)."""
        if not msg.join:
            self.stats.unexpected += 1
            return
        if m is not None and m.fate != Fate.JOINING:
            if not (self._retakeable(m) or m.successor) or not self._open():
                return  # a member's JOIN crossed our HELLO: its ACCEPT follows
            if m.successor is None:
                if m.successors >= MAX_SUCCESSORS:
                    self.joins_refused += 1
                    return
                # §15 rule 2: a new receiver at a lost or aborted member's address; it takes
                # the place once its ACCEPT proves it (_successor_accepts), the record stays
                m.successors += 1
                m.successor, m.successor_since = Member(addr, self._controller(0, now), now), now
            elif m.successor.token != msg.token:
                return  # (another receiver's JOIN: it may try once this try has run out)
            m = m.successor
        if m is None:
            if not self._admitting():
                self.joins_refused += 1
                return
            m = Member(addr, self._controller(0, now), now)
            self.members[addr] = m
        m.heard_at = now
        m.token = msg.token
        if self.keys is None:  # (§17: a JOIN is in clear: sealed, it changes nothing but the HELLO)
            self._member_rtt(m, got, msg.echo_timestamp_us, 0)
        self.stats.retries_received += 1
        self._out.extend(self._to_member(self._hello(now, m.token), m))
        m.hellos = (*m.hellos[-(HELLO_STAMPS - 1) :], wire.to_us(now))  # its ACCEPT must echo one of these
        self.stats.hellos_sent += 1

    def _successor_accepts(self, msg: wire.Accept, old: Member, now: float, got: float) -> None:
        """§15 rule 2: the ACCEPT of a new receiver at a lost or aborted member's address: once
        it proves itself (it echoes a HELLO we sent it; sealed, it proves the key, §17 rule 8)
        the new receiver takes the member's place, as a late member; else nothing changes."""
        new = old.successor
        assert new is not None
        if self.keys is not None and not self._sealed_accept(msg, new):
            self.stats.unauthenticated += 1
            return
        if msg.echo_timestamp_us not in new.hellos or not self._open():
            self.stats.unexpected += 1
            return
        old.successor = None
        self.members[old.addr] = new
        new.heard_at = self.peer.last_heard = now
        self.path.heard_since_final = True
        self._on_accept_member(msg, new, now, got, replacing=True)
        if new.fate != Fate.RECEIVING:  # (refused after all: the record stays as it ended)
            self.members[old.addr] = old

    def _on_accept_member(
        self, msg: wire.Accept, m: Member, now: float, got: float, replacing: bool = False
    ) -> None:
        if msg.echo_timestamp_us not in m.hellos:
            self.stats.unexpected += 1  # it echoes no HELLO we sent it: it never read one
            return
        if self.kind == wire.Kind.STREAM and self.state != State.HANDSHAKE:
            # a stream serves only the members present at its start: the ring has let go of
            # what this one would need (its ACCEPT came after the start)
            del self.members[m.addr]
            self.joins_refused += 1
            late = wire.Abort(
                self.session_id, wire.AbortCode.BUSY, "the stream began before this receiver joined"
            )
            self._out.extend(self._to_member(wire.encode_abort(late), m))
            return
        if not replacing and not self._room():  # others took the places meanwhile: told, forgotten
            del self.members[m.addr]
            self.joins_refused += 1
            busy = wire.Abort(self.session_id, wire.AbortCode.BUSY, "the group is full")
            self._out.extend(self._to_member(wire.encode_abort(busy), m))
            return
        m.fate = Fate.RECEIVING
        m.joined_at = now
        if self.keys is not None:  # (three datagrams, each sealed on its own)
            self._send_keys(m, now, CLOSE_COPIES)
        m.late = self.state != State.HANDSHAKE
        m.window_limit = msg.window_limit
        m.fec = msg.fec and bool(self._features & wire.FEATURE_FEC)
        m.acked = 0
        m.progress_at = now
        self._member_rtt(m, got, msg.echo_timestamp_us, 0)
        self.events.add(Joined(m.addr, self.session_id))
        if m.late:
            self.path.probe_at = now  # it learns where the stream is, and NAKs what it lacks
            self._regroup()

    def _on_member_status(self, msg: wire.Status, m: Member, now: float, got: float) -> None:
        if msg.cum_ack > self.next_new or msg.highest > self.next_new:
            self.stats.unexpected += 1
            return
        if msg.received > m.received:
            m.received = msg.received
            m.progress_at = self.peer.progress_at = now
        m.acked = max(m.acked, msg.cum_ack)
        m.window_limit = max(m.window_limit, msg.window_limit)
        sample = None
        if msg.echo_timestamp_us:
            sample = self._member_rtt(m, got, msg.echo_timestamp_us, msg.echo_delay_us)
        m.receive_rate_Bps = msg.receive_rate
        # A member whose controller allows more than the group is sent (another member's is
        # lower) is app-limited: what it receives says nothing of what its path could carry.
        group_bps = self.path.pacer.rate_Bps * 8
        # (not when it gets clearly less than the group is actually sent: then it is the one
        # congested. Actually sent, not the pacer's rate: a sender short of CPU sends less than
        # its pacer allows, every member then got "less than the group's rate", none was
        # app-limited, each cut to what it got and the group ratcheted down to 15 Mbit/s.)
        sent_bps = min(group_bps, self._sent_rate(now))
        capped = group_bps < APP_LIMITED_SHARE * m.cc.rate_bps
        below = capped and msg.receive_rate * 8 >= SHORT_SHARE * sent_bps
        limited = m.app_limited or below
        m.cc.on_feedback(
            cc.Feedback(now, sample, msg.receive_rate * 8.0, self.sent_count, m.nakked_adus, limited)
        )
        m.app_limited = False
        self._regroup()
        self.stats.receiver_rate_Bps = min(x.receive_rate_Bps for x in self._receiving())
        self._follow_cc(self.path, now)

    def _on_member_nak(self, msg: wire.Nak, m: Member, now: float) -> None:
        """§15 rule 6: holes go to the repair queue once per round, for everyone."""
        self.stats.naks_received += 1
        m.naks += 1
        if msg.needs:
            if m.fec and self.end_adus is not None:
                self._on_needs(msg.needs, m, now)
            else:
                self.stats.unexpected += 1  # NEEDs from a member that did not say it decodes
        lo, hi = m.acked, self.next_new
        added = merge_ranges([(max(a, lo), min(b, hi)) for a, b in msg.ranges if a < hi and b > lo])
        if not added:
            return
        count = sum(b - a for a, b in added)
        m.nakked_adus += count
        if m.slow and any(x.keeps_pace for x in self.members.values()):
            # --slow catch-up: not now. Its NAK rounds ask again for every hole still open, so
            # nothing is kept for it; once the others are done its NAKs are repaired as anyone's.
            self.naks_deferred += 1
            return
        hold = max(1.5 * (self.path.srtt or 0.0), REPAIR_HOLD_MIN)
        recent = self._recent
        while recent and recent[0][0] < now - hold:
            recent.popleft()
        fresh = subtract_ranges(added, merge_ranges([(a, b) for _t, a, b in recent])) if recent else added
        fresh = subtract_ranges(fresh, self._repairs)  # queued already, for another member
        new = sum(b - a for a, b in fresh)
        self.repairs_held += count - new
        if not fresh:
            return
        self.stats.adus_nak_requested += new
        self._repairs = merge_ranges(self._repairs + fresh)

    def _sent_rate(self, now: float) -> float:
        """What went to the group, bits a second, over the latest SENT_RATE_SPAN or more."""
        at, nbytes = self._sent_mark
        if now - at >= SENT_RATE_SPAN:
            self._sent_bps = (self.stats.wire_bytes - nbytes) * 8 / (now - at)
            self._sent_mark = (now, self.stats.wire_bytes)
        return self._sent_bps

    def _on_needs(self, needs: tuple[tuple[int, int, int], ...], m: Member, now: float) -> None:
        """§16: a block gets as many fresh parity symbols as its neediest member lacks (the
        largest NEED, not their sum: each symbol fills a different hole at each member), less
        what is on its way to that member: the symbols queued, and those sent after the
        highest row it has seen, within PARITY_LATE (a symbol sent longer ago has arrived or
        was lost). A block whose rows would run out is sent again whole."""
        assert self.end_adus is not None
        if m.slow and any(x.keeps_pace for x in self.members.values()):
            self.naks_deferred += 1  # --slow catch-up: not now (as its ranges, below)
            return
        late = now - max(PARITY_LATE_RTTS * (self.path.srtt or 0.0), PARITY_LATE_MIN)
        for block, need, seen in needs:
            first, k = fec.block_span(block, self.end_adus)
            sent = self._parity_row.get(block, 0)
            if need > FEC_MAX_NEED or seen > sent:
                self.stats.unexpected += 1  # more than §16 lets a member ask for, or rows never sent
                continue
            if not 0 < need <= k or first + k <= m.acked or first >= self.next_new:
                continue
            m.nakked_adus += need
            arrived = seen  # rows it has seen, or that had time to arrive
            for at, rows in self._parity_sent.get(block, ()):
                if at < late:
                    arrived = max(arrived, rows)
            queued = self._parity.get(block, 0)
            coming = sent - arrived + queued
            if need <= coming:
                self.repairs_held += need
                continue
            want = queued + need - coming
            if sent + want > fec.max_rows(k):
                # the rows run out (a member that loses most of what it is sent): the block's
                # ADUs, all of them, as plain repairs, once within PARITY_LATE (a NEED that
                # crossed that resend asks for nothing more)
                if self._resent_at.get(block, float("-inf")) >= late:
                    self.repairs_held += need
                    continue
                self._resent_at[block] = now
                self._parity.pop(block, None)
                self._repairs = merge_ranges([*self._repairs, (first, first + k)])
                self.stats.adus_nak_requested += k
                self.stats.blocks_resent += 1
                continue
            self._parity[block] = want
            self.stats.adus_nak_requested += want - queued

    def next_run(self, now: float, max_count: int, on: int | None = None) -> Run | None:
        """The base class's run; a repair is noted with when it went (§15 rule 6: the NAKs
        that crossed it on their way are not repaired again)."""
        run = super().next_run(now, max_count, on)
        if run is not None and run.row >= 0:
            sends = self._parity_sent.setdefault(run.first // fec.BLOCK, [])
            sends.append((now, run.row + run.count))
            if len(sends) > PARITY_SENDS_KEPT:
                del sends[0]
        elif run is not None and run.repair:
            recent = self._recent
            recent.append((now, run.first, run.first + run.count))
            if len(recent) > RECENT_MAX:
                hold = max(1.5 * (self.path.srtt or 0.0), REPAIR_HOLD_MIN)
                while recent and recent[0][0] < now - hold:
                    recent.popleft()
        return run

    def _member_rtt(self, m: Member, now: float, echo_us: int, delay_us: int) -> float | None:
        sample = rtt_sample(now, echo_us, delay_us)
        if sample is not None:
            m.srtt, m.rttvar = smooth_rtt(m.srtt, m.rttvar, sample)
        return sample

    def _member_ends(self, m: Member, fate: Fate, reason: str, now: float) -> None:
        m.fate, m.reason, m.ended_at = fate, reason, now
        self.events.add(MemberEnded(m.addr, fate.value, reason))
        self._carrier_list = None
        self._regroup()
        self._settled(now)

    # ------------------------------------------------------------ outputs

    def _group_size(self) -> int:
        return max(1, len(self._receiving()))

    def shown_acked(self) -> int:
        """What the members that keep pace hold (a stalled one is not the group's progress;
        once none is receiving, what the ones that verified hold)."""
        live = self._receiving()
        pace = [m for m in live if m.keeps_pace] or live
        if pace:
            return min(m.acked for m in pace)
        done = [m for m in self.members.values() if m.fate == Fate.OK]
        return (self.end_adus or 0) if done else self.peer.acked

    def member_stats(self) -> list[dict[str, object]] | None:
        out: list[dict[str, object]] = []
        for m in self.members.values():
            end, total = m.ended_at, self.total_bytes
            held = m.acked * self.adu if total is None else min(m.acked * self.adu, total)
            out.append(
                {
                    "address": _addr(m.addr),
                    "state": m.fate.value,
                    "reason": m.reason,
                    "late": m.late,
                    "stalled": m.stalled,
                    "slow": m.slow,
                    "fec": m.fec,
                    "bytes": m.received_bytes if m.fate in (Fate.OK, Fate.MISMATCH) else held,
                    "naks": m.naks,
                    "adus_nakked": m.nakked_adus,
                    "srtt_ms": round((m.srtt or 0.0) * 1e3, 2),
                    "rate_bps": round(m.cc.rate_bps),
                    "receive_rate_bps": m.receive_rate_Bps * 8,
                    "seconds": None if end is None or m.joined_at is None else round(end - m.joined_at, 3),
                }
            )
        return out


def _addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
