"""What a transfer moves, without I/O: the content's protocols and their in-memory twins.

A ``Source`` hands the sender runs of ADUs (memoryviews, no copies); a ``Sink`` takes the
receiver's runs, either at their offsets (``OffsetSink``, file mode: holes cost no memory) or
in order (``OrderedSink``, pipe mode: what arrived beyond a hole waits, bounded by the
receiver's window). Both reach the world only through a backend or a writer: files, pipes and
threads live in alf/io/, memory twins live here for the simulator and the tests.
Invariant: ``finish`` returns the length and digest of exactly the bytes that reached the
output, so the verdict speaks of what was written, not of what was received.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from alf import resume
from alf.compress import BLOCK, BlockReader, CompressedStreamError, Direct, Gathered
from alf.digest import NAMES, Hasher, new_hasher
from alf.errors import ExitCode
from alf.ranges import ceil_div, merge_ranges
from alf.wire import DigestAlg

Buffer = bytes | bytearray | memoryview

MAX_RUN = 352  # ADUs per run handed out at once: eight 64 KiB GSO sends of 1452-byte datagrams
HASH_CHUNK = 8 << 20  # the output is read back for hashing through mappings of this size


class SinkError(Exception):
    """The output cannot be written; the message is for the user."""


class NotResumable(SinkError):
    """§18, --resume strict: the output holds nothing that can be taken up; why."""


def describe(e: OSError, what: str) -> str:
    if e.errno == errno.ENOSPC:
        return f"{what}: no space left on the device"
    if e.errno == errno.EPIPE:
        return f"{what}: the reader of the output went away"
    return f"{what}: {e.strerror or e}"


# ---------------------------------------------------------------- sources


class Source(Protocol):
    adu_size: int

    @property
    def window_adus(self) -> int | None:
        """The most ADUs it holds that are not yet acknowledged (a pipe's ring); None: no
        bound (a file can be read again at any place)."""
        ...

    def available(self) -> int: ...

    def total_bytes(self) -> int | None: ...

    def digest(self) -> bytes | None: ...

    def skipping(self) -> None:
        """§18: the first pass will pass over what the receiver holds: the digest must come
        from reading all of the content in order all the same (without sending it)."""
        ...

    def accepted(self, held: tuple[Span, ...]) -> None:
        """The receiver accepted the content (its first ACCEPT) and holds ``held`` of it (§18;
        of a file's compressed blocks, §19: at most ``((0, n),)``, its first ``n`` blocks)."""
        ...

    def read(self, first: int, count: int, at: int = 0) -> list[Buffer]: ...

    def block(self, first: int, count: int) -> Buffer: ...

    def release(self, below: int) -> None: ...

    def error(self) -> str | None: ...


class InputChanged(str):
    """What a Source's ``error()`` says when its input changed while it was read: what went out
    is a mix of versions that never existed together, and must not be delivered."""


def source_failure(error: str) -> ExitCode:
    """The exit code of a Source's ``error()``."""
    return ExitCode.INPUT_CHANGED if isinstance(error, InputChanged) else ExitCode.LOCAL_IO


def cut_adus(data: Buffer, adu: int) -> list[Buffer]:
    view = memoryview(data)
    return [view[i : i + adu] for i in range(0, len(view), adu)]


class BytesSource:
    """A content held in memory (tests and the simulated network); kind file."""

    window_adus = None

    def __init__(self, data: bytes, adu_size: int, alg: DigestAlg = DigestAlg.XXH3_128) -> None:
        self.adu_size = adu_size
        self._data = memoryview(data)
        h = new_hasher(alg)
        h.update(data)
        self._digest = h.digest()

    def available(self) -> int:
        return ceil_div(len(self._data), self.adu_size)

    def total_bytes(self) -> int | None:
        return len(self._data)

    def digest(self) -> bytes | None:
        return self._digest

    def skipping(self) -> None:
        pass  # (hashed whole already)

    def accepted(self, held: tuple[Span, ...]) -> None:
        pass

    def read(self, first: int, count: int, at: int = 0) -> list[Buffer]:
        a = self.adu_size
        return cut_adus(self._data[first * a : (first + count) * a], a)

    def block(self, first: int, count: int) -> Buffer:
        a = self.adu_size
        return self._data[first * a : (first + count) * a]

    def release(self, below: int) -> None:
        pass

    def error(self) -> str | None:
        return None


# ---------------------------------------------------------------- sinks


Placement = resume.Placement
WHOLE = Placement()  # a content that is all of its source, with nothing of it held
Span = tuple[int, int]
Kept = resume.Kept


class Sink(Protocol):
    @property
    def in_order(self) -> bool:
        """It takes ADUs in order (a pipe's writer): the receiver's window bounds its memory."""
        ...

    def start(
        self, adu_size: int, total_bytes: int | None, alg: DigestAlg, place: Placement = WHOLE
    ) -> None: ...

    def write_run(self, first: int, payloads: Sequence[Buffer]) -> None: ...

    def write_block(self, first: int, count: int, data: Buffer) -> None: ...

    def read_block(self, first: int, count: int) -> bytearray:
        """ADUs ``first .. first+count-1`` as written so far, zero where nothing was (§16:
        a block read back to be decoded). Raises SinkError."""
        ...

    def advance(self, cum: int) -> int: ...

    def finish(self, total_bytes: int, expected: bytes | None) -> tuple[int, bytes]: ...

    def close(self, ok: bool, held: Sequence[Span] | None = None) -> str | None:
        """Release the output; ``held``: the ADU ranges the receiver holds (on failure, §18,
        what a resume can take up; None: nothing it holds is worth keeping, the sender's input
        failed). Returns a note for the user."""
        ...


class OffsetBackend(Protocol):
    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None: ...

    def preadinto(self, buf: bytearray, offset: int) -> int: ...

    def hash_range(self, update: Callable[[Buffer], object], offset: int, n: int) -> None: ...

    def place(self, place: Placement, total_bytes: int | None) -> None:
        """§18: the content's placement, before anything is written (a range goes in place;
        an output not taken up starts afresh). Raises SinkError."""
        ...

    def reserve(self, total_bytes: int) -> None: ...

    def commit(self, total_bytes: int) -> None: ...

    def discard(self, keep: bool) -> str | None: ...

    def keep_for_resume(self, state: Kept) -> str:
        """§18: keep the partial output and the state that says what it holds; a note for the
        user (where it is, how to go on). Raises OSError."""
        ...


class MemoryBackend:
    def __init__(self, kept: Kept | None = None) -> None:
        self.data = bytearray()
        self.kept = kept  # what an earlier receive left (a resume), then what this one leaves
        self.offset = 0

    def place(self, place: Placement, total_bytes: int | None) -> None:
        self.offset = place.offset if place.ranged else 0
        if not place.keep and not place.ranged:
            self.data = bytearray()

    def keep_for_resume(self, state: Kept) -> str:
        self.kept = state
        return "kept for a resume"

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        blob = b"".join(buffers)
        offset += self.offset
        end = offset + len(blob)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = blob

    def preadinto(self, buf: bytearray, offset: int) -> int:
        offset += self.offset
        part = self.data[offset : offset + len(buf)]
        buf[: len(part)] = part
        return len(part)

    def hash_range(self, update: Callable[[Buffer], object], offset: int, n: int) -> None:
        offset += self.offset
        if offset + n > len(self.data):
            raise SinkError("the output is shorter than what was written to it")
        update(bytes(self.data[offset : offset + n]))

    def reserve(self, total_bytes: int) -> None:
        pass

    def commit(self, total_bytes: int) -> None:
        if not self.offset:
            del self.data[total_bytes:]

    def discard(self, keep: bool) -> str | None:
        return None


class OffsetSink:
    """Writes runs at their offsets and hashes the content in order: a run that extends the
    hashed prefix is hashed from the buffer it arrived in; what arrived beyond a hole is read
    back from the output once the hole is filled."""

    in_order = False

    def __init__(
        self, backend: OffsetBackend, keep_partial: bool = False, hash_chunk: int = HASH_CHUNK
    ) -> None:
        self.backend = backend
        self.keep_partial = keep_partial
        self.hash_chunk = hash_chunk
        self.adu = 0
        self._hash: Hasher | None = None
        self._hashed = 0  # bytes of the content hashed so far (a prefix)
        self._end: int | None = None  # where the content ends, once a short last ADU is written
        self._place = Placement()
        self._total: int | None = None
        self._alg = DigestAlg.XXH3_128
        self._failed: list[Span] = []  # ADU ranges whose write failed: not held (§18)
        self._mismatch = False  # the digest did not match: what is held is not to be trusted

    def start(self, adu_size: int, total_bytes: int | None, alg: DigestAlg, place: Placement = WHOLE) -> None:
        self.adu = adu_size
        self._hash = new_hasher(alg)
        self._place, self._total, self._alg = place, total_bytes, alg
        try:
            self.backend.place(place, total_bytes)
        except OSError as e:
            raise SinkError(describe(e, "cannot place the output")) from None
        if total_bytes is not None:
            try:
                self.backend.reserve(total_bytes)
            except OSError as e:
                raise SinkError(describe(e, f"cannot reserve {total_bytes} bytes for the output")) from None

    def write_run(self, first: int, payloads: Sequence[Buffer]) -> None:
        size = len(payloads[0]) * (len(payloads) - 1) + len(payloads[-1])
        # only the content's last ADU can be short
        self._write(first, payloads, size, len(payloads[-1]) < self.adu)

    def write_block(self, first: int, count: int, data: Buffer) -> None:
        """ADUs ``first .. first+count-1`` laid end to end in ``data`` (one TCP frame)."""
        self._write(first, [data], len(data), len(data) < count * self.adu)

    def read_block(self, first: int, count: int) -> bytearray:
        buf = bytearray(count * self.adu)
        try:
            self.backend.preadinto(buf, first * self.adu)
        except OSError as e:
            raise SinkError(describe(e, "cannot read back the output")) from None
        return buf

    def _write(self, first: int, buffers: Sequence[Buffer], size: int, short: bool) -> None:
        """Write ``size`` bytes at ADU ``first``; hash them at once if they extend the hashed
        prefix; a ``short`` end is the content's end."""
        offset = first * self.adu
        try:
            self.backend.pwritev(buffers, offset)
        except OSError as e:
            self._failed.append((first, first + ceil_div(size, self.adu)))
            raise SinkError(describe(e, "cannot write the output")) from None
        if short:
            self._end = offset + size
        if offset == self._hashed:
            assert self._hash is not None
            update = self._hash.update
            for b in buffers:
                update(b)
            self._hashed += size

    def advance(self, cum: int) -> int:
        """Every ADU below ``cum`` is held. What of it is not hashed yet is read back, at most
        one ``hash_chunk`` per call: a long held prefix (a hole filled late, what a resume
        holds, §18) is hashed in steps between the loop's turns, never in one stall; ``finish``
        hashes what is left."""
        # Every ADU below cum is held and full, but for a short last one, whose end we know.
        end = self._end if self._end is not None else self._total  # (§18: a held last ADU is short too)
        held = cum * self.adu if end is None else min(cum * self.adu, end)
        if held > self._hashed:
            self._hash_to(min(held, self._hashed + self.hash_chunk))
        return cum

    def _hash_to(self, end: int) -> None:
        """Hash the output from the hashed prefix up to ``end``, read back from the output."""
        assert self._hash is not None
        if end > self._hashed:
            hash_back(self.backend, self._hash.update, self._hashed, end, self.hash_chunk)
            self._hashed = end

    def finish(self, total_bytes: int, expected: bytes | None) -> tuple[int, bytes]:
        """Hash the rest; only if the digest is ``expected`` does the output take its final name
        (a mismatch leaves it partial, for ``close(False)`` to delete or keep)."""
        if self._hashed > total_bytes:
            raise SinkError("more was written than the content's length")
        self._hash_to(total_bytes)
        assert self._hash is not None
        digest = self._hash.digest()
        if digest == expected:
            try:
                self.backend.commit(total_bytes)
            except OSError as e:
                raise SinkError(describe(e, "cannot complete the output")) from None
        else:
            self._mismatch = True
        return total_bytes, digest

    def close(self, ok: bool, held: Sequence[Span] | None = None) -> str | None:
        """On failure the partial output is kept with its resume state (§18) when it holds
        part of a content its sender named and its digest was not found wrong; else it is
        deleted (``keep_partial``: kept, without a state)."""
        if ok:
            return None
        started = self.adu != 0  # a session began: there may be something worth keeping
        place, total = self._place, self._total
        if started and not self._mismatch and place.source is not None and not place.ranged and total:
            runs = resume.subtract(list(held or ()), self._failed)
            spans = tuple(resume.held_bytes(runs, self.adu, total))
            if spans:
                state = resume.Kept(total, place.offset, place.source, NAMES[self._alg], spans)
                return keep_for_resume(self.backend, state, self.keep_partial)
        return self.backend.discard(self.keep_partial and started)


def hash_back(
    backend: OffsetBackend, update: Callable[[Buffer], object], start: int, end: int, chunk: int
) -> None:
    """Feed bytes ``[start, end)`` of ``backend``'s output to ``update``, read back ``chunk``
    bytes at a time; raises SinkError."""
    while start < end:
        n = min(chunk, end - start)
        try:
            backend.hash_range(update, start, n)
        except OSError as e:
            raise SinkError(describe(e, "cannot read back the output")) from None
        start += n


def keep_for_resume(backend: OffsetBackend, state: resume.Kept, keep_partial: bool) -> str | None:
    """Keep the partial output with ``state`` beside it (§18); if that fails, it is discarded
    (or kept without a state, ``keep_partial``) and the note says why."""
    try:
        return backend.keep_for_resume(state)
    except OSError as e:
        note = backend.discard(keep_partial)
        why = describe(e, "cannot keep the partial output for a resume")
        return f"{why}; {note}" if note else why


class Writer(Protocol):
    def set_digest(self, alg: DigestAlg) -> None: ...

    def submit(self, n_adus: int, data: Buffer) -> None: ...

    def written_adus(self) -> int: ...

    def finish(self) -> tuple[int, bytes]: ...

    def error(self) -> str | None: ...

    def stop(self) -> None:
        """Give up: what is still queued is not written (the transfer failed)."""


class MemoryWriter:
    def __init__(self) -> None:
        self.data = bytearray()
        self._adus = 0
        self._alg = DigestAlg.XXH3_128

    def set_digest(self, alg: DigestAlg) -> None:
        self._alg = alg

    def submit(self, n_adus: int, data: Buffer) -> None:
        self.data += data
        self._adus += n_adus

    def written_adus(self) -> int:
        return self._adus

    def finish(self) -> tuple[int, bytes]:
        h = new_hasher(self._alg)
        h.update(self.data)
        return len(self.data), h.digest()

    def error(self) -> str | None:
        return None

    def stop(self) -> None:
        pass


class OrderedSink:
    """Keeps what arrives beyond a hole and hands the contiguous prefix to the writer in order.

    Each new sub-range of a run is kept as one joined chunk (a single copy, done in C), keyed by
    its first index. The receiver core hands out only sub-ranges it did not hold before, so the
    chunks never overlap, and once ``cum`` passes a chunk's start it covers the whole chunk:
    the chunks from the writer's position up to ``cum`` tile it exactly. Memory is bounded by
    the receiver's window, which counts from what the writer has actually written.
    """

    in_order = True

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.adu = 0
        self._chunks: dict[int, tuple[int, Buffer]] = {}
        self._next = 0  # first index not yet handed to the writer

    def start(self, adu_size: int, total_bytes: int | None, alg: DigestAlg, place: Placement = WHOLE) -> None:
        self.adu = adu_size
        self.writer.set_digest(alg)

    def write_run(self, first: int, payloads: Sequence[Buffer]) -> None:
        self.write_block(first, len(payloads), b"".join(payloads))  # one copy, done in C

    def write_block(self, first: int, count: int, data: Buffer) -> None:
        """ADUs laid end to end in ``data``, kept as they are (no copy): ``data`` must not change."""
        self._chunks[first] = (count, data)

    def read_block(self, first: int, count: int) -> bytearray:
        raise SinkError("an ordered output decodes no parity (§16: a file's transfer only)")

    def advance(self, cum: int) -> int:
        chunks = self._chunks
        while self._next < cum:
            count, data = chunks.pop(self._next)
            self.writer.submit(count, data)
            self._next += count
        err = self.writer.error()
        if err is not None:
            raise SinkError(err)
        return self.writer.written_adus()

    def finish(self, total_bytes: int, expected: bytes | None) -> tuple[int, bytes]:
        return self.writer.finish()  # stdout has it already: the exit status is the verdict

    def close(self, ok: bool, held: Sequence[Span] | None = None) -> str | None:
        if not ok:
            self.writer.stop()
        return None


# ---------------------------------------------------------------- compressed blocks (§19)


class BackendWriter:
    """A Writer into a file's backend, from its start in order: where a compressed content's
    blocks go once restored (§19)."""

    def __init__(self, backend: OffsetBackend, hash_chunk: int = HASH_CHUNK) -> None:
        self.backend = backend
        self.hash_chunk = hash_chunk
        self._bytes = 0  # the output is written up to here, from its start
        self._unhashed = 0  # §18: the held prefix, read back and hashed before the first write
        self._error: str | None = None  # ... could not be read back
        self._adus = 0
        self._hash: Hasher = new_hasher(DigestAlg.XXH3_128)
        self.recycle: Callable[[Buffer], None] | None = None  # gets each buffer once written

    @property
    def written_bytes(self) -> int:
        return self._bytes

    def set_digest(self, alg: DigestAlg) -> None:
        self._hash = new_hasher(alg)

    def resume_at(self, held: int) -> None:
        """§18 with §19: the output's first ``held`` bytes are the content's already; writing
        goes on after them, and the digest covers them (read back here before the first write;
        a file's writer, alf/io/sink.py, reads them back in a thread of its own meanwhile)."""
        self._bytes = self._unhashed = held

    def _hash_held(self) -> None:
        try:
            hash_back(self.backend, self._hash.update, 0, self._unhashed, self.hash_chunk)
        except SinkError as e:
            self._error = str(e)
            raise
        self._unhashed = 0

    def _hash_written(self, parts: Sequence[Buffer]) -> None:
        """Hash what was just written (the held prefix first)."""
        if self._unhashed:
            self._hash_held()
        for data in parts:
            self._hash.update(data)

    def submit(self, n_adus: int, data: Buffer) -> None:
        """Write ``data`` next, and hash it from the buffer it was written from, as OffsetSink
        hashes a run that extends its hashed prefix. (Read back through a mapping per block,
        a mmap and munmap a MiB in a process of several threads, the receiver spent up to 1.5
        s more of CPU per GiB.)"""
        self.write_parts((data,), len(data))
        self._adus += n_adus
        if self.recycle is not None:
            self.recycle(data)

    def write_parts(self, parts: Sequence[Buffer], nbytes: int, ends: bool = False) -> None:
        """Write ``parts`` (``nbytes`` in all) next: a direct raw block's bytes as they came
        (§19); ``ends``: a block is whole with them."""
        if parts:
            try:
                self.backend.pwritev(parts, self._bytes)
            except OSError as e:
                raise SinkError(describe(e, "cannot write the output")) from None
        self._bytes += nbytes
        self._hash_written(parts)
        self._adus += ends

    def written_adus(self) -> int:
        return self._adus

    def finish(self) -> tuple[int, bytes]:
        if self._unhashed:
            self._hash_held()
        return self._bytes, self._hash.digest()

    def error(self) -> str | None:
        return self._error

    def stop(self) -> None:
        pass


def restore_error(e: Exception) -> str:
    """What restoring a compressed content (§19) failed with, for the user."""
    if isinstance(e, SinkError):
        return str(e)
    if isinstance(e, CompressedStreamError):
        return f"cannot restore the compressed content: {e}"
    return f"cannot restore the compressed content: {e!r}"  # (MemoryError, a codec's own)


class DecompressingWriter:
    """§19: a Writer of the wire's compressed blocks: it gathers them in order (``submit``,
    in the caller's thread: the network loop's, straight from what it received) and hands each
    gathered block to ``_hand``, which restores it and gives its bytes to ``out`` (stdout's
    writer, or a file's), which hashes them: the digest is of the content as the sender read
    it. ``written_adus`` counts the wire ADUs of the blocks ``out`` has written (so a slow
    stdout holds the receiver's window, and the verdict waits until it has all): all it was
    given, once ``out`` has every block gathered (a block's first ADUs included: what is in
    ``BlockReader`` is bounded by a block). This class restores in ``submit``; its threaded
    twin (alf/io/sink.py) in a thread."""

    def __init__(self, out: Writer) -> None:
        self.out = out
        self.reader: BlockReader | None = None
        self._adus = 0  # wire ADUs taken (fed to the reader)
        self._gathered = 0  # blocks gathered
        self._marks: deque[tuple[int, int]] = deque()  # (blocks gathered, the wire ADU they end at)
        self._covered = 0
        self._error: str | None = None
        self._stopped = False
        self.restored = 0  # bytes the blocks restored to, so far
        self.out_bytes = 0  # what ``out`` wrote, once finished

    def set_adu(self, adu: int, first: int = 0) -> None:
        """``first``: the number of the first block to come (§18: those before it are held)."""
        self.reader = BlockReader(adu, first)
        self.reader.direct = self._direct
        if hasattr(self.out, "recycle"):  # a raw block is handed out as a view of its buffer
            # (this replaces what recycled before: stdout's writer took the TCP driver's frames)
            self.out.recycle = self.reader.give_back

    def set_digest(self, alg: DigestAlg) -> None:
        self.out.set_digest(alg)

    def submit(self, n_adus: int, data: Buffer) -> None:
        self.submit_run(n_adus, (data,))

    def submit_run(self, n_adus: int, parts: Sequence[Buffer]) -> None:
        """The next ``n_adus`` wire ADUs, laid end to end in ``parts`` (read before this
        returns: they may be the receiver's buffers)."""
        if self._error is not None or self._stopped:
            return
        reader = self.reader
        assert reader is not None
        try:
            for item in reader.feed_run(parts):
                if self._error is not None:  # (the restorer's thread failed on a block before)
                    break
                if isinstance(item, Direct):
                    assert isinstance(self.out, BackendWriter)
                    self.out.write_parts(item.parts, item.nbytes, item.ends)
                    self.restored += item.nbytes
                    if not item.ends:
                        continue
                else:
                    self._hand(item)
                self._gathered += 1
                self._marks.append((self._gathered, reader.wire_bytes // reader.adu))
        except Exception as e:
            self._error = restore_error(e)
        self._adus += n_adus

    def _hand(self, block: Gathered) -> None:
        """Restore a gathered block and write it (the threaded twin queues it for its thread)."""
        self._restore(block)

    def _direct(self) -> bool:
        """May a raw block that starts now be written at once, not gathered? Into a file,
        yes (the views it is written from are the caller's, used before ``submit`` returns);
        stdout's writer keeps what it is given, so there it is gathered. Never after a block
        failed: the output's offset did not move past it."""
        return self._error is None and isinstance(self.out, BackendWriter)

    def _restore(self, block: Gathered) -> None:
        """Raises CompressedStreamError or SinkError."""
        assert self.reader is not None
        data = self.reader.restore(block)
        self.out.submit(1, data)
        self.restored += len(data)

    def written_adus(self) -> int:
        adus, blocks = self._adus, self._gathered  # (both the caller's: its thread's)
        done = self.out.written_adus()
        while self._marks and self._marks[0][0] <= done:
            self._covered = max(self._covered, self._marks.popleft()[1])
        if done >= blocks:  # (never less than said before: a window never shrinks)
            self._covered = max(self._covered, adus)
        return self._covered

    def finish(self) -> tuple[int, bytes]:
        """The wire bytes taken, and the digest of what they restored to."""
        err = self.error()
        if err is not None:
            raise SinkError(err)
        assert self.reader is not None
        try:
            self.reader.finish()
        except CompressedStreamError as e:
            raise SinkError(f"cannot restore the compressed content: {e}") from None
        self.out_bytes, digest = self.out.finish()
        return self.reader.wire_bytes, digest

    def error(self) -> str | None:
        return self._error or self.out.error()

    def stop(self) -> None:
        self._stopped = True
        self.out.stop()


class DecompressingSink(OrderedSink):
    """§19: a compressed content's output: the wire's blocks in order (an ordered sink, its
    memory bounded by the receiver's window) through a ``DecompressingWriter``; into a file's
    ``backend`` (written from its start, committed once the digest matched) or stdout."""

    writer: DecompressingWriter

    def __init__(
        self,
        writer: DecompressingWriter,
        backend: OffsetBackend | None = None,
        keep_partial: bool = False,
        kept: Kept | None = None,
    ) -> None:
        """``kept``: what the output held before (§18), as its state said."""
        super().__init__(writer)
        self.backend = backend
        self.keep_partial = keep_partial
        self.kept = kept
        self._done = False
        self._mismatch = False  # the digest did not match: what was written is not to be trusted
        self._place = WHOLE
        self._alg = DigestAlg.XXH3_128

    def write_run(self, first: int, payloads: Sequence[Buffer]) -> None:
        """A run that comes next in order is gathered into its blocks at once, straight from
        the receiver's buffers; one beyond a hole is kept (joined) until the hole is filled."""
        if first == self._next:
            self.writer.submit_run(len(payloads), payloads)
            self._next += len(payloads)
        else:
            super().write_run(first, payloads)

    def write_block(self, first: int, count: int, data: Buffer) -> None:
        if first == self._next:
            self.writer.submit(count, data)
            self._next += count
        else:
            super().write_block(first, count, data)

    def start(self, adu_size: int, total_bytes: int | None, alg: DigestAlg, place: Placement = WHOLE) -> None:
        super().start(adu_size, total_bytes, alg, place)
        self._place, self._alg = place, alg
        self.writer.set_adu(adu_size, place.blocks)
        if self.backend is not None:
            try:
                self.backend.place(place, None)
            except OSError as e:
                raise SinkError(describe(e, "cannot place the output")) from None
            if place.source is not None:  # a named file (§19 rule 5): its length is known
                size = place.source[0]
                try:  # (reserved as a plain file's is: the restorer's writes need not extend it)
                    self.backend.reserve(size)
                except OSError as e:
                    raise SinkError(describe(e, f"cannot reserve {size} bytes for the output")) from None
        if place.blocks:  # §18: the output's first blocks are held; the sender starts after them
            out = self.writer.out
            if not isinstance(out, BackendWriter):
                raise SinkError("only a file's output can hold part of a content")
            out.resume_at(place.blocks * BLOCK)

    def finish(self, total_bytes: int, expected: bytes | None) -> tuple[int, bytes]:
        nbytes, digest = self.writer.finish()
        if self.backend is not None and digest == expected and nbytes == total_bytes:
            try:
                self.backend.commit(self.writer.out_bytes)
            except OSError as e:
                raise SinkError(describe(e, "cannot complete the output")) from None
            self._done = True
        elif digest != expected:
            self._mismatch = True
        return nbytes, digest

    def close(self, ok: bool, held: Sequence[Span] | None = None) -> str | None:
        """On failure a file's output is kept for a resume (§18) with its restored prefix, as
        OffsetSink keeps what it holds: when its sender named the file, the sender's input did
        not fail (``held`` is not None), the digest was not found wrong and what was held could
        be read back. What an earlier receive kept beyond the prefix is still named."""
        super().close(ok, held)
        if self.backend is None or self._done:
            return None
        out, place = self.writer.out, self._place
        prefix = out.written_bytes if isinstance(out, BackendWriter) else 0
        total = place.source[0] if place.source is not None else 0
        readable = out.error() is None
        if held is not None and readable and not self._mismatch and 0 < prefix <= total and not place.ranged:
            assert place.source is not None
            spans: list[Span] = [(0, prefix)]
            if place.keep and self.kept is not None:  # (the rest of what it held is untouched)
                spans += [(max(a, prefix), b) for a, b in self.kept.held if b > prefix]
            state = resume.Kept(total, 0, place.source, NAMES[self._alg], tuple(merge_ranges(spans)))
            return keep_for_resume(self.backend, state, self.keep_partial)
        return self.backend.discard(self.keep_partial)


class EitherSink:
    """The output as the sender's HELLO makes it: ``plain`` takes a content as it comes; a
    compressed one (§19) goes to the sink ``compressed()`` makes at the start, which shares
    ``plain``'s file or writer."""

    def __init__(self, plain: Sink, compressed: Callable[[], Sink]) -> None:
        self.active = plain
        self._compressed = compressed

    @property
    def in_order(self) -> bool:
        return self.active.in_order

    def start(self, adu_size: int, total_bytes: int | None, alg: DigestAlg, place: Placement = WHOLE) -> None:
        if place.compressed:
            self.active = self._compressed()
        self.active.start(adu_size, total_bytes, alg, place)

    def write_run(self, first: int, payloads: Sequence[Buffer]) -> None:
        self.active.write_run(first, payloads)

    def write_block(self, first: int, count: int, data: Buffer) -> None:
        self.active.write_block(first, count, data)

    def read_block(self, first: int, count: int) -> bytearray:
        return self.active.read_block(first, count)

    def advance(self, cum: int) -> int:
        return self.active.advance(cum)

    def finish(self, total_bytes: int, expected: bytes | None) -> tuple[int, bytes]:
        return self.active.finish(total_bytes, expected)

    def close(self, ok: bool, held: Sequence[Span] | None = None) -> str | None:
        return self.active.close(ok, held)
