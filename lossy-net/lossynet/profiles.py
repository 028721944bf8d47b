"""Named lab profiles (docs/lab.md explains each)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lossynet.topology import LinkSpec


def gilbert(mean_loss: float, mean_burst: float) -> list[float]:
    """Gilbert parameters [p_gb, p_bg, loss_bad=1, loss_good=0] for a mean loss and burst length."""
    r = 1.0 / mean_burst
    p = mean_loss * r / (1.0 - mean_loss)
    return [p, r, 1.0, 0.0]


@dataclass(frozen=True)
class Profile:
    kind: str  # "pair" or "segment"
    links: list[LinkSpec] = field(default_factory=list)
    text: str = ""


PROFILES: dict[str, Profile] = {
    "lan-1pct": Profile(
        "pair", [LinkSpec(rate_bps=1e9, loss=0.01)], "1 Gbit/s, 1% random loss, no added delay"
    ),
    "wan": Profile(
        "pair", [LinkSpec(rate_bps=100e6, delay=0.025, loss=0.01)], "100 Mbit/s, 50 ms RTT, 1% random loss"
    ),
    "intercontinental": Profile(
        "pair",
        [LinkSpec(rate_bps=200e6, delay=0.100, loss=0.005)],
        "200 Mbit/s, 200 ms RTT, 0.5% random loss",
    ),
    "satellite": Profile(
        "pair",
        [LinkSpec(rate_bps=20e6, delay=0.300, ge=gilbert(0.01, 4.0))],
        "20 Mbit/s, 600 ms RTT, burst loss (Gilbert: 1% mean, bursts of 4 on average)",
    ),
    "bottleneck-200": Profile(
        "pair", [LinkSpec(rate_bps=200e6, delay=0.010)], "200 Mbit/s, 20 ms RTT, no random loss"
    ),
    "step-200-50-200": Profile(
        "pair",
        [LinkSpec(rate_bps=200e6, delay=0.010, rate_steps=[[10.0, 50e6], [20.0, 200e6]])],
        "200 Mbit/s, 20 ms RTT; the rate drops to 50 Mbit/s at 10 s and returns at 20 s",
    ),
    "multipath": Profile(
        "pair",
        [LinkSpec(rate_bps=300e6), LinkSpec(rate_bps=100e6)],
        "two paths, 300 and 100 Mbit/s, separate subnets",
    ),
    "multicast-4": Profile(
        "segment",
        [LinkSpec(), LinkSpec(loss=0.01), LinkSpec(loss=0.03), LinkSpec(loss=0.10)],
        "one sender, four receivers on a bridge, at 0/1/3/10% loss",
    ),
}
