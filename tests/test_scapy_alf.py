"""The lab's scapy layers, written from docs/protocol.md, against alf's own encoder."""

from __future__ import annotations

from lossynet.scapy_alf import (
    Alf,
    AlfAbort,
    AlfAccept,
    AlfData,
    AlfDone,
    AlfHello,
    AlfNak,
    AlfNakBlock,
    AlfProbe,
    AlfStatus,
    fields,
)

from alf import wire

SID = 0x1122334455667788


def test_every_message_parses_to_the_encoder_fields() -> None:
    tag = wire.checkphrase_tag("x")
    h = Alf(wire.encode_hello(wire.Hello(SID, 1428, wire.Kind.FILE, 123456, 99, tag, checksum=True)))
    assert (h.version, h.type, h.session) == (1, 1, SID)
    assert (h[AlfHello].adu_size, h[AlfHello].kind, h[AlfHello].digest) == (1428, 1, 3)
    assert (h[AlfHello].data_flags, h[AlfHello].total_bytes, h[AlfHello].tag) == (1, 123456, tag)

    a = Alf(wire.encode_accept(wire.Accept(SID, 5, 77)))
    assert (a[AlfAccept].echo_timestamp_us, a[AlfAccept].window_limit) == (5, 77)
    retry = Alf(wire.encode_accept(wire.Accept(SID, 5, 0, 0xFEED, True)))
    assert retry.flags == 1 and retry[AlfAccept].token == 0xFEED
    echo = Alf(wire.encode_hello(wire.Hello(SID, 1428, wire.Kind.FILE, 1, 99, tag, features=4, token=0xFEED)))
    assert (echo[AlfHello].features, echo[AlfHello].token) == (4, 0xFEED)

    d = Alf(wire.encode_data(wire.Data(SID, 42, b"payload", wire.data_checksum(42, b"payload"))))
    assert (d.flags, d.aux, d[AlfData].index, bytes(d[AlfData].payload)) == (
        1,
        wire.data_checksum(42, b"payload"),
        42,
        b"payload",
    )

    s = Alf(wire.encode_status(wire.Status(SID, 10, 20, 15, 99, 1000, 7, 3)))
    st = s[AlfStatus]
    assert (st.cum_ack, st.highest, st.received, st.window_limit, st.receive_rate) == (10, 20, 15, 99, 1000)
    assert (st.echo_timestamp_us, st.echo_delay_us) == (7, 3)

    p = Alf(wire.encode_probe(wire.Probe(SID, 9, 8, 7, True, 1000, b"\xab" * 32)))
    assert p.flags & 1 and (p[AlfProbe].next_index, p[AlfProbe].total_bytes) == (9, 1000)
    assert p[AlfProbe].digest == b"\xab" * 32
    assert fields(p)["type"] == "PROBE" and fields(p)["total_bytes"] == 1000

    done = Alf(wire.encode_done(wire.Done(SID, wire.Verdict.DIGEST_MISMATCH, 55, b"\x01" * 32)))
    assert (done.aux, done[AlfDone].received_bytes) == (1, 55)

    c = Alf(wire.encode_close(wire.Close(SID)))
    assert c.type == 8 and not bytes(c.payload) and len(c) == 16  # a CLOSE is the header alone

    ab = Alf(wire.encode_abort(wire.Abort(SID, wire.AbortCode.BUSY, "busy now")))
    assert (ab.aux, ab[AlfAbort].reason) == (3, b"busy now")


def test_nak_blocks_name_the_same_holes() -> None:
    ranges = [(3, 5), (7, 8), (10, 11), (100_000, 100_004)]
    (datagram,), covered = wire.encode_naks(SID, ranges, 1)
    assert covered == 4
    nak = Alf(datagram)
    assert nak.aux == len(nak[AlfNak].blocks)
    assert [b.kind for b in nak[AlfNak].blocks] == [2, 1]  # a bitmap for the close ones, a range
    assert nak[AlfNak].missing() == [i for a, b in ranges for i in range(a, b)]


def test_layers_build_the_encoders_bytes() -> None:
    built = Alf(type=4, session=SID) / AlfStatus(
        cum_ack=1, highest=5, received=3, window_limit=9, receive_rate=1, echo_timestamp_us=2, echo_delay_us=3
    )
    assert bytes(built) == wire.encode_status(wire.Status(SID, 1, 5, 3, 9, 1, 2, 3))
    built = Alf(type=9, aux=5, session=SID) / AlfAbort(reason=b"bad")
    assert bytes(built) == wire.encode_abort(wire.Abort(SID, wire.AbortCode.PROTOCOL, "bad"))
    built = Alf(type=5, aux=1, session=SID) / AlfNak(blocks=[AlfNakBlock(kind=1, count=2, start=10)])
    assert bytes(built) == wire.encode_naks(SID, [(10, 12)], 1)[0][0]
    built = Alf(type=3, session=SID) / AlfData(index=7) / b"xyz"
    assert bytes(built) == wire.encode_data(wire.Data(SID, 7, b"xyz"))
    assert wire.decode_untrusted(bytes(built)) == wire.Data(SID, 7, b"xyz")
