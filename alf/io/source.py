"""Where the sender's ADU payloads come from.

Invariants: ``read(first, count)`` returns exactly ``count`` payloads, each ``adu_size`` bytes
but the content's last; ``digest()`` is the SHA-256 of the content in order and is None until
the whole content has been hashed; a stream source holds at most ``window_adus`` ADUs not yet
released (the reader waits: back-pressure on the pipe).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Protocol

Buffer = bytes | memoryview

HASH_CHUNK = 4 << 20


class Source(Protocol):
    adu_size: int

    def available(self) -> int: ...

    def total_bytes(self) -> int | None: ...

    def digest(self) -> bytes | None: ...

    def read(self, first: int, count: int) -> list[Buffer]: ...

    def release(self, below: int) -> None: ...

    def error(self) -> str | None: ...


def _cut(data: Buffer, adu: int) -> list[Buffer]:
    view = memoryview(data)
    return [view[i : i + adu] for i in range(0, len(view), adu)]


class BytesSource:
    """A content held in memory (tests and the simulated network); kind file."""

    def __init__(self, data: bytes, adu_size: int) -> None:
        self.adu_size = adu_size
        self._data = memoryview(data)
        self._digest = hashlib.sha256(data).digest()

    def available(self) -> int:
        return -(-len(self._data) // self.adu_size)

    def total_bytes(self) -> int | None:
        return len(self._data)

    def digest(self) -> bytes | None:
        return self._digest

    def read(self, first: int, count: int) -> list[Buffer]:
        a = self.adu_size
        return _cut(self._data[first * a : (first + count) * a], a)

    def release(self, below: int) -> None:
        pass

    def error(self) -> str | None:
        return None


class FileSource:
    """A regular file, re-read with pread for every repair; hashed by a background thread."""

    def __init__(self, path: str, adu_size: int) -> None:
        self.adu_size = adu_size
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        self._digest: bytes | None = None
        self._error: str | None = None
        self._path = path
        self._hasher = threading.Thread(target=self._hash, name="alf-hash", daemon=True)
        self._hasher.start()

    def _hash(self) -> None:
        h = hashlib.sha256()
        pos = 0
        try:
            while pos < self._size:
                chunk = os.pread(self._fd, min(HASH_CHUNK, self._size - pos), pos)
                if not chunk:
                    self._error = f"{self._path} shrank while being sent"
                    return
                h.update(chunk)
                pos += len(chunk)
        except OSError as e:
            self._error = f"cannot read {self._path}: {e.strerror}"
            return
        self._digest = h.digest()

    def available(self) -> int:
        return -(-self._size // self.adu_size)

    def total_bytes(self) -> int | None:
        return self._size

    def digest(self) -> bytes | None:
        return self._digest

    def read(self, first: int, count: int) -> list[Buffer]:
        a = self.adu_size
        want = min(count * a, self._size - first * a)
        data = os.pread(self._fd, want, first * a)
        if len(data) != want:
            raise OSError(f"{self._path} shrank while being sent")
        return _cut(data, a)

    def release(self, below: int) -> None:
        pass

    def error(self) -> str | None:
        return self._error

    def close(self) -> None:
        os.close(self._fd)


class StreamSource:
    """A pipe of unknown length. ``feed`` is called by the reader (a thread, or a test).

    ADUs below the receiver's cum_ack are released and forgotten; the reader blocks in
    ``wait_for_room`` while the window is full.
    """

    def __init__(self, adu_size: int, window_adus: int) -> None:
        self.adu_size = adu_size
        self.window_adus = max(1, window_adus)
        self._adus: dict[int, bytes] = {}
        self._count = 0  # full ADUs stored so far (plus the short last one at EOF)
        self._partial = bytearray()
        self._released = 0
        self._hash = hashlib.sha256()
        self._total: int | None = None
        self._digest: bytes | None = None
        self._error: str | None = None
        self._room = threading.Condition()

    # -- reader side
    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        if self._partial:
            self._partial += chunk
            data: Buffer = bytes(self._partial)
            self._partial = bytearray()
        else:
            data = chunk
        a = self.adu_size
        full = len(data) // a
        view = memoryview(data)
        n = self._count
        for k in range(full):
            self._adus[n + k] = bytes(view[k * a : (k + 1) * a])
        if len(data) > full * a:
            self._partial = bytearray(view[full * a :])
        self._count = n + full  # publish after the payloads are in place

    def feed_eof(self) -> None:
        if self._partial:
            self._adus[self._count] = bytes(self._partial)
            total = self._count * self.adu_size + len(self._partial)
            self._partial = bytearray()
            self._count += 1
        else:
            total = self._count * self.adu_size
        self._digest = self._hash.digest()
        self._total = total

    def fail(self, message: str) -> None:
        self._error = message

    def room(self) -> int:
        """How many more ADUs the window takes now."""
        return self.window_adus - (self._count - self._released)

    def wait_for_room(self, timeout: float) -> bool:
        with self._room:
            return self._room.wait_for(lambda: self.room() > 0, timeout)

    # -- sender side
    def available(self) -> int:
        return self._count

    def total_bytes(self) -> int | None:
        return self._total

    def digest(self) -> bytes | None:
        return self._digest

    def read(self, first: int, count: int) -> list[Buffer]:
        adus = self._adus
        return [adus[i] for i in range(first, first + count)]

    def release(self, below: int) -> None:
        if below <= self._released:
            return
        adus = self._adus
        for i in range(self._released, min(below, self._count)):
            adus.pop(i, None)
        self._released = below
        with self._room:
            self._room.notify_all()

    def error(self) -> str | None:
        return self._error


def pump_stream(source: StreamSource, fd: int, wake: int | None, stop: threading.Event) -> None:
    """Read ``fd`` into ``source`` until EOF, respecting its window (runs in a thread).

    ``wake`` is written to after each chunk so the sender's loop notices new data at once.
    """
    chunk_max = max(source.adu_size, 1 << 20)
    try:
        while not stop.is_set():
            room = source.room()
            if room <= 0:
                source.wait_for_room(0.1)
                continue
            data = os.read(fd, min(chunk_max, room * source.adu_size))
            if not data:
                source.feed_eof()
                break
            source.feed(data)
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
