"""Every alf datagram layout, as specified in docs/protocol.md.

Invariants: encoders produce exactly the bytes of the spec; ``decode_untrusted`` accepts only
datagrams that are well-formed per the spec and raises ``BadPacket`` (and nothing else) for any
other input. The hot path (DATA) has its own header helpers so a driver can pack and unpack
runs without building message objects.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from bitarray import bitarray
from bitarray.util import intervals

from alf.ranges import append_range

VERSION = 1
ALL_ONES_64 = 2**64 - 1
UNKNOWN_LENGTH = ALL_ONES_64
NO_LIMIT = ALL_ONES_64


def to_us(now: float) -> int:
    """A time in seconds as the wire's 64-bit microsecond timestamp (it wraps, as §6 allows)."""
    return int(now * 1e6) & ALL_ONES_64


MAX_ADU_SIZE = 65000
DEFAULT_ADU_SIZE = 1428  # 24 DATA + 8 UDP + 40 IPv6 = 1500 (§5)
HELLO_SIZE = 1200
MAX_NAK_SIZE = 1400
MAX_REASON_BYTES = 512
DIGEST_SIZE = 32


class MsgType(IntEnum):
    HELLO = 1
    ACCEPT = 2
    DATA = 3
    STATUS = 4
    NAK = 5
    PROBE = 6
    DONE = 7
    CLOSE = 8
    ABORT = 9
    PARITY = 10
    KEYS = 11


class Kind(IntEnum):
    FILE = 1
    STREAM = 2


class DigestAlg(IntEnum):
    SHA256 = 1
    BLAKE3 = 2
    XXH3_128 = 3


class Verdict(IntEnum):
    OK = 0
    DIGEST_MISMATCH = 1
    LENGTH_MISMATCH = 2


class AbortCode(IntEnum):
    CANCELLED = 1
    CHECKPHRASE_MISMATCH = 2
    BUSY = 3
    UNSUPPORTED = 4
    PROTOCOL = 5
    LOCAL_IO = 6
    TIMEOUT = 7
    KEY_MISMATCH = 8  # §17: the peers hold different keys, or one has none
    NOT_RESUMABLE = 9  # §18: the receiver was told to take up what it holds, and it is not of this content


class NakKind(IntEnum):
    RANGE = 1
    BITMAP = 2
    NEED = 3  # §16: a block (start) still needs count parity symbols; nbytes: the rows it has seen


DATA_FLAG_CHECKSUM = 0x01
PROBE_FLAG_FINAL = 0x01
HELLO_DATAFLAG_CHECKSUM = 0x01


class BadPacket(Exception):
    """A datagram that is not a well-formed alf message (the only error decoders raise)."""


# §2 common header: version u8 | type u8 | flags u8 | reserved u8 (0) | aux u32 | session u64
COMMON = struct.Struct("!BBBBIQ")
# §5 DATA: common header + index u64; the payload follows
DATA_HEADER = struct.Struct("!BBBBIQQ")
DATA_HEADER_SIZE = DATA_HEADER.size  # 24
# §16 PARITY: common header (aux = the parity row) + block u64; an ADU-sized symbol follows
PARITY_HEADER = DATA_HEADER
# §4.1 HELLO body: adu_size u32 | kind u8 | digest_alg u8 | data_flags u8 | reserved u8 |
#                  total_bytes u64 | timestamp_us u64 | checkphrase tag 16s | features u64 ;
#                  | token u64 (§4.3: the receiver's address-validation token, echoed) ; then padding
HELLO_BODY = struct.Struct("!IBBBBQQ16sQQ")
FEATURE_MULTIPATH = 1 << 0  # §14: several paths, each joined as the session was bound
FEATURE_MULTICAST = 1 << 1  # §15: the sender serves a group of receivers
FEATURE_FEC = 1 << 2  # §16: the sender repairs with parity to the receivers that decode it
FEATURE_KEY = 1 << 3  # §17: the session is sealed with keys from a pre-shared key
FEATURE_RANGE = 1 << 4  # §18: the content is a byte range of its source, written at its offset
FEATURE_RESUME = 1 << 5  # §18: the HELLO names its source; the ACCEPT may say what is held of it
FEATURE_COMPRESS = 1 << 6  # §19: the content is compressed blocks (a stream); the digest is of its input
KNOWN_FEATURES = (
    FEATURE_MULTIPATH
    | FEATURE_MULTICAST
    | FEATURE_FEC
    | FEATURE_KEY
    | FEATURE_RANGE
    | FEATURE_RESUME
    | FEATURE_COMPRESS
)  # §4.4: the bits served
SHARE_SIZE = 64  # §17: a random and an X25519 public key
MAC_SIZE = 32  # §17: the HELLO's binder, the ACCEPT's finished MAC
# §18 HELLO placement: offset u64 (RANGE) | source size u64 | mtime_ns u64 | inode u64 (RESUME)
HELLO_PLACE = struct.Struct("!QQQQ")
HELLO_PLACE_AT = 72
HELLO_SHARE_AT = 104  # §17: with FEATURE_KEY the HELLO's share, then its binder, follow placement
# §18 ACCEPT held: count u32 | reserved u32 (0) | count x (start u64, stop u64)
HELD_HEAD = struct.Struct("!II")
HELD_RANGE = struct.Struct("!QQ")
MAX_HELD = 64  # §18: ranges one ACCEPT names at most (it stays within the HELLO's 1200 bytes)
# §4.2 ACCEPT body: echo_timestamp_us u64 | window_limit u64 | token u64
ACCEPT_BODY = struct.Struct("!QQQ")
ACCEPT_FLAG_RETRY = 0x01  # §4.3: "send your HELLO again with this token": not yet accepted
ACCEPT_FLAG_JOIN = 0x02  # §15: a RETRY answering a group's announcement, padded to HELLO_SIZE
ACCEPT_FLAG_FEC = 0x04  # §16: the receiver decodes parity (only when the HELLO offered FEC)
ACCEPT_FLAG_KEY = 0x08  # §17: the receiver's share and finished MAC follow (never with RETRY)
ACCEPT_FLAG_HELD = 0x10  # §18: what the receiver holds of the content follows (never with RETRY)
ACCEPT_KEY_SIZE = SHARE_SIZE + MAC_SIZE  # 96 bytes after the body (and after the held ranges)
MAX_TOTAL_BYTES = (1 << 63) - 1  # §4.1: the longest file content (an offset must fit an off_t)
# §6 STATUS body: cum_ack | highest | received | window_limit | receive_rate | echo_ts (u64 each)
#                 | echo_delay_us u32 | reserved u32 (0)
STATUS_BODY = struct.Struct("!QQQQQQII")
# §7.1 NAK block head: kind u8 | reserved u8 (0) | nbytes u16 | count u32 | start u64
NAK_BLOCK = struct.Struct("!BBHIQ")
# §8 PROBE body: next_index u64 | timestamp_us u64 | srtt_us u32 | receivers u32 (§15; else 0) |
#                total_bytes u64 | digest 32s
PROBE_BODY = struct.Struct("!QQIIQ32s")
# §9 DONE body: received_bytes u64 | digest 32s
DONE_BODY = struct.Struct("!Q32s")
# §17 KEYS body (a sealed group's secret for one member): secret 32s | data_pn u64 | control_pn u64
KEYS_BODY = struct.Struct("!32sQQ")
# §10 ABORT body: reason length u16; the UTF-8 reason follows
ABORT_BODY = struct.Struct("!H")

_HEAD = COMMON.size  # 16
HEADER_SIZE = _HEAD
SEAL_PN, SEAL_TAG = (
    8,
    16,
)  # §17: a sealed datagram's packet number (after its clear head) and tag (at its end)
SEAL_OVERHEAD = SEAL_PN + SEAL_TAG


PROBE_MIN, PROBE_MAX = 0.005, 0.2  # §8: PROBEs go every clamp(srtt, these)
FINAL_GAP_CAP = 0.25  # §8: FINAL PROBEs are never further apart than max(this, 2 srtt)
LINGER_GAPS = 10  # §9: the receiver lingers this many FINAL gaps of silence after its DONE
LINGER_MIN = 2.0


def probe_spacing(srtt: float) -> float:
    """§8: the time between two PROBEs (before FINAL); also how stale a STATUS may be."""
    return min(max(srtt, PROBE_MIN), PROBE_MAX)


THIN_FROM = 8  # §15 rule 9: a group larger than this answers its PROBEs in turns


def answer_every(receivers: int) -> int:
    """§15 rule 9: a group member answers one PROBE in this many (1: every one)."""
    return 1 if receivers <= THIN_FROM else -(-receivers // 2)


def final_gap_max(srtt: float) -> float:
    """§8: the largest spacing of FINAL PROBEs."""
    return max(FINAL_GAP_CAP, 2 * srtt)


def linger_time(srtt: float) -> float:
    """§9: how long a receiver waits, after its DONE, for a FINAL PROBE before leaving."""
    return max(LINGER_MIN, LINGER_GAPS * final_gap_max(srtt))


def checkphrase_tag(phrase: str) -> bytes:
    """§4.1: a 16-byte tag of the checkphrase (a guard against the wrong peer, not security)."""
    return hashlib.blake2b(phrase.encode(), digest_size=16, person=b"alf-checkphrase").digest()


def sealed_plain(buf: memoryview, start: int, end: int) -> memoryview:
    """§17: the DATA or PARITY opened in place at ``buf[start:end]`` as its plain datagram:
    its header moved up over the packet number, the tag left out."""
    buf[start + SEAL_PN : start + SEAL_PN + DATA_HEADER_SIZE] = buf[start : start + DATA_HEADER_SIZE]
    return buf[start + SEAL_PN : end - SEAL_TAG]


def data_checksum(index: int, payload: bytes | bytearray | memoryview) -> int:
    """§5: CRC-32 of the payload seeded with the index, so a misplaced payload fails too."""
    return zlib.crc32(payload, index & 0xFFFFFFFF)


@dataclass(frozen=True)
class Hello:
    session_id: int
    adu_size: int
    kind: Kind
    total_bytes: int
    timestamp_us: int
    tag: bytes
    digest_alg: DigestAlg = DigestAlg.XXH3_128
    checksum: bool = False
    features: int = 0  # §4.4: bits of optional capabilities asked for
    token: int = 0  # §4.3: the token of the receiver's RETRY ACCEPT, echoed; 0 before one came
    share: bytes = b""  # §17 (FEATURE_KEY): the sender's random and X25519 public key
    binder: bytes = b""  # §17: HMAC of the HELLO's first 168 bytes under a key from the PSK
    offset: int = 0  # §18 (FEATURE_RANGE): where the content starts in its source and its output
    source: tuple[int, int, int] = (0, 0, 0)  # §18 (FEATURE_RESUME): the source's size, mtime_ns, inode


@dataclass(frozen=True)
class Unsupported:
    """§4.4: a HELLO offer this version cannot serve (another version, an unknown digest, data
    flag or feature); ``what`` names it for the ABORT UNSUPPORTED that answers it."""

    session_id: int
    what: str


@dataclass(frozen=True)
class Accept:
    session_id: int
    echo_timestamp_us: int
    window_limit: int
    token: int = 0  # §4.3: with ``retry``, what the sender's next HELLO must carry
    retry: bool = False  # §4.3: the receiver has not accepted yet: it asks for its token back
    join: bool = False  # §15: (with ``retry``) it answers a multicast announcement: padded
    fec: bool = False  # §16: it decodes parity
    share: bytes = b""  # §17: (without retry) the receiver's random and X25519 public key
    mac: bytes = b""  # §17: the finished MAC over the transcript and the ACCEPT before it
    held: tuple[tuple[int, int], ...] = ()  # §18: ADU ranges [a, b) the receiver already holds


@dataclass(frozen=True)
class Status:
    session_id: int
    cum_ack: int
    highest: int
    received: int
    window_limit: int
    receive_rate: int
    echo_timestamp_us: int
    echo_delay_us: int


@dataclass(frozen=True)
class Nak:
    """Missing ADUs as sorted, disjoint half-open ranges [start, stop); ``needs``: (block,
    parity symbols it still needs, one past the highest parity row of it received), in
    increasing block order (§16)."""

    session_id: int
    ranges: tuple[tuple[int, int], ...]
    needs: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class Probe:
    session_id: int
    next_index: int
    timestamp_us: int
    srtt_us: int
    final: bool = False
    total_bytes: int = 0
    digest: bytes = bytes(DIGEST_SIZE)
    receivers: int = 0  # §15: in a group, the members receiving (it sizes their NAK backoff)


@dataclass(frozen=True)
class Done:
    session_id: int
    verdict: Verdict
    received_bytes: int
    digest: bytes


@dataclass(frozen=True)
class Close:
    session_id: int


@dataclass(frozen=True)
class Abort:
    session_id: int
    code: AbortCode
    reason: str


@dataclass(frozen=True)
class Data:
    """A decoded DATA datagram; the hot path reads ``DATA_HEADER`` fields without this object."""

    session_id: int
    index: int
    payload: bytes
    checksum: int | None = None


@dataclass(frozen=True)
class Parity:
    """A decoded PARITY datagram (§16): symbol ``row`` of block ``block``."""

    session_id: int
    block: int
    row: int
    payload: bytes


@dataclass(frozen=True)
class Keys:
    """§17 rule 8: a sealed group's secret, for one member (sent only sealed under its keys),
    with the packet numbers the group's directions are at."""

    session_id: int
    secret: bytes
    data_pn: int
    control_pn: int


Message = Hello | Unsupported | Accept | Status | Nak | Probe | Done | Close | Abort | Data | Parity | Keys


# ---------------------------------------------------------------- encoders


def encode_hello(m: Hello) -> bytes:
    body = HELLO_BODY.pack(
        m.adu_size,
        m.kind,
        m.digest_alg,
        HELLO_DATAFLAG_CHECKSUM if m.checksum else 0,
        0,
        m.total_bytes,
        m.timestamp_us,
        m.tag,
        m.features,
        m.token,
    )
    out = COMMON.pack(VERSION, MsgType.HELLO, 0, 0, 0, m.session_id) + body
    out += HELLO_PLACE.pack(
        m.offset if m.features & FEATURE_RANGE else 0,
        *(m.source if m.features & FEATURE_RESUME else (0, 0, 0)),
    )
    if m.features & FEATURE_KEY:
        out += m.share.ljust(SHARE_SIZE, b"\0")[:SHARE_SIZE] + m.binder.ljust(MAC_SIZE, b"\0")[:MAC_SIZE]
    return out + bytes(HELLO_SIZE - len(out))


def encode_accept(m: Accept) -> bytes:
    flags = (
        (ACCEPT_FLAG_RETRY if m.retry else 0)
        | (ACCEPT_FLAG_JOIN if m.join else 0)
        | (ACCEPT_FLAG_FEC if m.fec else 0)
        | (ACCEPT_FLAG_KEY if m.share else 0)
        | (ACCEPT_FLAG_HELD if m.held else 0)
    )
    out = COMMON.pack(VERSION, MsgType.ACCEPT, flags, 0, 0, m.session_id) + ACCEPT_BODY.pack(
        m.echo_timestamp_us, m.window_limit, m.token
    )
    if m.held:
        out += HELD_HEAD.pack(len(m.held), 0) + b"".join(HELD_RANGE.pack(a, b) for a, b in m.held)
    if m.share:
        out += m.share + m.mac.ljust(MAC_SIZE, b"\0")[:MAC_SIZE]
    return out + bytes(HELLO_SIZE - len(out)) if m.join else out


def encode_status(m: Status) -> bytes:
    return COMMON.pack(VERSION, MsgType.STATUS, 0, 0, 0, m.session_id) + STATUS_BODY.pack(
        m.cum_ack,
        m.highest,
        m.received,
        m.window_limit,
        m.receive_rate,
        m.echo_timestamp_us,
        m.echo_delay_us,
        0,
    )


def encode_probe(m: Probe) -> bytes:
    flags = PROBE_FLAG_FINAL if m.final else 0
    return COMMON.pack(VERSION, MsgType.PROBE, flags, 0, 0, m.session_id) + PROBE_BODY.pack(
        m.next_index, m.timestamp_us, m.srtt_us, m.receivers, m.total_bytes, m.digest
    )


def encode_done(m: Done) -> bytes:
    return COMMON.pack(VERSION, MsgType.DONE, 0, 0, m.verdict, m.session_id) + DONE_BODY.pack(
        m.received_bytes, m.digest
    )


def encode_close(m: Close) -> bytes:
    return COMMON.pack(VERSION, MsgType.CLOSE, 0, 0, 0, m.session_id)


def encode_keys(m: Keys) -> bytes:
    return COMMON.pack(VERSION, MsgType.KEYS, 0, 0, 0, m.session_id) + KEYS_BODY.pack(
        m.secret, m.data_pn, m.control_pn
    )


def encode_abort(m: Abort) -> bytes:
    reason = m.reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    # Cutting may split a multi-byte character; the decoder must accept what we send.
    reason = reason.decode("utf-8", "ignore").encode()
    return (
        COMMON.pack(VERSION, MsgType.ABORT, 0, 0, m.code, m.session_id)
        + ABORT_BODY.pack(len(reason))
        + reason
    )


def encode_data(m: Data) -> bytes:
    return pack_data_header(m.session_id, m.index, m.checksum) + m.payload


def encode_parity(m: Parity) -> bytes:
    return pack_parity_header(m.session_id, m.block, m.row) + m.payload


def pack_parity_header(session_id: int, block: int, row: int) -> bytes:
    """§16: the 24-byte head of the PARITY symbol ``row`` of ``block``."""
    return PARITY_HEADER.pack(VERSION, MsgType.PARITY, 0, 0, row, session_id, block)


def pack_data_header(session_id: int, index: int, checksum: int | None) -> bytes:
    if checksum is None:
        return DATA_HEADER.pack(VERSION, MsgType.DATA, 0, 0, 0, session_id, index)
    return DATA_HEADER.pack(VERSION, MsgType.DATA, DATA_FLAG_CHECKSUM, 0, checksum, session_id, index)


@functools.lru_cache(maxsize=512)
def _headers_format(count: int, checksum: bool) -> struct.Struct:
    # §5 laid end to end: prefix (version, type, flags, reserved) | aux | session | index
    return struct.Struct("!" + ("4sI8sQ" if checksum else "16sQ") * count)


def pack_data_headers_into(
    buf: bytearray | memoryview, session_id: int, indices: Sequence[int], checksums: list[int] | None
) -> None:
    """§5 headers of DATA ``indices`` (a range, or any list) into ``buf``, 24 bytes each, in
    one call."""
    count = len(indices)
    session = session_id.to_bytes(8, "big")
    if checksums is None:
        args: list[object] = [COMMON.pack(VERSION, MsgType.DATA, 0, 0, 0, session_id)] * (2 * count)
        args[1::2] = indices
    else:
        args = [bytes((VERSION, MsgType.DATA, DATA_FLAG_CHECKSUM, 0))] * (4 * count)
        args[1::4] = checksums
        args[2::4] = [session] * count
        args[3::4] = indices
    _headers_format(count, checksums is not None).pack_into(buf, 0, *args)


def encode_naks(
    session_id: int,
    ranges: list[tuple[int, int]],
    max_datagrams: int,
    needs: Sequence[tuple[int, int, int]] = (),
) -> tuple[list[bytes], int]:
    """§7.1: encode sorted disjoint missing ranges into at most ``max_datagrams`` NAKs, after
    the NEED blocks of ``needs`` ((block, symbols, rows seen), in block order, §16).

    Returns the datagrams and how many of the ranges they cover completely (the rest wait a
    round; NEEDs that do not fit are left out: the next round asks again). Consecutive ranges
    share one BITMAP block whenever that is smaller than naming each as a RANGE.
    """
    todo = list(ranges)
    out: list[bytes] = []
    blocks: list[bytes] = []
    size = _HEAD
    for number, symbols, seen in needs:
        if size + NAK_BLOCK.size > MAX_NAK_SIZE:
            out.append(_nak_datagram(session_id, blocks))
            blocks, size = [], _HEAD
            if len(out) == max_datagrams:
                return out, 0
        blocks.append(NAK_BLOCK.pack(NakKind.NEED, 0, seen, symbols, number))
        size += NAK_BLOCK.size
    i, n = 0, len(todo)
    max_bits = (MAX_NAK_SIZE - _HEAD - NAK_BLOCK.size) * 8
    while i < n:
        start, stop = todo[i]
        j = i  # grow a BITMAP group [i, j] while it beats separate RANGE blocks
        while j + 1 < n:
            group_stop = todo[j + 1][1]
            if group_stop - start > max_bits:
                break
            if NAK_BLOCK.size + (group_stop - start + 7) // 8 > (j + 2 - i) * NAK_BLOCK.size:
                break
            j += 1
        if j > i:
            nbits = todo[j][1] - start
            bits = bitarray(nbits, endian="big")
            bits.setall(0)
            for a, b in todo[i : j + 1]:
                bits[a - start : b - start] = 1
            payload = bits.tobytes()
            block = NAK_BLOCK.pack(NakKind.BITMAP, 0, len(payload), nbits, start) + payload
        else:
            block = NAK_BLOCK.pack(NakKind.RANGE, 0, 0, min(stop - start, 0xFFFFFFFF), start)
        if size + len(block) > MAX_NAK_SIZE:
            out.append(_nak_datagram(session_id, blocks))
            blocks, size = [], _HEAD
            if len(out) == max_datagrams:
                return out, i
            continue
        blocks.append(block)
        size += len(block)
        if j == i and stop - start > 0xFFFFFFFF:
            todo[i] = (start + 0xFFFFFFFF, stop)  # longer than one block: the rest goes next
        else:
            i = j + 1
    if blocks:
        out.append(_nak_datagram(session_id, blocks))
    return out, i


def _nak_datagram(session_id: int, blocks: list[bytes]) -> bytes:
    return COMMON.pack(VERSION, MsgType.NAK, 0, 0, len(blocks), session_id) + b"".join(blocks)


def encode(m: Message) -> bytes:
    """Encode any message (NAKs must fit one datagram)."""
    if isinstance(m, Hello):
        return encode_hello(m)
    if isinstance(m, Accept):
        return encode_accept(m)
    if isinstance(m, Status):
        return encode_status(m)
    if isinstance(m, Probe):
        return encode_probe(m)
    if isinstance(m, Done):
        return encode_done(m)
    if isinstance(m, Close):
        return encode_close(m)
    if isinstance(m, Abort):
        return encode_abort(m)
    if isinstance(m, Data):
        return encode_data(m)
    if isinstance(m, Parity):
        return encode_parity(m)
    if isinstance(m, Keys):
        return encode_keys(m)
    if isinstance(m, Unsupported):
        raise ValueError("an unsupported offer is only ever decoded")
    datagrams, covered = encode_naks(m.session_id, list(m.ranges), 1, m.needs)
    if covered != len(m.ranges) or len(datagrams) != 1:
        raise ValueError("NAK does not fit one datagram")
    return datagrams[0]


# ---------------------------------------------------------------- decoders


def peek_header_untrusted(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(type, session_id) of a datagram, after the §2 checks common to all types."""
    if len(buf) < _HEAD:
        raise BadPacket("shorter than the common header")
    version, mtype, _flags, reserved, _aux, session = COMMON.unpack_from(buf, 0)
    if version != VERSION:
        raise BadPacket(f"unknown version {version}")
    if reserved != 0:
        raise BadPacket("reserved header byte is not zero")
    if not 1 <= mtype <= MsgType.KEYS:
        raise BadPacket(f"unknown type {mtype}")
    return mtype, session


def _other_version_offer(buf: bytes | bytearray | memoryview) -> Unsupported | None:
    """§4.4: a HELLO-sized datagram of type HELLO in another version is an offer to refuse
    by name, not noise to drop."""
    if len(buf) == HELLO_SIZE and buf[1] == MsgType.HELLO and buf[0] != VERSION:
        session = int.from_bytes(buf[8:16], "big")
        if session:
            return Unsupported(session, f"protocol version {buf[0]}")
    return None


def decode_untrusted(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one datagram from the network. Raises only ``BadPacket``."""
    offer = _other_version_offer(buf)
    if offer is not None:
        return offer
    mtype, session = peek_header_untrusted(buf)
    _v, _t, flags, _r, aux, _s = COMMON.unpack_from(buf, 0)
    n = len(buf)
    if session == 0:
        raise BadPacket("session id 0")
    if mtype == MsgType.DATA:
        if n <= DATA_HEADER_SIZE:
            raise BadPacket("DATA without payload")
        if n - DATA_HEADER_SIZE > MAX_ADU_SIZE:
            raise BadPacket("DATA payload too long")
        if flags & ~DATA_FLAG_CHECKSUM:
            raise BadPacket("unknown DATA flags")
        if not flags and aux:
            raise BadPacket("DATA aux without CHECKSUM")
        (index,) = struct.unpack_from("!Q", buf, _HEAD)
        return Data(session, index, bytes(buf[DATA_HEADER_SIZE:]), aux if flags else None)
    if mtype == MsgType.NAK:
        return _decode_nak(buf, flags, aux, session)
    if mtype == MsgType.PARITY:
        if n <= DATA_HEADER_SIZE or n - DATA_HEADER_SIZE > MAX_ADU_SIZE:
            raise BadPacket("PARITY length")
        if flags:
            raise BadPacket("PARITY flags")
        if aux >= 256:
            raise BadPacket("PARITY row beyond 255")
        (block,) = struct.unpack_from("!Q", buf, _HEAD)
        return Parity(session, block, aux, bytes(buf[DATA_HEADER_SIZE:]))
    if mtype == MsgType.ABORT:
        if flags:
            raise BadPacket("ABORT flags")
        if n < _HEAD + ABORT_BODY.size:
            raise BadPacket("truncated ABORT")
        (m,) = ABORT_BODY.unpack_from(buf, _HEAD)
        if m > MAX_REASON_BYTES or n != _HEAD + ABORT_BODY.size + m:
            raise BadPacket("ABORT length mismatch")
        try:
            code = AbortCode(aux)
            reason = bytes(buf[_HEAD + ABORT_BODY.size :]).decode("utf-8")
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            raise BadPacket(f"bad ABORT: {e}") from None
        return Abort(session, code, reason)
    if mtype == MsgType.DONE:
        if flags:
            raise BadPacket("DONE flags")
        if n != _HEAD + DONE_BODY.size:
            raise BadPacket("DONE length")
        try:
            verdict = Verdict(aux)
        except ValueError:
            raise BadPacket(f"unknown verdict {aux}") from None
        received, digest = DONE_BODY.unpack_from(buf, _HEAD)
        return Done(session, verdict, received, digest)
    if aux:
        raise BadPacket("aux must be zero for this type")
    if mtype == MsgType.HELLO:
        if flags:
            raise BadPacket("HELLO flags")
        if n != HELLO_SIZE:
            raise BadPacket("HELLO must be exactly 1200 bytes")
        adu, kind, alg, dflags, res, total, ts, tag, features, token = HELLO_BODY.unpack_from(buf, _HEAD)
        if res:
            raise BadPacket("HELLO reserved byte")
        keyed = bool(features & FEATURE_KEY)
        pad = HELLO_SHARE_AT + SHARE_SIZE + MAC_SIZE if keyed else HELLO_SHARE_AT
        offset, *source = HELLO_PLACE.unpack_from(buf, HELLO_PLACE_AT)
        if offset and not features & FEATURE_RANGE or any(source) and not features & FEATURE_RESUME:
            raise BadPacket("HELLO placement without its feature")
        if any(buf[pad:]):
            raise BadPacket("HELLO padding is not zero")
        share = bytes(buf[HELLO_SHARE_AT : HELLO_SHARE_AT + SHARE_SIZE]) if keyed else b""
        binder = bytes(buf[HELLO_SHARE_AT + SHARE_SIZE : pad]) if keyed else b""
        if kind not in set(Kind):
            return Unsupported(session, f"content kind {kind}")
        if alg not in set(DigestAlg):
            return Unsupported(session, f"digest algorithm {alg}")
        if dflags & ~HELLO_DATAFLAG_CHECKSUM:
            return Unsupported(session, f"data flags 0x{dflags & ~HELLO_DATAFLAG_CHECKSUM:02x}")
        if features & ~KNOWN_FEATURES:
            return Unsupported(session, f"features 0x{features & ~KNOWN_FEATURES:016x}")
        kind_e, alg_e = Kind(kind), DigestAlg(alg)
        if not 1 <= adu <= MAX_ADU_SIZE:
            return Unsupported(session, f"ADUs of {adu} bytes (1 to {MAX_ADU_SIZE})")
        if kind_e == Kind.STREAM and total != UNKNOWN_LENGTH:
            raise BadPacket("stream with a length")
        if kind_e == Kind.FILE and total == UNKNOWN_LENGTH:
            raise BadPacket("file without a length")
        if kind_e == Kind.FILE and total > MAX_TOTAL_BYTES:
            return Unsupported(session, f"a content of {total} bytes (at most 2^63-1)")
        if features & FEATURE_RANGE and kind_e != Kind.FILE:
            raise BadPacket("a stream with a range")
        if features & FEATURE_RESUME and kind_e != Kind.FILE and not features & FEATURE_COMPRESS:
            raise BadPacket("a stream with a source (only a file's compressed blocks name one, §19)")
        if features & FEATURE_COMPRESS and kind_e != Kind.STREAM:
            raise BadPacket("compressed blocks are a stream (§19)")
        if kind_e == Kind.FILE and offset > MAX_TOTAL_BYTES - total:
            return Unsupported(session, f"a range that ends past 2^63-1 (offset {offset})")
        return Hello(
            session, adu, kind_e, total, ts, tag, alg_e, bool(dflags), features, token, share, binder,
            offset, (source[0], source[1], source[2]),
        )  # fmt: skip
    if mtype == MsgType.ACCEPT:
        join = bool(flags & ACCEPT_FLAG_JOIN)
        keyed = bool(flags & ACCEPT_FLAG_KEY)
        has_held = bool(flags & ACCEPT_FLAG_HELD)
        at = _HEAD + ACCEPT_BODY.size
        known = ACCEPT_FLAG_RETRY | ACCEPT_FLAG_JOIN | ACCEPT_FLAG_FEC | ACCEPT_FLAG_KEY | ACCEPT_FLAG_HELD
        if flags & ~known or n < at:
            raise BadPacket("bad ACCEPT")
        ts, limit, token = ACCEPT_BODY.unpack_from(buf, _HEAD)
        retry = bool(flags & ACCEPT_FLAG_RETRY)
        if retry and not token or join and not retry or (keyed or has_held) and (retry or join):
            raise BadPacket(
                "RETRY without a token, JOIN without RETRY, or a share or held ranges with either"
            )
        held: list[tuple[int, int]] = []
        if has_held:  # §18
            if n < at + HELD_HEAD.size:
                raise BadPacket("truncated held ranges")
            count, res = HELD_HEAD.unpack_from(buf, at)
            at += HELD_HEAD.size
            if res or not 1 <= count <= MAX_HELD or n < at + count * HELD_RANGE.size:
                raise BadPacket("bad held ranges")
            last = -1
            for _ in range(count):
                a, b = HELD_RANGE.unpack_from(buf, at)
                at += HELD_RANGE.size
                if a <= last or b <= a:
                    raise BadPacket("held ranges out of order")
                held.append((a, b))
                last = b
        size = HELLO_SIZE if join else at + (ACCEPT_KEY_SIZE if keyed else 0)
        if n != size:
            raise BadPacket("bad ACCEPT")
        if join and any(buf[at:]):
            raise BadPacket("JOIN padding not zero")
        share = bytes(buf[at : at + SHARE_SIZE]) if keyed else b""
        mac = bytes(buf[at + SHARE_SIZE : at + SHARE_SIZE + MAC_SIZE]) if keyed else b""
        return Accept(
            session, ts, limit, token, retry, join, bool(flags & ACCEPT_FLAG_FEC), share, mac, tuple(held)
        )
    if mtype == MsgType.STATUS:
        if flags or n != _HEAD + STATUS_BODY.size:
            raise BadPacket("bad STATUS")
        cum, high, rec, limit, rate, ets, edelay, res = STATUS_BODY.unpack_from(buf, _HEAD)
        if res:
            raise BadPacket("STATUS reserved")
        if cum > high or rec > high or cum > rec:
            raise BadPacket("STATUS counters inconsistent")
        return Status(session, cum, high, rec, limit, rate, ets, edelay)
    if mtype == MsgType.PROBE:
        if flags & ~PROBE_FLAG_FINAL or n != _HEAD + PROBE_BODY.size:
            raise BadPacket("bad PROBE")
        nxt, ts, srtt, receivers, total, digest = PROBE_BODY.unpack_from(buf, _HEAD)
        final = bool(flags & PROBE_FLAG_FINAL)
        if not final and (total or any(digest)):
            raise BadPacket("PROBE length or digest without FINAL")
        return Probe(session, nxt, ts, srtt, final, total, digest, receivers)
    if mtype == MsgType.KEYS:
        if flags or aux or n != _HEAD + KEYS_BODY.size:
            raise BadPacket("bad KEYS")
        secret, data_pn, control_pn = KEYS_BODY.unpack_from(buf, _HEAD)
        return Keys(session, secret, data_pn, control_pn)
    # CLOSE is the only type left (peek_header_untrusted rejected unknown types).
    if flags or n != _HEAD:
        raise BadPacket("bad CLOSE")
    return Close(session)


def _decode_nak(buf: bytes | bytearray | memoryview, flags: int, nblocks: int, session: int) -> Nak:
    if flags:
        raise BadPacket("NAK flags")
    if nblocks == 0:
        raise BadPacket("NAK without blocks")
    n = len(buf)
    if n > MAX_NAK_SIZE:
        raise BadPacket("NAK too long")
    pos = _HEAD
    ranges: list[tuple[int, int]] = []
    needs: list[tuple[int, int, int]] = []
    last_stop = -1
    for _ in range(nblocks):
        if pos + NAK_BLOCK.size > n:
            raise BadPacket("truncated NAK block")
        kind, res, nbytes, count, start = NAK_BLOCK.unpack_from(buf, pos)
        pos += NAK_BLOCK.size
        if res or count == 0:
            raise BadPacket("bad NAK block head")
        if kind == NakKind.NEED:
            if nbytes > 255 or count > 255 or needs and start <= needs[-1][0]:
                raise BadPacket("bad NEED block")
            needs.append((start, count, nbytes))
            continue
        if start < last_stop:
            raise BadPacket("NAK blocks overlap or are unordered")
        if start + count > ALL_ONES_64:
            raise BadPacket("NAK range past the index space")
        if kind == NakKind.RANGE:
            if nbytes:
                raise BadPacket("RANGE with bytes")
            append_range(ranges, start, start + count)
        elif kind == NakKind.BITMAP:
            if nbytes != (count + 7) // 8 or pos + nbytes > n:
                raise BadPacket("BITMAP length")
            bits = bytes(buf[pos : pos + nbytes])
            pos += nbytes
            pad = nbytes * 8 - count
            if pad and bits[-1] & ((1 << pad) - 1):
                raise BadPacket("BITMAP padding bits set")
            _bitmap_ranges(ranges, start, bits, count)
        else:
            raise BadPacket(f"unknown NAK block kind {kind}")
        last_stop = start + count
    if pos != n:
        raise BadPacket("trailing bytes after NAK blocks")
    return Nak(session, tuple(ranges), tuple(needs))


def _bitmap_ranges(ranges: list[tuple[int, int]], start: int, bits: bytes, count: int) -> None:
    ba = bitarray(endian="big")
    ba.frombytes(bits)
    del ba[count:]
    for value, a, b in intervals(ba):
        if value:
            append_range(ranges, start + a, start + b)


# ---------------------------------------------------------------- §13 TCP framing

# §13 frame: length u32 (of what follows) | one message as in §2-§10
FRAME_LEN = struct.Struct("!I")
FRAME_HEAD = FRAME_LEN.size  # 4
MAX_CONTROL = 2048  # §13: every frame but DATA is at most this long (HELLO, 1200, the longest)
# §13 DATA frame head: frame length u32 | the §5 DATA header (flags 0, aux 0) | index u64
DATA_FRAME_HEAD = struct.Struct("!IBBBBIQQ")


def frame(msg: bytes) -> bytes:
    """§13: one message as a frame."""
    return FRAME_LEN.pack(len(msg)) + msg


def frame_data_head(session_id: int, first: int, nbytes: int) -> bytes:
    """§13: the head of a DATA frame carrying ``nbytes`` of payload from ADU ``first`` on
    (the payload follows it on the connection, not copied into it)."""
    return DATA_FRAME_HEAD.pack(DATA_HEADER_SIZE + nbytes, VERSION, MsgType.DATA, 0, 0, 0, session_id, first)


def frame_length_untrusted(head: bytes | bytearray | memoryview, limit: int) -> int:
    """§13: the length in a frame's head, which must be 1..``limit``. Raises only BadPacket."""
    if len(head) < FRAME_HEAD:
        raise BadPacket("truncated frame length")
    (length,) = FRAME_LEN.unpack_from(head, 0)
    if not 0 < length <= limit:
        raise BadPacket(f"frame of {length} bytes")
    return int(length)
