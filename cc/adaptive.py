"""``adaptive``: rate-based control that finds the bottleneck and ignores random loss
(docs/cc.md has the reasoning and the figures).

Model, in the spirit of BBR, with the receiver's rate measurement (as in UDT and FASP) in place
of acknowledgement timing:
- The bottleneck's capacity is the **maximum receive rate** the receiver reported over the last
  ten rounds (a round is one minimum RTT, at least 10 ms). Random loss after the bottleneck
  makes it that much low, which costs that much rate and never a queue.
- A **standing queue** (even the smallest RTT sample of a round above the minimum RTT by a
  quarter, and by at least 4 ms, two rounds running) means the path is congested: the estimate
  drops to what the receiver now measures (at most halving at once; again while even the drain
  rate is more than the receiver gets) and the sender drains at 0.75 of it until a round's
  smallest RTT is back near the minimum (16 rounds at most). The smoothed RTT is not used for
  this: it lags a draining queue, and cuts taken on it compound (tried: the rate sank to a
  third of the path after a step down).
- **Loss** alone is not congestion. Random loss costs repairs, not rate. Loss counts only when
  it is heavy (over 10% in a round) *and* the receiver gets clearly less than is sent (a
  policer, or a full queue with no delay signal).
- **Startup** doubles the rate each round while the receive rate still grows by a quarter;
  three rounds without that growth, or a queue, end it. **Cruising** cycles through gains
  1.25, 0.75, 1, 1, 1, 1, 1, 1 per round: a probe for more, a drain of what the probe queued,
  six rounds at the estimate. A probe that finds a tenth more than the estimate means the
  path has grown: the next round probes again from the new estimate, so the rate grows by a
  quarter a round (not a cycle) while there is room, and a path that quadruples is filled in
  about six rounds. Each cruise round without a queue also adds four datagrams a round to the
  estimate, the same for every flow: with the multiplicative cuts this is AIMD, which brings
  flows sharing a bottleneck to equal shares (multiplicative probing alone kept whatever ratio
  they started with: Jain 0.80 in one lab run of three).
Invariant: the rate stays within [floor, ceiling]; the same feedback gives the same rates.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from cc.base import Controller, Feedback, register

START_BPS = 20e6
MIN_ROUND = 0.010
MAX_FILTER_ROUNDS = 10
# The base RTT is the minimum over ten one-minute buckets, LEDBAT's base delay history (RFC 6817
# 3.4.2), not BBR's 10 s: against a loss-based flow that keeps the bottleneck's queue from
# ever emptying, a 10 s minimum took that flow's queue for the path after 10 s, alf stopped
# seeing a queue and took two thirds of the link (lab, one CUBIC flow: TCP's share fell from
# 0.78 to 0.37 at t = 10 s). A longer path after a route change is believed after 10 minutes.
# No feedback for max(4 smoothed RTTs, 200 ms) while sending halves the rate, and again each such
# interval (TFRC's no-feedback timer, RFC 5348 4.4): a sender whose receiver has gone quiet must
# not go on at the last rate it was given (lab: a link that carried nothing for 10 s, a fault of
# the lab's own since fixed, was sent 73 Mbit/s all that time).
NO_FEEDBACK_MIN = 0.2
BASE_BUCKET = 60.0
BASE_BUCKETS = 10
QUEUE_FRACTION = 0.25
QUEUE_MIN = 0.004
CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
DRAIN_GAIN = 0.75
ADD_DATAGRAMS = 4  # additive increase per round without a queue
DATAGRAM_BITS = 1452 * 8
MAX_DRAIN_ROUNDS = 16
# Start-up ends after 3 flat rounds spanning at least this long (from the end of the first to
# the end of the third: two rounds). 40 ms is two rounds at 20 ms RTT, so paths of 20 ms and
# more behave exactly as before; only LAN-scale rounds (10 ms) wait for five.
STARTUP_FLAT_MIN = 0.04


class _WindowedMax:
    """Max of (time, value) samples over a sliding time window (a monotonic deque)."""

    def __init__(self) -> None:
        self._q: deque[tuple[float, float]] = deque()

    def add(self, t: float, v: float, window: float) -> None:
        q = self._q
        while q and q[-1][1] <= v:
            q.pop()
        q.append((t, v))
        while q[0][0] < t - window:
            q.popleft()

    def value(self) -> float:
        return self._q[0][1] if self._q else 0.0

    def reset(self, t: float, v: float) -> None:
        self._q = deque([(t, v)])


class _BaseHistory:
    """The minimum of samples over ``buckets`` consecutive buckets of ``span`` seconds each: the
    current bucket's running minimum and the minima of the last ``buckets - 1`` before it."""

    def __init__(self, span: float = BASE_BUCKET, buckets: int = BASE_BUCKETS) -> None:
        self.span = span
        self._minima: deque[float] = deque(maxlen=buckets)
        self._bucket_start = 0.0

    def add(self, t: float, v: float) -> None:
        if not self._minima or t - self._bucket_start >= self.span:
            self._minima.append(v)  # the oldest bucket falls off the far end
            self._bucket_start = t
        elif v < self._minima[-1]:
            self._minima[-1] = v

    def value(self) -> float:
        return min(self._minima) if self._minima else 0.0


@register("adaptive")
class Adaptive(Controller):
    def __init__(self, ceiling_bps: float, floor_bps: float, now: float) -> None:
        super().__init__(ceiling_bps, floor_bps, now)
        self._rate = self.clamp(START_BPS)
        self.mode = "startup"
        self.btl_bps = 0.0  # the capacity estimate, datagram bits per second
        self._max = _WindowedMax()
        self._min_rtt = _BaseHistory()
        self.srtt: float | None = None
        self.loss = 0.0  # EWMA of the per-round loss fraction
        self._round_start = now
        self._round_sent = 0
        self._round_nakked = 0
        self._round_best = 0.0  # the best capacity sample of the current round
        self._startup_best = 0.0
        self._startup_flat = 0
        self._queue_rounds = 0
        self._cycle = 0
        self._round_min_rtt = float("inf")
        self._drain_rounds = 0
        self._probe_base = 0.0  # the estimate a probe round started from (0: not probing)
        self._round_app_limited = False
        self._flat_since = 0.0
        self._silence_cut_at = float("-inf")
        self.events: list[str] = []  # the last few decisions, for stats and tests

    @property
    def rate_bps(self) -> float:
        return self._rate

    @property
    def min_rtt(self) -> float:
        return self._min_rtt.value()

    def _round(self) -> float:
        # The minimum RTT, not the smoothed one: while a queue builds, the smoothed RTT grows
        # as fast as time passes and a round measured by it would never end (found by the
        # fluid-model test: the queue grew without bound).
        return max(self.min_rtt or self.srtt or MIN_ROUND, MIN_ROUND)

    def on_feedback(self, fb: Feedback) -> None:
        now = fb.now
        if fb.rtt is not None and fb.rtt > 0:
            self.srtt = fb.rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * fb.rtt
            self._min_rtt.add(now, fb.rtt)
            self._round_min_rtt = min(self._round_min_rtt, fb.rtt)
        if fb.receive_rate_bps > 0:
            # Not scaled up for loss: drops in the bottleneck's own queue would then inflate the
            # estimate that caused them (tried: it fed itself into a steady 20% loss). A sample
            # taken while the sender could not fill its rate says only that the path carries at
            # least that much: it never lowers the estimate (BBR's rule for app-limited samples),
            # but it is the round's measurement all the same (a queue in such a round still cuts).
            capacity = fb.receive_rate_bps
            if not (fb.app_limited and capacity < self.btl_bps):
                self._max.add(now, capacity, MAX_FILTER_ROUNDS * self._round())
                self.btl_bps = self._max.value()
            self._round_best = max(self._round_best, capacity)
        self._round_app_limited = self._round_app_limited or fb.app_limited
        if now - self._round_start >= self._round():
            self._end_round(fb)

    def on_silence(self, now: float, silent_for: float) -> None:
        limit = max(NO_FEEDBACK_MIN, 4 * (self.srtt or 0.0))
        if silent_for < limit or now - self._silence_cut_at < limit:
            return
        self._silence_cut_at = now
        # drain: the first feedback then says whether to cut again or cruise
        self._drain(now, max(self.floor_bps, 0.5 * (self.btl_bps or self._rate)), 0.5 * self._rate)
        self._note("no feedback: rate halved")

    def _queueing(self, round_min: float) -> bool:
        """A standing queue: even the round's smallest RTT sample is well above the minimum."""
        if round_min == float("inf") or not self.min_rtt:
            return False
        return round_min > self.min_rtt + max(QUEUE_MIN, QUEUE_FRACTION * self.min_rtt)

    def _end_round(self, fb: Feedback) -> None:
        sent = fb.sent - self._round_sent
        nakked = fb.nakked - self._round_nakked
        round_loss = min(1.0, nakked / sent) if sent > 0 else 0.0
        self.loss = 0.75 * self.loss + 0.25 * round_loss
        self._round_start, self._round_sent, self._round_nakked = fb.now, fb.sent, fb.nakked
        measured, self._round_best = self._round_best, 0.0
        round_min, self._round_min_rtt = self._round_min_rtt, float("inf")
        app_limited, self._round_app_limited = self._round_app_limited, False
        queue = self._queueing(round_min)
        if self.mode == "drain":
            self._drain_rounds += 1
            if measured and measured < 0.9 * self._rate and not app_limited:
                # even the drain rate is more than the path delivers: the estimate is still
                # too high (a step of more than half), so cut again rather than wait
                self._cut(fb.now, measured)
                self._note("still congested: down again")
                return
            if not queue or self._drain_rounds >= MAX_DRAIN_ROUNDS:
                self.mode = "cruise"
                self._cycle = 2  # no probe right after a drain
                self._rate = self.clamp(self.btl_bps)
                self._note("drained")
            return
        self._queue_rounds = self._queue_rounds + 1 if queue else 0
        # (A round in which less than the rate was sent says nothing by its receive rate: only
        # the queue tells congestion then.)
        congested = self._queue_rounds >= 2 or (
            round_loss > 0.10 and measured and measured < 0.8 * self._rate and not app_limited
        )
        if congested and measured:
            self._cut(fb.now, measured)
            self._note("congestion: down to the measured rate")
            return
        if self.mode == "startup":
            if self.btl_bps >= 1.25 * self._startup_best:
                self._startup_best = self.btl_bps
                self._startup_flat = 0
                self._rate = self.clamp(2 * max(self.btl_bps, self._rate / 2))
            elif not app_limited:  # a round the source could not fill says nothing of the path
                self._startup_flat += 1
                if self._startup_flat == 1:
                    self._flat_since = fb.now
                # Three flat rounds, and long enough for the receiver's rate measurement (over
                # 20 ms or more, reported every 50 ms or per PROBE) to have seen the last
                # doubling: with 10 ms rounds on a LAN it had not, and start-up ended at a
                # fraction of the path (loopback: ~1 Gbit/s of 6).
                if self._startup_flat >= 3 and fb.now - self._flat_since >= STARTUP_FLAT_MIN:
                    self.mode = "cruise"
                    self._cycle = 1  # a drain round first: startup queued
                    self._note("startup over")
            if self.mode == "startup":
                return
        if self._probe_base and measured > 1.1 * self._probe_base:
            # the probe found room: the path has grown, so probe again from there next round
            self._cycle = 0
            self._note("probe found room: probe again")
        if not queue and not app_limited:
            # Additive increase, the same for every flow on the path: AIMD converges to fair
            # shares where multiplicative probing alone keeps the ratio the flows started with.
            # Not in a round the sender could not fill (RFC 7661's rule for a cwnd): a path
            # that waited on the window grew 100 -> 1300 Mbit/s in 2.5 s of 10 ms rounds, and
            # the next window went out at that rate into a 100 Mbit/s link.
            self.btl_bps += ADD_DATAGRAMS * DATAGRAM_BITS / self._round()
            self._max.add(fb.now, self.btl_bps, MAX_FILTER_ROUNDS * self._round())
        gain = CYCLE[self._cycle % len(CYCLE)]
        self._cycle += 1
        base = self.btl_bps or self._rate
        self._probe_base = base if gain > 1.0 else 0.0
        self._rate = self.clamp(gain * base)

    def _cut(self, now: float, measured: float) -> None:
        """The path carries what the receiver now measures: believe it, then drain the standing
        queue below it until the RTT comes back down. One cut at most halves the estimate: in
        the turmoil of a step down a round's measurement can be far too low, and believing it
        whole sank the rate to a tenth of the path (lab, 200 -> 50 Mbit/s)."""
        measured = max(measured, 0.5 * self.btl_bps)
        self._drain(now, measured, DRAIN_GAIN * measured)

    def _drain(self, now: float, estimate: float, rate: float) -> None:
        """Believe ``estimate`` as the capacity and send at ``rate`` until a round shows no queue."""
        self._max.reset(now, estimate)
        self.btl_bps = estimate
        self._rate = self.clamp(rate)
        self._queue_rounds = 0
        self.mode = "drain"
        self._drain_rounds = 0

    @property
    def starting(self) -> bool:
        return self.mode == "startup"

    def _note(self, what: str) -> None:
        self.events.append(what)
        del self.events[:-8]

    def snapshot(self) -> dict[str, Any]:
        return {
            "cc": self.name,
            "cc_mode": self.mode,
            "rate_bps": round(self._rate),
            "btl_bps": round(self.btl_bps),
            "min_rtt_ms": round(self.min_rtt * 1e3, 3),
            "cc_srtt_ms": round((self.srtt or 0) * 1e3, 3),
            "loss": round(self.loss, 4),
        }
