"""Resume (§18): what a receiver keeps of a transfer that did not finish, and how a later
transfer of the same content takes it up. Pure: the state file's bytes in and out, no I/O
(alf/io/sink.py reads and writes it beside the output).

A state file is JSON that names the content (its source's size, modification time and inode
as the sender's HELLO gave them, the length, the range), the partial output it describes
(size, modification time, inode: a partial file changed since is not trusted), and the byte
ranges of the content that were written. Byte ranges, not ADUs: the next sender may cut
another ADU size (a key, another path's MTU), and an ADU counts as held only if all of it was.
A check (BLAKE2b of the rest) tells a damaged file from a valid one. Claiming less than is
held is always safe (what is not claimed is sent again and written over with the same bytes),
so an ACCEPT names only the largest ranges; claiming more is impossible by construction, and
the end-to-end digest, computed over the whole output, would catch it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from alf import wire
from alf.compress import BLOCK, held_blocks
from alf.events import Resumed
from alf.ranges import ceil_div

STATE_SUFFIX = ".alf-resume"
STATE_FORMAT = "alf-resume-1"

Span = tuple[int, int]
Stamp = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass(frozen=True)
class Placement:
    """§18: where a content goes in the output, and what of it is there already."""

    ranged: bool = False  # it is a range of its source: written in place at ``offset``
    offset: int = 0
    source: tuple[int, int, int] | None = None  # its source as the HELLO named it (None: unnamed)
    keep: bool = False  # the output holds parts of it already (a resume): not started afresh
    compressed: bool = False  # §19: the content is compressed blocks, restored in order
    blocks: int = 0  # §18 with §19: the blocks of input the output holds, passed over (resumed)


def placement(hello: wire.Hello, keep: bool, blocks: int = 0) -> Placement:
    """Where the content ``hello`` offers goes; ``keep``: what the output holds is of it;
    ``blocks``: of a compressed content (§19), the blocks held."""
    ranged = bool(hello.features & wire.FEATURE_RANGE)
    named = bool(hello.features & wire.FEATURE_RESUME)
    compressed = bool(hello.features & wire.FEATURE_COMPRESS)
    return Placement(
        ranged, hello.offset if ranged else 0, hello.source if named else None, keep, compressed, blocks
    )


class StateError(ValueError):
    """A state file that cannot be used, with the reason for the user."""


@dataclass(frozen=True)
class Kept:
    """What an earlier receive into the same output holds."""

    total_bytes: int  # the content's length
    offset: int  # where the content starts in its source (a range, §18), else 0
    source: Stamp  # the source file as the sender named it
    digest: str  # the digest algorithm's name (for the reader; the output is hashed whole again)
    held: tuple[Span, ...]  # byte ranges [a, b) of the content written, sorted and disjoint
    partial: Stamp = (0, 0, 0)  # the partial output as it was when the state was written

    @property
    def held_bytes(self) -> int:
        return sum(b - a for a, b in self.held)


def _check(body: dict[str, object]) -> str:
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def encode_state(kept: Kept) -> bytes:
    body: dict[str, object] = {
        "format": STATE_FORMAT,
        "total_bytes": kept.total_bytes,
        "offset": kept.offset,
        "source": list(kept.source),
        "digest": kept.digest,
        "held": [list(r) for r in kept.held],
        "partial": list(kept.partial),
    }
    return json.dumps({**body, "check": _check(body)}, sort_keys=True).encode() + b"\n"


def _ints(v: object, n: int) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) != n or not all(type(x) is int and x >= 0 for x in v):
        raise StateError("a field is not what it should be")
    return tuple(v)


def decode_state_untrusted(data: bytes) -> Kept:
    """The state file's content; raises ``StateError`` (and nothing else) if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # (RecursionError: nested too deep)
        raise StateError("it is not a resume state (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise StateError("it is not an alf resume state of this version")
    check = doc.pop("check", None)
    try:
        matches = check == _check(doc)
    except RecursionError:  # (nested too deep to write again)
        matches = False
    if not matches:
        raise StateError("it is damaged (its check does not match)")
    total, offset = doc.get("total_bytes"), doc.get("offset")
    if type(total) is not int or type(offset) is not int or total < 0 or offset < 0:
        raise StateError("a field is not what it should be")
    held_raw = doc.get("held")
    if not isinstance(held_raw, list):
        raise StateError("a field is not what it should be")
    held: list[Span] = []
    for r in held_raw:
        a, b = _ints(r, 2)
        if a >= b or b > total or (held and a <= held[-1][1]):
            raise StateError("its held ranges are out of order or beyond the content")
        held.append((a, b))
    digest = doc.get("digest")
    src, part = _ints(doc.get("source"), 3), _ints(doc.get("partial"), 3)
    return Kept(
        total, offset, (src[0], src[1], src[2]), str(digest), tuple(held), (part[0], part[1], part[2])
    )


def mismatch(kept: Kept, hello: wire.Hello) -> str | None:
    """Why ``kept`` is not part of the content ``hello`` offers; None: it is."""
    if not hello.features & wire.FEATURE_RESUME:
        return "the sender's input is not a file it names (a pipe, or a group)"
    if hello.features & wire.FEATURE_RANGE:
        return "the sender sends a range (written in place), not the whole file that was kept"
    if kept.offset:
        return f"the kept part is of a range (from byte {kept.offset}), the sender sends the whole file"
    # (a file's compressed blocks are a stream, §19: its length is its source's)
    total = hello.source[0] if hello.features & wire.FEATURE_COMPRESS else hello.total_bytes
    if total != kept.total_bytes or hello.source != kept.source:
        return "the source changed since (its size, modification time or inode differ)"
    return None


def held_adus(held: tuple[Span, ...] | list[Span], adu: int, total: int) -> list[Span]:
    """The ADUs (of ``adu`` bytes; the last one ends at ``total``) that lie wholly within the
    byte ranges ``held``."""
    out: list[Span] = []
    for a, b in held:
        first = ceil_div(a, adu)
        stop = ceil_div(b, adu) if b == total else b // adu
        if stop > first:
            out.append((first, stop))
    return out


def held_by_peer(held: tuple[Span, ...], end_adus: int, adu: int, total: int) -> tuple[list[Span], int, int]:
    """A sender's view of the ranges an ACCEPT says are held (§18 rule 4): within the content's
    ``end_adus``, and how many ADUs and bytes they are."""
    runs = [(a, min(b, end_adus)) for a, b in held if a < end_adus]
    return runs, sum(b - a for a, b in runs), sum(b - a for a, b in held_bytes(runs, adu, total))


def held_bytes(runs: list[Span], adu: int, total: int) -> list[Span]:
    """The byte ranges of the ADU ranges ``runs`` (the last ADU ends at ``total``)."""
    return [(a * adu, min(b * adu, total)) for a, b in runs if a * adu < total]


def claim(runs: list[Span], limit: int = wire.MAX_HELD) -> tuple[Span, ...]:
    """What an ACCEPT says is held (§18): the ``limit`` longest of ``runs``, in order."""
    if len(runs) <= limit:
        return tuple(runs)
    longest = sorted(runs, key=lambda r: r[0] - r[1])[:limit]
    return tuple(sorted(longest))


def subtract(runs: list[Span], lost: list[Span]) -> list[Span]:
    """``runs`` without the ranges ``lost`` (ADUs whose write failed: not held after all)."""
    out: list[Span] = []
    for a, b in runs:
        pieces = [(a, b)]
        for x, y in lost:
            pieces = [p for c, d in pieces for p in ((c, min(d, x)), (max(c, y), d)) if p[0] < p[1]]
        out.extend(pieces)
    return out


def take_up(kept: Kept | None, hello: wire.Hello) -> tuple[list[Span], str | None]:
    """What a receiver that kept ``kept`` holds of the content ``hello`` offers, in ADUs (of
    a compressed content, §19: ``[(0, n)]``, its first ``n`` blocks of input, or nothing), and
    why nothing (None: it takes up what it kept, or there was nothing to take up)."""
    if kept is None:
        return [], None
    why = mismatch(kept, hello)
    if why is not None:
        return [], why
    if hello.features & wire.FEATURE_COMPRESS:  # §19: the blocks of the held prefix, if any
        prefix = kept.held[0][1] if kept.held and kept.held[0][0] == 0 else 0
        n = held_blocks(prefix, kept.total_bytes)
        if not n:
            why = "what is kept holds no whole MiB at the file's start (what a compressed sender takes up)"
            return [], why
        return [(0, n)], None
    return held_adus(kept.held, hello.adu_size, hello.total_bytes), None


def refusal(why: str) -> tuple[str, str]:
    """--resume strict and a content ``why`` not the one kept: the reason the ABORT gives the
    sender, and the receiver's own outcome message."""
    return (
        f"the receiver's partial output is of another content: {why}",
        f"refused the sender: {why}; the partial output is kept as it was (--resume strict)",
    )


def keepable_after(code: wire.AbortCode) -> bool:
    """Whether what a receiver holds is worth keeping for a resume after the sender's ABORT
    ``code``: not when its input failed (LOCAL_IO: it changed while it was read, or could not be
    read; what went out may be of a version no resume would match) or it broke the protocol."""
    return code not in (wire.AbortCode.LOCAL_IO, wire.AbortCode.PROTOCOL)


def decided(
    kept: Kept | None, msg: wire.Hello, held: list[Span], why: str | None
) -> tuple[Placement, Resumed | None]:
    """Where the content of ``msg`` goes once a receiver (UDP or TCP) took it, and the event
    that tells its user what of it was there (None: nothing was to be taken up)."""
    if msg.features & wire.FEATURE_COMPRESS:  # §19: ``held`` is at most the first blocks
        blocks = held[0][1] if held else 0
        place = placement(msg, kept is not None and why is None, blocks)
        if kept is None:
            return place, None
        return place, Resumed(blocks * BLOCK, msg.source[0], why)
    place = placement(msg, kept is not None and why is None)
    if kept is None:
        return place, None
    nbytes = sum(b - a for a, b in held_bytes(held, msg.adu_size, msg.total_bytes))
    return place, Resumed(nbytes, msg.total_bytes, why)
