"""Wire format (docs/protocol.md): golden bytes, round trips, and hostile input."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import wire
from alf.wire import BadPacket

SID = 0x0102030405060708
HEADER = lambda t, flags=0, aux=0: bytes([1, t, flags, 0]) + struct.pack("!I", aux) + SID.to_bytes(8, "big")  # noqa: E731


def test_common_header_golden() -> None:
    assert wire.encode_close(wire.Close(SID)) == bytes.fromhex("01080000 00000000 0102030405060708")


def test_data_golden() -> None:
    d = wire.encode_data(wire.Data(SID, 0x1122, b"xyz"))
    assert d == HEADER(3) + bytes.fromhex("0000000000001122") + b"xyz"
    c = wire.encode_data(wire.Data(SID, 5, b"xyz", wire.data_checksum(5, b"xyz")))
    assert c[2] == wire.DATA_FLAG_CHECKSUM and c[4:8] == struct.pack("!I", wire.data_checksum(5, b"xyz"))
    assert len(d) == wire.DATA_HEADER_SIZE + 3 == 27


def test_batched_headers_match_single_headers() -> None:
    buf = bytearray(10 * wire.DATA_HEADER_SIZE)
    wire.pack_data_headers_into(buf, SID, range(2**40 - 3, 2**40 + 7), None)
    assert bytes(buf) == b"".join(wire.pack_data_header(SID, i, None) for i in range(2**40 - 3, 2**40 + 7))
    crcs = [i * 7919 for i in range(10)]
    wire.pack_data_headers_into(buf, SID, range(5, 15), crcs)
    assert bytes(buf) == b"".join(wire.pack_data_header(SID, 5 + k, crcs[k]) for k in range(10))


def test_hello_golden() -> None:
    tag = wire.checkphrase_tag("osymandias")
    h = wire.encode_hello(wire.Hello(SID, 1428, wire.Kind.FILE, 1000, 77, tag, checksum=True))
    assert len(h) == wire.HELLO_SIZE
    expected = (
        HEADER(1)
        + struct.pack("!I", 1428)
        + bytes([1, 3, 1, 0])  # kind file, digest XXH3-128, checksum flag, reserved
        + (1000).to_bytes(8, "big")
        + (77).to_bytes(8, "big")
        + tag
    )
    assert h[:56] == expected and not any(h[56:])


def test_status_probe_done_abort_golden() -> None:
    s = wire.encode_status(wire.Status(SID, 1, 2, 2, 9, 100, 5, 6))
    assert s == HEADER(4) + struct.pack("!QQQQQQII", 1, 2, 2, 9, 100, 5, 6, 0)
    p = wire.encode_probe(wire.Probe(SID, 10, 20, 30, True, 40, b"\xaa" * 32))
    assert p == HEADER(6, flags=1) + struct.pack("!QQIIQ", 10, 20, 30, 0, 40) + b"\xaa" * 32
    d = wire.encode_done(wire.Done(SID, wire.Verdict.DIGEST_MISMATCH, 3, b"\x01" * 32))
    assert d == HEADER(7, aux=1) + (3).to_bytes(8, "big") + b"\x01" * 32
    a = wire.encode_abort(wire.Abort(SID, wire.AbortCode.BUSY, "busy"))
    assert a == HEADER(9, aux=3) + b"\x00\x04busy"
    acc = wire.encode_accept(wire.Accept(SID, 11, 12))
    assert acc == HEADER(2) + struct.pack("!QQQ", 11, 12, 0)


def test_keys_golden() -> None:
    """§17 rule 8: KEYS, 64 bytes: the common header, the group's secret, its two numbers."""
    got = wire.encode_keys(wire.Keys(SID, bytes(range(32)), 0x1122, 0x3344))
    assert got == (
        bytes.fromhex("010b0000 00000000 0102030405060708")
        + bytes(range(32))
        + bytes.fromhex("0000000000001122 0000000000003344")
    )
    assert wire.decode_untrusted(got) == wire.Keys(SID, bytes(range(32)), 0x1122, 0x3344)
    for bad in (got[:2] + b"\x01" + got[3:], got[:4] + b"\x00\x00\x00\x01" + got[8:], got + b"\0"):
        with pytest.raises(BadPacket):
            wire.decode_untrusted(bad)


def test_nak_golden_range_and_bitmap() -> None:
    # Two far-apart holes: two RANGE blocks. Many close holes: one BITMAP block.
    (d,), n = wire.encode_naks(SID, [(10, 12), (100000, 100001)], 4)
    assert n == 2
    assert d == HEADER(5, aux=2) + struct.pack("!BBHIQ", 1, 0, 0, 2, 10) + struct.pack(
        "!BBHIQ", 1, 0, 0, 1, 100000
    )
    ranges = [(0, 1), (2, 3), (4, 5), (8, 9)]
    (d,), n = wire.encode_naks(SID, ranges, 4)
    assert n == 4
    assert d == HEADER(5, aux=1) + struct.pack("!BBHIQ", 2, 0, 2, 9, 0) + bytes([0b10101000, 0b10000000])
    assert wire.decode_untrusted(d) == wire.Nak(SID, tuple(ranges))


def test_nak_spills_into_several_datagrams_and_stops_at_the_limit() -> None:
    ranges = [(i * 100000, i * 100000 + 1) for i in range(500)]  # too sparse for bitmaps
    datagrams, covered = wire.encode_naks(SID, ranges, 64)
    assert covered == 500 and all(len(d) <= wire.MAX_NAK_SIZE for d in datagrams)
    back = [r for d in datagrams for r in wire.decode_untrusted(d).ranges]  # type: ignore[union-attr]
    assert back == ranges
    datagrams, covered = wire.encode_naks(SID, ranges, 2)
    assert len(datagrams) == 2 and covered == sum(len(wire.decode_untrusted(d).ranges) for d in datagrams)  # type: ignore[union-attr]
    assert covered < 500


sids = st.integers(1, 2**64 - 1)
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
digests = st.binary(min_size=32, max_size=32)

messages = st.one_of(
    st.builds(
        wire.Hello,
        sids,
        st.integers(1, wire.MAX_ADU_SIZE),
        st.just(wire.Kind.FILE),
        st.integers(0, wire.MAX_TOTAL_BYTES),
        u64,
        st.binary(min_size=16, max_size=16),
        st.just(wire.DigestAlg.SHA256),
        st.booleans(),
        st.just(0),
        u64,
    ),
    st.builds(
        wire.Hello,
        sids,
        st.integers(1, wire.MAX_ADU_SIZE),
        st.just(wire.Kind.STREAM),
        st.just(wire.UNKNOWN_LENGTH),
        u64,
        st.binary(min_size=16, max_size=16),
    ),
    st.builds(
        lambda s, t, lim, tok, retry, join: wire.Accept(
            s, t, lim, tok or 1 if retry or join else tok, retry or join, join
        ),
        sids,
        u64,
        u64,
        u64,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda s, a, b, c, lim, r, e, d: wire.Status(s, a, a + b, a + b + c - c, lim, r, e, d),
        sids,
        st.integers(0, 2**60),
        st.integers(0, 2**60),
        st.integers(0, 10),
        u64,
        u64,
        u64,
        u32,
    ),
    st.builds(wire.Probe, sids, u64, u64, u32),
    st.builds(
        lambda s, n, t, r, total, d: wire.Probe(s, n, t, r, True, total, d), sids, u64, u64, u32, u64, digests
    ),
    st.builds(wire.Done, sids, st.sampled_from(wire.Verdict), u64, digests),
    st.builds(wire.Close, sids),
    st.builds(wire.Keys, sids, st.binary(min_size=32, max_size=32), u64, u64),
    st.builds(wire.Abort, sids, st.sampled_from(wire.AbortCode), st.text(max_size=100)),
    st.builds(wire.Data, sids, u64, st.binary(min_size=1, max_size=300)),
    st.builds(
        lambda s, i, p: wire.Data(s, i, p, wire.data_checksum(i, p)),
        sids,
        u64,
        st.binary(min_size=1, max_size=50),
    ),
)


@given(messages)
@settings(max_examples=400)
def test_round_trip(m: wire.Message) -> None:
    assert wire.decode_untrusted(wire.encode(m)) == m


@st.composite
def nak_ranges(draw: st.DrawFn) -> list[tuple[int, int]]:
    pos = draw(st.integers(0, 2**40))
    out = []
    for _ in range(draw(st.integers(1, 300))):
        pos += draw(st.integers(1, 400))
        length = draw(st.integers(1, 50))
        out.append((pos, pos + length))
        pos += length
    return out


@given(sids, nak_ranges())
@settings(max_examples=200)
def test_nak_round_trip(sid: int, ranges: list[tuple[int, int]]) -> None:
    datagrams, covered = wire.encode_naks(sid, ranges, 1000)
    assert covered == len(ranges)
    back: list[tuple[int, int]] = []
    for d in datagrams:
        assert len(d) <= wire.MAX_NAK_SIZE
        m = wire.decode_untrusted(d)
        assert isinstance(m, wire.Nak) and m.session_id == sid
        back.extend(m.ranges)
    assert back == ranges


def _samples() -> list[bytes]:
    tag = wire.checkphrase_tag("")
    out = [
        wire.encode_hello(wire.Hello(SID, 1428, wire.Kind.STREAM, wire.UNKNOWN_LENGTH, 1, tag)),
        wire.encode_accept(wire.Accept(SID, 1, 2)),
        wire.encode_accept(wire.Accept(SID, 1, 0, 7, True, True)),
        wire.encode_status(wire.Status(SID, 1, 5, 3, 9, 1, 2, 3)),
        wire.encode_probe(wire.Probe(SID, 3, 4, 5, True, 99, b"\x07" * 32)),
        wire.encode_done(wire.Done(SID, wire.Verdict.OK, 5, b"\x01" * 32)),
        wire.encode_close(wire.Close(SID)),
        wire.encode_abort(wire.Abort(SID, wire.AbortCode.PROTOCOL, "bad")),
        wire.encode_data(wire.Data(SID, 1, b"payload", wire.data_checksum(1, b"payload"))),
        # §17: the keyed HELLO (share and binder) and ACCEPT (share and finished MAC)
        wire.encode_hello(
            wire.Hello(
                SID,
                1404,
                wire.Kind.FILE,
                5,
                1,
                tag,
                features=wire.FEATURE_KEY,
                share=b"s" * 64,
                binder=b"b" * 32,
            )
        ),
        wire.encode_accept(wire.Accept(SID, 1, 2, share=b"s" * 64, mac=b"m" * 32)),
        wire.encode_keys(wire.Keys(SID, b"g" * 32, 5, 6)),  # §17 rule 8: a group's secret
    ]
    out.extend(wire.encode_naks(SID, [(1, 3), (5, 6), (40, 41), (9000, 9100)], 1)[0])
    return out


@pytest.mark.parametrize("sample", _samples(), ids=lambda b: wire.MsgType(b[1]).name)
def test_every_truncation_is_bad_packet(sample: bytes) -> None:
    for cut in range(len(sample)):
        if sample[1] == wire.MsgType.DATA and cut > wire.DATA_HEADER_SIZE:
            continue  # a shorter DATA payload is still a well-formed DATA
        with pytest.raises(BadPacket):
            wire.decode_untrusted(sample[:cut])


@pytest.mark.parametrize("sample", _samples(), ids=lambda b: wire.MsgType(b[1]).name)
def test_random_mutations_raise_only_bad_packet(sample: bytes) -> None:
    rng = random.Random(sample[1])
    for _ in range(3000):
        b = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.2:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        try:
            wire.decode_untrusted(bytes(b))
        except BadPacket:
            pass


@given(st.binary(max_size=2000))
@settings(max_examples=2000)
def test_random_bytes_raise_only_bad_packet(blob: bytes) -> None:
    try:
        wire.decode_untrusted(blob)
    except BadPacket:
        pass


def test_strict_rejections() -> None:
    close = wire.encode_close(wire.Close(SID))
    for bad in (
        b"\x02" + close[1:],  # unknown version
        close[:1] + b"\x0a" + close[2:],  # unknown type
        close[:1] + b"\x0c" + close[2:],
        close[:3] + b"\x01" + close[4:],  # reserved byte
        close[:2] + b"\x01" + close[3:],  # flags on CLOSE
        close[:8] + bytes(8),  # session id 0
    ):
        with pytest.raises(BadPacket):
            wire.decode_untrusted(bad)
    hello = bytearray(wire.encode_hello(wire.Hello(SID, 100, wire.Kind.FILE, 5, 1, bytes(16))))
    hello[-1] = 1  # padding must be zero
    with pytest.raises(BadPacket):
        wire.decode_untrusted(bytes(hello))
    stream_with_length = bytearray(wire.encode_hello(wire.Hello(SID, 100, wire.Kind.FILE, 5, 1, bytes(16))))
    stream_with_length[20] = wire.Kind.STREAM
    with pytest.raises(BadPacket):
        wire.decode_untrusted(bytes(stream_with_length))
    probe = bytearray(wire.encode_probe(wire.Probe(SID, 1, 2, 3)))
    probe[-1] = 1  # digest without FINAL
    with pytest.raises(BadPacket):
        wire.decode_untrusted(bytes(probe))


# ---------------------------------------------------------------- §13 TCP framing


def test_frame_golden_bytes() -> None:
    close = wire.encode_close(wire.Close(0x0102030405060708))
    assert wire.frame(close) == bytes.fromhex("00000010") + close  # length 16, then the message
    assert wire.frame_data_head(0x0102030405060708, 5, 1000) == bytes.fromhex(
        "00000400"  # frame length 24 + 1000 = 1024
        "01030000"  # version 1, type DATA, flags 0, reserved 0
        "00000000"  # aux 0 (no CHECKSUM over TCP)
        "0102030405060708"  # session id
        "0000000000000005"  # first ADU of the run
    )


@given(st.integers(1, wire.MAX_CONTROL), st.binary(max_size=8))
def test_frame_length_round_trips(length: int, tail: bytes) -> None:
    assert wire.frame_length_untrusted(wire.FRAME_LEN.pack(length) + tail, wire.MAX_CONTROL) == length


def test_frame_lengths_out_of_bounds_and_truncated_heads_are_bad_packets() -> None:
    for head in (
        b"",
        b"\x00",
        b"\x00\x00\x04",
        wire.FRAME_LEN.pack(0),
        wire.FRAME_LEN.pack(wire.MAX_CONTROL + 1),
    ):
        with pytest.raises(wire.BadPacket):
            wire.frame_length_untrusted(head, wire.MAX_CONTROL)


@given(st.binary(min_size=0, max_size=12), st.integers(1, 1 << 24))
def test_frame_length_raises_only_bad_packet(head: bytes, limit: int) -> None:
    try:
        n = wire.frame_length_untrusted(head, limit)
    except wire.BadPacket:
        return
    assert 0 < n <= limit


def test_accept_retry_golden_and_its_token() -> None:
    """§4.2/§4.3: RETRY is flag bit 0; a RETRY without a token is malformed; a HELLO carries
    the token echoed at offset 64."""
    a = wire.encode_accept(wire.Accept(SID, 5, 0, 0xA1F0A1F0A1F0A1F0, True))
    assert a == HEADER(2, flags=1) + struct.pack("!QQQ", 5, 0, 0xA1F0A1F0A1F0A1F0)
    bad = bytearray(a)
    bad[32:40] = bytes(8)
    with pytest.raises(wire.BadPacket):
        wire.decode_untrusted(bytes(bad))
    h = wire.encode_hello(wire.Hello(SID, 100, wire.Kind.FILE, 5, 1, bytes(16), token=0xBEEF))
    assert h[64:72] == (0xBEEF).to_bytes(8, "big") and not any(h[72:])


def test_join_golden_is_a_padded_retry() -> None:
    """§15: a JOIN is a RETRY ACCEPT with flag bit 1, padded with zeros to the HELLO's 1200
    bytes; JOIN without RETRY, a short JOIN and non-zero padding are malformed."""
    j = wire.encode_accept(wire.Accept(SID, 5, 0, 0xA1F0, True, True))
    assert j == HEADER(2, flags=3) + struct.pack("!QQQ", 5, 0, 0xA1F0) + bytes(1160)
    assert wire.decode_untrusted(j) == wire.Accept(SID, 5, 0, 0xA1F0, True, True)
    padded = bytearray(j)
    padded[1199] = 1
    for bad in (j[:40], bytes(padded)):
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(bad)
    no_retry = bytearray(j)
    no_retry[2] = 2
    with pytest.raises(wire.BadPacket):
        wire.decode_untrusted(bytes(no_retry))


def test_a_file_longer_than_an_offset_can_say_is_unsupported() -> None:
    """§4.1: a file HELLO above 2^63-1 bytes is refused by name (it once crashed the sink)."""
    big = wire.encode_hello(wire.Hello(SID, 1, wire.Kind.FILE, 2**64 - 2, 1, bytes(16)))
    offer = wire.decode_untrusted(big)
    assert offer == wire.Unsupported(SID, "a content of 18446744073709551614 bytes (at most 2^63-1)")
    ok = wire.decode_untrusted(wire.encode_hello(wire.Hello(SID, 1, wire.Kind.FILE, 2**63 - 1, 1, bytes(16))))
    assert isinstance(ok, wire.Hello)
