"""Smart batching of send system calls: an automatic transmission (pure; times are injected).

After T. Montgomery's "Mechanical Sympathetic Networking": flush by default; batch when the
mean time between sends (MTBS: how often a datagram becomes ready to go) is shorter than the
mean time to send (MTTS: how long one send call takes); flush on a timeout in any case.
Both means are EWMAs.

Invariants: in flush mode every ready datagram goes out at once; in batch mode a partial batch
waits at most ``flush_timeout`` after its first datagram became ready; a batch is never larger
than ``max_batch`` nor than what is ready (the pacer decides what is ready).
"""

from __future__ import annotations

ALPHA = 0.125


class SmartBatcher:
    def __init__(self, max_batch: int, flush_timeout: float = 0.0005) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.flush_timeout = flush_timeout
        self.mtbs: float | None = None  # seconds between datagrams becoming ready
        self.mtts: float | None = None  # seconds one send call takes
        self._last_count = 0
        self._last_time: float | None = None
        self._waiting_since: float | None = None

    @property
    def batching(self) -> bool:
        return self.mtbs is not None and self.mtts is not None and self.mtbs < self.mtts

    def observe_ready(self, cumulative: int, now: float) -> None:
        """``cumulative`` datagrams have become ready since the start (sent or waiting)."""
        if self._last_time is not None and cumulative > self._last_count:
            k = cumulative - self._last_count
            gap = (now - self._last_time) / k
            weight = 1.0 - (1.0 - ALPHA) ** k  # k samples of ``gap`` at once
            self.mtbs = gap if self.mtbs is None else self.mtbs + weight * (gap - self.mtbs)
        if self._last_time is None or cumulative > self._last_count:
            self._last_count, self._last_time = cumulative, now

    def observe_send(self, seconds: float) -> None:
        """One send call took ``seconds``."""
        self.mtts = seconds if self.mtts is None else self.mtts + ALPHA * (seconds - self.mtts)

    def take(self, ready: int, now: float) -> int:
        """How many of the ``ready`` datagrams to send now (0: wait until ``deadline``)."""
        if ready <= 0:
            self._waiting_since = None
            return 0
        if not self.batching or ready >= self.max_batch:
            self._waiting_since = None
            return min(ready, self.max_batch)
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since >= self.flush_timeout:
            self._waiting_since = None
            return ready
        return 0

    def deadline(self) -> float | None:
        """When a waiting partial batch must be flushed (None: nothing waits)."""
        return None if self._waiting_since is None else self._waiting_since + self.flush_timeout
