"""alf.pacing: the token bucket, with exact times."""

from __future__ import annotations

from alf.pacing import Pacer


def test_pacer_exact_times() -> None:
    p = Pacer(8000.0, burst_bytes=100, now=0.0)  # 1000 bytes/s
    assert p.available(0.0) == 100
    p.consume(100, 0.0)
    assert p.delay_for(50, 0.0) == 0.05
    assert p.available(0.05) == 50
    assert p.available(10.0) == 100  # never above the burst
    p.consume(100, 10.0)
    p.consume(100, 10.0)  # a batch may overdraw; the debt delays what follows
    assert p.delay_for(1, 10.0) == 0.101


def test_pacer_holds_the_rate_over_a_second() -> None:
    rate_bps, size = 200e6, 1452
    p = Pacer(rate_bps, burst_bytes=64 * size, now=0.0)
    now, sent = 0.0, 0
    while now < 1.0:
        n = int(p.available(now) // size)
        if n:
            p.consume(n * size, now)
            sent += n * size
        now += max(p.delay_for(size, now), 1e-5)
    assert abs(sent * 8 - rate_bps) / rate_bps < 0.01
