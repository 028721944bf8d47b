"""alf as a person runs it: in a terminal (a pseudo-terminal here), with default options,
asserting what the screen shows at the end. No --no-progress: the progress display is on, as
it is for anyone who types the README's commands."""

from __future__ import annotations

import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any

import pytest
from conftest import ALF, random_file, sha256_file, wait_listening, wait_listening_tcp

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
CSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def render(raw: bytes, cols: int) -> list[str]:
    """The lines a terminal shows for ``raw``, a wrapped line kept whole: carriage return,
    newline and erase-to-end-of-line are the only controls alf writes (any other escape
    sequence fails), and a carriage return after a wrap fails too (the redraw would leave the
    wrapped part behind: alf's live line must fit the width)."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    wrapped = False  # this line ran past the edge: a carriage return can no longer redraw it
    i = 0
    while i < len(raw):
        m = CSI.match(raw, i)
        if m:
            assert m.group() == b"\x1b[K", f"unexpected escape sequence {m.group()!r}"
            del line[col:]
            i = m.end()
            continue
        ch = chr(raw[i])
        i += 1
        if ch == "\r":
            assert not wrapped or raw[i : i + 1] == b"\n", f"a redraw after a wrapped line: {lines[-1:]}"
            col = 0
        elif ch == "\n":
            lines.append("".join(line))
            line, col, wrapped = [], 0, False
        else:
            if col >= cols:  # the terminal wraps (the line is kept whole, as one logical line)
                wrapped = True
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    lines.append("".join(line))
    return [x.rstrip() for x in lines if x.strip()]


class Terminal:
    """One process with its stderr (and stdout, unless redirected) on a pty of ``cols`` columns."""

    def __init__(self, argv: list[str], cols: int = 100, **kw: Any) -> None:
        self.cols = cols
        master, slave = pty.openpty()
        fcntl_winsize = struct.pack("HHHH", 24, cols, 0, 0)
        import fcntl

        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl_winsize)
        kw.setdefault("stdout", slave)
        kw.setdefault("stdin", subprocess.DEVNULL)
        env = dict(os.environ, COLUMNS=str(cols))
        self.proc = subprocess.Popen(ALF + argv, stderr=slave, env=env, start_new_session=True, **kw)
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the pty
                return
            if not chunk:
                return
            self.raw += chunk

    def wait(self, timeout: float = 60) -> tuple[int, list[str]]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        os.close(self.master)
        return code, render(bytes(self.raw), self.cols)

    def screen(self) -> list[str]:
        return render(bytes(self.raw), self.cols)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def terminals() -> Any:
    started: list[Terminal] = []

    def start(argv: list[str], **kw: Any) -> Terminal:
        t = Terminal(argv, **kw)
        started.append(t)
        return t

    try:
        yield start
    finally:
        for t in started:
            t.kill()


def _no_traceback(screen: list[str]) -> None:
    assert not any("Traceback" in line for line in screen), "\n".join(screen)


def _settle(t: Terminal) -> None:
    """Let the receiver draw its waiting line a few times first (it crashed doing so once)."""
    time.sleep(0.8)
    assert t.proc.poll() is None, "\n".join(t.screen())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_file_defaults_in_a_terminal(terminals: Any, port: int, tmp_path: Any, transport: str) -> None:
    """The README's file form, typed in two terminals. The receiver keeps every default; the
    sender names the transport only for TCP (auto would pick UDP on loopback)."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=3)
    dst = os.path.join(tmp_path, "got.bin")
    recv = terminals(["recv", str(port), "-o", "got.bin"], cwd=tmp_path)
    wait_listening(port)
    wait_listening_tcp(port)
    _settle(recv)
    assert recv.screen()[-1].startswith("alf recv: waiting for a sender")
    extra = ["--transport", "tcp"] if transport == "tcp" else []
    send = terminals(["send", "127.0.0.1", str(port), src, *extra], cwd=tmp_path)
    scode, sscreen = send.wait()
    rcode, rscreen = recv.wait()
    _no_traceback(sscreen + rscreen)
    assert (scode, rcode) == (0, 0), (sscreen, rscreen)
    assert sha256_file(src) == sha256_file(dst)
    over = " over TCP" if transport == "tcp" else ""
    assert re.fullmatch(
        rf"alf send: sent 2\.9 MiB in [0-9.]+ s \([0-9.]+ [MG]bit/s\){over}.*; "
        r"verified by the receiver \(xxh3-128\)",
        sscreen[-1],
    ), sscreen
    assert re.fullmatch(
        rf"alf recv: received 2\.9 MiB into got\.bin in [0-9.]+ s \([0-9.]+ [MG]bit/s\){over}.*; "
        r"verified \(xxh3-128\)",
        rscreen[-1],
    ), rscreen
    if transport == "udp":
        assert not any("TCP" in line for line in sscreen + rscreen)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_pipe_defaults_in_a_terminal(terminals: Any, port: int, tmp_path: Any, transport: str) -> None:
    """`alf recv PORT > out.bin` and `cat in.bin | alf send HOST PORT`: stdout and stdin are
    redirected, stderr is the terminal."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=4)
    dst = os.path.join(tmp_path, "out.bin")
    with open(dst, "wb") as out:
        recv = terminals(["recv", str(port)], stdout=out)
    wait_listening(port)
    _settle(recv)
    extra = ["--transport", "tcp"] if transport == "tcp" else []
    with open(src, "rb") as inp:
        send = terminals(["send", "127.0.0.1", str(port), *extra], stdin=inp)
    scode, sscreen = send.wait()
    rcode, rscreen = recv.wait()
    _no_traceback(sscreen + rscreen)
    assert (scode, rcode) == (0, 0), (sscreen, rscreen)
    assert sha256_file(src) == sha256_file(dst)
    assert sscreen[-1].startswith("alf send: sent 1.9 MiB in ") and sscreen[-1].endswith(
        "verified by the receiver (xxh3-128)"
    ), sscreen
    assert rscreen[-1].startswith("alf recv: received 1.9 MiB in ") and rscreen[-1].endswith(
        "verified (xxh3-128)"
    ), rscreen


def test_progress_line_is_redrawn_and_messages_go_above(terminals: Any, port: int, tmp_path: Any) -> None:
    """A slow transfer: the live line shows payload of total, percent, rate, elapsed and ETA;
    it never wraps on a narrow terminal (``render`` fails on a redraw after a wrap), and the
    summary replaces it."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 6_000_000, seed=5)
    dst = os.path.join(tmp_path, "got.bin")
    recv = terminals(["recv", str(port), "-o", dst], cols=72)
    wait_listening(port)
    send = terminals(["send", "127.0.0.1", str(port), src, "--cc", "fixed", "--rate", "24M"], cols=72)
    shape = r"alf send: +[0-9.]+ MiB / 5\.7 MiB +[0-9]+%  [0-9.]+ Mbit/s  0:0[0-9]  ETA 0:0[0-9]$"
    deadline = time.monotonic() + 10
    seen = []
    while time.monotonic() < deadline and send.proc.poll() is None:
        time.sleep(0.3)
        seen.append(send.screen()[-1] if send.screen() else "")
        if re.match(shape, seen[-1]):
            break
    assert re.match(shape, seen[-1]), seen
    scode, sscreen = send.wait()
    rcode, rscreen = recv.wait()
    assert (scode, rcode) == (0, 0)
    assert "verified" in sscreen[-1] and "verified" in rscreen[-1]
    assert sum("verified" in line for line in sscreen) == 1  # the live line is gone, not duplicated


def test_plot_stats_on_every_stats_file(procs: Any, port: int, tmp_path: Any) -> None:
    """tools/plot_stats.py reads a receiver's stats file that begins before its sender came
    (lines with only the common keys), a sender's, over UDP and over TCP; and every key in
    them is documented."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 2_000_000, seed=6)
    files = []
    for transport in ("udp", "tcp"):
        rstats = os.path.join(tmp_path, f"r-{transport}.json")
        sstats = os.path.join(tmp_path, f"s-{transport}.json")
        recv = procs.start(
            "recv", str(port), "-o", os.path.join(tmp_path, f"out-{transport}"), "--stats-json", rstats,
            "--stats-interval", "0.1",
        )  # fmt: skip
        wait_listening_tcp(port)
        time.sleep(0.5)
        send = procs.run(
            "send", "127.0.0.1", str(port), src, "--transport", transport, "--stats-json", sstats,
            "--stats-interval", "0.1",
        )  # fmt: skip
        assert send.returncode == 0 and recv.wait(timeout=30) == 0, send.stderr
        files += [rstats, sstats]
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "usage.md")) as f:
        usage = f.read()
    section = usage[usage.index("## Statistics") : usage.index("## TCP")]
    documented = set(re.findall(r"`([a-z_A-Z]+)`", section))
    for path in files:
        with open(path) as f:
            keys = {k for line in f for k in json.loads(line)}
        assert keys - documented == set(), f"{path}: keys missing from docs/usage.md's Statistics"
        png = path + ".png"
        plot = subprocess.run(
            [sys.executable, os.path.join(TOOLS, "plot_stats.py"), path, "-o", png], capture_output=True
        )
        assert plot.returncode == 0, plot.stderr
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
