"""The TCP transport between real `alf` processes on loopback (issue 6)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time

import pytest
from conftest import Procs, last_json, random_file, sha256_file, wait_listening, wait_listening_tcp

from alf.errors import ExitCode


def _paused(src: str, pause: float) -> subprocess.Popen[bytes]:
    """A pipe that gives the first 10 MB of ``src``, pauses, then the rest: the transfer is
    still running when the test acts on it (TCP on loopback would be over too soon)."""
    cmd = f"head -c 10000000 {src}; sleep {pause}; tail -c +10000001 {src}"
    return subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.PIPE)


def _recv(procs: Procs, port: int, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    p = procs.start("recv", str(port), "--bind", "127.0.0.1", *args, **kw)  # type: ignore[arg-type]
    wait_listening_tcp(port)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_1gib_with_chaos(procs: Procs, port: int, tmp_path: os.PathLike[str], mode: str) -> None:
    """Acceptance 1: 1 GiB over TCP while --chaos resets a connection every 300 MB."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 1 << 30, seed=6)
    dst = os.path.join(tmp_path, "out.bin")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    chaos = ["--transport", "tcp", "--chaos", "300M", "--seed", "4", "--stats-json", sstats]
    if mode == "file":
        recv = _recv(procs, port, "--transport", "tcp", "-o", dst, "--stats-json", rstats)
        send = procs.run("send", "127.0.0.1", str(port), src, *chaos, timeout=300)
    else:
        with open(dst, "wb") as out:
            recv = _recv(procs, port, "--transport", "tcp", "--stats-json", rstats, stdout=out)
        with open(src, "rb") as inp:
            send = procs.run("send", "127.0.0.1", str(port), *chaos, stdin=inp, timeout=300)
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=60) == 0
    assert sha256_file(dst) == sha256_file(src)
    s, r = last_json(sstats), last_json(rstats)
    assert s["transport"] == "tcp" and s["chaos_resets"] == 3  # at 300, 600 and 900 MB
    assert s["reconnects"] >= 3 and s["connection_losses"] == 3
    assert r["connection_losses"] == 3 and r["bytes_received"] == 1 << 30
    assert s["bytes_sent"] == 1 << 30 and s["bytes_resent"] > 0 and s["acked_bytes"] == 1 << 30


def test_small_pipe_tcp_slow_reader(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Nobody reads the receiver's stdout for 3 s after the sender is done: the receiver keeps
    the sender informed (keepalives) and both finish once the reader comes."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 5_000_003, seed=2)
    with open(src, "rb") as inp:
        recv = _recv(procs, port, "--transport", "tcp", stdout=subprocess.PIPE)
        send = procs.start(
            "send",
            "127.0.0.1",
            str(port),
            "--transport",
            "tcp",
            "--streams",
            "3",
            "--timeout",
            "2",
            stdin=inp,
        )
        time.sleep(3)
        out, _err = recv.communicate(timeout=30)
    assert send.wait(timeout=10) == 0 and recv.returncode == 0
    with open(src, "rb") as f:
        assert out == f.read()


def test_empty_input_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    dst = os.path.join(tmp_path, "out.bin")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst)
    send = procs.run("send", "127.0.0.1", str(port), "--transport", "tcp", stdin=subprocess.DEVNULL)
    assert send.returncode == 0 and recv.wait(timeout=30) == 0
    assert os.path.getsize(dst) == 0


def test_paths_in_preference_order_skip_a_dead_one(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """The first path refuses (nothing listens on 127.0.0.2); the transfer goes by the second."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=3)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst)
    send = procs.run(
        "send", "127.0.0.2", str(port), src, "--transport", "tcp", "--path", f"127.0.0.1:{port}",
        "--stats-json", sstats,
    )  # fmt: skip
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    s = last_json(sstats)
    assert s["connect_failures"] >= 1
    assert s["path_bytes"] == {f"127.0.0.2:{port}": 0, f"127.0.0.1:{port}": 20_000_000}


def test_rate_paces_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """--rate caps TCP too: 3 MB at 24 Mbit/s takes about a second (unpaced, loopback moves it in
    milliseconds), in frames of ~10 ms at the rate rather than 1 MiB ones."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=5)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst)
    send = procs.run(
        "send", "127.0.0.1", str(port), src, "--transport", "tcp", "--rate", "24M", "--stats-json", sstats
    )  # fmt: skip
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    s = last_json(sstats)
    assert s["frames_sent"] >= 90  # 30 kB frames (3 of 1 MiB unpaced)
    # the bucket starts with two frames; the rest goes at the rate: >= 0.98 s
    assert s["elapsed_s"] >= 0.9, s


def test_chaos_under_rate_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """--chaos still resets connections when --rate paces the frames (it did not: the check sat
    after the loop that the pacer leaves by a return), and the transfer still arrives whole."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 6_000_000, seed=6)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst)
    send = procs.run(
        "send", "127.0.0.1", str(port), src, "--transport", "tcp", "--rate", "400M",
        "--chaos", "1M", "--seed", "2", "--stats-json", sstats,
    )  # fmt: skip
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    s = last_json(sstats)
    assert s["chaos_resets"] >= 4, s  # one per 1 MB handed out: 5 in 6 MB
    assert s["reconnects"] >= 3, s


def test_first_path_is_filled_first(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Two live paths: the first takes everything while its connections keep up; a small input
    never needs the second."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=4)
    sstats = os.path.join(tmp_path, "s.json")
    recv = procs.start("recv", str(port), "--transport", "tcp", "-o", os.path.join(tmp_path, "o"))
    wait_listening_tcp(port)
    send = procs.run(
        "send", "127.0.0.1", str(port), src, "--transport", "tcp", "--path", "127.0.0.2",
        "--stats-json", sstats,
    )  # fmt: skip
    assert send.returncode == 0 and recv.wait(timeout=30) == 0
    assert last_json(sstats)["path_bytes"] == {f"127.0.0.1:{port}": 3_000_000, f"127.0.0.2:{port}": 0}


def test_a_backup_path_carries_data_only_while_no_other_is_up(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """A backup path takes nothing while the first path is up, and everything when it is not
    (nothing listens on HOST PORT: each policy, the same)."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=4)
    sstats = os.path.join(tmp_path, "s.json")
    for policy in ("prefer", "weighted", "minrtt"):
        recv = procs.start(
            "recv", str(port), "--transport", "tcp", "-o", os.path.join(tmp_path, "o"), "--force"
        )
        wait_listening_tcp(port)
        send = procs.run(
            "send", "127.0.0.1", str(port), src, "--transport", "tcp", "--path", "127.0.0.2,backup",
            "--stripe", policy, "--stats-json", sstats,
        )  # fmt: skip
        assert send.returncode == 0 and recv.wait(timeout=30) == 0, send.stderr
        assert last_json(sstats)["path_bytes"] == {
            f"127.0.0.1:{port}": 20_000_000,
            f"127.0.0.2:{port},backup": 0,
        }, policy
    dead = port + 1  # nothing listens there: the backup carries it all
    recv = procs.start("recv", str(port), "--transport", "tcp", "-o", os.path.join(tmp_path, "o"), "--force")
    wait_listening_tcp(port)
    send = procs.run(
        "send", "127.0.0.1", str(dead), src, "--transport", "tcp", "--path", f"127.0.0.2:{port},backup",
        "--stats-json", sstats,
    )  # fmt: skip
    assert send.returncode == 0 and recv.wait(timeout=30) == 0, send.stderr
    assert last_json(sstats)["path_bytes"] == {f"127.0.0.1:{dead}": 0, f"127.0.0.2:{port},backup": 20_000_000}
    assert sha256_file(os.path.join(tmp_path, "o")) == sha256_file(src)


def test_auto_uses_udp_when_it_works(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=5)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst)  # auto: UDP and TCP
    wait_listening(port)
    wait_listening_tcp(port)
    send = procs.run("send", "127.0.0.1", str(port), src, "--stats-json", sstats)
    assert send.returncode == 0 and recv.wait(timeout=30) == 0
    s = last_json(sstats)
    assert s.get("transport") != "tcp" and s["datapath"] in ("gso", "per-datagram")
    assert b"trying TCP" not in send.stderr


def test_auto_receiver_is_not_taken_by_stray_connections(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """auto: a port scan's connect, a silent connection, one that trickles half a frame and an
    HTTP request reach the TCP port before any sender. None of them is a HELLO, so none decides
    the transport: the real sender then comes over UDP and is served there."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=5)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst)  # auto: UDP and TCP
    wait_listening(port)
    wait_listening_tcp(port)
    socket.create_connection(("127.0.0.1", port)).close()
    silent = socket.create_connection(("127.0.0.1", port))
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.sendall(b"\x00\x00")
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    send = procs.run("send", "127.0.0.1", str(port), src, "--stats-json", sstats)
    silent.close()
    trickle.close()
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert last_json(sstats).get("transport") != "tcp" and b"trying TCP" not in send.stderr
    assert sha256_file(dst) == sha256_file(src)


def test_auto_falls_back_to_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """A receiver that takes only TCP: the sender's UDP HELLO gets no ACCEPT; TCP within 3 s."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=5)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst)
    t0 = time.monotonic()
    send = procs.run("send", "127.0.0.1", str(port), src, "--stats-json", sstats)
    took = time.monotonic() - t0
    assert send.returncode == 0 and recv.wait(timeout=30) == 0, send.stderr
    assert b"no answer over UDP within 1.5 s" in send.stderr and b"trying TCP" in send.stderr
    assert last_json(sstats)["transport"] == "tcp"
    assert sha256_file(dst) == sha256_file(src)
    assert took < 3 + 2  # the fallback within 3 s, the 2 MB and start-up well within 2 more


def test_foreign_connections_during_a_transfer(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Garbage, an HTTP request, a silent connection and a foreign HELLO arrive mid-transfer:
    each is closed, counted, and the transfer is intact."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 300_000_000, seed=7)
    dst, rstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "r.json")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst, "--stats-json", rstats)
    feeder = _paused(src, 2)
    send = procs.start("send", "127.0.0.1", str(port), "--transport", "tcp", stdin=feeder.stdout)
    # the sender's HELLO first (a foreign one before it would be the session's): until the
    # receiver's statistics name a session (a second, at most 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(rstats) and '"receiving"' in open(rstats).read():
            break
        time.sleep(0.05)
    silent = socket.create_connection(("127.0.0.1", port))
    noise = random.Random(7).randbytes(6200)
    for junk in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" + noise[:4999],  # a frame length far past any limit
        # a 1200-byte frame that is no message: not version 1, and no HELLO type either (random
        # bytes made it a HELLO offer one run in 256: an UNSUPPORTED answer, not a malformed one)
        b"\x00\x00\x04\xb0" + b"\xee\xee" + noise[5000:6198],
    ]:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(junk)
            time.sleep(0.05)
    from alf import wire
    from alf.wire import frame

    hello = wire.encode_hello(
        wire.Hello(99, 1428, wire.Kind.STREAM, wire.UNKNOWN_LENGTH, 0, wire.checkphrase_tag(""))
    )
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(frame(hello))
        c.settimeout(5)
        answer = c.recv(4096)
    assert wire.decode_untrusted(answer[4:]) == wire.Abort(
        99, wire.AbortCode.BUSY, "receiver is busy with another transfer"
    )
    assert send.wait(timeout=120) == 0
    assert recv.wait(timeout=30) == 0
    feeder.wait()
    silent.close()
    assert sha256_file(dst) == sha256_file(src)
    r = last_json(rstats)
    assert r["malformed"] >= 3 and r["rejected_hellos"] == 1


def test_checkphrase_mismatch_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    dst = os.path.join(tmp_path, "out.bin")
    recv = _recv(
        procs, port, "--transport", "tcp", "-o", dst, "--checkphrase", "osymandias", "--timeout", "4"
    )
    r = procs.run("send", "127.0.0.1", str(port), src, "--transport", "tcp", "--checkphrase", "ozymandias")
    assert r.returncode == ExitCode.PEER_ABORTED and b"CHECKPHRASE_MISMATCH" in r.stderr
    assert recv.wait(timeout=20) == ExitCode.PEER_UNREACHABLE  # kept waiting for the right sender
    assert not os.path.exists(dst) and not os.path.exists(dst + ".alf-partial")


def test_no_receiver_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 1000)
    t0 = time.monotonic()
    r = procs.run("send", "127.0.0.1", str(port), src, "--transport", "tcp", "--timeout", "2")
    assert r.returncode == ExitCode.PEER_UNREACHABLE
    assert b"no receiver answered within 2 s (TCP 127.0.0.1:" in r.stderr and b"refused" in r.stderr
    assert time.monotonic() - t0 < 6


def test_receiver_killed_sender_fails_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 200_000_000, seed=8)
    recv = _recv(procs, port, "--transport", "tcp", "-o", os.path.join(tmp_path, "out.bin"))
    feeder = _paused(src, 10)
    send = procs.start(
        "send", "127.0.0.1", str(port), "--transport", "tcp", "--timeout", "3", stdin=feeder.stdout
    )
    time.sleep(0.5)
    recv.send_signal(signal.SIGKILL)
    recv.wait()
    t0 = time.monotonic()
    assert send.wait(timeout=30) == ExitCode.PEER_UNREACHABLE
    assert time.monotonic() - t0 < 3 + 2
    feeder.kill()
    feeder.wait()


def test_sender_killed_receiver_fails_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    dst = os.path.join(tmp_path, "out.bin")
    recv = _recv(procs, port, "--transport", "tcp", "-o", dst, "--timeout", "2")
    feeder = subprocess.Popen(["sh", "-c", "head -c 50000000 /dev/urandom; sleep 30"], stdout=subprocess.PIPE)
    try:
        send = procs.start("send", "127.0.0.1", str(port), "--transport", "tcp", stdin=feeder.stdout)
        time.sleep(1.0)
        send.send_signal(signal.SIGKILL)
        assert recv.wait(timeout=30) == ExitCode.PEER_UNREACHABLE
    finally:
        feeder.kill()
        feeder.wait()
    assert not os.path.exists(dst) and not os.path.exists(dst + ".alf-partial")


def test_interrupted_receiver_aborts_the_sender_tcp(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 300_000_000, seed=9)
    recv = _recv(procs, port, "--transport", "tcp", "-o", os.path.join(tmp_path, "out.bin"))
    feeder = _paused(src, 10)
    send = procs.start("send", "127.0.0.1", str(port), "--transport", "tcp", stdin=feeder.stdout)
    time.sleep(0.5)
    recv.send_signal(signal.SIGINT)
    assert recv.wait(timeout=20) == ExitCode.CANCELLED
    assert send.wait(timeout=20) == ExitCode.PEER_ABORTED
    feeder.kill()
    feeder.wait()


def test_stdout_full_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=10)
    with open("/dev/full", "wb") as full:
        recv = _recv(procs, port, "--transport", "tcp", stdout=full)
    send = procs.run("send", "127.0.0.1", str(port), src, "--transport", "tcp")
    assert recv.wait(timeout=20) == ExitCode.LOCAL_IO
    assert send.returncode == ExitCode.PEER_ABORTED and b"LOCAL_IO" in send.stderr


def test_the_receivers_abort_always_reaches_the_sender_tcp(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """Ten times: a full output ends the receiver with megabytes still unread in its sockets.
    Closed with them unread, the sockets sent resets, which made the sender's kernel drop the
    ABORT it had not read yet (about 1 run in 6): the sender then timed out. It must be told,
    every time, at once."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 40_000_000, seed=11)
    for k in range(10):
        with open("/dev/full", "wb") as full:
            recv = _recv(procs, port, "--transport", "tcp", stdout=full)
        t0 = time.monotonic()
        send = procs.run("send", "127.0.0.1", str(port), src, "--transport", "tcp", "--timeout", "10")
        took = time.monotonic() - t0
        assert recv.wait(timeout=20) == ExitCode.LOCAL_IO, k
        assert send.returncode == ExitCode.PEER_ABORTED and b"LOCAL_IO" in send.stderr, (k, send.stderr)
        assert took < 5, (k, took)


def test_sigusr1_tcp(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    _recv(procs, port, "--transport", "tcp", stdout=subprocess.DEVNULL)
    feeder = subprocess.Popen(["sh", "-c", "head -c 1000000 /dev/zero; sleep 20"], stdout=subprocess.PIPE)
    try:
        send = procs.start("send", "127.0.0.1", str(port), "--transport", "tcp", stdin=feeder.stdout)
        time.sleep(1.0)
        send.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        send.send_signal(signal.SIGINT)
        _out, err = send.communicate(timeout=20)
    finally:
        feeder.kill()
        feeder.wait()
    # a stream's short last ADU waits for more input or EOF: all whole ADUs went out
    line = next(x for x in err.decode().splitlines() if x.startswith("alf send: {"))
    stats = json.loads(line.split(": ", 1)[1])
    assert (
        stats["transport"] == "tcp"
        and stats["bytes_sent"] == 1_000_000 - 1_000_000 % 1428
        and stats["connections"] == 8
    )
    assert send.returncode == ExitCode.CANCELLED


def test_tcp_usage_errors(procs: Procs, port: int) -> None:
    for args in (
        ["--transport", "udp", "--chaos", "10M"],
        ["--transport", "udp", "--path", "127.0.0.2%nosuchif0"],  # no such interface
        ["--path", f"127.0.0.1:{port}"],  # HOST PORT twice
        ["--transport", "tcp", "--checksum"],
        ["--path", "[::1"],
        ["--path", "h:0"],
        ["--streams", "0"],
        ["--transport", "tcp", "--path", "127.0.0.2,rate=100M"],  # TCP paces only the total
    ):
        r = procs.run("send", "127.0.0.1", str(port), "/dev/null", *args)
        assert r.returncode == ExitCode.USAGE, (args, r.stderr)
        if "nosuchif0" in args[-1]:
            assert b"path 127.0.0.2:" in r.stderr and b"nosuchif0" in r.stderr, r.stderr


def test_auto_receiver_follows_a_sender_whose_accepts_were_lost(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """The receiver commits to UDP on the first HELLO, but every ACCEPT is lost (the sender
    drops 99% of what arrives, and with this seed all of them): the sender falls back to TCP
    and the receiver, which has no DATA yet, follows it instead of failing."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=14)
    dst, rstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "r.json")
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst, "--stats-json", rstats)
    wait_listening(port)
    wait_listening_tcp(port)
    send = procs.run("send", "127.0.0.1", str(port), src, "--drop", "0.99", "--seed", "1")
    assert send.returncode == 0, send.stderr
    assert b"trying TCP" in send.stderr
    assert recv.wait(timeout=30) == 0
    assert recv.stderr is not None and b"the sender moved to TCP" in recv.stderr.read()
    assert sha256_file(dst) == sha256_file(src)
    assert last_json(rstats)["transport"] == "tcp"
