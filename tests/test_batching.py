"""Smart batching: flush by default, batch when MTBS < MTTS, flush on a timeout."""

from __future__ import annotations

import pytest

from alf.batching import SmartBatcher


def test_flushes_by_default() -> None:
    b = SmartBatcher(max_batch=44, flush_timeout=0.001)
    assert not b.batching
    assert b.take(1, 0.0) == 1  # nothing measured yet: send at once
    assert b.take(100, 0.0) == 44  # never more than a batch


def test_batches_when_sends_arrive_faster_than_they_go() -> None:
    b = SmartBatcher(max_batch=10, flush_timeout=0.001)
    # a datagram becomes ready every 2 us; a send call takes 20 us
    for k in range(1, 50):
        b.observe_ready(k, k * 2e-6)
    for _ in range(20):
        b.observe_send(20e-6)
    assert b.mtbs == pytest.approx(2e-6) and b.mtts == pytest.approx(20e-6)
    assert b.batching
    now = 1.0
    assert b.take(3, now) == 0  # wait for a fuller batch...
    assert b.deadline() == pytest.approx(now + 0.001)
    assert b.take(5, now + 0.0005) == 0
    assert b.take(10, now + 0.0006) == 10  # ...a full one goes at once
    assert b.take(4, now + 0.0007) == 0
    assert b.take(4, now + 0.0017) == 4  # and a partial one on the timeout
    assert b.deadline() is None


def test_flushes_when_sends_are_quicker_than_arrivals() -> None:
    b = SmartBatcher(max_batch=10, flush_timeout=0.001)
    # one datagram ready every 100 us (a slow rate); a send takes 5 us
    for k in range(1, 50):
        b.observe_ready(k, k * 100e-6)
        b.observe_send(5e-6)
    assert not b.batching
    assert b.take(1, 1.0) == 1


def test_ewma_weighs_several_arrivals_at_once() -> None:
    b = SmartBatcher(max_batch=10)
    b.observe_ready(0, 0.0)
    b.observe_ready(1, 1e-3)
    assert b.mtbs == pytest.approx(1e-3)
    b.observe_ready(11, 2e-3)  # ten arrivals over 1 ms: ten samples of 100 us
    weight = 1 - (1 - 0.125) ** 10
    assert b.mtbs == pytest.approx(1e-3 + weight * (100e-6 - 1e-3))
    b.observe_ready(11, 5e-3)  # nothing new: no sample
    assert b.mtbs == pytest.approx(1e-3 + weight * (100e-6 - 1e-3))


def test_rejects_empty_batches() -> None:
    with pytest.raises(ValueError):
        SmartBatcher(max_batch=0)
