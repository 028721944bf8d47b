"""The stream source's ring: content, back-pressure and growth (alf/io/source.py)."""

from __future__ import annotations

import random

import pytest

from alf.io.source import StreamSource

ADU = 100


def drive(
    data: bytes, window: int, initial: int | None, in_flight: int, seed: int
) -> tuple[StreamSource, int]:
    """Feed ``data`` in odd chunks while a model sender reads runs and keeps at most
    ``in_flight`` ADUs unreleased; every ADU read must be the data's, through any growth."""
    rng = random.Random(seed)
    src = StreamSource(ADU, window, initial_adus=initial)
    fed = sent = 0
    most = 0
    while True:
        while src.total_bytes() is None:
            span = src.free_span()
            if not span:
                break
            take = min(len(span), rng.randint(1, 3 * ADU + 7), len(data) - fed)
            if not take:
                src.feed_eof()
                break
            span[:take] = data[fed : fed + take]
            src.commit(take)
            fed += take
        most = max(most, src.ring_adus)
        avail = src.available()
        if sent == avail and src.total_bytes() is not None:
            return src, most
        # send a run of new ADUs, within the in-flight limit
        room = in_flight - (sent - src._released)
        n = min(avail - sent, room, rng.randint(1, 40))
        if n > 0:
            views = src.read(sent, n)
            assert b"".join(bytes(v) for v in views) == data[sent * ADU : (sent + n) * ADU]
            if rng.random() < 0.5:  # the TCP transport's way: a block up to the wrap
                block = src.block(sent, n)
                k = -(-len(block) // ADU)
                assert 1 <= k <= n and bytes(block) == data[sent * ADU : sent * ADU + len(block)]
            sent += n
        # a repair reads an older, still held ADU
        if sent > src._released and rng.random() < 0.3:
            i = rng.randrange(src._released, sent)
            assert bytes(src.read(i, 1)[0]) == data[i * ADU : (i + 1) * ADU]
        # acknowledgements lag
        if sent - src._released >= in_flight or rng.random() < 0.3:
            src.release(src._released + rng.randint(1, max(1, sent - src._released)))


@pytest.mark.parametrize("seed", range(12))
def test_ring_content_survives_growth(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.choice([1, ADU, 30_000, 250_007]))
    window = rng.choice([8, 100, 1000])
    src, most = drive(data, window, rng.choice([1, 3, 16]), rng.choice([2, 50, 1000]), seed)
    assert src.digest() is not None and most <= window


def test_ring_grows_to_what_is_in_flight_and_no_further() -> None:
    data = random.Random(1).randbytes(400 * 1000)  # 4000 ADUs
    # 50 in flight: the ring doubles while 50 is more than half of it (4 -> 128)
    _, most = drive(data, 1000, 4, 50, 1)
    assert most == 128
    # never beyond the window, however much is in flight
    _, most = drive(data, 100, 4, 1000, 2)
    assert most == 100
    # nothing in flight beyond one ADU: the ring stays as it started
    _, most = drive(data, 1000, 4, 1, 3)
    assert most == 4


def test_a_full_ring_grows_without_waiting_for_a_release() -> None:
    """At the wrap with everything read and nothing released, the reader gets new slots."""
    src = StreamSource(ADU, 64, initial_adus=4)
    src.feed(bytes(4 * ADU))
    assert not src.free_span()  # full, and the sender has read nothing yet
    src.read(0, 4)
    assert len(src.free_span()) == 4 * ADU and src.ring_adus == 8
    src.feed(bytes(range(ADU)) + bytes(3 * ADU))
    assert bytes(src.read(4, 1)[0]) == bytes(range(ADU))
    assert bytes(src.read(0, 1)[0]) == bytes(ADU)  # the old ADUs kept their slots
