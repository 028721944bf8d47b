"""The userspace wire's decisions, as a pure object (no devices, no namespaces)."""

from __future__ import annotations

import struct

from lossynet.profiles import gilbert
from lossynet.wire import Direction, Impairment, corrupt_udp


def udp_packet(payload: bytes) -> bytes:
    ip = bytes([0x45, 0]) + struct.pack("!H", 28 + len(payload)) + bytes(5) + bytes([17]) + bytes(10)
    return ip + struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0xBEEF) + payload


def run(d: Direction, n: int = 20000, seed: int = 1) -> tuple[Impairment, list[list[tuple[float, bytes]]]]:
    imp = Impairment(d, seed, start=0.0)
    return imp, [imp.fate(udp_packet(i.to_bytes(4, "big")), i * 1e-4) for i in range(n)]


def test_delay_and_order_without_jitter() -> None:
    imp, fates = run(Direction(delay=0.025))
    times = [f[0][0] for f in fates]
    assert all(abs(t - i * 1e-4 - 0.025) < 1e-12 for i, t in enumerate(times))
    assert times == sorted(times)


def test_jitter_bounds_and_reorders() -> None:
    _imp, fates = run(Direction(delay=0.01, jitter=0.005))
    extra = [f[0][0] - i * 1e-4 - 0.01 for i, f in enumerate(fates)]
    assert min(extra) >= 0 and max(extra) < 0.005
    times = [f[0][0] for f in fates]
    assert times != sorted(times)  # jitter larger than the spacing reorders, as netem's does


def test_rates_of_loss_duplication_reordering_corruption() -> None:
    imp, fates = run(
        Direction(loss=0.02, duplicate=0.03, reorder=0.05, corrupt=0.04, reorder_delay=0.002), 50000
    )
    c = imp.c
    assert c.read == 50000 and abs(c.lost_random / 50000 - 0.02) < 0.003
    kept = 50000 - c.lost_random
    assert abs(c.duplicated / kept - 0.03) < 0.004 and abs(c.corrupted / kept - 0.04) < 0.004
    copies = sum(len(f) for f in fates)
    assert copies == kept + c.duplicated
    assert abs(c.reordered / copies - 0.05) < 0.005


def test_gilbert_elliott_mean_burst() -> None:
    imp, fates = run(Direction(ge=gilbert(0.05, 4.0)), 200000, seed=7)
    lost = [not f for f in fates]
    bursts, runlen = [], 0
    for x in lost:
        if x:
            runlen += 1
        elif runlen:
            bursts.append(runlen)
            runlen = 0
    assert abs(sum(bursts) / len(bursts) - 4.0) < 0.3
    assert abs(sum(lost) / len(lost) - 0.05) < 0.006
    assert imp.c.lost_burst == sum(lost)


def test_cut_and_restore_schedule() -> None:
    imp = Impairment(Direction(down=[[1.0, 2.0]]), 1, start=10.0)
    assert imp.fate(b"x", 10.5) and not imp.fate(b"x", 11.0) and not imp.fate(b"x", 11.99)
    assert imp.fate(b"x", 12.0) and imp.c.lost_down == 2


def test_serialisation_rate_and_queue() -> None:
    imp = Impairment(Direction(rate_bps=8e6, queue_s=0.0105), 1, start=0.0)  # 1 MB/s, 10.5 ms queue
    fates = [imp.fate(bytes(1000), 0.0) for _ in range(20)]  # 1 ms each
    kept = [f for f in fates if f]
    assert [round(f[0][0], 6) for f in kept] == [round(k * 0.001, 6) for k in range(len(kept))]
    assert len(kept) == 11 and imp.c.lost_queue == 9


def test_corruption_is_delivered_with_no_checksum() -> None:
    import random

    p = udp_packet(b"hello world")
    q = corrupt_udp(p, random.Random(3))
    assert len(q) == len(p) and q[:20] == p[:20]
    assert q[26:28] == b"\0\0"  # UDP checksum "none"
    assert sum(a != b for a, b in zip(p[28:], q[28:], strict=True)) == 1
