"""§19: the compression side-chain. The sender cuts its input into blocks of ``BLOCK`` bytes,
compresses each on its own (zstd) or, when a quick probe says it does not compress, sends it
as it is; each block goes out as a header, its bytes, and zeros up to the next ADU boundary,
so a block always starts an ADU. The receiver gathers the blocks in order and restores them.
The end-to-end digest is of the content as it was before compression. Pure: bytes in, bytes
out; the threads that run this are the drivers' (alf/io/source.py, alf/io/sink.py)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import zstandard

Buffer = bytes | bytearray | memoryview

BLOCK = 1 << 20  # bytes of input per block
PROBE = 64 << 10  # a block's first bytes compressed alone decide whether it is worth compressing
PROBE_RATIO = 0.95  # ... it is not when they shrink less than this
HEADER = struct.Struct(">2sBBIIQ")  # magic, method, flags (0), stored bytes, input bytes, block number
MAGIC = b"AZ"
RAW, ZSTD = 1, 2
MAX_STORED = BLOCK + (BLOCK >> 7) + 1024  # zstd's bound on an incompressible block, and a margin
DEFAULT_LEVEL = 1


class CompressedStreamError(ValueError):
    """The compressed stream is not one the sender can have made (its framing or a block)."""


@dataclass
class Counts:
    """What compression did (the sender's statistics)."""

    bytes_in: int = 0  # input bytes
    bytes_out: int = 0  # bytes the blocks took on the wire: headers and padding included
    blocks: int = 0
    blocks_raw: int = 0  # ... sent as they were (the probe said they do not compress)
    bytes_held: int = 0  # §18: input the receiver held already (resumed): hashed, not sent
    blocks_auto_raw: int = 0  # --compress auto: ... sent as they were, that being the faster way


def padded(n: int, adu: int) -> int:
    return -(-n // adu) * adu


class Compressor:
    """Frames blocks; each thread that calls ``frame`` gets its own zstd context."""

    def __init__(self, level: int = DEFAULT_LEVEL, adu: int = 1) -> None:
        if not 1 <= level <= 19:
            raise ValueError(f"compression level must be 1-19, not {level}")
        self.level, self.adu = level, adu
        self._local = threading.local()

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor]:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            probe, full = zstandard.ZstdCompressor(level=1), zstandard.ZstdCompressor(level=self.level)
            ctx = self._local.ctx = (probe, full)
        return ctx

    def worth(self, data: Buffer) -> bool:
        """The probe: does the block's start compress (level 1 on its first ``PROBE`` bytes)?"""
        probe, _ = self._contexts()
        sample = data[:PROBE]
        return bool(sample) and len(probe.compress(sample)) < PROBE_RATIO * len(sample)

    def frame(self, number: int, data: Buffer, probed: bool = False) -> tuple[list[bytes], bool]:
        """Block ``number`` as it goes on the wire, in parts (header, bytes, padding: a whole
        number of ADUs, not joined: the ring takes them as they are), and whether it went
        compressed. ``probed``: ``worth`` said yes already."""
        stored, method = bytes(data), RAW
        if probed or self.worth(data):
            packed = self._contexts()[1].compress(data)
            if len(packed) < PROBE_RATIO * len(data):  # (the probe may be wrong about the rest)
                stored, method = packed, ZSTD
        return block_parts(method, stored, len(data), number, self.adu), method == ZSTD


class Adaptive:
    """``--compress auto``: compress while that makes the input go faster, found by trying, as
    a bandit does. What decides is the rate the input goes at (the pump's reading rate: the
    ring it fills frees only as fast as the wire and the window take it), with blocks
    compressed and with blocks sent as they are: it counts the compressors' CPU taken from a
    sender's loop on the same cores (loopback) as much as a slow wire. (Not what the receiver's
    restore costs once its window holds it apart: that shows only as the window fills.) Each
    way is tried for at least ``TRIAL`` seconds and ``MIN_BLOCKS`` blocks, raw first, the
    clock started once the receiver took something (the ring's first filling is no trial's);
    the faster (compressing, unless the other is faster by ``MARGIN``) then runs for ``HOLD``
    times the losing way's last trial, doubled each time it wins again up to ``LONGEST``
    times and never over ``MAX_HOLD`` seconds, before the other is tried again: a path or an
    input that changes is followed, and trying costs about a ninth of the time. Time the pump
    waited for its input is no way's: a span mostly spent so (a pipe slower than either way)
    decides nothing and compresses (it then costs no time and saves the wire its bytes).
    Pure: the pump gives it the time, its input count and its input waits."""

    TRIAL = 0.5  # s
    MIN_BLOCKS = 2
    MARGIN = 1.1
    HOLD = 8
    LONGEST = 64
    MAX_HOLD = 120.0  # s

    def __init__(self, trial: float = TRIAL) -> None:
        self.trial = trial
        self.best: bool | None = None  # compressing is faster (None: not known yet)
        self.mode = False  # what the blocks now do: compress or not
        self.rates: dict[bool, float | None] = {True: None, False: None}  # input bytes/s, each way
        self.trials = 0  # trials done
        self._took = {True: trial, False: trial}  # each way's last trial, seconds
        self._trial = True  # ``mode`` is on trial (else it is ``best``, held)
        self._since: tuple[float, int, float] | None = None  # (when, input bytes, waits) it began
        self._blocks = 0
        self._hold = self.HOLD
        self._length = trial  # how long ``mode`` runs

    def wants(self, now: float, bytes_in: int, waited: float = 0.0, started: bool = True) -> bool:
        """Whether the next block is compressed, at ``now``, with ``bytes_in`` read so far and
        ``waited`` seconds spent waiting for the input; ``started``: the receiver took some."""
        if not started:
            return self.mode
        if self._since is None:
            self._since = (now, bytes_in, waited)
        began, before, idle = self._since
        span, idle = now - began, waited - idle
        if span >= self._length and self._blocks >= self.MIN_BLOCKS:
            if idle > span / 2:  # the input held it back, not either way
                self.mode, self._trial, self._length = True, False, self.HOLD * self.trial
            else:
                self._next(span, (bytes_in - before) / (span - idle))
            self._since, self._blocks = (now, bytes_in, waited), 0
        self._blocks += 1
        return self.mode

    def _next(self, span: float, rate: float) -> None:
        self.rates[self.mode] = rate
        other = not self.mode
        if not self._trial:  # ``best`` ran its time: the other is tried
            self.mode, self._trial, self._length = other, True, self.trial
            return
        self.trials += 1
        self._took[self.mode] = span
        if self.rates[other] is None:  # (the first trial: the other is tried too)
            self.mode, self._length = other, self.trial
            return
        on, off = self.rates[True] or 0.0, self.rates[False] or 0.0
        best = not off > on * self.MARGIN
        if best == self.best:
            self._hold = min(2 * self._hold, self.LONGEST)
        else:
            self.best, self._hold = best, self.HOLD
        self.mode, self._trial = best, False
        self._length = min(self._hold * self._took[not best], self.MAX_HOLD)


def frame_all(compressor: Compressor, data: bytes) -> Iterator[tuple[list[bytes], bool]]:
    """Every block of ``data``, framed, in order (the simulator's and the tests' sender)."""
    for number, at in enumerate(range(0, len(data), BLOCK)):
        yield compressor.frame(number, data[at : at + BLOCK])


def held_blocks(prefix: int, size: int) -> int:
    """§18 with §19: of a file of ``size`` bytes whose first ``prefix`` bytes are held, the
    blocks a resumed transfer passes over: those wholly held, but never the last (a resumed
    content is never empty; what holds all of it holds the last block again)."""
    return min(prefix, size - 1) // BLOCK if size > 0 else 0


def block_parts(method: int, stored: bytes, size: int, number: int, adu: int) -> list[bytes]:
    """Block ``number`` on the wire, in parts: its header, its ``stored`` bytes (``size`` bytes
    of input), zeros up to the next multiple of ``adu``."""
    end = HEADER.size + len(stored)
    return [header(method, len(stored), size, number), stored, bytes(padded(end, adu) - end)]


def header(method: int, stored: int, size: int, number: int) -> bytes:
    return HEADER.pack(MAGIC, method, 0, stored, size, number)


def raw_header(number: int, size: int) -> bytes:
    return header(RAW, size, size, number)


class Gathered(NamedTuple):
    """A block's wire bytes, gathered and its header checked, not yet restored."""

    number: int
    method: int
    stored: int
    size: int
    body: memoryview  # its stored bytes, then its padding


class Direct(NamedTuple):
    """Bytes of a raw block, in order, as they came (views of what was fed): written where
    they are, not gathered; ``ends``: the block's last (it was checked whole)."""

    parts: Sequence[Buffer]
    nbytes: int  # their length
    ends: bool


class BlockReader:
    """The receiver's side: the wire stream, fed in order, becomes the blocks' input bytes.

    ``feed`` gathers each block's bytes into a buffer of their own, its length known from the
    header (the one copy), and ``restore`` makes a gathered block its input bytes (a raw
    block as a view of that buffer), so the two may run in different threads: the network
    loop gathers straight from what it received, a restorer's thread restores and writes.
    A raw block that ``direct`` says may be written at once is not gathered at all: its bytes
    come out as views of what was fed (``Direct``), as a plain file's receiver writes ADUs.
    Everything is checked before it is used: a header that is not one, a block out of order
    or longer than a block can be, a zstd frame whose header names another length than the
    block's (checked before it is decompressed: zstd would allocate what the frame names), a
    frame that does not restore to that length, padding that is not zero; any of it is a
    ``CompressedStreamError``.
    """

    SPARE = 16  # gathering buffers kept for reuse (given back once written)

    def __init__(self, adu: int, first: int = 0) -> None:
        """``first``: the number of the first block (§18: the blocks before it are held)."""
        self.adu = adu
        self._head = bytearray()  # a header's first bytes, while it is not whole
        self._body: memoryview | None = None  # the block being gathered: bytes, then padding
        self._spare: list[bytearray] = []  # buffers handed out and given back (``give_back``)
        self._fill = 0
        self._method = self._stored = self._size = 0
        self._next = first  # the number the next block must have
        self._dctx = zstandard.ZstdDecompressor()  # (``restore``'s: one thread's)
        self.wire_bytes = 0  # bytes consumed (whole blocks)
        self.direct: Callable[[], bool] = lambda: False  # may the raw block starting now go direct?
        self._direct = False  # the block being read goes direct: ...
        self._left = self._pad = 0  # ... its bytes still to come, then its padding

    def feed_run(self, parts: Sequence[Buffer]) -> Iterator[Gathered | Direct]:
        """As ``feed``, for ADUs given one by one: the whole ADUs inside a block's bytes are
        taken many at a time (a direct block's pass as they are; others are joined into the
        block's buffer), the ADUs where a block starts or ends one by one."""
        adu, i, n = self.adu, 0, len(parts)
        while i < n:
            body = self._body
            room = self._left if self._direct else len(body) - self._fill if body is not None else 0
            k = min(n - i, room // adu)
            if k:
                run = parts[i : i + k]
                if sum(map(len, run)) == k * adu:  # (all whole: the usual case)
                    i += k
                    if self._direct:
                        self._left -= k * adu
                        yield Direct(run, k * adu, False)
                        continue
                    assert body is not None
                    body[self._fill : self._fill + k * adu] = b"".join(run)  # (one call, in C)
                    self._fill += k * adu
                    if self._fill == len(body):
                        block = Gathered(self._next, self._method, self._stored, self._size, body)
                        self._end_block()  # (first: ``wire_bytes`` counts it once it is out)
                        yield block
                    continue
            yield from self.feed(parts[i])
            i += 1

    def feed(self, data: Buffer) -> Iterator[Gathered | Direct]:
        """The blocks completed by ``data``, gathered, in order (and a direct block's bytes)."""
        view = memoryview(data).cast("B")
        pos, n = 0, len(view)
        while pos < n:
            if self._body is None and not self._direct:
                k = min(HEADER.size - len(self._head), n - pos)
                self._head += view[pos : pos + k]
                pos += k
                if len(self._head) < HEADER.size:
                    break
                self._start_block()
            if self._direct:
                if self._left:
                    k = min(self._left, n - pos)
                    self._left -= k
                    pos += k
                    yield Direct((view[pos - k : pos],), k, False)
                k = min(self._pad, n - pos)
                if k and any(view[pos : pos + k]):
                    raise CompressedStreamError(f"block {self._next}'s padding is not zero")
                self._pad -= k
                pos += k
                if not self._left and not self._pad:
                    self._end_block()
                    yield Direct((), 0, True)
                continue
            body = self._body
            assert body is not None
            k = min(len(body) - self._fill, n - pos)
            body[self._fill : self._fill + k] = view[pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == len(body):
                block = Gathered(self._next, self._method, self._stored, self._size, body)
                self._end_block()
                yield block

    def _end_block(self) -> None:
        self.wire_bytes += padded(HEADER.size + self._stored, self.adu)
        self._next += 1
        self._head.clear()
        self._body = None
        self._direct = False

    def _start_block(self) -> None:
        magic, method, flags, stored, size, number = HEADER.unpack(self._head)
        if magic != MAGIC or flags or method not in (RAW, ZSTD):
            raise CompressedStreamError("a block header is not one")
        if number != self._next:
            raise CompressedStreamError(f"block {number} came where block {self._next} belongs")
        if not 0 < size <= BLOCK or not 0 < stored <= MAX_STORED or method == RAW and stored != size:
            raise CompressedStreamError(f"block {number} names impossible lengths")
        self._method, self._stored, self._size = method, stored, size
        need = padded(HEADER.size + stored, self.adu) - HEADER.size
        if method == RAW and self.direct():
            self._direct, self._left, self._pad = True, stored, need - stored
            return
        cap = padded(HEADER.size + MAX_STORED, self.adu)
        try:  # (a fresh MiB costs 256 page faults)
            buf = self._spare.pop()  # (given back from another thread: list.pop is atomic)
        except IndexError:
            buf = bytearray(cap)
        self._body = memoryview(buf)[:need]
        self._fill = 0

    def give_back(self, data: object) -> None:
        """A block's bytes, written: its buffer may gather another (called from the writer's
        thread once it wrote them; anything but this reader's buffers is ignored)."""
        buf = data.obj if isinstance(data, memoryview) else None
        if isinstance(buf, bytearray) and len(buf) == padded(HEADER.size + MAX_STORED, self.adu):
            if len(self._spare) < self.SPARE:
                self._spare.append(buf)

    def restore(self, block: Gathered) -> bytes | memoryview:
        """A gathered block's input bytes (a raw one's: a view of its buffer, given back once
        written; a zstd one's buffer is given back here)."""
        number, stored, size = block.number, block.stored, block.size
        whole = block.body
        if any(whole[stored:]):
            raise CompressedStreamError(f"block {number}'s padding is not zero")
        part = whole[:stored]
        if block.method == RAW:
            return part
        try:
            named = zstandard.frame_content_size(part)
            if named != size:  # (-1: not named; the sender always names it)
                raise CompressedStreamError(f"block {number}'s zstd frame names {named} bytes, not {size}")
            out = self._dctx.decompress(part, max_output_size=size, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise CompressedStreamError(f"block {number} does not decompress: {e}") from None
        if len(out) != size:
            raise CompressedStreamError(f"block {number} restores to {len(out)} bytes, not {size}")
        part.release()
        self.give_back(whole)  # (what it restored to is new bytes: its buffer is free)
        return out

    def finish(self) -> None:
        """The stream ended: it must not end inside a block."""
        if self._head or self._body is not None or self._direct:
            raise CompressedStreamError("the compressed stream ends inside a block")
