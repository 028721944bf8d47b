"""alf.session: --drop and the batches of DATA it builds."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from alf import wire
from alf.sender import Sender, SenderConfig


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=200), st.integers(0, 2**32))
def test_dropper_does_not_depend_on_how_datagrams_are_grouped(sizes: list[int], seed: int) -> None:
    from alf.session import Dropper

    grouped, single = Dropper(0.1, seed), Dropper(0.1, seed)
    at = 0
    for n in sizes:
        assert [at + k for k in grouped.drops(n)] == [at + k for k in range(n) if single.drop()]
        at += n


def test_dropper_rate_and_independence() -> None:
    from alf.session import Dropper

    d = Dropper(0.05, 7)
    seq = [d.drop() for _ in range(400_000)]
    rate = sum(seq) / len(seq)
    after_drop = sum(1 for a, b in zip(seq, seq[1:], strict=False) if a and b) / sum(seq[:-1])
    assert 0.048 < rate < 0.052 and 0.045 < after_drop < 0.055  # no bursts: a Bernoulli process
    assert Dropper(0.0, 1).drops(10**6) == []


def test_a_batch_of_scattered_repairs_carries_the_right_bytes(tmp_path: os.PathLike[str]) -> None:
    from alf.io.source import FileSource
    from alf.session import SendSession

    data = os.urandom(100 * 30 + 7)
    path = os.path.join(tmp_path, "in")
    with open(path, "wb") as f:
        f.write(data)
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, len(data), 0.0)
    session = SendSession(s, FileSource(path, 100))
    session.control(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 31)), 0.0)
    first = session.next_batch(0.0, 64)
    assert first is not None and first.count == 31
    s.handle_datagram(wire.encode_naks(9, [(2, 3), (5, 8), (30, 31)], 1)[0][0], 0.0)
    batch = session.next_batch(0.0, 64)
    assert batch is not None and [(r.first, r.count) for r in batch.runs] == [(2, 1), (5, 3), (30, 1)]
    got = [
        wire.decode_untrusted(bytes(h) + bytes(p)) for h, p in zip(batch.headers, batch.payloads, strict=True)
    ]
    assert [(m.index, m.payload) for m in got] == [
        (i, data[i * 100 : i * 100 + 100]) for i in (2, 5, 6, 7, 30)
    ]
