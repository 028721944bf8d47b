"""alf.testing.simnet.Network: nodes, one-way links and groups in virtual time."""

from __future__ import annotations

import pytest

from alf.testing.simnet import Link, Network

SENDER, GROUP = ("10.0.0.1", 1), ("239.1.2.3", 8834)
MEMBERS = [(f"10.0.1.{k}", 8834) for k in range(1, 4)]


def fan_out(seed: int, losses: list[float], count: int = 4000) -> tuple[Network, dict[object, int]]:
    net = Network(seed)
    for member, loss in zip(MEMBERS, losses, strict=True):
        net.link(SENDER, member, Link(loss=loss, delay=0.01))
        net.join(GROUP, member)
    for k in range(count):
        net.send(SENDER, GROUP, k.to_bytes(4, "big"), k * 1e-4)
    got: dict[object, int] = {m: 0 for m in MEMBERS}
    for src, dst, _d in net.due(10.0):
        assert src == SENDER
        got[dst] += 1
    return net, got


def test_a_group_send_reaches_each_member_over_its_own_link() -> None:
    net, got = fan_out(1, [0.0, 0.1, 0.3])
    assert got[MEMBERS[0]] == 4000
    for member, loss in zip(MEMBERS[1:], [0.1, 0.3], strict=True):
        w = net.links[(SENDER, member)]
        assert w.counters.sent == 4000 and got[member] == 4000 - w.counters.lost
        assert abs(w.counters.lost / 4000 - loss) < 0.03  # each branch loses on its own
    assert net.next_arrival() is None


def test_losses_differ_between_members_and_repeat_with_the_seed() -> None:
    a, got_a = fan_out(7, [0.2, 0.2, 0.2])
    b, got_b = fan_out(7, [0.2, 0.2, 0.2])
    _c, got_c = fan_out(8, [0.2, 0.2, 0.2])
    assert got_a == got_b and got_a != got_c
    assert len(set(got_a.values())) > 1  # the same loss rate, not the same losses


def test_arrivals_come_in_time_order_across_paths() -> None:
    """Two local addresses to one receiver: a fast path and a slow one (multipath)."""
    net = Network(0)
    near, far, rx = ("10.1.0.1", 1), ("10.2.0.1", 1), ("10.9.0.2", 2)
    net.link(near, rx, Link(delay=0.005))
    net.link(far, rx, Link(delay=0.050))
    for k in range(10):
        net.send(far if k % 2 else near, rx, bytes([k]), k * 0.001)
    order = [(src, d[0]) for src, _dst, d in net.due(1.0)]
    assert [k for _src, k in order] == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    assert {src for src, k in order if k % 2} == {far}


def test_no_link_is_a_black_hole_and_a_member_that_left_gets_nothing() -> None:
    net = Network(0)
    net.link(SENDER, MEMBERS[0])
    net.link(SENDER, MEMBERS[1])
    net.join(GROUP, MEMBERS[0])
    net.join(GROUP, MEMBERS[1])
    net.send(SENDER, MEMBERS[2], b"nobody", 0.0)  # no link there
    net.send(SENDER, GROUP, b"both", 0.0)
    net.leave(GROUP, MEMBERS[1])
    net.send(SENDER, GROUP, b"one", 0.001)
    got = [(dst, d) for _src, dst, d in net.due(1.0)]
    assert got == [(MEMBERS[0], b"both"), (MEMBERS[1], b"both"), (MEMBERS[0], b"one")]


def test_a_ticking_node_reads_on_its_clock_and_a_forgery_skips_the_links() -> None:
    net = Network(0)
    rx = ("rx", 2)
    net.link(SENDER, rx, Link(delay=0.0104))
    net.tick[rx] = 0.005
    net.send(SENDER, rx, b"a", 0.0)
    net.inject(("203.0.113.9", 7777), rx, b"forged", 0.002)
    assert net.next_arrival() == pytest.approx(0.002)
    assert net.due(0.0149) == [(("203.0.113.9", 7777), rx, b"forged")]
    assert net.due(0.015) == [(SENDER, rx, b"a")]  # 10.4 ms lands on the 15 ms tick
