"""The public Python API (docs/api.md): its examples run, it talks to the CLI both ways, and
two transfers share one process without interfering."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from conftest import Procs, random_file, sha256_file, wait_listening, wait_listening_tcp

import alf

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "api.md")


def _examples() -> list[str]:
    with open(DOCS) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text[text.index("## Examples") :], re.S)


@pytest.mark.parametrize("number", range(len(_examples())))
def test_the_examples_in_docs_api_run(number: int, tmp_path: Any) -> None:
    script = os.path.join(tmp_path, f"example{number}.py")
    with open(script, "w") as f:
        f.write(_examples()[number])
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_api_sends_and_the_cli_receives(procs: Procs, port: int, tmp_path: Any) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=41)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "-o", dst, "--timeout", "20")
    wait_listening(port)
    wait_listening_tcp(port)
    result = alf.send("127.0.0.1", port, src, timeout=20)
    assert result.ok and result.exit_code == 0, result.message
    assert result.stats["role"] == "send" and result.stats["bytes_sent"] == 2_000_000
    assert "began" not in result.stats and result.stats["transfer_s"] > 0  # the documented schema
    assert recv.wait(timeout=20) == 0
    assert sha256_file(dst) == sha256_file(src)


def test_the_cli_sends_and_the_api_receives(procs: Procs, port: int, tmp_path: Any) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=42)
    dst = os.path.join(tmp_path, "out.bin")
    seen: list[dict[str, Any]] = []
    got: list[alf.Result] = []
    t = threading.Thread(target=lambda: got.append(alf.receive(port, dst, timeout=20, progress=seen.append)))
    t.start()
    wait_listening(port)
    wait_listening_tcp(port)
    send = procs.run("send", "127.0.0.1", str(port), src, "--transport", "tcp", "--timeout", "20")
    t.join(timeout=30)
    assert send.returncode == 0, send.stderr
    assert got and got[0].ok, got
    assert got[0].stats["transport"] == "tcp" and got[0].stats["bytes_received"] == 2_000_000
    assert seen and seen[-1]["bytes_received"] == 2_000_000  # progress= got the last statistics
    assert sha256_file(dst) == sha256_file(src)


def test_two_transfers_at_once_in_one_process(tmp_path: Any) -> None:
    """Two receivers and two senders, four threads of this process, UDP and TCP."""
    pairs = []
    for n, transport in enumerate(("udp", "tcp")):
        src = random_file(os.path.join(tmp_path, f"in{n}.bin"), 3_000_000, seed=50 + n)
        pairs.append((src, os.path.join(tmp_path, f"out{n}.bin"), alf.free_port(), transport))
    results: dict[str, alf.Result] = {}

    def run(key: str, call: Any) -> None:
        results[key] = call()

    threads = []
    for n, (_src, dst, port, _t) in enumerate(pairs):
        threads.append(
            threading.Thread(target=run, args=(f"r{n}", lambda d=dst, p=port: alf.receive(p, d, timeout=20)))
        )
    for t in threads:
        t.start()
    for _src, _dst, port, _t in pairs:
        wait_listening(port)
        wait_listening_tcp(port)
    senders = [
        threading.Thread(
            target=run,
            args=(f"s{n}", lambda s=src, p=port, t=tr: alf.send("127.0.0.1", p, s, transport=t, timeout=20)),
        )
        for n, (src, _dst, port, tr) in enumerate(pairs)
    ]
    for t in senders:
        t.start()
    for t in threads + senders:
        t.join(timeout=60)
    assert sorted(results) == ["r0", "r1", "s0", "s1"]
    assert all(r.ok for r in results.values()), {k: r.message for k, r in results.items()}
    assert results["s0"].stats["transport"] == "udp" and results["s1"].stats["transport"] == "tcp"
    for src, dst, _port, _t in pairs:
        assert sha256_file(src) == sha256_file(dst)


def test_cancel_ends_a_transfer_as_an_interrupt_does(tmp_path: Any) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=43)
    port = alf.free_port()
    stop = threading.Event()
    got: list[alf.Result] = []
    t = threading.Thread(
        target=lambda: got.append(alf.receive(port, os.path.join(tmp_path, "o"), timeout=20))
    )
    t.start()
    wait_listening(port)
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    sent = alf.send("127.0.0.1", port, src, cc="fixed", rate="40M", cancel=stop, timeout=20)
    t.join(timeout=30)
    assert sent.exit_code == 130 and not sent.ok and time.monotonic() - t0 < 10
    assert got and got[0].exit_code == 4 and "interrupted" in got[0].message


@pytest.mark.parametrize(
    "call",
    [
        lambda: alf.send("127.0.0.1", 9, "x", transport="carrier-pigeon"),
        lambda: alf.send("127.0.0.1", 9, "x", rate="fast"),
        lambda: alf.send("127.0.0.1", 9, "x", transport="udp", paths=["127.0.0.1:9"]),  # HOST PORT twice
        lambda: alf.send("127.0.0.1", 0, "x"),
        lambda: alf.receive(9, None, window="lots"),
    ],
)
def test_usage_mistakes_raise_before_anything_is_sent(call: Any) -> None:
    with pytest.raises(alf.UsageError):
        call()


def test_a_missing_input_is_a_result_not_an_exception(tmp_path: Any) -> None:
    r = alf.send("127.0.0.1", alf.free_port(), os.path.join(tmp_path, "nope"))
    assert (r.ok, r.exit_code) == (False, 6) and "No such file" in r.message


def test_the_cli_through_clirunner(port: int, tmp_path: Any) -> None:
    """The CLI hands off to the API through one seam: click's CliRunner drives it in-process."""
    from click.testing import CliRunner

    from alf.cli import main

    src = random_file(os.path.join(tmp_path, "in.bin"), 1_000_000, seed=44)
    got: list[alf.Result] = []
    t = threading.Thread(
        target=lambda: got.append(alf.receive(port, os.path.join(tmp_path, "o"), timeout=20))
    )
    t.start()
    wait_listening(port)
    wait_listening_tcp(port)
    r = CliRunner().invoke(main, ["send", f"127.0.0.1:{port}", src, "--timeout", "20"])
    t.join(timeout=30)
    assert r.exit_code == 0, r.output
    assert "verified by the receiver (xxh3-128)" in r.output
    assert got and got[0].ok


def test_file_objects_leave_no_descriptor_behind(tmp_path: Any) -> None:
    """A library call cleans up after itself: two transfers from and into io.BytesIO leave the
    process with the descriptors it had."""
    import io

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    data = os.urandom(300_000)
    before = open_fds()
    for _ in range(2):
        out = io.BytesIO()
        port = alf.free_port()
        t = threading.Thread(target=alf.receive, args=(port, out), kwargs=dict(timeout=10))
        t.start()
        wait_listening(port)
        wait_listening_tcp(port)
        assert alf.send("127.0.0.1", port, io.BytesIO(data), timeout=10).ok
        t.join(timeout=20)
        assert out.getvalue() == data
    assert open_fds() == before


@pytest.mark.parametrize(
    "call, says",
    [
        (lambda: alf.send("127.0.0.1", 9, "/etc/hostname", receivers=3), "receivers: for a multicast"),
        (lambda: alf.send("127.0.0.1", 9, "/etc/hostname", ttl=4), "ttl: for a multicast"),
        (lambda: alf.send("239.1.2.3", 9, "/etc/hostname", transport="tcp"), "UDP only"),
        (lambda: alf.send("239.1.2.3", 9, "/etc/hostname", paths=["10.0.0.1"]), "one path"),
        (lambda: alf.send("239.1.2.3", 9, "/etc/hostname", receivers=2, quorum=3), "quorum must be 1-2"),
        (lambda: alf.send("239.1.2.3", 9, "/etc/hostname", interface="nosuch0"), "no interface named"),
        (lambda: alf.send("ff02::1", 9, "/etc/hostname"), "only IPv4 groups"),
        (lambda: alf.receive(9, "/tmp/x", group="10.0.0.1"), "not an IPv4 multicast"),
        (lambda: alf.receive(9, "/tmp/x", interface="lo"), "for a multicast group"),
        (lambda: alf.receive(9, "/tmp/x", group="239.1.2.3", transport="tcp"), "UDP only"),
    ],
)
def test_multicast_options_are_checked_before_anything_is_sent(call: Any, says: str) -> None:
    """§15: the group options belong to a group destination, and a group to UDP alone; every
    mistake is a usage error (exit 2 on the command line), raised before a socket exists."""
    with pytest.raises(alf.UsageError, match=says):
        call()


def test_the_library_seals_with_a_key_given_as_bytes(tmp_path: Any) -> None:
    """key=: the 32 bytes themselves (or a key file's path); a key of another length is a
    UsageError before anything is sent."""
    key = os.urandom(32)
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=60)
    dst = os.path.join(tmp_path, "out.bin")
    port = alf.free_port()
    got: dict[str, alf.Result] = {}
    t = threading.Thread(target=lambda: got.update(r=alf.receive(port, dst, timeout=20, key=key)))
    t.start()
    wait_listening(port)
    sent = alf.send("127.0.0.1", port, src, timeout=20, key=key)
    t.join(timeout=30)
    assert sent.ok and got["r"].ok, (sent.message, got["r"].message)
    assert sent.stats["sealed"] and got["r"].stats["sealed"]
    assert sha256_file(src) == sha256_file(dst)
    with pytest.raises(alf.UsageError, match="a key is 32 bytes"):
        alf.send("127.0.0.1", port, src, key=b"short")
