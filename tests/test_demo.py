"""``alf demo``: the loopback part as a user runs it, its explanation of the counts, the WAN
part's skip line where the lab cannot be made, and (lab) the WAN part itself and its cleanup."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ALF, Procs
from lossynet import namespaces_available
from lossynet.netns import our_namespaces

from alf.demo import _why_counts_differ, alf_transfer, free_udp_port, random_file, run_demo
from alf.sender import CLOSE_COPIES

WHY = namespaces_available()
needs_lab = pytest.mark.skipif(WHY is not None, reason=f"lab: {WHY}")

COUNTS = re.compile(r"receiver dropped (\d+) datagrams on purpose, sent \d+ NAKs; sender repaired (\d+) ADUs")
SPLIT = re.compile(r"(\d+) were DATA, .*?(?:; (\d+) (?:was a|were) HELLO, PROBE or CLOSE|\))")


def _lines(err: bytes | str) -> list[str]:
    text = err.decode() if isinstance(err, bytes) else err
    return [line for line in text.splitlines() if line.startswith("alf demo:")]


@pytest.mark.parametrize("pipe", [False, True], ids=["file", "pipe"])
def test_loopback_says_how_and_why_the_counts_differ(procs: Procs, pipe: bool) -> None:
    r = procs.run("demo", "--size", "4M", "--no-wan", *(["--pipe"] if pipe else []), timeout=120)
    assert r.returncode == 0, r.stderr
    lines = _lines(r.stderr)
    how = "through a pipe (stream mode)" if pipe else "as a file"
    assert f"random bytes {how} over 127.0.0.1:" in lines[0]
    assert lines[-1] == "alf demo: sha256 identical; PASS"
    assert not [line for line in lines if "WAN" in line]
    counts = COUNTS.search(r.stderr.decode())
    split = SPLIT.search(r.stderr.decode())
    assert counts and split, lines
    dropped, repaired = int(counts[1]), int(counts[2])
    data, control = int(split[1]), int(split[2] or 0)
    assert data + control == dropped  # every drop is one or the other
    assert data <= repaired  # every dropped DATA was sent again (more: duplicates, if any)


def test_the_drops_that_are_not_data_were_control(tmp_path: os.PathLike[str]) -> None:
    """The demo's reading of the counters, checked against what the sender sent: the drops that
    were not DATA are no more than its HELLOs, PROBEs and CLOSEs."""
    tmp = str(tmp_path)
    src = random_file(os.path.join(tmp, "input.bin"), 4 << 20, seed=3)
    port = str(free_udp_port())
    t = alf_transfer(
        src,
        tmp,
        False,
        [port, "--bind", "127.0.0.1", "--timeout", "30", "--drop", "0.2", "--seed", "7"],
        ["127.0.0.1", port, "--timeout", "30"],
        limit_s=120,
    )
    assert t.ok
    r, s = t.recv_stats, t.send_stats
    assert r["socket_overflows"] == 0
    data = s["adus_new"] + s["adus_repair"] - r["adus_received"] - r["duplicates"] - r["beyond_window"]
    control = r["dropped_injected"] - data
    assert 0 <= control <= s["hellos_sent"] + s["probes_sent"] + CLOSE_COPIES, (r, s)
    assert f"{data} were DATA" in _why_counts_differ(r, s)


def test_the_split_adds_up_from_the_counters() -> None:
    """A run like the issue's: 2544 dropped, 2537 repaired; the 7 others were control."""
    r = {"dropped_injected": 2544, "adus_received": 46996, "duplicates": 0, "beyond_window": 0}
    s = {"adus_new": 46996, "adus_repair": 2537}
    text = _why_counts_differ({**r, "socket_overflows": 0}, s)
    assert "2537 were DATA" in text and "7 were HELLO, PROBE or CLOSE" in text
    one = _why_counts_differ({**r, "dropped_injected": 2538, "socket_overflows": 0}, s)
    assert "1 was a HELLO, PROBE or CLOSE" in one
    # kernel losses on top: the split cannot be told, so the general reason is given
    general = _why_counts_differ({**r, "socket_overflows": 3}, s)
    assert "were DATA" not in general and "need not match" in general


def test_wan_part_skipped_in_one_line_without_root(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # what the lab's detection sees
    assert run_demo(1 << 20, 0.05, 2e9, False, wan=True) == 0  # the loopback part decides
    wan = [line for line in _lines(capfd.readouterr().err) if "WAN" in line]
    assert len(wan) == 1 and wan[0].startswith("alf demo: WAN part skipped: network namespaces need root")
    assert run_demo(1 << 20, 0.05, 2e9, False, wan_only=True) == 1  # asked for, not there
    only = _lines(capfd.readouterr().err)
    assert len(only) == 1 and "WAN part skipped" in only[0]


def test_wan_only_with_no_wan_is_a_usage_error(procs: Procs) -> None:
    r = procs.run("demo", "--wan-only", "--no-wan", timeout=60)
    assert r.returncode == 2 and b"leave nothing to run" in r.stderr


@pytest.mark.lab
@needs_lab
def test_wan_part_alf_and_tcp_both_verified(procs: Procs) -> None:
    p = procs.start("demo", "--wan-only", "--wan-size", "16M")
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    lines = _lines(err)
    assert "lossy-net 'intercontinental'" in lines[0] and "16777216 random bytes as a file" in lines[0]
    assert re.search(
        r"WAN: alf: sender exit 0, receiver exit 0, .* Mbit/s\), .* identical: verified", lines[1]
    )
    assert re.search(r"WAN: TCP: 16777216 of 16777216 bytes in .* Mbit/s\), sha256 identical$", lines[2])
    assert re.search(r"WAN: alf [\d.]+ Mbit/s against one TCP flow's [\d.]+ Mbit/s; PASS$", lines[3])
    assert our_namespaces(p.pid) == []


@pytest.mark.lab
@needs_lab
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_wan_part_leaves_no_namespace_when_interrupted(how: int, tmp_path: Path) -> None:
    # (its files go in tmp_path: a SIGKILL leaves them, and the lab's counters, behind)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen(ALF + ["demo", "--wan-only", "--wan-size", "64M"], stderr=subprocess.PIPE, env=env)
    try:
        assert p.stderr is not None
        line = p.stderr.readline()  # printed once the path is built, before alf starts
        assert b"WAN: a lab path" in line, line
        assert our_namespaces(p.pid) != []
        time.sleep(1.0)  # alf is under way
        p.send_signal(how)
        p.wait(timeout=30)
        deadline = time.monotonic() + 15
        while our_namespaces(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert our_namespaces(p.pid) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr is not None:
            p.stderr.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-rs"]))


def test_demo_runs(procs: Procs) -> None:
    r = procs.run("demo", "--size", "8M", "--no-wan", timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"sha256 identical; PASS" in r.stderr
