"""Where the sender's ADU payloads come from in the world: a file (preadv) and a stream (an
mmap ring fed by a reader thread). The ``Source`` protocol is in alf/content.py.

Invariants: ``read(first, count)`` returns exactly ``count`` payloads, each ``adu_size`` bytes
but the content's last; ``digest()`` is the SHA-256 of the content in order and is None until
the whole content has been hashed; a stream source holds at most ``window_adus`` ADUs not yet
released (the reader waits: back-pressure on the pipe).
"""

from __future__ import annotations

import mmap
import os
import select
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable

import xxhash

from alf.compress import (
    BLOCK,
    HEADER,
    RAW,
    Adaptive,
    Compressor,
    Counts,
    block_parts,
    held_blocks,
    padded,
    raw_header,
)
from alf.content import MAX_RUN, Buffer, InputChanged, cut_adus
from alf.digest import Hasher, new_hasher
from alf.io.common import TrailingHash
from alf.ranges import ceil_div
from alf.wire import DigestAlg


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class FileSource:
    """A regular file, re-read with preadv for every repair.

    The first pass reads the file in order, and is hashed as it is read: the file is read
    once, not twice. ``read`` fills one reusable buffer: its views are valid until the next
    ``read``.

    A file written to while it is sent must never be delivered as a mix of versions. Two
    checks see to it. Its stamp (size, modification and change times, inode) is compared
    before the digest goes out and before every repair read: a change fails the transfer
    (``InputChanged``), or with ``warn`` is said once through it and the transfer goes on
    (what the first pass read is what is sent, e.g. the prefix of a log that grows). And the
    first pass keeps an XXH3-64 mark of every block of ``block_adus`` ADUs: a repair reads
    its whole block again and compares, so bytes that changed under a stamp that did not (a
    write through a shared mapping, a clock set back) or under ``warn`` fail the transfer
    instead of reaching the receiver. A block is checked once per stamp; the marks take at
    most 8 MiB (a block is 16 ADUs and at least 64 KiB, more past 1 Mi blocks: 120 ADUs of 8800
    bytes for 1 TiB).
    """

    MAX_MARKS = 1 << 20
    window_adus = None  # it is read again for every repair: no ring bounds what is in flight
    MIN_BLOCK_ADUS = 16
    MIN_BLOCK_BYTES = 64 << 10  # smaller blocks cost more in calls than they save in repairs

    def __init__(
        self,
        path: str,
        adu_size: int,
        max_run: int = MAX_RUN,
        alg: DigestAlg = DigestAlg.XXH3_128,
        warn: Callable[[str], None] | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> None:
        """``offset``, ``length``: the content is that range of the file (§18; the length
        defaults to the rest of it); a range beyond the file's end is a ``ValueError``."""
        self.adu_size = adu_size
        self._buf = bytearray(max_run * adu_size)
        self._bufview = memoryview(self._buf)
        self._views = cut_adus(self._bufview, adu_size)
        self._fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self._fd)
        if (
            offset < 0
            or offset > st.st_size
            or length is not None
            and (length < 0 or offset + length > st.st_size)
        ):
            os.close(self._fd)
            raise ValueError(
                f"{path} holds {st.st_size} bytes: bytes {offset} to "
                f"{offset + (length or 0)} lie beyond its end"
            )
        self.offset = offset
        self._size = st.st_size - offset if length is None else length
        self.stamp = (st.st_size, st.st_mtime_ns, st.st_ino)  # §18: names it to a receiver
        self._background: threading.Thread | None = None  # §18: hashes it all while parts are skipped
        self._hashed_all = False
        self._stamp = _stamp(st)
        self._seen = self._stamp  # the stamp last looked at (differs from _stamp only after a warning)
        self._warn = warn
        self._changed: InputChanged | None = None
        self._path = path
        self._hash = new_hasher(alg)
        self._hashed = 0
        self._digest: bytes | None = self._hash.digest() if self._size == 0 else None
        self.block_adus = max(
            self.MIN_BLOCK_ADUS,
            ceil_div(self.MIN_BLOCK_BYTES, adu_size),
            ceil_div(self.available(), self.MAX_MARKS),
        )
        self._block = self.block_adus * adu_size
        self._marks = array("Q", bytes(8 * ceil_div(self._size, self._block)))
        self._mark = xxhash.xxh3_64()  # of the block the first pass is in
        self._checked: set[int] = set()  # blocks read again and found as marked, under _seen
        self._scratch = bytearray(self._block)

    def available(self) -> int:
        return ceil_div(self._size, self.adu_size)

    def total_bytes(self) -> int | None:
        return self._size

    def digest(self) -> bytes | None:
        if self._digest is None and self._hashed_all:  # (the background hash is done)
            self._check_unchanged()
            if self._changed is None:
                self._digest = self._hash.digest()
        return self._digest

    def accepted(self, held: tuple[tuple[int, int], ...]) -> None:
        pass  # (what is held is passed over by the sender's core: ``skipping`` follows)

    def skipping(self) -> None:
        """§18: the receiver holds parts of the file, which the first pass passes over: a
        thread reads and hashes (and marks) the whole file in order from where the first
        pass got to, so neither the digest nor the marks miss what is not sent, and the
        network loop never waits for the disk. From here on the first pass hashes nothing."""
        if self._background is not None or self._digest is not None:
            return
        self._background = threading.Thread(target=self._hash_rest, name="alf-hash", daemon=True)
        self._background.start()

    def _hash_rest(self) -> None:
        chunk = bytearray(max(self._block, 8 << 20) // self._block * self._block)
        view = memoryview(chunk)
        try:
            while self._hashed < self._size:
                fd = self._fd
                if fd < 0:
                    return  # closed: the transfer is over
                n = min(len(chunk), self._size - self._hashed)
                if os.preadv(fd, [view[:n]], self.offset + self._hashed) != n:
                    self._changed = self._changed or InputChanged(f"{self._path} shrank while being sent")
                    return
                self._hash.update(view[:n])
                self._marks_along(view[:n])
                self._hashed += n
        except OSError as e:
            self._changed = self._changed or InputChanged(f"cannot read {self._path}: {e.strerror}")
            return
        self._hashed_all = True

    def read(self, first: int, count: int, at: int = 0) -> list[Buffer]:
        """ADUs ``first .. first+count-1``, read into the reusable buffer from slot ``at`` on
        (several runs of one batch share it)."""
        a = self.adu_size
        offset = first * a
        want = min(count * a, self._size - offset)
        if want + at * a > len(self._buf):
            raise ValueError("run longer than the read buffer")
        self._pread(self._bufview[at * a : at * a + want], offset)
        views: list[Buffer] = list(self._views[at : at + count])
        if want < count * a:
            views[-1] = views[-1][: want - (count - 1) * a]  # the short last ADU
        return views

    def block(self, first: int, count: int) -> Buffer:
        """ADUs ``first .. first+count-1`` in one new buffer of their own (it stays valid while
        other blocks are read: the TCP transport keeps several in flight)."""
        a = self.adu_size
        offset = first * a
        want = max(0, min(count * a, self._size - offset))
        buf = bytearray(want)
        if want:
            self._pread(memoryview(buf), offset)
        return buf

    def _pread(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` from ``offset``. What lies below the hashed frontier is read again
        (``_reread``: checked against its marks); the first pass, read in order, is hashed as
        it is read. A read that covers the frontier hashes from it on, whatever its start:
        after a fallback from UDP to TCP, TCP's blocks need not start where UDP's first pass
        stopped."""
        n = len(buf)
        if self._digest is not None or self._changed is not None:
            self._check_unchanged()  # a repair: the file must still be the one that was hashed
        if self._changed is not None:
            raise OSError(self._changed)
        again = min(n, self._hashed - offset)
        if again > 0:
            self._reread(buf[:again], offset)
            buf, offset = buf[again:], offset + again
            if not len(buf):
                return
        n = len(buf)
        if os.preadv(self._fd, [buf], self.offset + offset) != n:
            self._check_unchanged()
            raise OSError(self._changed or f"{self._path} shrank while being sent")
        if offset == self._hashed and self._background is None:
            self._hash.update(buf)
            self._marks_along(buf)
            self._hashed = offset + n
            if self._hashed == self._size:
                self._check_unchanged()
                if self._changed is None:
                    self._digest = self._hash.digest()

    def _marks_along(self, data: memoryview) -> None:
        """The first pass moves on by ``data``: mark each block it completes (a whole block in
        one call, a block split between reads through the running hasher)."""
        pos, block, n = self._hashed, self._block, len(data)
        at = 0
        if pos % block:  # finish the block the last read left open
            at = min(n, block - pos % block)
            self._mark.update(data[:at])
            if (pos + at) % block == 0 or pos + at == self._size:
                self._marks[(pos + at - 1) // block] = self._mark.intdigest()
                self._mark.reset()
        marks, mark = self._marks, xxhash.xxh3_64_intdigest
        b = (pos + at) // block
        while n - at >= block:
            marks[b] = mark(data[at : at + block])
            at += block
            b += 1
        if at < n:
            self._mark.update(data[at:])
            if pos + n == self._size:
                marks[b] = self._mark.intdigest()
                self._mark.reset()

    def _reread(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` with bytes the first pass hashed: each whole block they lie in is read
        and compared with its mark (once per stamp), so what goes out again is what was hashed."""
        block, end = self._block, offset + len(buf)
        marked = self._hashed - self._hashed % block if self._hashed < self._size else self._size
        pos = offset
        while pos < end:
            b = pos // block
            start, stop = b * block, min((b + 1) * block, self._size)
            upto = min(end, stop)
            if stop > marked or b in self._checked:  # the frontier's block has no mark yet
                got = os.preadv(self._fd, [buf[pos - offset : upto - offset]], self.offset + pos)
                if got != upto - pos:
                    self._check_unchanged()
                    raise OSError(self._changed or f"{self._path} shrank while being sent")
            else:
                whole = memoryview(self._scratch)[: stop - start]
                if os.preadv(self._fd, [whole], self.offset + start) != stop - start or (
                    xxhash.xxh3_64_intdigest(whole) != self._marks[b]
                ):
                    self._changed = InputChanged(
                        f"{self._path} was written to while it was being sent (bytes sent again "
                        f"at offset {start} differ from what was sent first): nothing is "
                        "delivered (send it again once it is no longer written, or a snapshot)"
                    )
                    raise OSError(self._changed)
                self._checked.add(b)
                buf[pos - offset : upto - offset] = whole[pos - start : upto - start]
            pos = upto

    def _check_unchanged(self) -> None:
        """Before the digest goes out (in the FINAL) and before a repair: the file must be as
        it was when it was opened (size, modification and change times, inode), or what was
        read is a mix of versions (GNU tar's "file changed as we read it"). With ``warn`` a
        change is said once and the marks alone guard what is read again."""
        stamp = _stamp(os.fstat(self._fd))
        if stamp == self._seen:
            return
        what = "grew or shrank" if stamp[0] != self._stamp[0] else "was written to"
        if self._warn is None:
            self._changed = InputChanged(
                f"{self._path} {what} while it was being sent: nothing is delivered (send it again "
                "once it is no longer written, or send a snapshot of it; --if-changed warn sends "
                "what the first pass read if that can still be verified)"
            )
            return
        if self._seen == self._stamp:
            self._warn(
                f"warning: {self._path} {what} while it was being sent; sending the "
                f"{self._size} bytes the first pass read (--if-changed warn)"
            )
        self._seen = stamp
        self._checked.clear()  # the bytes may have changed with the stamp

    def release(self, below: int) -> None:
        pass

    def error(self) -> str | None:
        return self._changed

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if self._background is not None:
            self._background.join()  # (it reads the descriptor: it closes after the thread)
        os.close(fd)


class StreamSource:
    """A pipe of unknown length, held in a ring of at most ``window_adus`` ADU slots.

    The ring is one preallocated private mapping, so memory is what is used and nothing more,
    the reader fills it straight from the pipe, and ``read`` hands out views without copying.
    A slot is refilled only after its ADU was released (acknowledged by the receiver's cum_ack),
    so a view handed out for sending stays valid until then.

    The ring *in use* starts at ``initial_adus`` slots and doubles, up to the window, at a wrap
    after a lap in which more than half of it was sent and unacknowledged. Up to ``FREE_BYTES``
    that is all; beyond, doubling must also pay: raise the rate at which ADUs are acknowledged
    (averaged over the time the ring had its size) by ``GROWTH_PAYS`` over the size before (a
    size under which nothing was acknowledged yet cannot tell, and waits). A fast pipe fills any
    ring (the reader runs ahead of the sender), so fullness says nothing; much in flight says
    the ring *may* be what limits, and only a faster transfer under the larger ring shows that
    it was: over TCP on loopback the kernel's socket buffers take whatever the ring lets out
    (150 MB unacknowledged with 256 MiB) and the receiver's pace stays the same, colder in the
    caches. Each page of the mapping costs a page fault the first time it is written
    (0.15-0.2 s of CPU for 256 MiB) and a small ring stays in the caches. A path that becomes
    faster by itself raises the rate under the present size and so lets the ring grow again.
    ADU ``i`` lives in slot ``(i + off) % w``; the ring grows only when the reader is at the
    wrap, where ``off`` can be chosen so that every stored ADU keeps its slot.
    The reader (a thread, or a test) calls ``feed``/``free_span``+``commit`` and ``feed_eof``.
    """

    INITIAL_BYTES = 8 << 20
    # With ``lead_bytes`` (a file read into the ring, §19) the reader keeps at most that much
    # stored ahead of what the sender has taken, rather than filling the ring ahead: what it
    # reads goes out soon after (1 GiB of random data compressed from a file at a fixed 20G:
    # 0.96 and 1.05 GB/s against 0.86 and 0.96 in two sittings, docs/performance.md; why is
    # not pinned down). A pipe is read ahead without a bound: held to 4 MiB, `cat FILE | alf
    # send` ran 4-14% slower.
    LEAD_BYTES = 4 << 20
    FREE_BYTES = 32 << 20  # up to this, much in flight is reason enough to grow
    GROWTH_PAYS = 1.25
    MEASURE_MIN = 0.2  # s: a rate measured over less is not believed (it may be the start-up's)

    def __init__(
        self,
        adu_size: int,
        window_adus: int,
        alg: DigestAlg = DigestAlg.XXH3_128,
        initial_adus: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        lead_bytes: int | None = None,
    ) -> None:
        self.adu_size = adu_size
        self.window_adus = max(1, window_adus)
        if initial_adus is None:
            initial_adus = self.INITIAL_BYTES // adu_size
        # A private anonymous mapping: zero pages arrive on first touch, so a large window costs
        # nothing until it is used (a bytearray would be zero-filled up front). Python's default
        # is a shared mapping, which the kernel backs with shmem: reading 1 GiB of a pipe into
        # it cost 0.60 s of system time here against 0.23 s for a private one.
        self._ring = mmap.mmap(-1, self.window_adus * adu_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._view = memoryview(self._ring)
        # (slots in use, slot offset): one tuple, so the sender's thread never sees half a change
        self._layout = (max(1, min(initial_adus, self.window_adus)), 0)
        # one view per slot in use, made as the ring grows (190k of them for 256 MiB took 80 ms)
        self._slots = cut_adus(self._view[: self._layout[0] * adu_size], adu_size)
        self._in_flight_peak = 0  # most ADUs read for sending and not released, this lap
        self._clock = clock
        # when the ring took its size (or the first acknowledgement came), what was released then
        self._size_since: tuple[float, int] | None = None
        self._bar = 0.0  # ADUs/s the ring's size must reach to double again
        self._bytes = 0  # stream bytes stored so far
        self._count = 0  # ADUs complete so far (plus the short last one at EOF)
        self._released = 0
        self._handed = 0  # ADUs below this were handed out for sending
        self._lead_adus = max(1, lead_bytes // adu_size) if lead_bytes else 1 << 62
        self._reader_waits = False  # the reader waits for room: the sender's taking wakes it
        self._hash = new_hasher(alg)
        self._total: int | None = None
        self._digest: bytes | None = None
        self._error: str | None = None
        self._room = threading.Condition()

    @property
    def ring_adus(self) -> int:
        """Slots of the ring in use now (grows up to ``window_adus``)."""
        return self._layout[0]

    # -- reader side
    def free_span(self) -> memoryview:
        """The writable part of the ring after the stored bytes, up to the window or the wrap."""
        a = self.adu_size
        w, off = self._layout
        ring = w * a
        pos = (self._bytes + off * a) % ring
        limit = self._released * a + ring - self._bytes
        lead = (self._handed + self._lead_adus) * a - self._bytes  # (ahead of the sender: LEAD_BYTES)
        if pos == 0 and self._bytes:  # at the wrap: the lap that ends here decides
            if w < self.window_adus and self._in_flight_peak * 2 > w:
                now = self._clock()
                began, released = self._size_since or (now, self._released)
                rate = (self._released - released) / (now - began) if now > began else 0.0
                measured = now - began >= self.MEASURE_MIN
                grown = min(2 * w, self.window_adus)
                if grown * a <= self.FREE_BYTES or measured and rate > 0 and rate >= self._bar:
                    # ADUs below ``here`` keep their slots; ``here`` goes to slot ``w``
                    here = self._bytes // a
                    # before the sender may use them
                    self._slots += cut_adus(self._view[w * a : grown * a], a)
                    self._layout = (grown, (w - here) % grown)
                    w, pos, ring = grown, w * a, grown * a
                    limit = self._released * a + ring - self._bytes
                    # a rate over a short span (the first laps, while TCP and the caches warm
                    # up) sets no bar: the next doubling is then a trial, judged after it
                    self._bar = rate * self.GROWTH_PAYS if measured else 0.0
                    self._size_since = (now, self._released)
            if limit > 0 and lead > 0:  # a new lap starts (not while waiting at the wrap)
                self._in_flight_peak = 0
        return self._view[pos : pos + max(0, min(limit, ring - pos, lead))]

    def commit(self, n: int) -> None:
        """``n`` bytes were written at the start of ``free_span()``."""
        w, off = self._layout
        pos = (self._bytes + off * self.adu_size) % (w * self.adu_size)
        self._hash.update(self._view[pos : pos + n])
        self._bytes += n
        self._count = self._bytes // self.adu_size  # publish after the bytes are in place

    def feed(self, chunk: bytes) -> None:
        """Copy ``chunk`` in (it must fit: see ``free_span``)."""
        view = memoryview(chunk)
        while view:
            span = self.free_span()
            if not span:
                raise ValueError("the window is full")
            n = min(len(span), len(view))
            span[:n] = view[:n]
            self.commit(n)
            view = view[n:]

    def feed_eof(self) -> None:
        total = self._bytes
        self._digest = self._hash.digest()
        if total % self.adu_size:
            self._count = total // self.adu_size + 1
        self._total = total

    def fail(self, message: str) -> None:
        self._error = message

    def wait_for_room(self, timeout: float, need: int = 1) -> bool:
        """Wait until ``free_span()`` holds ``need`` bytes, or as many as it can before the
        wrap (all of the ring up to it is free), or ``timeout``; whether it came to that."""

        def room() -> bool:
            span = self.free_span()
            if len(span) >= need:
                return True
            w, off = self._layout
            ring = w * self.adu_size
            pos = (self._bytes + off * self.adu_size) % ring
            return pos + len(span) == ring  # (the wrap cuts it, not what is in flight)

        with self._room:
            self._reader_waits = True
            try:
                return self._room.wait_for(room, timeout)
            finally:
                self._reader_waits = False

    # -- sender side
    def available(self) -> int:
        return self._count

    def total_bytes(self) -> int | None:
        return self._total

    def digest(self) -> bytes | None:
        return self._digest

    def skipping(self) -> None:
        raise ValueError("a stream names no source: nothing of it is held (§18)")

    def accepted(self, held: tuple[tuple[int, int], ...]) -> None:
        pass

    def read(self, first: int, count: int, at: int = 0) -> list[Buffer]:
        a = self.adu_size
        w, off = self._layout
        end = first + count
        self._sending(end)
        start = (first + off) % w
        out: list[Buffer] = list(self._slots[start : min(start + count, w)])
        if len(out) < count:  # the run wraps around the ring
            out += self._slots[: count - len(out)]
        total = self._total
        if total is not None and end == self._count and total % a:
            out[-1] = out[-1][: total % a]  # the short last ADU
        return out

    def block(self, first: int, count: int) -> Buffer:
        """ADUs ``first ..`` as one view of the ring, cut short where the ring wraps (its length
        says how many ADUs it holds); valid until they are released."""
        a = self.adu_size
        w, off = self._layout
        start = (first + off) % w
        count = min(count, w - start)
        self._sending(first + count)
        end = (start + count) * a
        total = self._total
        if total is not None and first + count == self._count and total % a:
            end -= a - total % a  # the short last ADU
        return self._view[start * a : end]

    def _sending(self, end: int) -> None:
        """ADUs up to ``end`` were handed out for sending: the lap's most in flight; a reader
        held back by its lead may go on."""
        if end - self._released > self._in_flight_peak:
            self._in_flight_peak = end - self._released
        if end > self._handed:
            self._handed = end
            if self._reader_waits and self._count - end <= self._lead_adus // 2:
                with self._room:
                    self._room.notify_all()

    @property
    def released_any(self) -> bool:
        """The receiver has acknowledged something."""
        return self._released > 0

    def release(self, below: int) -> None:
        if below <= self._released:
            return
        self._released = min(below, self._count)
        if self._size_since is None:  # the rates start with the first acknowledgement, not the handshake
            self._size_since = (self._clock(), self._released)
        with self._room:
            self._room.notify_all()

    def error(self) -> str | None:
        return self._error


def pump_stream(source: StreamSource, fd: int, wake: int | None, stop: threading.Event) -> None:
    """Read ``fd`` straight into ``source``'s ring until EOF, waiting while the window is full
    (runs in a thread). ``wake`` is written to after each read so the sender's loop notices."""
    chunk_max = 1 << 20
    try:
        while not stop.is_set():
            span = source.free_span()
            if not span:
                source.wait_for_room(0.1)
                continue
            n = os.readv(fd, [span[:chunk_max]])
            if not n:
                source.feed_eof()
                break
            source.commit(n)
            _poke(wake)
    except OSError as e:
        source.fail(f"cannot read the input: {e.strerror}")
    _poke(wake)


def _poke(wake: int | None) -> None:
    """Wake the sender's loop; ``wake`` is non-blocking, and a full pipe is awake already."""
    if wake is not None:
        try:
            os.write(wake, b"\0")
        except BlockingIOError:
            pass


# ---------------------------------------------------------------- compressed (§19)


class CompressedStream(StreamSource):
    """§19: the stream of compressed blocks a pump (``pump_compressed``) makes of the input;
    the ring holds wire bytes, ``digest()`` is of the input itself (what the receiver restores)
    and ``counts`` says what compression did."""

    def __init__(
        self,
        adu_size: int,
        window_adus: int,
        alg: DigestAlg,
        compressor: Compressor,
        adapt: Adaptive | None = None,
        lead_bytes: int | None = None,
    ) -> None:
        """``adapt``: --compress auto (each block compressed only while that pays);
        ``lead_bytes``: see StreamSource.LEAD_BYTES (a file, not a pipe).

        The ring holds a whole number of full raw blocks, and grows by doubling, so that such
        blocks (random data: all of them) tile it and each is read straight into it; one that
        met the wrap was read aside and copied in (a quarter of them, 1 GiB of random data)."""
        per = padded(HEADER.size + BLOCK, adu_size) // adu_size  # a full raw block's ADUs
        if window_adus >= per:
            window_adus -= window_adus % per
        initial = max(per, self.INITIAL_BYTES // adu_size // per * per)
        super().__init__(adu_size, window_adus, alg, initial_adus=initial, lead_bytes=lead_bytes)
        self.compressor = compressor
        self.adapt = adapt
        self.counts = Counts()
        self.input_digest: bytes | None = None
        self._alg = alg
        self._hash = _NoHash()  # (the digest is of the input, hashed by the pump: not of the blocks)
        self.held: tuple[tuple[int, int], ...] | None = None  # what the receiver's ACCEPT named held
        self._accepted = threading.Event()

    def digest(self) -> bytes | None:
        return self.input_digest if self._total is not None else None

    def accepted(self, held: tuple[tuple[int, int], ...]) -> None:
        """§18 with §19: a named file's pump starts once the receiver said which of its
        first blocks it holds (``((0, n),)``: blocks 0 to n-1, passed over; else none). The
        first ACCEPT decides: one that says otherwise later (a move to TCP after UDP's) fails
        the input (its blocks are numbered already)."""
        if self.held is None:
            self.held = held
            self._accepted.set()
        elif held != self.held:
            self.fail(f"the receiver's held blocks changed from {list(self.held)} to {list(held)}")

    def wait_accepted(self, stop: threading.Event) -> tuple[tuple[int, int], ...] | None:
        """The held blocks, once accepted; None if ``stop`` came first."""
        while not self._accepted.wait(0.1):
            if stop.is_set():
                return None
        return self.held


class _NoHash:
    def update(self, data: Buffer) -> None:
        pass

    def digest(self) -> bytes:
        return b""


def pump_compressed(
    source: CompressedStream,
    fd: int,
    wake: int | None,
    stop: threading.Event,
    threads: int = 2,
    watch: os.stat_result | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Read ``fd`` in blocks, compress them in ``threads`` threads, and feed the framed blocks
    to ``source`` in order, waiting while its window is full (runs in a thread). A block is
    cut short when the input pauses for ``IDLE`` (a live pipe's data goes out, it does not
    wait for a MiB to gather); what is compressed is fed as soon as it is, before more is
    read. ``watch`` (a file, as it was when the sender named it): the pump starts once the
    receiver accepted (and passes over the blocks it holds, §18); if the file's stamp (as
    FileSource takes it) differs at the end, the input changed while it was read: the
    transfer fails (``warn``: it is said, and what was read goes)."""
    from concurrent import futures  # (here: it costs every start of alf ~8 ms, with logging)

    pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="alf-compress")
    pending: deque[futures.Future[tuple[list[bytes], bool]]] = deque()
    hasher = new_hasher(source._alg)
    counts = source.counts
    number, eof = 0, False
    adu, compressor, adapt = source.adu_size, source.compressor, source.adapt
    trail: TrailingHash | None = None  # §18: hashes the file by reading it again, from its start
    whole = padded(HEADER.size + BLOCK, adu)  # the ring's room for a block

    compressing = False  # the last block compressed: read ahead for the pool (else: into the ring)

    def framed(nbytes: int, packed: bool) -> None:
        counts.blocks += 1
        counts.blocks_raw += not packed
        counts.bytes_out += nbytes
        _poke(wake)

    def feed(parts: list[bytes], packed: bool) -> bool:
        nonlocal compressing
        compressing = packed
        if not all(_feed_all(source, p, stop) for p in parts):
            return False
        framed(sum(len(p) for p in parts), packed)
        return True

    waited = 0.0  # seconds spent waiting for the input (--compress auto counts them for no way)

    def worth() -> bool:
        """--compress auto: is the next block to be compressed (then the probe decides)?"""
        if adapt is None or adapt.wants(time.monotonic(), counts.bytes_in, waited, source.released_any):
            return True
        counts.blocks_auto_raw += 1
        return False

    def read_into(span: memoryview) -> int:
        nonlocal waited
        began = time.monotonic()
        n = _read_into(fd, span)
        waited += time.monotonic() - began
        return n

    def read(data: memoryview) -> None:
        counts.bytes_in += len(data)
        if trail is None:
            hasher.update(data)
        else:
            trail.extend(counts.bytes_held + counts.bytes_in)

    try:
        if watch is not None:
            held = source.wait_accepted(stop)
            number, trail = (-1, None) if held is None else _pass_held(source, fd, held, hasher)
        while number >= 0 and not stop.is_set():
            if pending and pending[0].done():
                if not feed(*pending.popleft().result()):
                    break
                continue
            if not pending and not eof:
                # Nothing waits to be fed before it: read the block straight into the ring,
                # after room for its header. One that does not compress (the probe) is framed
                # there, with no copy; one that does is copied out and compressed in the pool.
                room = source.free_span()
                if len(room) >= whole:
                    n = read_into(room[HEADER.size : HEADER.size + BLOCK])
                    if not n:
                        eof = True
                        continue
                    inside = room[HEADER.size : HEADER.size + n]
                    read(inside)
                    compressing = worth() and compressor.worth(inside)
                    if compressing:
                        pending.append(pool.submit(compressor.frame, number, bytes(inside), True))
                    else:
                        end = padded(HEADER.size + n, adu)
                        room[: HEADER.size] = raw_header(number, n)
                        room[HEADER.size + n : end] = bytes(end - HEADER.size - n)
                        source.commit(end)
                        framed(end, False)
                    number += 1
                    continue
            if not compressing and not pending and not eof:
                # raw blocks: wait for the ring's room, to read the next straight into it
                # (reading it aside while the ring was full, then copying it in, was a
                # quarter of the blocks of 1 GiB of random data); unless the wrap leaves
                # less than a block: read aside, copied in once framed
                came = source.wait_for_room(0.1, whole)
                if not came or len(source.free_span()) >= whole:
                    continue
            ahead = compressing or not pending  # (raw blocks: wait for the pool, then read into the ring)
            if ahead and not eof and len(pending) < 2 * threads and (not pending or _readable(fd)):
                buf = bytearray(BLOCK)
                n = read_into(memoryview(buf))
                if not n:
                    eof = True
                    continue
                del buf[n:]
                read(memoryview(buf))
                if worth():
                    pending.append(pool.submit(compressor.frame, number, buf))
                else:  # (a raw block, in turn behind those pending)
                    done: futures.Future[tuple[list[bytes], bool]] = futures.Future()
                    done.set_result((block_parts(RAW, bytes(buf), len(buf), number, adu), False))
                    pending.append(done)
                number += 1
                continue
            if pending:  # (a wait that stop ends: a slow level must not hold the caller's close)
                futures.wait([pending[0]], timeout=0.1)
                continue
            if trail is not None and not _trailed(trail, stop):
                if trail.error is not None:
                    source.fail(InputChanged(trail.error))
                break
            if watch is not None and _stamp(os.fstat(fd)) != _stamp(watch):
                changed = "the input changed while it was read"
                if warn is None:
                    source.fail(InputChanged(changed))
                    break
                warn(f"warning: {changed}: what was read goes")
            source.input_digest = hasher.digest()
            source.feed_eof()
            break
    except OSError as e:
        source.fail(f"cannot read the input: {e.strerror}")
    except Exception as e:  # (zstd's own errors: never a silent end of the input)
        source.fail(f"cannot compress the input: {e}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if trail is not None:
            trail.stop()
    _poke(wake)


def _trailed(trail: TrailingHash, stop: threading.Event) -> bool:
    """Wait (``stop`` ends it) for ``trail`` to have hashed all it was given; whether it did."""
    while not trail.finish(0.1):
        if trail.error is not None or stop.is_set():
            return False
    return True


def _pass_held(
    source: CompressedStream, fd: int, held: tuple[tuple[int, int], ...], hasher: Hasher
) -> tuple[int, TrailingHash | None]:
    """§18 with §19: pass over the first blocks of the file ``fd`` that the receiver holds
    (``held``, as its ACCEPT named them): the number of the next block to send, and a thread
    that hashes the file from its start by reading it again (the held blocks, then what the
    pump reads: the digest is of the whole file, and the first block goes without waiting for
    the held ones to be read). (-1, None) if ``held`` is not what a receiver can hold (the
    source fails)."""
    if not held:
        return 0, None
    size = os.fstat(fd).st_size
    n = held[0][1]
    if len(held) != 1 or held[0][0] != 0 or not 0 < n <= held_blocks(size, size):
        source.fail(f"the receiver claims to hold blocks {list(held)} of a file of {size} bytes")
        return -1, None
    os.lseek(fd, n * BLOCK, os.SEEK_SET)
    source.counts.bytes_held = n * BLOCK
    buf = memoryview(bytearray(TrailingHash.CHUNK))

    def read(update: Callable[[Buffer], object], offset: int, count: int) -> None:
        if os.preadv(fd, [buf[:count]], offset) != count:
            raise ValueError("the input shrank while it was read")
        update(buf[:count])

    trail = TrailingHash(hasher.update, read)
    trail.extend(n * BLOCK)
    return n, trail


IDLE = 0.05  # s: a block is cut short when its input pauses this long


def _readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def _read_into(fd: int, span: memoryview) -> int:
    """Fill ``span`` from ``fd``; fewer bytes at its end, or when it pauses for ``IDLE``
    once some came (a regular file never pauses)."""
    got = 0
    while got < len(span):
        if got and not _readable(fd, IDLE):
            break
        n = os.readv(fd, [span[got:]])
        if not n:
            break
        got += n
    return got


def _feed_all(source: StreamSource, data: bytes, stop: threading.Event) -> bool:
    view = memoryview(data)
    while view:
        span = source.free_span()
        if not span:
            if stop.is_set():
                return False
            source.wait_for_room(0.1)
            continue
        n = min(len(span), len(view))
        span[:n] = view[:n]
        source.commit(n)
        view = view[n:]
    return True
