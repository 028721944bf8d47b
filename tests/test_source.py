"""The stream source's ring: content, back-pressure and growth (alf/io/source.py)."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pytest

from alf.io.source import FileSource, StreamSource

ADU = 100


def drive(
    data: bytes, window: int, initial: int | None, in_flight: int, seed: int
) -> tuple[StreamSource, int]:
    """Feed ``data`` in odd chunks while a model sender reads runs and keeps at most
    ``in_flight`` ADUs unreleased; every ADU read must be the data's, through any growth."""
    rng = random.Random(seed)
    src = StreamSource(ADU, window, initial_adus=initial)
    src.GROWTH_PAYS = 0.0  # here every doubling counts as paying: this is about content and in-flight
    fed = sent = 0
    most = 0
    while True:
        while src.total_bytes() is None:
            span = src.free_span()
            if not span:
                break
            take = min(len(span), rng.randint(1, 3 * ADU + 7), len(data) - fed)
            if not take:
                src.feed_eof()
                break
            span[:take] = data[fed : fed + take]
            src.commit(take)
            fed += take
        most = max(most, src.ring_adus)
        avail = src.available()
        if sent == avail and src.total_bytes() is not None:
            return src, most
        # send a run of new ADUs, within the in-flight limit
        room = in_flight - (sent - src._released)
        n = min(avail - sent, room, rng.randint(1, 40))
        if n > 0:
            views = src.read(sent, n)
            assert b"".join(bytes(v) for v in views) == data[sent * ADU : (sent + n) * ADU]
            if rng.random() < 0.5:  # the TCP transport's way: a block up to the wrap
                block = src.block(sent, n)
                k = -(-len(block) // ADU)
                assert 1 <= k <= n and bytes(block) == data[sent * ADU : sent * ADU + len(block)]
            sent += n
        # a repair reads an older, still held ADU
        if sent > src._released and rng.random() < 0.3:
            i = rng.randrange(src._released, sent)
            assert bytes(src.read(i, 1)[0]) == data[i * ADU : (i + 1) * ADU]
        # acknowledgements lag
        if sent - src._released >= in_flight or rng.random() < 0.3:
            src.release(src._released + rng.randint(1, max(1, sent - src._released)))


@pytest.mark.parametrize("seed", range(12))
def test_ring_content_survives_growth(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.choice([1, ADU, 30_000, 250_007]))
    window = rng.choice([8, 100, 1000])
    src, most = drive(data, window, rng.choice([1, 3, 16]), rng.choice([2, 50, 1000]), seed)
    assert src.digest() is not None and most <= window


def test_ring_grows_to_what_is_in_flight_and_no_further() -> None:
    data = random.Random(1).randbytes(400 * 1000)  # 4000 ADUs
    # 50 in flight: the ring doubles while 50 is more than half of it (4 -> 128)
    _, most = drive(data, 1000, 4, 50, 1)
    assert most == 128
    # never beyond the window, however much is in flight
    _, most = drive(data, 100, 4, 1000, 2)
    assert most == 100
    # nothing in flight beyond one ADU: the ring stays as it started
    _, most = drive(data, 1000, 4, 1, 3)
    assert most == 4


def test_a_full_ring_grows_at_the_wrap_and_moves_nothing() -> None:
    """At the wrap, with most of the ring in flight, the reader gets new slots after the old."""
    now = [0.0]
    src = StreamSource(ADU, 64, initial_adus=4, clock=lambda: now[0])
    src.FREE_BYTES = 0  # every doubling must pay
    src.feed(bytes(range(ADU)) + bytes(3 * ADU))
    assert not src.free_span()  # full, and the sender has read nothing yet
    src.read(0, 4)
    assert not src.free_span()  # all in flight, but nothing acknowledged: no rate to judge by
    now[0] = 1.0
    src.release(1)  # the first acknowledgement: rates count from here
    now[0] = 2.0
    src.release(2)
    assert len(src.free_span()) == 4 * ADU and src.ring_adus == 8  # not just the two released
    src.feed(bytes(range(1, ADU + 1)) + bytes(3 * ADU))
    assert bytes(src.read(4, 1)[0]) == bytes(range(1, ADU + 1))
    assert bytes(src.read(1, 1)[0]) == bytes(ADU)  # the old ADUs kept their slots
    assert len(src.free_span()) == 2 * ADU  # the slots ADUs 0 and 1 had, after the new ring's end


def paced(ring_bound: bool, seconds: float = 3.0, warmup: float = 0.0) -> StreamSource:
    """A fast pipe into a ring, in virtual time (1 ms steps), drained by one of two paths.

    ``ring_bound``: a 50 ms path with room for 40 ADUs per ms (2000 in flight for full speed):
    what the ring lets out is acknowledged 50 ms later, so a larger ring is a faster transfer.
    Otherwise the sender may write as much as it has (TCP's socket buffers on loopback take it
    all) and the receiver takes 40 ADUs per ms out of that queue: no ring makes it faster.
    ``warmup``: for the first seconds the receiver takes a tenth of that (interpreters, caches
    and TCP warming up), so the first laps' rates are low.
    """
    now = [0.0]
    src = StreamSource(ADU, 100_000, initial_adus=256, clock=lambda: now[0])
    src.FREE_BYTES = 512 * ADU  # the first doubling is free, as 8 -> 16 MiB is for alf
    sent = 0
    flying: list[tuple[float, int]] = []  # (when acknowledged, up to which ADU)
    queue_end = 0.0  # when the receiver is through what is queued
    for _ in range(int(seconds * 1000)):
        while True:  # the pipe is never the limit
            span = src.free_span()
            if not span:
                break
            src.commit(len(span))
        n = min(src.available() - sent, 40) if ring_bound else src.available() - sent
        if n > 0:
            src.read(sent, n)
            sent += n
            if ring_bound:
                flying.append((now[0] + 0.050, sent))
            else:
                queue_end = max(queue_end, now[0]) + n / (4_000 if now[0] < warmup else 40_000)
                flying.append((queue_end + 0.0001, sent))
        while flying and flying[0][0] <= now[0]:
            src.release(flying.pop(0)[1])
        now[0] += 0.001
    return src


def test_the_ring_grows_while_growing_pays() -> None:
    # 2000 ADUs in flight at full speed: 2048 carries nearly all of it, and its rate is well
    # over the bar set at 1024, so the ring doubles to 4096; 4096 is no faster, and none follows
    assert paced(ring_bound=True, seconds=10).ring_adus == 4096
    # the receiver's pace is the limit: the first doubling is free, the second is a trial (the
    # rate before it was measured over the first few ms only), it does not pay, none follows
    assert paced(ring_bound=False, seconds=10).ring_adus == 1024


def test_a_rate_from_the_warm_up_sets_no_bar() -> None:
    """The receiver takes a tenth of its pace for the first 100 ms. Rates measured over less
    than 0.2 s are not believed, so the warm-up costs one trial doubling (1024 -> 2048); judged
    by the warm-up's rates every doubling looked like paying (4096; a TCP pipe on loopback got a
    128 MiB ring in most runs, and those were the slow ones: docs/performance.md)."""
    assert paced(ring_bound=False, seconds=10, warmup=0.1).ring_adus == 2048
    assert paced(ring_bound=True, seconds=10, warmup=0.1).ring_adus == 4096


def test_file_digest_after_a_fallback_reads_from_the_start(tmp_path: os.PathLike[str]) -> None:
    """UDP's first pass hashed part of the file when the sender moved to TCP; TCP's blocks
    start elsewhere (0, 7, 14, ...), and the digest is still the whole file's, taken once."""
    from alf.digest import DigestAlg, digest_bytes
    from alf.io.source import FileSource

    data = random.Random(3).randbytes(100 * 64 + 17)
    path = os.path.join(tmp_path, "f.bin")
    with open(path, "wb") as f:
        f.write(data)
    src = FileSource(path, 64, max_run=16)
    src.read(0, 10)
    src.read(10, 10)  # the UDP pass stops at ADU 20
    assert src.digest() is None
    got = b"".join(bytes(src.block(first, 7)) for first in range(0, 101, 7))
    assert got == data and src.digest() == digest_bytes(DigestAlg.XXH3_128, data)
    src.close()


def test_a_file_that_changes_after_its_first_pass_is_not_read_again(tmp_path: Any) -> None:
    """A repair re-reads the file: if it is not the file that was hashed (written to since),
    the read fails and error() says the input changed (exit 7), rather than sending bytes the
    digest does not cover."""
    import time

    from alf.content import InputChanged, source_failure
    from alf.errors import ExitCode

    path = os.path.join(tmp_path, "in.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(10_000))
    src = FileSource(path, 1000)
    src.read(0, 10)
    assert src.digest() is not None and src.error() is None
    src.read(3, 2)  # a repair of the unchanged file
    time.sleep(0.01)
    with open(path, "r+b") as f:
        f.write(b"changed")
    with pytest.raises(OSError, match="was written to while it was being sent"):
        src.read(3, 2)
    err = src.error()
    assert isinstance(err, InputChanged) and source_failure(err) == ExitCode.INPUT_CHANGED
    src.close()


def _written(tmp_path: Any, data: bytes) -> str:
    path = os.path.join(tmp_path, "in.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize("during_first_pass", [False, True])
def test_bytes_read_again_are_checked_against_what_was_sent_first(
    tmp_path: Any, during_first_pass: bool
) -> None:
    """--if-changed warn: a change of stamp is said once, and the transfer goes on; but a
    repair from a block whose bytes differ from what the first pass read fails (exit 7), where
    a repair from an unchanged block reads what was sent first. Repairs come during the first
    pass too (NAKs arrive while it runs): those are checked against the marks made so far."""
    from alf.content import InputChanged, source_failure
    from alf.errors import ExitCode

    a = 4096
    data = random.Random(5).randbytes(100 * a)
    path = _written(tmp_path, data)
    said: list[str] = []
    src = FileSource(path, a, max_run=100, warn=said.append)
    assert src.block_adus == 16  # 64 KiB
    src.read(0, 50 if during_first_pass else 100)
    with open(path, "r+b") as f:
        f.seek(40 * a + 10)  # block 2 (ADUs 32-47)
        f.write(b"changed")
    if not during_first_pass:
        assert said == []  # nothing looked at the stamp yet: the next repair does
    assert b"".join(bytes(v) for v in src.read(3, 2)) == data[3 * a : 5 * a]  # block 0: as marked
    if not during_first_pass:
        assert len(said) == 1 and "was written to while it was being sent" in said[0]
    with pytest.raises(OSError, match=f"bytes sent again at offset {32 * a} differ"):
        src.read(47, 1)
    err = src.error()
    assert isinstance(err, InputChanged) and source_failure(err) == ExitCode.INPUT_CHANGED
    with pytest.raises(OSError):  # and stays failed
        src.read(3, 1)
    src.close()


def test_a_growing_file_under_warn_sends_its_first_length(tmp_path: Any) -> None:
    """A log that grows while it is sent: with warn, the sender sends the length it opened,
    repairs from it still verify, and the digest is that of the prefix."""
    from alf.digest import DigestAlg, digest_bytes

    data = random.Random(6).randbytes(10_500)
    path = _written(tmp_path, data)
    said: list[str] = []
    src = FileSource(path, 1000, warn=said.append)
    src.read(0, 5)
    with open(path, "ab") as f:
        f.write(b"more lines\n" * 100)
    src.read(5, 6)
    assert src.digest() == digest_bytes(DigestAlg.XXH3_128, data) and src.error() is None
    assert len(said) == 1 and "grew or shrank" in said[0] and "sending the 10500 bytes" in said[0]
    assert bytes(src.read(10, 1)[0]) == data[10_000:]  # the short last ADU, block 0 checked
    assert bytes(src.read(2, 1)[0]) == data[2000:3000] and len(said) == 1
    src.close()


def test_the_marks_stay_small_for_a_huge_file(tmp_path: Any) -> None:
    """A sparse 1 TiB file: 1 Mi marks at most (8 MiB), blocks of 120 ADUs (1 MiB)."""
    path = os.path.join(tmp_path, "huge.bin")
    with open(path, "wb") as f:
        f.truncate(1 << 40)
    src = FileSource(path, 8800)
    assert src.block_adus == 120 and len(src._marks) <= FileSource.MAX_MARKS
    src.close()


def test_waiting_for_a_blocks_room_ends_at_the_wrap() -> None:
    """``wait_for_room(t, need)``: while what is in flight holds the ring, it waits (and says
    it timed out); once that is released it comes back, with the room up to the wrap even if
    that is less than ``need`` (waiting longer would never give more)."""
    src = StreamSource(ADU, 8, initial_adus=8)
    src.feed(bytes(5 * ADU))
    assert src.wait_for_room(0.01, 4 * ADU) and len(src.free_span()) == 3 * ADU  # the wrap cuts it
    src.feed(bytes(3 * ADU))
    src.read(0, 8)
    src.release(5)  # 5 slots free after the wrap; 3 still in flight
    assert not src.wait_for_room(0.01, 6 * ADU)
    assert src.wait_for_room(0.01, 5 * ADU)
    src.release(8)
    assert src.wait_for_room(0.01, 6 * ADU) and len(src.free_span()) == 8 * ADU


def test_a_compressed_streams_ring_holds_whole_raw_blocks() -> None:
    """Full raw blocks (random data: all of them) tile the ring, so each is read straight
    into it and none meets the wrap: its size, and the most it may grow to, are whole blocks."""
    from alf.compress import BLOCK, HEADER, Compressor, padded
    from alf.io.source import CompressedStream
    from alf.wire import DigestAlg

    for adu, window in [(1400, 190_000), (8952, 30_001), (1428, 2000)]:
        src = CompressedStream(adu, window, DigestAlg.XXH3_128, Compressor(1, adu))
        per = padded(HEADER.size + BLOCK, adu) // adu
        assert src.ring_adus % per == 0 and src.window_adus % per == 0
        assert window - per < src.window_adus <= window and src.ring_adus <= src.window_adus


def test_a_lead_keeps_the_reader_just_ahead_of_the_sender() -> None:
    """With ``lead_bytes`` (a file compressed into the ring) the reader stores at most that much
    beyond what the sender took, and a reader waiting on it wakes when the sender takes more;
    without it (a pipe) the reader may fill the whole ring."""
    lead = 8 * ADU
    src = StreamSource(ADU, 64, initial_adus=64, lead_bytes=lead)
    assert len(src.free_span()) == lead
    src.commit(lead)
    assert len(src.free_span()) == 0  # 8 ADUs stored, none taken: the reader waits
    assert not src.wait_for_room(0.01)
    woke: list[bool] = []
    # (it waits for 4 ADUs of room: whether it is inside its wait yet or not, 3 do not end it)
    reader = threading.Thread(target=lambda: woke.append(src.wait_for_room(5.0, 4 * ADU)))
    reader.start()
    deadline = time.monotonic() + 5.0
    while not src._reader_waits and time.monotonic() < deadline:  # (the reader is inside its wait)
        time.sleep(0.001)
    src.read(0, 3)  # taking 3 leaves 5 stored ahead: room for 3, and no wake (5 > half the lead)
    time.sleep(0.05)
    assert not woke
    src.read(3, 2)  # 3 ahead: it wakes, with room for 5
    reader.join(5.0)
    assert woke == [True]
    assert len(src.free_span()) == 5 * ADU
    free = StreamSource(ADU, 64, initial_adus=64)
    assert len(free.free_span()) == 64 * ADU
