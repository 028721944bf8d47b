"""Half-open ranges of ADU indices, as the repair and resend queues keep them, and the
ceiling division that counts ADUs. Pure functions, shared by every transport core.
"""

from __future__ import annotations


def ceil_div(n: int, d: int) -> int:
    """How many ``d``-sized pieces hold ``n`` (ADUs for ``n`` bytes)."""
    return -(-n // d)


def append_range(ranges: list[tuple[int, int]], a: int, b: int) -> None:
    """Add [a, b) at the end of sorted ``ranges``, joining the last range it continues."""
    if ranges and ranges[-1][1] == a:
        ranges[-1] = (ranges[-1][0], b)
    else:
        ranges.append((a, b))


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of half-open ranges as sorted, disjoint ranges (a repair or resend queue)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def trim_ranges(ranges: list[tuple[int, int]], below: int) -> None:
    """Drop what lies below ``below`` from sorted, disjoint ``ranges`` (acknowledged ADUs)."""
    while ranges and ranges[0][1] <= below:
        ranges.pop(0)
    if ranges and ranges[0][0] < below:
        ranges[0] = (below, ranges[0][1])


def subtract_ranges(ranges: list[tuple[int, int]], minus: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What of sorted, disjoint ``ranges`` lies outside sorted, disjoint ``minus``."""
    out: list[tuple[int, int]] = []
    k = 0
    for a, b in ranges:
        while k < len(minus) and minus[k][1] <= a:
            k += 1
        j = k
        while a < b and j < len(minus) and minus[j][0] < b:
            lo, hi = minus[j]
            if lo > a:
                out.append((a, lo))
            a = max(a, hi)
            j += 1
        if a < b:
            out.append((a, b))
    return out


def skip_held(held: list[tuple[int, int]], i: int) -> int:
    """Where a first pass at index ``i`` goes on, past the sorted ranges ``held`` (§18: what
    the receiver holds already); the ranges passed leave the list."""
    while held and held[0][0] <= i:
        a, b = held.pop(0)
        if b > i:
            i = b
    return i


def before_held(held: list[tuple[int, int]], i: int, n: int) -> int:
    """How many of ``n`` ADUs from ``i`` a first pass sends before the next held range."""
    return min(n, held[0][0] - i) if held else n
