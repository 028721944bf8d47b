"""End-to-end transfers between `alf` processes over loopback UDP, as a user runs them: files
and pipes, with loss, digests and checksums, rate control and its plot, live statistics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import Procs, last_json, random_file, sha256_file, wait_listening

from alf import wire

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.mark.slow
def test_1gib_file_with_5pct_drop(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Acceptance 1: 1 GiB, --drop 0.05 at the receiver, identical sha256, both exit 0."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 1 << 30, seed=1)
    dst = os.path.join(tmp_path, "out.bin")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    recv = procs.start(
        "recv",
        str(port),
        "--bind",
        "127.0.0.1",
        "-o",
        dst,
        "--drop",
        "0.05",
        "--seed",
        "3",
        "--timeout",
        "30",
        "--stats-json",
        rstats,
    )
    wait_listening(port)
    send = procs.run(
        "send",
        "127.0.0.1",
        str(port),
        src,
        "--rate",
        "1G",
        "--timeout",
        "30",
        "--stats-json",
        sstats,
        timeout=300,
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=60) == 0, recv.stderr.read() if recv.stderr else ""
    assert sha256_file(dst) == sha256_file(src)
    r, s = last_json(rstats), last_json(sstats)
    adus = -(-(1 << 30) // wire.DEFAULT_ADU_SIZE)
    assert r["final"] and r["exit_code"] == 0 and r["adus_received"] == adus
    # the injected loss is real and visible, and was repaired
    assert 0.04 * r["datagrams"] < r["dropped_injected"] < 0.06 * r["datagrams"]
    assert s["adus_new"] == adus and s["adus_repair"] >= r["dropped_injected"] * 0.9
    assert r["naks_sent"] > 0 and s["naks_received"] > 0
    assert r["control_lost"] == 0  # every STATUS and NAK left the receiver's socket


def test_file_with_checksum_and_drop(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 20 << 20, seed=2)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--drop", "0.1", "--timeout", "20")
    wait_listening(port)
    send = procs.run("send", "127.0.0.1", str(port), src, "--checksum", "--rate", "500M", "--timeout", "20")
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    assert not os.path.exists(dst + ".alf-partial")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tar") is None, reason="needs tar (.ci/run installs it)")
def test_tar_pipe_several_hundred_mb(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Acceptance 2: tar cf - DIR | alf send  ->  alf recv | tar xf -, with --drop 0.03."""
    tree = os.path.join(tmp_path, "tree")
    for d in range(6):
        sub = os.path.join(tree, f"dir{d}", "deeper")
        os.makedirs(sub)
        for k in range(5):
            random_file(os.path.join(sub, f"f{k}.bin"), (10 << 20) + d * 1000 + k, seed=d * 10 + k)
        with open(os.path.join(tree, f"dir{d}", "small.txt"), "w") as f:
            f.write("hello\n" * d)
    os.symlink("dir0/small.txt", os.path.join(tree, "link"))
    out = os.path.join(tmp_path, "out")
    os.makedirs(out)
    tar_x = subprocess.Popen(["tar", "xf", "-", "-C", out], stdin=subprocess.PIPE)
    recv = procs.start("recv", str(port), "--drop", "0.03", "--timeout", "30", stdout=tar_x.stdin)
    assert tar_x.stdin is not None
    tar_x.stdin.close()
    wait_listening(port)
    tar_c = subprocess.Popen(["tar", "cf", "-", "-C", tmp_path, "tree"], stdout=subprocess.PIPE)
    send = procs.run(
        "send", "127.0.0.1", str(port), "--rate", "1G", "--timeout", "30", stdin=tar_c.stdout, timeout=300
    )
    assert tar_c.wait(timeout=60) == 0
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=60) == 0
    assert tar_x.wait(timeout=60) == 0
    diff = subprocess.run(
        ["diff", "-r", "--no-dereference", tree, os.path.join(out, "tree")], capture_output=True
    )
    assert diff.returncode == 0, diff.stdout[:2000]


def test_stream_to_file_and_file_to_stream(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), (3 << 20) + 17, seed=4)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20")
    wait_listening(port)
    with open(src, "rb") as f:
        send = procs.run("send", "127.0.0.1", str(port), "-", "--timeout", "20", stdin=f)
    assert send.returncode == 0 and recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)

    port2 = port + 1 if port < 65000 else port - 1
    dst2 = os.path.join(tmp_path, "out2.bin")
    with open(dst2, "wb") as out:
        recv = procs.start("recv", str(port2), "--drop", "0.05", "--timeout", "20", stdout=out)
        wait_listening(port2)
        send = procs.run("send", "127.0.0.1", str(port2), src, "--timeout", "20")
        assert send.returncode == 0 and recv.wait(timeout=30) == 0
    assert sha256_file(dst2) == sha256_file(src)


def test_digests_and_checksum(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), (2 << 20) + 5, seed=9)
    for k, digest in enumerate(("xxh3", "blake3", "sha256")):
        p = port + k if port < 65000 else port - k
        dst = os.path.join(tmp_path, f"out-{digest}.bin")
        recv = procs.start("recv", str(p), "-o", dst, "--timeout", "20")
        wait_listening(p)
        send = procs.run(
            "send", "127.0.0.1", str(p), src, "--digest", digest, "--checksum", "--timeout", "20"
        )
        assert send.returncode == 0, send.stderr
        assert recv.wait(timeout=30) == 0
        assert sha256_file(dst) == sha256_file(src)


def test_adaptive_rate_control_and_its_plot(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """--cc adaptive over loopback, its stats carrying the controller, plotted by the tool."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 30 << 20, seed=10)
    dst = os.path.join(tmp_path, "out.bin")
    stats = os.path.join(tmp_path, "send.json")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20")
    wait_listening(port)
    send = procs.run(
        "send",
        "127.0.0.1",
        str(port),
        src,
        "--cc",
        "adaptive",
        "--rate",
        "2G",
        "--min-rate",
        "5M",
        "--timeout",
        "20",
        "--stats-json",
        stats,
        "--stats-interval",
        "0.05",
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    rows = [json.loads(x) for x in open(stats)]
    assert all(r["cc"] == "adaptive" and 5e6 <= r["rate_bps"] <= 2e9 for r in rows)
    assert max(r["rate_bps"] for r in rows) > 20e6  # it left its 20 Mbit/s start
    png = os.path.join(tmp_path, "run.png")
    plot = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "plot_stats.py"), stats, "-o", png], capture_output=True
    )
    assert plot.returncode == 0, plot.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000


def test_empty_input(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20")
    wait_listening(port)
    send = procs.run("send", "127.0.0.1", str(port), "--timeout", "20", stdin=subprocess.DEVNULL)
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert os.path.getsize(dst) == 0


def test_sigusr1_prints_live_stats(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    recv = procs.start("recv", str(port), "--timeout", "20", stdout=subprocess.DEVNULL)
    wait_listening(port)
    cat = subprocess.Popen(["sleep", "3"], stdout=subprocess.PIPE)
    send = procs.start("send", "127.0.0.1", str(port), "--timeout", "20", stdin=cat.stdout)
    time.sleep(1.0)
    send.send_signal(signal.SIGUSR1)
    recv.send_signal(signal.SIGUSR1)
    assert send.wait(timeout=30) == 0 and recv.wait(timeout=30) == 0
    cat.wait()
    assert send.stderr is not None and recv.stderr is not None
    assert b'"role": "send"' in send.stderr.read()
    assert b'"role": "recv"' in recv.stderr.read()
