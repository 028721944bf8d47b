"""scapy dissectors for alf's datagrams (docs/protocol.md), written from the spec and tested
against alf's own encoder. scapy is GPL-2.0-only: it lives here, in the lab, never in ``alf``.

    from lossynet.scapy_alf import bind_alf, Alf
    bind_alf(8834)                      # alf has no fixed port: name the one in use
    pkts = rdpcap("run.pcap"); pkts[0][Alf].type
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteEnumField,
    ByteField,
    FieldLenField,
    IntField,
    LongField,
    PacketListField,
    ShortField,
    StrFixedLenField,
    StrLenField,
    XByteField,
    XLongField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_layers

TYPES = {
    1: "HELLO",
    2: "ACCEPT",
    3: "DATA",
    4: "STATUS",
    5: "NAK",
    6: "PROBE",
    7: "DONE",
    8: "CLOSE",
    9: "ABORT",
}
KINDS = {1: "file", 2: "stream"}
DIGESTS = {1: "sha256", 2: "blake3", 3: "xxh3-128"}


class Alf(Packet):
    """§2 common header. ``aux`` is DATA's checksum, NAK's block count, DONE's verdict and
    ABORT's code."""

    name = "alf"
    fields_desc = [
        ByteField("version", 1),
        ByteEnumField("type", 3, TYPES),
        XByteField("flags", 0),
        ByteField("reserved", 0),
        IntField("aux", 0),
        XLongField("session", 1),
    ]

    def guess_payload_class(self, payload: bytes) -> Any:
        return BODIES.get(self.type, Packet.guess_payload_class(self, payload))


class AlfHello(Packet):  # §4.1
    name = "alf HELLO"
    fields_desc = [
        IntField("adu_size", 1428),
        ByteEnumField("kind", 1, KINDS),
        ByteEnumField("digest", 3, DIGESTS),
        XByteField("data_flags", 0),
        ByteField("reserved", 0),
        LongField("total_bytes", 0),
        LongField("timestamp_us", 0),
        StrFixedLenField("tag", b"\0" * 16, 16),
        XLongField("features", 0),
        XLongField("token", 0),  # §4.3: the RETRY's token, echoed
        StrFixedLenField("padding", b"\0" * 1128, 1128),
    ]


class AlfAccept(Packet):  # §4.2
    name = "alf ACCEPT"
    fields_desc = [LongField("echo_timestamp_us", 0), LongField("window_limit", 0), XLongField("token", 0)]


class AlfData(Packet):  # §5; the payload follows as Raw
    name = "alf DATA"
    fields_desc = [LongField("index", 0)]


class AlfStatus(Packet):  # §6
    name = "alf STATUS"
    fields_desc = [
        LongField("cum_ack", 0),
        LongField("highest", 0),
        LongField("received", 0),
        LongField("window_limit", 0),
        LongField("receive_rate", 0),
        LongField("echo_timestamp_us", 0),
        IntField("echo_delay_us", 0),
        IntField("reserved", 0),
    ]


class AlfNakBlock(Packet):  # §7.1
    name = "alf NAK block"
    fields_desc = [
        ByteEnumField("kind", 1, {1: "RANGE", 2: "BITMAP"}),
        ByteField("reserved", 0),
        FieldLenField("nbytes", None, length_of="bitmap", fmt="!H"),
        IntField("count", 1),
        LongField("start", 0),
        StrLenField("bitmap", b"", length_from=lambda p: p.nbytes),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def missing(self) -> list[int]:
        if self.kind == 1:
            return list(range(self.start, self.start + self.count))
        bits = self.bitmap
        return [self.start + k for k in range(self.count) if bits[k >> 3] & (0x80 >> (k & 7))]


class AlfNak(Packet):
    name = "alf NAK"
    fields_desc = [PacketListField("blocks", [], AlfNakBlock, count_from=lambda p: p.underlayer.aux)]

    def missing(self) -> list[int]:
        return [i for b in self.blocks for i in b.missing()]


class AlfProbe(Packet):  # §8; flags bit 0 of the common header is FINAL
    name = "alf PROBE"
    fields_desc = [
        LongField("next_index", 0),
        LongField("timestamp_us", 0),
        IntField("srtt_us", 0),
        IntField("reserved", 0),
        LongField("total_bytes", 0),
        StrFixedLenField("digest", b"\0" * 32, 32),
    ]


class AlfDone(Packet):  # §9; aux is the verdict
    name = "alf DONE"
    fields_desc = [LongField("received_bytes", 0), StrFixedLenField("digest", b"\0" * 32, 32)]


class AlfClose(Packet):
    name = "alf CLOSE"
    fields_desc: list[Any] = []


class AlfAbort(Packet):  # §10; aux is the code
    name = "alf ABORT"
    fields_desc = [
        FieldLenField("length", None, length_of="reason", fmt="!H"),
        StrLenField("reason", b"", length_from=lambda p: p.length),
    ]


BODIES: dict[int, type[Packet]] = {
    1: AlfHello,
    2: AlfAccept,
    3: AlfData,
    4: AlfStatus,
    5: AlfNak,
    6: AlfProbe,
    7: AlfDone,
    8: AlfClose,
    9: AlfAbort,
}

_bound: set[int] = set()


def bind_alf(port: int) -> None:
    """Dissect UDP traffic to or from ``port`` as alf."""
    if port not in _bound:
        bind_layers(UDP, Alf, dport=port)
        bind_layers(UDP, Alf, sport=port)
        _bound.add(port)


def fields(pkt: Packet) -> dict[str, Any]:
    """The fields of the alf header and its body as one dict (the body's win on a clash, but
    ``type`` is the name, e.g. "NAK")."""
    out: dict[str, Any] = {}
    layer = pkt.getlayer(Alf)
    while layer is not None and not layer.__class__.__name__ == "Raw":
        out.update(layer.fields)
        layer = layer.payload if layer.payload else None
    if Alf in pkt:
        out["type"] = TYPES.get(pkt[Alf].type, pkt[Alf].type)
        out["flags"] = pkt[Alf].flags
    return out


__all__ = ["Alf", "AlfData", "AlfNak", "AlfProbe", "bind_alf", "fields", "ShortField"]
