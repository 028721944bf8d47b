"""The C batch of alf/_gcm.c against alf/seal.py's own Python: the same bytes sealed, the same
datagrams opened and refused (protocol §17)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import seal, wire

NATIVE = seal.native
SID = 0x1122334455667788
HEAD = wire.DATA_HEADER_SIZE
IMPLS = [
    pytest.param(NATIVE, id="c", marks=pytest.mark.skipif(NATIVE is None, reason="alf._gcm is not built")),
    pytest.param(None, id="python"),
]


def _keys(impl: object, secret: bytes, th: bytes) -> tuple[seal.Keys, seal.Keys]:
    saved = seal.native
    seal.native = impl  # type: ignore[assignment]
    try:
        return seal.Keys(secret, th, sender=True), seal.Keys(secret, th, sender=False)
    finally:
        seal.native = saved


def _sealed(impl: object, secret: bytes, th: bytes, bodies: list[bytes], pn: int, adu: int) -> bytes:
    """The GRO buffer a receiver would get for ``bodies`` sealed from packet number ``pn``."""
    s, _ = _keys(impl, secret, th)
    assert s.data is not None
    s.data.pn = pn
    stride = HEAD + seal.OVERHEAD + adu
    heads = [wire.pack_data_header(SID, i, None) for i in range(len(bodies))]
    clear, body = s.data.seal_into(bytearray(stride * len(bodies)), stride, heads, bodies)
    assert s.data.pn == pn + len(bodies)
    return b"".join(bytes(c) + bytes(b) for c, b in zip(clear, body, strict=True))


@pytest.mark.parametrize("pn", [0, 5, (1 << seal.EPOCH_BITS) - 3, 0x0123456789ABCDEF, (1 << 64) - 7])
def test_both_seal_the_same_bytes_and_open_each_other(pn: int) -> None:
    if NATIVE is None:
        pytest.skip("alf._gcm is not built")
    secret, th = os.urandom(32), os.urandom(32)
    adu = 100
    bodies = [os.urandom(adu) for _ in range(6)] + [os.urandom(37)]  # a short last ADU
    c = _sealed(NATIVE, secret, th, bodies, pn, adu)
    assert c == _sealed(None, secret, th, bodies, pn, adu)
    segment = HEAD + seal.OVERHEAD + adu
    for impl in (NATIVE, None):
        _, r = _keys(impl, secret, th)
        assert r.data_in is not None
        r.data_in.highest = pn  # (a receiver already in the first datagram's epoch)
        buf = memoryview(bytearray(c))
        assert r.data_in.open_segments(buf, segment, HEAD) == []
        for k, b in enumerate(bodies):
            at = k * segment + HEAD + seal.PN_SIZE
            assert buf[at : at + len(b)] == b
        assert r.data_in.highest == pn + len(bodies) - 1


@pytest.mark.parametrize("impl", IMPLS)
def test_what_fails_is_named_and_the_rest_opens(impl: object) -> None:
    secret, th = os.urandom(32), os.urandom(32)
    adu = 64
    bodies = [bytes([k]) * adu for k in range(8)]
    segment = HEAD + seal.OVERHEAD + adu
    data = bytearray(_sealed(impl, secret, th, bodies, 10, adu))
    data[2 * segment + 40] ^= 1  # a flipped bit in the body
    data[4 * segment + 1] = wire.MsgType.STATUS  # not DATA or PARITY: the caller's to open
    data[5 * segment + HEAD] ^= 0x80  # a number from an epoch far ahead
    data[6 * segment - 1] ^= 1  # the tag
    data += bytes(HEAD + seal.OVERHEAD - 1)  # a runt at the end
    _, r = _keys(impl, secret, th)
    assert r.data_in is not None
    buf = memoryview(data)
    assert sorted(r.data_in.open_segments(buf, segment, HEAD)) == [k * segment for k in (2, 4, 5, 8)]
    for k in (0, 1, 3, 6, 7):
        at = k * segment + HEAD + seal.PN_SIZE
        assert buf[at : at + adu] == bodies[k]
    assert r.data_in.highest == 17


@pytest.mark.parametrize("impl", IMPLS)
def test_a_buffer_across_two_keys_opens_whole(impl: object) -> None:
    """The sender's key changes every 2^22 packets: a GRO buffer can hold both; the receiver
    still in the old epoch opens the new one's datagrams one by one."""
    secret, th = os.urandom(32), os.urandom(32)
    adu = 32
    pn = (1 << seal.EPOCH_BITS) - 2
    bodies = [os.urandom(adu) for _ in range(5)]
    segment = HEAD + seal.OVERHEAD + adu
    data = _sealed(impl, secret, th, bodies, pn, adu)
    _, r = _keys(impl, secret, th)
    assert r.data_in is not None
    r.data_in.highest = pn - 1
    buf = memoryview(bytearray(data))
    assert r.data_in.open_segments(buf, segment, HEAD) == []
    assert r.data_in.highest == pn + 4
    assert [bytes(buf[k * segment + 32 : k * segment + 32 + adu]) for k in range(5)] == bodies
    # the next buffer, all of the new key, opens in one call; one of the old key still opens
    again = memoryview(bytearray(data))
    assert r.data_in.open_segments(again, segment, HEAD) == []


@pytest.mark.skipif(NATIVE is None, reason="alf._gcm is not built")
def test_the_c_batch_refuses_what_does_not_fit() -> None:
    assert NATIVE is not None
    gcm = NATIVE(bytes(32), bytes(12))
    head = wire.pack_data_header(SID, 0, None)
    with pytest.raises(ValueError):
        gcm.seal_batch(bytearray(100), 100, [head, head[:-1]], [b"a", b"b"], 0, 22)  # heads differ
    with pytest.raises(ValueError):
        gcm.seal_batch(bytearray(100), 100, [head], [bytes(100 - 24 - 24 + 1)], 0, 22)  # too long
    with pytest.raises(ValueError):
        gcm.seal_batch(bytearray(150), 100, [head, head], [b"a", b"b"], 0, 22)  # out too small
    with pytest.raises(ValueError):
        gcm.seal_batch(bytearray(100), 100, [head], [b"a", b"b"], 0, 22)  # unpaired
    with pytest.raises(TypeError):
        gcm.seal_batch(b"read only", 9, [head], [b"a"], 0, 22)
    with pytest.raises(ValueError):  # numbers of two epochs (two keys) in one batch
        gcm.seal_batch(bytearray(200), 100, [head, head], [b"a", b"b"], (1 << 22) - 1, 22)
    with pytest.raises(ValueError):
        gcm.seal_batch(bytearray(200), 100, [head, head], [b"a", b"b"], (1 << 64) - 1, 22)  # wraps
    with pytest.raises(ValueError):
        NATIVE(bytes(16), bytes(12))  # not a 256-bit key
    with pytest.raises(RuntimeError):
        NATIVE.__new__(NATIVE).open_segments(bytearray(100), 100, HEAD, 22, 0, b"\x03")  # no key
    assert gcm.open_segments(bytearray(0), 100, HEAD, seal.EPOCH_BITS, 0, b"\x03") == ([], [], -1)


@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=6),
    st.integers(0, 30),
)
@settings(max_examples=150, deadline=None)
def test_c_and_python_agree_on_any_damage(lengths: list[int], flips: list[tuple[int, int]], cut: int) -> None:
    """Random lengths (the last may be short), random bit flips and a truncated end: both
    implementations refuse the same datagrams and leave the same bytes."""
    if NATIVE is None:
        pytest.skip("alf._gcm is not built")
    secret, th = bytes(range(32)), bytes(range(32, 64))
    adu = 60
    rnd = random.Random(len(lengths))
    bodies = [rnd.randbytes(adu) for _ in lengths[:-1]] + [rnd.randbytes(lengths[-1])]
    data = bytearray(_sealed(NATIVE, secret, th, bodies, 3, adu))
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    del data[max(1, len(data) - cut) :]
    segment = HEAD + seal.OVERHEAD + adu
    got = []
    for impl in (NATIVE, None):
        _, r = _keys(impl, secret, th)
        assert r.data_in is not None
        buf = bytearray(data)
        failed = sorted(r.data_in.open_segments(memoryview(buf), segment, HEAD))
        opened = [k for k in range(0, len(buf), segment) if k not in failed]
        got.append((failed, [bytes(buf[k : min(k + segment, len(buf))]) for k in opened], r.data_in.highest))
    assert got[0] == got[1]
