"""The striping policies (alf.stripe) and the --path syntax."""

from __future__ import annotations

import pytest

from alf import stripe
from alf.io.common import Path, parse_path
from alf.stripe import PathView


def test_prefer_keeps_the_order_given_and_skips_what_is_down() -> None:
    paths = [PathView(0, used=5.0), PathView(1, used=0.0), PathView(2, usable=False)]
    assert stripe.order("prefer", paths) == [0, 1]


def test_a_backup_carries_only_while_no_other_path_is_usable() -> None:
    main, backup = PathView(0), PathView(1, backup=True)
    assert stripe.order("prefer", [main, backup]) == [0]
    assert stripe.order("weighted", [PathView(0, usable=False), backup]) == [1]
    assert stripe.repair_order([main, backup]) == [0]
    assert stripe.order("minrtt", [PathView(0, usable=False), PathView(1, usable=False, backup=True)]) == []


def _share_of_first(policy: str, offered_runs_per_ms: float, ms: int = 4000) -> float:
    """Two pacers of 300 and 100 Mbit/s, buckets of 4 ms at their rates, and a sender that
    offers runs of 36 kB at the given pace to the first path in the policy's order that has
    the tokens for one: the first path's share of the bytes sent."""
    rates = [300e6, 100e6]
    per_ms = [r / 8 / 1000 for r in rates]  # bytes per ms
    caps = [4 * r for r in per_ms]
    tokens, sent, run, owed = list(caps), [0, 0], 36_000, 0.0
    shares = stripe.Shares(2)
    for _ms in range(ms):
        tokens = [min(t + r, c) for t, r, c in zip(tokens, per_ms, caps, strict=True)]
        owed += offered_runs_per_ms
        while owed >= 1:
            owed -= 1
            views = [PathView(p, used=shares.used[p]) for p in (0, 1)]
            for p in stripe.order(policy, views):
                if tokens[p] >= run:
                    tokens[p] -= run
                    sent[p] += run
                    shares.charge(p, run, rates[p])
                    shares.level([0, 1])
                    break
    return sent[0] / sum(sent)


def test_weighted_shares_follow_the_rates_and_prefer_fills_the_first() -> None:
    """Offered 24 MB/s where both carry 50: weighted still splits 3:1 by rate, prefer puts it
    all on the first path; offered more than both carry, both policies fill both (3:1)."""
    assert 0.70 <= _share_of_first("weighted", 2 / 3) <= 0.80
    assert _share_of_first("prefer", 2 / 3) >= 0.99
    for policy in ("weighted", "prefer"):
        assert 0.70 <= _share_of_first(policy, 3.0) <= 0.80


def test_shares_start_a_returning_path_level() -> None:
    shares = stripe.Shares(3)
    for _ in range(10):
        shares.charge(0, 1000, 8000.0)  # 1 s each
        shares.charge(1, 1000, 8000.0)
    shares.level([0, 1])  # path 2 is down
    assert shares.used == [0.0, 0.0, 0.0]
    shares.charge(0, 1000, 8000.0)
    shares.level([0, 1, 2])  # path 2 is back: level with path 1, the least used, not 10 s behind
    assert shares.used == [1.0, 0.0, 0.0]


def test_minrtt_is_the_earliest_expected_arrival() -> None:
    fast_busy = PathView(0, ready_in=0.030, srtt=0.010)  # 30 ms until its pacer allows a run
    slow_free = PathView(1, ready_in=0.0, srtt=0.100)
    assert stripe.order("minrtt", [fast_busy, slow_free]) == [0, 1]  # 35 ms against 50
    assert stripe.order("minrtt", [PathView(0, ready_in=0.060, srtt=0.010), slow_free]) == [1, 0]
    # a path not measured yet counts as the slowest measured one
    assert stripe.order("minrtt", [PathView(0, srtt=None), PathView(1, srtt=0.02)]) == [1, 0]


def test_repairs_go_to_the_healthiest_path() -> None:
    lossy = PathView(0, srtt=0.010, loss=0.01)
    clean = PathView(1, srtt=0.050, loss=0.0)
    assert stripe.repair_order([lossy, clean]) == [1, 0]
    # losses within half a percent are equal: the earlier arrival decides
    assert stripe.repair_order([PathView(0, srtt=0.010, loss=0.002), PathView(1, srtt=0.05)]) == [0, 1]


def test_pick_keeps_a_connection_home_while_it_is_up() -> None:
    paths = [PathView(0), PathView(1)]
    assert stripe.pick("prefer", paths, home=1) == 1
    assert stripe.pick("prefer", [PathView(0), PathView(1, usable=False)], home=1) == 0
    assert stripe.pick("prefer", [PathView(0, usable=False)], home=0) is None
    with pytest.raises(ValueError, match="unknown striping policy"):
        stripe.order("random", paths)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.2.0.2", Path("10.2.0.2", 8834)),
        ("10.2.0.2:99", Path("10.2.0.2", 99)),
        ("10.2.0.2@10.2.0.1", Path("10.2.0.2", 8834, local="10.2.0.1")),
        ("10.2.0.2%eth1", Path("10.2.0.2", 8834, device="eth1")),
        ("10.2.0.2:9@10.2.0.1%eth1,backup", Path("10.2.0.2", 9, "10.2.0.1", "eth1", True)),
        ("[::1]:5@[::1]", Path("::1", 5, local="::1")),
        ("::1", Path("::1", 8834)),
        ("[fe80::1%eth0]:7", Path("fe80::1%eth0", 7)),
        ("host.example,backup", Path("host.example", 8834, backup=True)),
        ("10.2.0.2,rate=100M", Path("10.2.0.2", 8834, rate_bps=100e6)),
        ("10.2.0.2:9,rate=1.5G,backup", Path("10.2.0.2", 9, backup=True, rate_bps=1.5e9)),
    ],
)
def test_path_syntax(text: str, want: Path) -> None:
    assert parse_path(text, 8834) == want
    assert parse_path(want.describe(), 8834) == want


@pytest.mark.parametrize(
    "text",
    ["", ":5", "h:0", "h:x", "[::1", "h@", "h%", "[::1]x"]
    + ["h,rate=0", "h,rate=fast", "h,slow", "h,backup,backup", "h,"],
)
def test_path_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_path(text, 8834)
