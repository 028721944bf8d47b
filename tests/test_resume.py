"""§18: resume (a receiver takes up what a failed receive kept) and byte ranges (a slice of a
file written in place at its offset), in the core, in the simulator and over loopback."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Procs, free_udp_port, random_file, sha256_file, wait_listening, wait_listening_tcp

from alf import resume, wire
from alf.compress import BLOCK, HEADER, Compressor, frame_all
from alf.content import (
    BackendWriter,
    BytesSource,
    DecompressingSink,
    DecompressingWriter,
    MemoryBackend,
    Placement,
    SinkError,
)
from alf.digest import digest_bytes
from alf.errors import ExitCode
from alf.events import DataArrived
from alf.io.sink import FileBackend, FileWriter
from alf.io.source import CompressedStream, FileSource, pump_compressed
from alf.receiver import ReceiverConfig
from alf.sender import SenderConfig
from alf.testing.simnet import Link, run_transfer

STAMP = (1 << 20, 1_700_000_000_123_456_789, 4242)


# ---------------------------------------------------------------- the pure parts


def test_state_round_trip_and_every_damage_is_a_state_error() -> None:
    kept = resume.Kept(1000, 0, STAMP, "xxh3-128", ((0, 300), (500, 1000)), (1000, 7, 8))
    data = resume.encode_state(kept)
    assert resume.decode_state_untrusted(data) == kept
    doc = json.loads(data)
    for key, value in [("held", [[0, 300], [200, 400]]), ("held", [[0, 2000]]), ("total_bytes", -1)]:
        bad = dict(doc, **{key: value})
        with pytest.raises(resume.StateError):
            resume.decode_state_untrusted(json.dumps(bad).encode())  # its check no longer matches
        body = {k: v for k, v in bad.items() if k != "check"}
        bad["check"] = resume._check(body)  # a state that checks but makes no sense
        with pytest.raises(resume.StateError):
            resume.decode_state_untrusted(json.dumps(bad).encode())
    for junk in [b"", b"\xff\xfe", b"[]", b'{"format": "other"}', data[:-20], data.replace(b"300", b"301")]:
        with pytest.raises(resume.StateError):
            resume.decode_state_untrusted(junk)


def test_held_bytes_become_the_adus_they_wholly_contain_whatever_the_adu_size() -> None:
    # kept in bytes by a receive with 100-byte ADUs; taken up by one with 64-byte ADUs
    held = [(0, 300), (500, 1000)]
    assert resume.held_adus(held, 64, 1000) == [(0, 4), (8, 16)]  # 256 < 300; 512 >= 500; the short last
    assert resume.held_adus(held, 100, 1000) == [(0, 3), (5, 10)]
    assert resume.held_bytes([(0, 3), (5, 10)], 100, 1000) == held
    runs = [(i * 10, i * 10 + 1 + i % 7) for i in range(100)]
    claimed = resume.claim(runs)
    assert len(claimed) == wire.MAX_HELD and list(claimed) == sorted(claimed)
    assert min(b - a for a, b in claimed) >= max(b - a for a, b in runs if (a, b) not in claimed)
    assert resume.subtract([(0, 10), (20, 30)], [(5, 22)]) == [(0, 5), (22, 30)]


def test_what_is_kept_matches_only_the_content_it_is_of() -> None:
    kept = resume.Kept(1000, 0, STAMP, "xxh3-128", ((0, 500),))
    hello = wire.Hello(1, 100, wire.Kind.FILE, 1000, 0, bytes(16), features=wire.FEATURE_RESUME, source=STAMP)
    assert resume.mismatch(kept, hello) is None
    assert resume.take_up(kept, hello) == ([(0, 5)], None)
    changed = wire.Hello(
        1, 100, wire.Kind.FILE, 1000, 0, bytes(16), features=wire.FEATURE_RESUME, source=(1, 2, 3)
    )
    assert "the source changed" in (resume.mismatch(kept, changed) or "")
    stream = wire.Hello(1, 100, wire.Kind.STREAM, wire.UNKNOWN_LENGTH, 0, bytes(16))
    assert "not a file" in (resume.mismatch(kept, stream) or "")
    ranged = wire.Hello(
        1, 100, wire.Kind.FILE, 1000, 0, bytes(16), features=wire.FEATURE_RESUME | wire.FEATURE_RANGE,
        offset=4096, source=STAMP,
    )  # fmt: skip
    assert "a range" in (resume.mismatch(kept, ranged) or "")
    whole = wire.Hello(
        1, 100, wire.Kind.FILE, 1000, 0, bytes(16), features=wire.FEATURE_RESUME | wire.FEATURE_RANGE,
        offset=0, source=STAMP,
    )  # fmt: skip
    assert "a range" in (resume.mismatch(kept, whole) or "")  # (--offset 0: written in place)


def test_hello_placement_and_accept_held_on_the_wire() -> None:
    h = wire.Hello(
        7, 1400, wire.Kind.FILE, 10, 1, bytes(16), features=wire.FEATURE_RANGE | wire.FEATURE_RESUME,
        offset=1 << 40, source=STAMP,
    )  # fmt: skip
    b = wire.encode_hello(h)
    assert len(b) == wire.HELLO_SIZE and b[72:104] == wire.HELLO_PLACE.pack(1 << 40, *STAMP)
    assert wire.decode_untrusted(b) == h
    for feature in (wire.FEATURE_RANGE, wire.FEATURE_RESUME):  # a field without its feature
        bad = bytearray(b)
        bad[56:64] = (int.from_bytes(b[56:64], "big") & ~feature).to_bytes(8, "big")
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(bytes(bad))
    a = wire.Accept(7, 1, 99, 5, held=((0, 10), (20, 30)))
    ab = wire.encode_accept(a)
    assert ab[2] & wire.ACCEPT_FLAG_HELD and len(ab) == 40 + 8 + 32
    assert wire.decode_untrusted(ab) == a
    for held in [((0, 10), (10, 20)), ((5, 5),), ((20, 30), (0, 10))]:  # touching, empty, unordered
        raw = bytearray(wire.encode_accept(wire.Accept(7, 1, 99, 5, held=held)))
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(bytes(raw))
    with pytest.raises(wire.BadPacket):
        wire.decode_untrusted(ab[:-1])
    full = wire.encode_accept(wire.Accept(7, 1, 99, 5, held=tuple((3 * i, 3 * i + 1) for i in range(64))))
    assert len(full) + wire.ACCEPT_KEY_SIZE <= wire.HELLO_SIZE  # the amplification bound holds


# ---------------------------------------------------------------- sources


def test_a_file_range_is_read_and_hashed_alone(tmp_path: Path) -> None:
    path = random_file(str(tmp_path / "f"), 300_000, seed=5)
    data = Path(path).read_bytes()
    src = FileSource(path, 1000, offset=70_000, length=100_500)
    want = BytesSource(data[70_000:170_500], 1000)
    assert src.total_bytes() == 100_500 and src.available() == 101
    got = b"".join(bytes(v) for k in range(0, 101, 50) for v in src.read(k, min(50, 101 - k)))
    assert got == data[70_000:170_500] and src.digest() == want.digest()
    src.close()
    for offset, length in [(300_001, None), (200_000, 100_001), (0, 300_001)]:
        with pytest.raises(ValueError, match="beyond its end"):
            FileSource(path, 1000, offset=offset, length=length)


def test_skipping_hashes_the_whole_file_in_a_thread(tmp_path: Path) -> None:
    """What the receiver holds is hashed without being sent; the marks that guard repairs are
    made for it too."""
    path = random_file(str(tmp_path / "f"), 3 << 20, seed=6)
    want = BytesSource(Path(path).read_bytes(), 1400).digest()
    src = FileSource(path, 1400)
    src.read(0, 10)  # the first pass began inline
    src.skipping()
    deadline = time.monotonic() + 10
    while src.digest() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.digest() == want
    assert src.read(2000, 1)[0] == Path(path).read_bytes()[2000 * 1400 : 2001 * 1400]  # a checked re-read
    src.close()


# ---------------------------------------------------------------- the simulator


def _kept_half(data: bytes, adu: int = 512) -> tuple[bytes, resume.Kept]:
    """A partial output holding the first half and a slice near the end, and its state."""
    half, tail = len(data) // 2, len(data) - 40_000
    partial = bytearray(len(data))
    partial[:half] = data[:half]
    partial[tail : tail + 20_000] = data[tail : tail + 20_000]
    held = ((0, half), (tail, tail + 20_000))
    return bytes(partial), resume.Kept(len(data), 0, STAMP, "xxh3-128", held)


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_sim_resume_sends_only_what_is_not_held(loss: float) -> None:
    data = os.urandom(600_000)
    partial, kept = _kept_half(data)
    res = run_transfer(
        data,
        forward=Link(loss=loss),
        backward=Link(loss=loss),
        seed=3,
        receiver_config=ReceiverConfig(in_order=False, timeout=10.0, kept=kept),
        source_stamp=STAMP,
        partial=partial,
    )
    assert res.sender is not None and res.sender.ok and res.receiver is not None and res.receiver.ok
    assert res.output == data
    adus = -(-len(data) // 512)
    held = sum(b - a for a, b in resume.held_adus(kept.held, 512, len(data)))
    assert res.sender_stats["adus_held"] == held == res.receiver_stats["adus_resumed"]
    assert res.sender_stats["adus_new"] == adus - held  # nothing held went again
    assert res.receiver_stats["duplicates"] <= res.sender_stats["adus_repair"]
    # DATA of the session is news though the output held ADUs before it came (gaps.count > 0):
    # the driver closes its TCP listener on it
    assert sum(isinstance(e, DataArrived) for e in res.receiver_log) == 1


def test_a_nested_state_is_a_state_error_not_a_crash() -> None:
    for junk in [b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000]:
        with pytest.raises(resume.StateError):
            resume.decode_state_untrusted(junk)


def test_a_receive_without_resume_changes_what_was_kept_only_once_a_sender_comes(tmp_path: Path) -> None:
    """A receiver started without --resume (or with a state it cannot use) into an output that
    kept a partial: until a sender's content is placed, the partial and its state stay as they
    were (a receiver that times out waiting loses nothing); then the content starts afresh."""
    from alf.content import WHOLE
    from alf.io.sink import FileBackend

    out = str(tmp_path / "out")
    Path(out + ".alf-partial").write_bytes(b"p" * 1000)
    Path(out + ".alf-resume").write_bytes(b"state")
    for resume_mode in (None, "on"):
        backend = FileBackend(out, force=False, resume=resume_mode)
        assert "afresh" in backend.kept_note
        assert backend.discard(False) is None  # no sender came
        assert Path(out + ".alf-partial").read_bytes() == b"p" * 1000
        assert Path(out + ".alf-resume").read_bytes() == b"state"
    backend = FileBackend(out, force=False)
    backend.place(WHOLE, 10)
    assert os.path.getsize(out + ".alf-partial") == 0 and not os.path.exists(out + ".alf-resume")
    backend.discard(False)
    assert not os.path.exists(out + ".alf-partial")
    backend = FileBackend(out, force=False)  # nothing from before: what it made goes
    backend.discard(False)
    assert not os.path.exists(out + ".alf-partial")


def test_every_run_of_a_batch_is_tried_and_a_failed_one_is_not_kept(tmp_path: Path) -> None:
    """A batch of several new runs whose first write fails (a full disk): the others are
    written all the same, and the state kept names only what was written."""
    import dataclasses

    from alf.content import OffsetSink
    from alf.io.sink import FileBackend
    from alf.receiver import Receiver
    from alf.session import RecvSession

    data = os.urandom(100 * 100)
    out = str(tmp_path / "out")
    backend = FileBackend(out, force=False)
    real = backend.pwritev

    def pwritev(buffers, offset):  # type: ignore[no-untyped-def]
        if offset == 300:
            raise OSError(28, "No space left on device")
        real(buffers, offset)

    backend.pwritev = pwritev  # type: ignore[method-assign]
    r = Receiver(ReceiverConfig(in_order=False, timeout=5.0), 0.0, secret=b"fixed")
    session = RecvSession(r, OffsetSink(backend))
    peer = ("127.0.0.1", 9)
    hello = wire.Hello(7, 100, wire.Kind.FILE, len(data), 1, wire.checkphrase_tag(""))
    hello = dataclasses.replace(hello, features=wire.FEATURE_RESUME, source=STAMP)
    session.on_datagrams([(wire.encode_hello(hello), peer)], 0.0)
    (retry,) = [wire.decode_untrusted(x) for x, _ in session.poll(0.0)]
    assert isinstance(retry, wire.Accept)
    session.on_datagrams([(wire.encode_hello(dataclasses.replace(hello, token=retry.token)), peer)], 0.0)
    session.poll(0.0)
    adus = [data[i * 100 : (i + 1) * 100] for i in range(100)]
    session._flush(0, adus[0:3], 0.01)
    session._flush(5, adus[5:7], 0.01)
    session._flush(3, adus[3:10], 0.02)  # new: 3-5 (fails) and 7-10
    assert r.outcome is not None and r.outcome.code == ExitCode.LOCAL_IO
    note = session.close() or ""
    assert "kept" in note, note
    kept = resume.decode_state_untrusted(Path(out + ".alf-resume").read_bytes())
    assert kept.held == ((0, 300), (500, 1000))  # not 300-500; 700-1000 written all the same
    assert Path(out + ".alf-partial").read_bytes()[500:1000] == data[500:1000]


def test_sim_a_held_part_that_is_wrong_fails_the_digest_never_a_false_success() -> None:
    """A state that claims bytes the partial output does not hold (written by hand, or a disk
    that lost them): the receiver's digest is over its whole output, so it fails."""
    data = os.urandom(200_000)
    partial, kept = _kept_half(data)
    damaged = bytearray(partial)
    damaged[1234] ^= 1
    res = run_transfer(
        data,
        receiver_config=ReceiverConfig(in_order=False, timeout=10.0, kept=kept),
        source_stamp=STAMP,
        partial=bytes(damaged),
    )
    assert res.receiver is not None and res.receiver.code == ExitCode.VERIFY_FAILED
    assert res.sender is not None and res.sender.code == ExitCode.VERIFY_FAILED
    assert res.kept is kept  # nothing new kept: what is held is not known to be right


def test_sim_another_source_starts_afresh_or_is_refused_strictly() -> None:
    data = os.urandom(200_000)
    partial, kept = _kept_half(data)
    other = (STAMP[0], STAMP[1] + 1, STAMP[2])  # modified since
    res = run_transfer(
        data,
        receiver_config=ReceiverConfig(in_order=False, timeout=10.0, kept=kept),
        source_stamp=other,
        partial=partial,
    )
    assert res.receiver is not None and res.receiver.ok and res.output == data
    assert res.sender_stats["adus_held"] == 0 and res.receiver_stats["adus_resumed"] == 0
    strict = ReceiverConfig(in_order=False, timeout=10.0, kept=kept, resume_strict=True)
    res = run_transfer(data, receiver_config=strict, source_stamp=other, partial=partial)
    assert res.receiver is not None and res.receiver.code == ExitCode.NOT_RESUMABLE
    assert res.sender is not None and res.sender.code == ExitCode.PEER_ABORTED
    assert "NOT_RESUMABLE" in res.sender.message and res.output == partial  # untouched


def test_sim_a_receiver_killed_midway_keeps_what_it_wrote() -> None:
    data = os.urandom(2_000_000)
    res = run_transfer(
        data,
        sender_config=SenderConfig(adu_size=512, rate_bps=8e6, timeout=2.0),
        receiver_config=ReceiverConfig(in_order=False, timeout=1.0),
        source_stamp=STAMP,
        kill_sender_at=1.0,
    )
    assert res.receiver is not None and res.receiver.code == ExitCode.PEER_UNREACHABLE
    assert res.kept is not None and res.kept.source == STAMP and 0 < res.kept.held_bytes < len(data)
    for a, b in res.kept.held:
        assert res.output[a:b] == data[a:b]


# ---------------------------------------------------------------- loopback


def _last_stats(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text().strip().splitlines()[-1]))


def _wait(path: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def _interrupted(
    procs: Procs, port: int, src: str, dst: str, transport: str, rate: str = "800M", *more: str
) -> None:
    """A receive into ``dst`` whose sender (with ``more`` options) is killed (SIGKILL) about
    half way."""
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "2", "--transport", transport)
    (wait_listening_tcp if transport == "tcp" else wait_listening)(port)
    send = procs.start("send", "127.0.0.1", str(port), src, "--rate", rate, "--transport", transport, *more)
    _wait(dst + ".alf-partial")
    size = os.path.getsize(src)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until about half has arrived (the kernel's page cache)
        time.sleep(0.05)
        with open(f"/proc/{recv.pid}/io") as f:
            written = int(next(line for line in f if line.startswith("wchar")).split()[1])
        if written >= size // 2:
            break
    send.send_signal(signal.SIGKILL)
    assert recv.wait(timeout=30) == ExitCode.PEER_UNREACHABLE
    assert recv.stderr is not None
    said = recv.stderr.read()
    assert b"alf recv --resume -o " + dst.encode() + b" takes it up" in said, said


def _resumed(
    procs: Procs, port: int, src: str, dst: str, transport: str, stats: Path, *more: str
) -> dict[str, object]:
    """``alf recv --resume`` into ``dst`` and a sender (with ``more`` options) of ``src``: both
    exit 0, the receiver says it resumes, the output is identical and nothing is left beside
    it. The sender's last statistics."""
    recv = procs.start("recv", str(port), "-o", dst, "--resume", "--timeout", "10", "--transport", transport)
    (wait_listening_tcp if transport == "tcp" else wait_listening)(port)
    r = procs.run("send", "127.0.0.1", str(port), src, "--transport", transport, "--timeout", "10",
                  "--stats-json", str(stats), *more)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert recv.wait(timeout=30) == 0
    assert recv.stderr is not None and b"resuming: " in recv.stderr.read()
    assert sha256_file(dst) == sha256_file(src)
    assert not os.path.exists(dst + ".alf-partial") and not os.path.exists(dst + ".alf-resume")
    return _last_stats(stats)


def _held_share(dst: str) -> float:
    kept = resume.decode_state_untrusted(Path(dst + ".alf-resume").read_bytes())
    return kept.held_bytes / kept.total_bytes


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_resume_after_the_sender_was_killed_half_way(
    procs: Procs, port: int, tmp_path: Path, transport: str
) -> None:
    """Acceptance 3: 500 MB, the sender killed at about half; the resumed receive sends only
    what was not held (at most 55% of the file), the output is identical, both exit 0."""
    src = random_file(str(tmp_path / "in.bin"), 500_000_000, seed=11)
    dst = str(tmp_path / "out.bin")
    _interrupted(procs, port, src, dst, transport)
    held = _held_share(dst)
    assert 0.45 <= held <= 0.75, held
    s = _resumed(procs, port, src, dst, transport, tmp_path / "s.json")
    sent = int(s["bytes_sent"])  # type: ignore[call-overload]
    assert sent <= (1 - held) * 500_000_000 + 2 * (1 << 20), (sent, held)
    assert sent <= 0.55 * 500_000_000 or held > 0.45, (sent, held)
    assert int(s["bytes_held"]) + sent == 500_000_000  # type: ignore[call-overload]


@pytest.mark.parametrize("strict", [False, True])
def test_resume_of_a_source_modified_since(procs: Procs, port: int, tmp_path: Path, strict: bool) -> None:
    src = random_file(str(tmp_path / "in.bin"), 200_000_000, seed=12)
    dst = str(tmp_path / "out.bin")
    _interrupted(procs, port, src, dst, "udp", rate="400M")
    with open(src, "r+b") as f:  # changed in place: same size, another modification time
        f.seek(12345)
        f.write(b"changed")
    state = Path(dst + ".alf-resume").read_bytes()
    before = sha256_file(dst + ".alf-partial")
    mode = "--resume=strict" if strict else "--resume"
    recv = procs.start("recv", str(port), "-o", dst, mode, "--timeout", "10")
    wait_listening(port)
    r = procs.run("send", "127.0.0.1", str(port), src, "--timeout", "10")
    assert recv.stderr is not None
    code, said = recv.wait(timeout=30), recv.stderr.read()
    if strict:
        assert r.returncode == ExitCode.PEER_ABORTED and b"NOT_RESUMABLE" in r.stderr, r.stderr
        assert code == ExitCode.NOT_RESUMABLE and b"the source changed since" in said, said
        assert Path(dst + ".alf-resume").read_bytes() == state and sha256_file(dst + ".alf-partial") == before
    else:
        assert r.returncode == 0 and code == 0, said
        assert b"starting afresh: the source changed since" in said, said
        assert sha256_file(dst) == sha256_file(src)


def test_a_damaged_state_starts_afresh_or_refuses_strictly(procs: Procs, port: int, tmp_path: Path) -> None:
    src = random_file(str(tmp_path / "in.bin"), 5_000_000, seed=13)
    dst = str(tmp_path / "out.bin")
    Path(dst + ".alf-partial").write_bytes(b"x" * 1000)
    Path(dst + ".alf-resume").write_text('{"format": "alf-resume-1", "held": [[0, 1000]], "check": "00"}')
    r = procs.run("recv", str(port), "-o", dst, "--resume=strict", "--timeout", "2")
    assert r.returncode == ExitCode.NOT_RESUMABLE
    assert b"out.bin.alf-resume cannot be used: it is damaged" in r.stderr, r.stderr
    assert Path(dst + ".alf-partial").read_bytes() == b"x" * 1000  # nothing touched
    recv = procs.start("recv", str(port), "-o", dst, "--resume", "--timeout", "10")
    wait_listening(port)
    assert procs.run("send", "127.0.0.1", str(port), src, "--timeout", "10").returncode == 0
    assert recv.wait(timeout=30) == 0 and recv.stderr is not None
    assert b"cannot be used: it is damaged (its check does not match): starting afresh" in recv.stderr.read()
    assert sha256_file(dst) == sha256_file(src) and not os.path.exists(dst + ".alf-resume")
    # a state from another file: its partial output is not the one it describes
    other = resume.Kept(10, 0, STAMP, "xxh3-128", ((0, 10),), (1, 2, 3))
    Path(dst + ".alf-partial").write_bytes(b"y" * 10)
    Path(dst + ".alf-resume").write_bytes(resume.encode_state(other))
    r = procs.run("recv", str(port), "-o", dst, "--force", "--resume=strict", "--timeout", "2")
    assert r.returncode == ExitCode.NOT_RESUMABLE and b"changed since" in r.stderr, r.stderr
    r = procs.run("recv", str(port), "-o", "-", "--resume", "--timeout", "2")
    assert r.returncode == ExitCode.USAGE and b"resume: takes an output file" in r.stderr


def test_four_ranges_fill_one_file_at_once(procs: Procs, tmp_path: Path) -> None:
    """Acceptance 4: 1 GB sent as 4 concurrent ranges to 4 receivers writing one output file;
    each range verified on its own, the file identical."""
    size = 1_000_000_000
    src = random_file(str(tmp_path / "in.bin"), size, seed=14)
    dst = str(tmp_path / "out.bin")
    ports = [free_udp_port() for _ in range(4)]
    while len(set(ports)) < 4:
        ports = [free_udp_port() for _ in range(4)]
    cut = [0, 262_144_000, 500_000_001, 750_000_000, size]  # (one not on a page boundary)
    recvs = [procs.start("recv", str(p), "-o", dst, "--timeout", "20") for p in ports]
    for p in ports:
        wait_listening(p)
    sends = [
        procs.start("send", "127.0.0.1", str(p), src, "--offset", str(a), "--length", str(b - a),
                    "--timeout", "20", stdout=subprocess.DEVNULL)
        for p, a, b in zip(ports, cut[:-1], cut[1:], strict=True)
    ]  # fmt: skip
    for s in sends:
        assert s.wait(timeout=120) == 0, s.stderr.read() if s.stderr else b""
    for r in recvs:
        assert r.wait(timeout=30) == 0
        assert r.stderr is not None and b"verified" in r.stderr.read()
    assert os.path.getsize(dst) == size and sha256_file(dst) == sha256_file(src)
    assert not os.path.exists(dst + ".alf-partial")


def test_range_errors(procs: Procs, port: int, tmp_path: Path) -> None:
    src = random_file(str(tmp_path / "in.bin"), 1_000_000, seed=15)
    dst = str(tmp_path / "out.bin")
    r = procs.run("send", "127.0.0.1", str(port), src, "--offset", "900000", "--length", "200000")
    assert r.returncode == ExitCode.USAGE and b"beyond its end" in r.stderr, r.stderr
    r = procs.run("send", "127.0.0.1", str(port), "-", "--offset", "10", stdin=subprocess.DEVNULL)
    assert r.returncode == ExitCode.USAGE and b"not of a pipe" in r.stderr, r.stderr
    # overlapping ranges: the second receiver of bytes it cannot lock is refused
    p2 = free_udp_port()
    first = procs.start("recv", str(port), "-o", dst, "--timeout", "10")
    second = procs.start("recv", str(p2), "-o", dst, "--timeout", "10")
    wait_listening(port)
    wait_listening(p2)
    a = procs.start(
        "send", "127.0.0.1", str(port), src, "--offset", "0", "--length", "600000", "--rate", "2M"
    )
    time.sleep(1.0)  # the first holds its lock (600 kB at 2 Mbit/s take 2.4 s)
    b = procs.run("send", "127.0.0.1", str(p2), src, "--offset", "500000", "--timeout", "5")
    assert b.returncode == ExitCode.PEER_ABORTED and b"the ranges overlap" in b.stderr, b.stderr
    assert second.wait(timeout=20) == ExitCode.LOCAL_IO
    assert a.wait(timeout=60) == 0 and first.wait(timeout=20) == 0
    assert Path(dst).read_bytes()[:600_000] == Path(src).read_bytes()[:600_000]


# ---------------------------------------------------------------- with compression (§19)


def _mixed_file(path: str, mib: int) -> str:
    """Half random, half text: blocks that go raw and blocks that go as zstd frames."""
    rng = random.Random(21)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(rng.randbytes(BLOCK) if i % 2 else (b"block %d of a log, said the sender\n" % i) * 29127)
        f.write(b"a short last block")
    return path


def test_a_compressed_content_takes_up_the_held_prefix_in_whole_blocks() -> None:
    tag = wire.checkphrase_tag("")
    size = 5 * BLOCK + 3
    features = wire.FEATURE_COMPRESS | wire.FEATURE_RESUME
    hello = wire.Hello(1, 512, wire.Kind.STREAM, wire.UNKNOWN_LENGTH, 1, tag, features=features,
                       source=(size, *STAMP[1:]))  # fmt: skip
    assert wire.decode_untrusted(wire.encode_hello(hello)) == hello  # a compressed stream names its file
    with pytest.raises(wire.BadPacket):
        wire.decode_untrusted(wire.encode_hello(replace(hello, features=wire.FEATURE_RESUME)))
    source = (size, *STAMP[1:])
    kept = resume.Kept(size, 0, source, "xxh3-128", ((0, 3 * BLOCK + 7), (4 * BLOCK, size)))
    held, why = resume.take_up(kept, hello)
    assert (held, why) == ([(0, 3)], None)  # the whole blocks of the prefix; the rest is sent again
    place, event = resume.decided(kept, hello, held, why)
    assert place.compressed and place.keep and place.blocks == 3 and place.source == source
    assert event is not None and (event.held_bytes, event.total_bytes) == (3 * BLOCK, size)
    none = resume.take_up(replace(kept, held=((BLOCK, size),)), hello)  # no prefix: starts afresh
    assert none[0] == [] and "no whole MiB at the file's start" in str(none[1])
    assert resume.take_up(replace(kept, held=((0, size),)), hello) == ([(0, 5)], None)
    four = (4 * BLOCK, *STAMP[1:])
    whole = resume.Kept(4 * BLOCK, 0, four, "xxh3-128", ((0, 4 * BLOCK),))  # the last block always goes
    assert resume.take_up(whole, replace(hello, source=four))[0] == [(0, 3)]
    assert resume.take_up(kept, replace(hello, source=STAMP))[1] == (
        "the source changed since (its size, modification time or inode differ)"
    )


def test_a_restored_prefix_is_kept_and_taken_up_with_its_digest() -> None:
    """The sink's side, in memory: a compressed receive that fails keeps its restored prefix;
    the next one starts after its whole blocks and its digest covers the whole file."""
    text = b"".join(b"line %d of a log\n" % i for i in range(130_000))[:BLOCK]
    data = text + os.urandom(BLOCK) + os.urandom(99)
    source = (len(data), *STAMP[1:])
    frames = [b"".join(f) for f, _ in frame_all(Compressor(1, 512), data)]
    place = Placement(source=source, compressed=True)
    backend = MemoryBackend()
    sink = DecompressingSink(DecompressingWriter(BackendWriter(backend)), backend)
    sink.start(512, None, wire.DigestAlg.XXH3_128, place)
    stream = frames[0] + frames[1][:1024]  # a block and a part of a raw one, written as it came
    sink.write_block(0, len(stream) // 512, stream)
    sink.advance(len(stream) // 512)
    assert sink.close(False, [(0, len(stream) // 512)]) == "kept for a resume"
    prefix = BLOCK + 1024 - HEADER.size
    assert backend.kept is not None and backend.kept.held == ((0, prefix),)
    assert bytes(backend.data) == data[:prefix]
    gone = MemoryBackend()  # the sender's input failed (held None): nothing is kept
    other = DecompressingSink(DecompressingWriter(BackendWriter(gone)), gone)
    other.start(512, None, wire.DigestAlg.XXH3_128, place)
    other.write_block(0, len(frames[0]) // 512, frames[0])
    other.advance(len(frames[0]) // 512)
    assert other.close(False, None) is None and gone.kept is None
    # taken up: blocks 1 and 2 come, numbered from 1; the digest is of all of it
    again = DecompressingSink(DecompressingWriter(BackendWriter(backend)), backend)
    again.start(512, None, wire.DigestAlg.XXH3_128, replace(place, keep=True, blocks=1))
    rest = frames[1] + frames[2]
    again.write_block(0, len(rest) // 512, rest)
    again.advance(len(rest) // 512)
    assert again.finish(len(rest), digest_bytes(wire.DigestAlg.XXH3_128, data)) == (
        len(rest), digest_bytes(wire.DigestAlg.XXH3_128, data)
    )  # fmt: skip
    assert bytes(backend.data) == data
    # a first block numbered otherwise than the held count says is a broken stream
    wrong = DecompressingSink(DecompressingWriter(BackendWriter(MemoryBackend())), MemoryBackend())
    wrong.start(512, None, wire.DigestAlg.XXH3_128, replace(place, blocks=2))
    wrong.write_block(0, len(rest) // 512, rest)
    with pytest.raises(SinkError, match="block 1 came where block 2 belongs"):
        wrong.advance(len(rest) // 512)


def test_the_sender_refuses_held_blocks_its_file_cannot_have(tmp_path: Path) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(3 * BLOCK))
    for held, said in [(((0, 3),), "claims to hold"), (((1, 2),), "claims to hold"), (((0, 1),), None)]:
        source = CompressedStream(512, 1 << 14, wire.DigestAlg.XXH3_128, Compressor(1, 512))
        fd = os.open(path, os.O_RDONLY)
        stop = threading.Event()
        pump = threading.Thread(target=pump_compressed, args=(source, fd, None, stop, 2, os.fstat(fd)))
        pump.start()
        source.accepted(held)
        pump.join(10)
        os.close(fd)
        assert not pump.is_alive()
        source.accepted(held)  # (the same again: a TCP ACCEPT after UDP's)
        if said is None:
            assert source.error() is None and source.counts.bytes_held == BLOCK
            assert source.counts.bytes_in == 2 * BLOCK and source.counts.blocks == 2
            assert source.digest() == digest_bytes(wire.DigestAlg.XXH3_128, path.read_bytes())
            source.accepted(((0, 2),))  # another claim, once the blocks are numbered: fails
            assert "held blocks changed from [(0, 1)] to [(0, 2)]" in (source.error() or "")
        else:
            assert said in (source.error() or ""), source.error()


def test_a_compressed_failure_keeps_what_was_held_beyond_and_nothing_unreadable(tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 5)
    source = (len(data), *STAMP[1:])
    frames = [b"".join(f) for f, _ in frame_all(Compressor(1, 512), data)]
    place = Placement(source=source, keep=True, compressed=True, blocks=1)
    # a plain receive kept [0, 1.5 MiB) and [2.5 MiB, end): block 1 is restored, then it fails
    kept = resume.Kept(
        len(data), 0, source, "xxh3-128", ((0, BLOCK + BLOCK // 2), (5 * BLOCK // 2, len(data)))
    )
    backend = MemoryBackend(kept)
    backend.data = bytearray(data)
    sink = DecompressingSink(DecompressingWriter(BackendWriter(backend)), backend, kept=kept)
    sink.start(512, None, wire.DigestAlg.XXH3_128, place)
    sink.write_block(0, len(frames[1]) // 512, frames[1])
    sink.advance(len(frames[1]) // 512)
    assert sink.close(False, []) == "kept for a resume"
    assert backend.kept is not None and backend.kept.held == ((0, 2 * BLOCK), (5 * BLOCK // 2, len(data)))

    # a held prefix that cannot be read back (a disk error): what it held is not claimed again
    class Unreadable(MemoryBackend):
        def hash_range(self, update: object, offset: int, n: int) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    broken = Unreadable(kept)
    broken.data = bytearray(data)
    bad = DecompressingSink(DecompressingWriter(BackendWriter(broken)), broken, kept=kept)
    bad.start(512, None, wire.DigestAlg.XXH3_128, place)
    bad.write_block(0, len(frames[1]) // 512, frames[1])
    with pytest.raises(SinkError, match="cannot read back the output: Input/output error"):
        bad.advance(len(frames[1]) // 512)
    assert bad.close(False, []) is None and broken.kept is kept  # (MemoryBackend: left as it was)


def test_a_file_writer_hashes_the_held_prefix_in_a_thread_while_it_writes(tmp_path: Path) -> None:
    data = os.urandom(5 * BLOCK + 77)
    out = tmp_path / "out.bin"
    backend = FileBackend(str(out), force=False)
    backend.place(Placement(), None)
    backend.pwritev([data[: 3 * BLOCK]], 0)  # (what an earlier receive wrote)
    writer = FileWriter(backend)
    writer.set_digest(wire.DigestAlg.XXH3_128)
    writer.resume_at(3 * BLOCK)
    writer.submit(1, data[3 * BLOCK : 4 * BLOCK])  # written at once, not after the prefix is read
    assert os.path.getsize(str(out) + ".alf-partial") >= 4 * BLOCK
    writer.submit(1, data[4 * BLOCK :])
    assert writer.finish() == (len(data), digest_bytes(wire.DigestAlg.XXH3_128, data))
    assert writer.error() is None
    backend.commit(len(data))
    assert out.read_bytes() == data


@pytest.mark.parametrize(
    ("transport", "first", "then"),
    [
        ("udp", ["--compress"], ["--compress"]),
        ("tcp", ["--compress"], ["--compress"]),
        ("udp", ["--compress"], []),  # what a compressed receive kept, a plain one takes up
        ("udp", [], ["--compress"]),  # ... and the other way round
    ],
)
def test_resume_with_compression(
    procs: Procs, port: int, tmp_path: Path, transport: str, first: list[str], then: list[str]
) -> None:
    """§18 with §19: a compressed transfer killed half way is taken up; the second sends only
    the rest (its input bytes and what it held add up to the file), identical, both exit 0."""
    src = _mixed_file(str(tmp_path / "in.bin"), 240)
    size = os.path.getsize(src)
    dst = str(tmp_path / "out.bin")
    _interrupted(procs, port, src, dst, transport, "800M", *first)
    held = _held_share(dst)
    assert 0.3 <= held <= 0.9, held
    s = _resumed(procs, port, src, dst, transport, tmp_path / "s.json", *then)
    passed = int(s["bytes_held"])  # type: ignore[call-overload]
    assert passed >= held * size - (BLOCK if then else 64 << 10), (passed, held)
    if then:
        assert int(s["input_bytes"]) + passed == size  # type: ignore[call-overload]
        assert int(s["input_bytes"]) <= (1 - held) * size + BLOCK  # type: ignore[call-overload]
    else:
        assert int(s["bytes_sent"]) + passed == size  # type: ignore[call-overload]
