"""Token-bucket pacing as a pure calculation (times are injected).

Invariant: over any interval of length T the bytes allowed are at most
``burst_bytes + rate * T``; tokens never exceed ``burst_bytes``.
"""

from __future__ import annotations

# A bucket's size in time at the rate (each sender names a floor in bytes). A sender's loop is
# off the CPU for milliseconds at a time on a busy host (Linux's base time slice is 3 ms; on the
# 2-core machine the UDP pipe sender's loop waited 0.45 s per GiB to run); a 1 ms bucket lost
# every token of a longer wait, and --rate 10G delivered 0.92 GB/s on the wire, a quarter under.
BURST_TIME = 0.004


def bucket_bytes(rate_bps: float, at_least: int) -> int:
    """The bucket for ``rate_bps``: ``BURST_TIME`` at the rate, or ``at_least`` bytes if more."""
    return max(at_least, int(rate_bps / 8 * BURST_TIME))


class Pacer:
    def __init__(self, rate_bps: float, burst_bytes: int, now: float) -> None:
        if rate_bps <= 0:
            raise ValueError("rate must be positive")
        self.rate_Bps = rate_bps / 8.0
        self.burst_bytes = burst_bytes
        self._tokens = float(burst_bytes)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(float(self.burst_bytes), self._tokens + (now - self._stamp) * self.rate_Bps)
            self._stamp = now

    def set_rate(self, rate_bps: float, burst_bytes: int, now: float) -> None:
        """Change the rate from ``now`` on (tokens earned so far stay)."""
        if rate_bps <= 0:
            raise ValueError("rate must be positive")
        self._refill(now)
        self.rate_Bps = rate_bps / 8.0
        self.burst_bytes = burst_bytes
        self._tokens = min(self._tokens, float(burst_bytes))

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def consume(self, nbytes: int, now: float) -> None:
        self._refill(now)
        self._tokens -= nbytes

    def delay_for(self, nbytes: int, now: float) -> float:
        """Seconds from ``now`` until ``nbytes`` of tokens are there (0 if they are)."""
        self._refill(now)
        missing = nbytes - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate_Bps
