"""Acceptance 6: every way a transfer can go wrong ends with a clear message and its exit code."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest
from conftest import ALF, Procs, random_file, sha256_file, wait_listening, wait_listening_tcp

from alf.errors import ExitCode


def test_no_receiver(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """A port that holds a socket but never answers (a silent host): --timeout decides."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", port))
        t0 = time.monotonic()
        r = procs.run("send", "127.0.0.1", str(port), src, "--transport", "udp", "--timeout", "2", timeout=30)
        took = time.monotonic() - t0
    assert r.returncode == ExitCode.PEER_UNREACHABLE
    assert b"no receiver answered within 2 s" in r.stderr
    assert took < 6  # within --timeout plus start-up


@pytest.mark.parametrize(
    "transport, said",
    [
        ("auto", b"nothing listens at 127.0.0.1:%d (UDP: port unreachable, TCP: connection refused)"),
        ("udp", b"nothing listens on the receiver's UDP port (port unreachable for 2.5 s)"),
        ("tcp", b"nothing listens at 127.0.0.1:%d (TCP: connection refused)"),
    ],
)
def test_closed_port_fails_fast(
    procs: Procs, port: int, tmp_path: os.PathLike[str], transport: str, said: bytes
) -> None:
    """Nothing listens: the kernel says so (ICMP port unreachable, TCP RST), and the sender
    ends on that answer instead of waiting out --timeout (30 s by default)."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    t0 = time.monotonic()
    r = procs.run("send", "127.0.0.1", str(port), src, "--transport", transport, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == ExitCode.PEER_UNREACHABLE, r.stderr
    assert (said % port if b"%d" in said else said) in r.stderr, r.stderr
    assert took < 15  # far from the 30 s timeout; about 2.9 s here (docs/usage.md)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_checkphrase_mismatch(procs: Procs, port: int, tmp_path: os.PathLike[str], transport: str) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--checkphrase", "osymandias", "--timeout", "4")
    wait_listening(port)
    r = procs.run(
        "send", "127.0.0.1", str(port), src, "--checkphrase", "ozymandias", "--timeout", "4",
        "--transport", transport,
    )  # fmt: skip
    assert r.returncode == ExitCode.PEER_ABORTED
    assert b"CHECKPHRASE_MISMATCH" in r.stderr
    # the receiver rejected that sender, said so, and kept waiting for the right one
    assert recv.wait(timeout=20) == ExitCode.PEER_UNREACHABLE
    assert recv.stderr is not None
    said = recv.stderr.read().decode()
    turned_away = r"alf recv: turned away a sender from 127\.0\.0\.1:[0-9]+: checkphrase mismatch"
    assert re.search(turned_away, said), said
    assert not os.path.exists(dst) and not os.path.exists(dst + ".alf-partial")


def _start_pair(
    procs: Procs, port: int, tmp_path: os.PathLike[str], *recv_extra: str
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    src = random_file(os.path.join(tmp_path, "in.bin"), 200 << 20, seed=3)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "2", *recv_extra)
    wait_listening(port)
    send = procs.start("send", "127.0.0.1", str(port), src, "--rate", "100M", "--timeout", "2")
    deadline = time.monotonic() + 20
    while not os.path.exists(dst + ".alf-partial") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # mid-transfer: 200 MiB at 100 Mbit/s takes 17 s
    return recv, send, dst


def test_sender_killed_receiver_fails_and_keeps_what_it_holds(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """§18: what arrived is kept, with the state a resume takes up (tests/test_resume.py)."""
    recv, send, dst = _start_pair(procs, port, tmp_path)
    send.kill()
    assert recv.wait(timeout=20) == ExitCode.PEER_UNREACHABLE
    assert recv.stderr is not None
    said = recv.stderr.read()
    assert b"the sender went silent" in said and b"alf recv --resume -o" in said, said
    assert not os.path.exists(dst) and os.path.exists(dst + ".alf-partial")
    assert os.path.exists(dst + ".alf-resume")


def test_sender_killed_keep_partial(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    recv, send, dst = _start_pair(procs, port, tmp_path, "--keep-partial")
    send.kill()
    assert recv.wait(timeout=20) == ExitCode.PEER_UNREACHABLE
    assert recv.stderr is not None and b"partial output is kept" in recv.stderr.read()
    assert not os.path.exists(dst) and os.path.getsize(dst + ".alf-partial") > 0


def test_receiver_killed_sender_fails(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    recv, send, _dst = _start_pair(procs, port, tmp_path)
    recv.kill()
    assert send.wait(timeout=20) == ExitCode.PEER_UNREACHABLE
    assert send.stderr is not None and b"the receiver went silent" in send.stderr.read()


def test_interrupted_sender_aborts_the_receiver(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    recv, send, dst = _start_pair(procs, port, tmp_path)
    send.send_signal(signal.SIGINT)
    assert send.wait(timeout=20) == ExitCode.CANCELLED
    assert recv.wait(timeout=20) == ExitCode.PEER_ABORTED
    assert recv.stderr is not None and b"CANCELLED" in recv.stderr.read()
    assert not os.path.exists(dst)


def test_output_exists(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    dst = os.path.join(tmp_path, "out.bin")
    with open(dst, "w") as f:
        f.write("precious")
    r = procs.run("recv", str(port), "-o", dst, "--timeout", "2")
    assert r.returncode == ExitCode.LOCAL_IO and b"exists; use --force" in r.stderr
    assert open(dst).read() == "precious"


def test_input_missing(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    r = procs.run("send", "127.0.0.1", str(port), os.path.join(tmp_path, "nope.bin"), "--timeout", "2")
    assert r.returncode == ExitCode.LOCAL_IO and b"No such file" in r.stderr


def test_usage_errors(procs: Procs) -> None:
    for args in (
        ["send", "127.0.0.1"],
        ["send", "127.0.0.1", "70000"],
        ["recv", "1", "--rate", "1G"],
        ["send", "127.0.0.1", "1", "--rate", "fast"],
        ["recv", "1", "--drop", "2"],
    ):
        r = procs.run(*args)
        assert r.returncode == ExitCode.USAGE, args


def test_output_unwritable_disk_full(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Pipe mode into /dev/full: the receiver reports the full disk, the sender is told."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 4 << 20)
    with open("/dev/full", "wb") as full:
        recv = procs.start("recv", str(port), "--timeout", "5", stdout=full)
        wait_listening(port)
        send = procs.run("send", "127.0.0.1", str(port), src, "--timeout", "5")
    assert recv.wait(timeout=20) == ExitCode.LOCAL_IO
    assert recv.stderr is not None and b"no space left" in recv.stderr.read()
    assert send.returncode == ExitCode.PEER_ABORTED and b"LOCAL_IO" in send.stderr


def test_receiver_waits_only_as_long_as_asked(procs: Procs, port: int) -> None:
    t0 = time.monotonic()
    r = procs.run("recv", str(port), "--timeout", "1", stdout=subprocess.DEVNULL)
    assert r.returncode == ExitCode.PEER_UNREACHABLE and b"no sender arrived" in r.stderr
    assert time.monotonic() - t0 < 5


def _loop_device(path: str, size: int) -> str | None:
    with open(path, "wb") as f:
        f.truncate(size)
    try:
        r = subprocess.run(["losetup", "-f", "--show", path], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def test_block_device_output_is_written_in_place_and_verified(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """-o /dev/loopN --force: written at offsets into the device and read back for the digest;
    a device smaller than the content is refused before anything is written."""
    dev = _loop_device(os.path.join(tmp_path, "disk.img"), 32 << 20)
    if dev is None:
        pytest.skip("no loop device here (needs root and /dev/loop-control)")
    try:
        src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=31)
        recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dev, "--force", "--timeout", "20")
        wait_listening(port)
        send = procs.run("send", "127.0.0.1", str(port), src, "--timeout", "20")
        assert send.returncode == 0 and recv.wait(timeout=30) == 0, send.stderr
        with open(dev, "rb") as d, open(src, "rb") as s:
            assert d.read(20_000_000) == s.read()
        big = random_file(os.path.join(tmp_path, "big.bin"), 40 << 20, seed=32)
        recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dev, "--force", "--timeout", "20")
        wait_listening(port)
        send = procs.run("send", "127.0.0.1", str(port), big, "--timeout", "20")
        assert recv.wait(timeout=30) == ExitCode.LOCAL_IO
        assert send.returncode == ExitCode.PEER_ABORTED
        assert (
            recv.stderr is not None
            and b"holds 33554432 bytes; the content has 41943040" in recv.stderr.read()
        )
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_character_device_output_is_refused_before_listening(procs: Procs, port: int) -> None:
    r = procs.run("recv", str(port), "-o", "/dev/null", "--force", timeout=20)
    assert r.returncode == ExitCode.LOCAL_IO
    assert b"/dev/null is not a regular file or a block device" in r.stderr
    assert b"write to stdout instead (alf recv PORT > /dev/null)" in r.stderr


def test_directory_output_is_refused_before_listening(procs: Procs, port: int, tmp_path: str) -> None:
    r = procs.run("recv", str(port), "-o", str(tmp_path), timeout=20)
    assert r.returncode == ExitCode.LOCAL_IO
    assert f"{tmp_path} is a directory: -o takes a file name (-o {tmp_path}/NAME)".encode() in r.stderr


def test_directory_input_suggests_tar(procs: Procs, port: int, tmp_path: str) -> None:
    r = procs.run("send", "127.0.0.1", str(port), str(tmp_path), timeout=20)
    assert r.returncode == ExitCode.LOCAL_IO
    assert f"tar cf - {tmp_path} | alf send 127.0.0.1 {port}".encode() in r.stderr


def test_host_port_as_one_argument(procs: Procs, port: int, tmp_path: str) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 50_000, seed=8)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20")
    wait_listening(port)
    r = procs.run("send", f"127.0.0.1:{port}", src, "--timeout", "20")
    assert r.returncode == 0 and recv.wait(timeout=20) == 0, r.stderr
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize(
    "args, said",
    [
        (["127.0.0.1", "in.bin"], b"'in.bin' is not a port (1-65535): alf send HOST PORT [FILE], or HOST"),
        (["127.0.0.1"], b"a PORT is needed: alf send HOST PORT [FILE] (or HOST:PORT)"),
        (["127.0.0.1:9", "a", "b"], b"give HOST:PORT [FILE]"),
    ],
)
def test_host_port_mistakes(procs: Procs, args: list[str], said: bytes) -> None:
    r = procs.run("send", *args, timeout=20)
    assert r.returncode == ExitCode.USAGE and said in r.stderr, r.stderr


def test_binary_output_to_a_terminal_is_refused(port: int) -> None:
    """curl's rule: data is not printed on a terminal unless asked for (-o -)."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.run(ALF + ["recv", str(port)], stdout=slave, stderr=subprocess.PIPE, timeout=20)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == ExitCode.USAGE
    assert b"stdout is a terminal" in p.stderr and b"-o - to print it anyway" in p.stderr


@pytest.mark.parametrize(
    "args, said",
    [
        (["send", "127.0.0.1", "9", "--rate", "nan"], b"a rate must be a number above 0 and at most 1T"),
        (["send", "127.0.0.1", "9", "--min-rate", "nan"], b"a rate must be a number above 0"),
        (["send", "127.0.0.1", "9", "--cc", "fixed", "--rate", "inf"], b"not inf"),
        (["send", "127.0.0.1", "9", "--rate", "1e400"], b"not inf"),
        (["send", "127.0.0.1", "9", "--rate", "2T"], b"at most 1T (1 Tbit/s)"),
        (["send", "127.0.0.1", "9", "--drop", "nan"], b"'nan' is not a finite number"),
        (["recv", "9", "--drop", "nan"], b"'nan' is not a finite number"),
        (["send", "127.0.0.1", "9", "--timeout", "nan"], b"'nan' is not a finite number"),
        (["recv", "9", "--timeout", "inf"], b"'inf' is not a finite number"),
        (["send", "127.0.0.1", "9", "--window", "1e30"], b"a size must be a number above 0 and at most"),
        (["send", "127.0.0.1", "9", "--window", "1T"], b"more than half of this machine's memory"),
        (["recv", "9", "--window", "1T"], b"more than half of this machine's memory"),
        (["send", "127.0.0.1", "9", "--stats-interval", "nan"], b"'nan' is not a finite number"),
        (["send", "127.0.0.1", "9", "--path", "127.0.0.2,rate=0"], b"'127.0.0.2,rate=0': a rate must be"),
        (["send", "127.0.0.1", "9", "--path", "127.0.0.2,fast"], b"'fast' is not an option of a path"),
    ],
)
def test_numbers_that_cannot_work_are_usage_errors(procs: Procs, args: list[str], said: bytes) -> None:
    """Each once ended in a traceback (or, --timeout nan, spun a core for ever): exit 2 and a
    message that gives the valid range."""
    r = procs.run(*args, timeout=20)
    assert r.returncode == ExitCode.USAGE and said in r.stderr and b"Traceback" not in r.stderr, r.stderr


def test_a_rate_of_a_few_bits_gets_a_note(procs: Procs, port: int, tmp_path: str) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 100)
    r = procs.run("send", "127.0.0.1", str(port), src, "--rate", "1", "--timeout", "0.5", timeout=20)
    assert b"note: --rate 1 is 1 bit/s (rates are bits per second" in r.stderr, r.stderr


def test_statistics_that_cannot_be_written_never_end_a_transfer(
    procs: Procs, port: int, tmp_path: str
) -> None:
    """--stats-json on a full device, on both sides: said once, and the transfer goes on (it
    once ended with OSError ENOSPC in the reporter, exit 1, a partial left)."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 5_000_000)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--stats-json", "/dev/full", "--stats-interval", "0.01")
    wait_listening(port)
    s = procs.run("send", "127.0.0.1", str(port), src, "--stats-json", "/dev/full", "--stats-interval", ".01")
    assert s.returncode == 0, s.stderr
    assert recv.wait(timeout=30) == 0
    assert recv.stderr is not None
    said = b"cannot write statistics to /dev/full: No space left on device; going on without them"
    assert s.stderr.count(said) == 1 and recv.stderr.read().count(said) == 1
    assert sha256_file(dst) == sha256_file(src)


def test_a_full_stderr_never_ends_a_transfer(procs: Procs, port: int, tmp_path: str) -> None:
    """The progress line, -v's messages and the summary to a full device: exit 0 both sides."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 5_000_000)
    dst = os.path.join(tmp_path, "out.bin")
    with open("/dev/full", "wb") as full:
        recv = procs.start("recv", str(port), "-o", dst, "-v", "--progress", stderr=full)
        wait_listening(port)
        s = procs.run("send", "127.0.0.1", str(port), src, "-v", "--progress", stderr=full)
        assert s.returncode == 0
        assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


def test_a_fifo_input_waits_for_its_writer_only_as_long_as_asked(procs: Procs, tmp_path: str) -> None:
    """It blocked in open() for ever, deaf to --timeout and to SIGINT."""
    fifo = os.path.join(tmp_path, "ff")
    os.mkfifo(fifo)
    t0 = time.monotonic()
    r = procs.run("send", "127.0.0.1", "9", fifo, "--timeout", "1", timeout=20)
    assert (
        r.returncode == ExitCode.LOCAL_IO
        and f"nothing wrote to the FIFO {fifo} within 1 s".encode() in r.stderr
    )
    assert time.monotonic() - t0 < 10
    p = procs.start("send", "127.0.0.1", "9", fifo, "--timeout", "30")
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=10) == ExitCode.CANCELLED


def test_a_fifo_input_whose_writer_comes_later(procs: Procs, port: int, tmp_path: str) -> None:
    fifo = os.path.join(tmp_path, "ff")
    os.mkfifo(fifo)
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "10")
    wait_listening(port)
    send = procs.start("send", "127.0.0.1", str(port), fifo, "--timeout", "10")
    time.sleep(0.7)
    with open(fifo, "wb") as w, open(src, "rb") as f:
        w.write(f.read())
    assert send.wait(timeout=30) == 0
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_file_changed_while_it_is_sent_is_never_delivered(
    procs: Procs, port: int, tmp_path: str, transport: str
) -> None:
    """The issue's case: 1 MiB in the middle of the input overwritten while the first pass
    runs. Both sides exited 0 and the output matched neither version. Now the sender exits 7
    before its FINAL, the receiver is told and keeps nothing."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 60_000_000, seed=31)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20", "--transport", transport)
    wait_listening(port) if transport == "udp" else wait_listening_tcp(port)
    send = procs.start(
        "send", "127.0.0.1", str(port), src, "--cc", "fixed", "--rate", "200M", "--transport", transport
    )
    time.sleep(1.0)  # well into the first pass (2.4 s at 200M)
    with open(src, "r+b") as f:
        f.seek(40_000_000)
        f.write(os.urandom(1 << 20))
    _out, err = send.communicate(timeout=30)
    assert send.returncode == ExitCode.INPUT_CHANGED, err
    assert b"was written to while it was being sent: nothing is delivered" in err
    assert recv.wait(timeout=30) == ExitCode.PEER_ABORTED
    assert not os.path.exists(dst) and not os.path.exists(dst + ".alf-partial")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_growing_file_with_if_changed_warn(procs: Procs, port: int, tmp_path: str, transport: str) -> None:
    """A log appended to while it is sent, with --if-changed warn: one warning, and the length
    the sender opened arrives, verified (exit 0 both sides); without the option it is exit 7."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 60_000_000, seed=32)
    first = sha256_file(src)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20", "--transport", transport)
    wait_listening(port) if transport == "udp" else wait_listening_tcp(port)
    send = procs.start(
        "send", "127.0.0.1", str(port), src, "--cc", "fixed", "--rate", "200M", "--transport", transport,
        "--if-changed", "warn",
    )  # fmt: skip
    time.sleep(1.0)
    with open(src, "ab") as f:
        f.write(b"another line\n" * 1000)
    _out, err = send.communicate(timeout=30)
    assert send.returncode == 0, err
    assert err.count(b"grew or shrank while it was being sent; sending the 60000000 bytes") == 1
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == first


def test_a_bracketed_ipv6_host_and_a_chosen_port(procs: Procs, tmp_path: str) -> None:
    """`alf send [::1] PORT` as --path takes it; `alf recv 0` says which port it took (only -v
    did), since the sender must name it."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 100_000)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", "0", "-o", dst, "--timeout", "20")
    assert recv.stderr is not None
    line = recv.stderr.readline().decode()
    m = re.search(r"listening on port (\d+)", line)
    assert m, line
    s = procs.run("send", "[::1]", m.group(1), src, timeout=60)
    assert s.returncode == 0, s.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize("transport", ["auto", "udp", "tcp"])
def test_a_local_address_this_host_lacks_is_a_local_fault_on_both_sides(
    procs: Procs, port: int, tmp_path: str, transport: str
) -> None:
    """--bind to an address no interface holds (TEST-NET-1): exit 6 on the sender, as on the
    receiver, naming the address, before anything is sent; not 3, "cannot reach" the peer."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    t0 = time.monotonic()
    send = procs.run("send", "127.0.0.1", str(port), src, "--bind", "192.0.2.55", "--transport", transport)
    assert send.returncode == 6 and b"cannot send from 192.0.2.55" in send.stderr, send.stderr
    assert time.monotonic() - t0 < 5
    recv = procs.run("recv", str(port), "--bind", "192.0.2.55", "-o", os.path.join(tmp_path, "o"))
    assert recv.returncode == 6 and b"192.0.2.55" in recv.stderr, recv.stderr
    assert not os.path.exists(os.path.join(tmp_path, "o"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_receiver_that_was_stopped_says_so(procs: Procs, port: int, tmp_path: str, transport: str) -> None:
    """SIGSTOP the receiver for longer than --timeout: the sender gives up (exit 3), and the
    receiver, resumed, fails too (its sender's ABORT TIMEOUT, exit 4, or if that was lost the
    sender's silence, exit 3) and says that it did not run meanwhile."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 60_000_000, seed=3)
    dst = os.path.join(tmp_path, "out.bin")
    args = ["--transport", transport, "--timeout", "2"]
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst, *args)
    (wait_listening if transport == "udp" else wait_listening_tcp)(port)
    send = procs.start("send", "127.0.0.1", str(port), src, "--cc", "fixed", "--rate", "100M", *args)
    time.sleep(1.0)
    recv.send_signal(signal.SIGSTOP)
    time.sleep(4.0)
    recv.send_signal(signal.SIGCONT)
    assert send.wait(timeout=30) == ExitCode.PEER_UNREACHABLE
    _out, err = recv.communicate(timeout=30)
    assert recv.returncode in (ExitCode.PEER_UNREACHABLE, ExitCode.PEER_ABORTED), err
    assert re.search(rb"this process did not run for [3-9]\.\d s", err), err
    assert not os.path.exists(dst)
