"""alf.gapmap: the bitmap of held ADUs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alf import gapmap
from alf.gapmap import GapMap


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=60))
def test_gapmap_matches_a_set(runs: list[tuple[int, int]]) -> None:
    g, held = GapMap(), set()
    for first, count in runs:
        new = g.add_run(first, count)
        expect = sorted(set(range(first, first + count)) - held)
        assert [i for a, b in new for i in range(a, b)] == expect
        held |= set(range(first, first + count))
        cum = 0
        while cum in held:
            cum += 1
        assert g.cum == cum and g.count == len(held) and g.highest == (max(held) + 1 if held else 0)
        missing = [i for a, b in g.missing(0, 400) for i in range(a, b)]
        assert missing == [i for i in range(400) if i not in held]


def test_gapmap_trims_its_prefix() -> None:
    g = GapMap()
    step = 1024
    for first in range(0, gapmap.TRIM_BITS * 3, step):
        g.add_run(first, step)
    assert g.cum == gapmap.TRIM_BITS * 3
    assert len(g._bits) < gapmap.TRIM_BITS  # the all-ones prefix is gone
    assert g.add_run(5, 10) == [] and g.has(5)
    assert g.missing(0, g.cum + 3) == [(g.cum, g.cum + 3)]
