"""The receiver's record of which ADUs it holds.

Invariants: ``cum`` is the first index not held (every index below it is held); ``highest`` is
one past the highest index held; ``count`` is the number of distinct indices held. Bits below a
moving base are dropped once they are all set, so a stream of any length costs memory only for
the span between ``cum`` and ``highest``.
"""

from __future__ import annotations

from bitarray import bitarray
from bitarray.util import intervals, zeros

TRIM_BITS = 1 << 20  # drop the all-ones prefix in steps of this many bits


class GapMap:
    def __init__(self) -> None:
        self._bits = bitarray(endian="big")
        self._base = 0
        self.cum = 0
        self.highest = 0
        self.count = 0

    def has(self, index: int) -> bool:
        if index < self.cum:
            return True
        pos = index - self._base
        return pos < len(self._bits) and bool(self._bits[pos])

    def add_run(self, first: int, count: int) -> list[tuple[int, int]]:
        """Mark [first, first+count) held; return the sub-ranges that were not held before."""
        stop = first + count
        if stop <= self.cum:
            return []
        if first < self.cum:
            first = self.cum
        lo, hi = first - self._base, stop - self._base
        if hi > len(self._bits):
            self._bits.extend(zeros(hi - len(self._bits), endian="big"))
        seg = self._bits[lo:hi]
        if not seg.any():
            new = [(first, stop)]
            added = stop - first
        else:
            new = [(first + a, first + b) for v, a, b in intervals(seg) if not v]
            added = sum(b - a for a, b in new)
            if not added:
                return []
        self._bits[lo:hi] = 1
        self.count += added
        if stop > self.highest:
            self.highest = stop
        if first == self.cum:
            nxt = self._bits.find(0, self.cum - self._base)
            self.cum = self._base + (len(self._bits) if nxt < 0 else nxt)
            if self.cum - self._base >= TRIM_BITS:
                drop = self.cum - self._base
                del self._bits[:drop]
                self._base += drop
        return new

    def held_in(self, lo: int, hi: int) -> int:
        """How many indices of [lo, hi) are held."""
        below = max(0, min(hi, self.cum) - lo)
        a, b = max(lo, self.cum) - self._base, min(hi, self._base + len(self._bits)) - self._base
        return below + (self._bits.count(1, a, b) if b > a else 0)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Sorted disjoint ranges of indices in [lo, hi) not held."""
        lo = max(lo, self.cum)
        if hi <= lo:
            return []
        end_bits = min(hi, self._base + len(self._bits))
        out: list[tuple[int, int]] = []
        if end_bits > lo:
            seg = self._bits[lo - self._base : end_bits - self._base]
            out = [(lo + a, lo + b) for v, a, b in intervals(seg) if not v]
        tail_from = max(lo, end_bits)
        if hi > tail_from:
            if out and out[-1][1] == tail_from:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((tail_from, hi))
        return out

    def held_runs(self) -> list[tuple[int, int]]:
        """Sorted disjoint ranges of the indices held (what a resume can take up, §18)."""
        out = [(0, self.cum)] if self.cum else []
        lo = self.cum - self._base
        if lo < len(self._bits):
            for v, a, b in intervals(self._bits[lo:]):
                if v:
                    out.append((self.cum + a, self.cum + b))
        return out
