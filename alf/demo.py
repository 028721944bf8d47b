"""``alf demo``: real transfers, checked independently.

It runs ``alf recv`` and ``alf send`` as separate processes, exactly as a user would, and
compares the SHA-256 of what went in with what came out itself. First over loopback, with the
receiver dropping a share of what arrives (no root needed). Then, where this process may make
network namespaces (root), across a lossy-net lab path (``intercontinental``: 200 Mbit/s,
200 ms RTT, 0.5% random loss), once with alf and once with one TCP flow carrying the same bytes.
The lab's namespaces always go away (lossynet's guard), whatever ends the demo.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from alf.api import free_port as free_udp_port  # noqa: E402  (the tests and tools import it here)

ALF = [sys.executable, "-m", "alf"]
WAN_PROFILE = "intercontinental"
WAN_PORT = 9000
WAN_ALF_LIMIT_S = 60.0  # bounds on each lab transfer: the demo stays short whatever the path does
WAN_TCP_LIMIT_S = 30.0  # a loss-based TCP (CUBIC) crawls here: it gets this long, then is stopped

Starter = Callable[..., "subprocess.Popen[bytes]"]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: str, size: int, seed: int | None = None) -> str:
    """Write ``size`` incompressible bytes to ``path``: reproducible with a ``seed``."""
    rng = None if seed is None else random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n) if rng is None else rng.randbytes(n))
            left -= n
    return path


def _last_stats(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        return dict(json.loads(lines[-1])) if lines else {}
    except (OSError, ValueError):
        return {}


def _say(text: str) -> None:
    print(f"alf demo: {text}", file=sys.stderr, flush=True)


def _wait(p: subprocess.Popen[Any], timeout: float) -> int | None:
    """``p``'s exit status, or None when it had to be killed after ``timeout``."""
    try:
        return p.wait(timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


@dataclass(frozen=True)
class Transfer:
    """One alf transfer as the demo saw it."""

    send_code: int | None
    recv_code: int | None
    seconds: float  # from the sender's start to its exit
    same: bool  # the output's SHA-256 is the input's
    recv_stats: dict[str, Any]
    send_stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.send_code == 0 and self.recv_code == 0 and self.same


def alf_transfer(
    src: str,
    tmp: str,
    pipe: bool,
    recv_args: list[str],
    send_args: list[str],
    start_recv: Starter = subprocess.Popen,
    start_send: Starter = subprocess.Popen,
    ready: Callable[[], None] | None = None,
    limit_s: float = 600.0,
) -> Transfer:
    """Run ``alf recv`` (with ``recv_args``) and ``alf send`` (``send_args``: host, port, options)
    on ``src``, through a pipe or as a file; each side is started by its starter (in a namespace
    or not) and ends by ``limit_s`` at the latest."""
    dst = os.path.join(tmp, "output.bin")
    rstats, sstats = os.path.join(tmp, "recv.json"), os.path.join(tmp, "send.json")
    recv_cmd = ALF + ["recv", *recv_args, "--stats-json", rstats, "--no-progress"]
    send_cmd = ALF + ["send", *send_args, "--stats-json", sstats, "--no-progress"]
    started = time.monotonic()
    with open(dst, "wb") as out:
        receiver = start_recv(
            recv_cmd + ([] if pipe else ["-o", dst, "--force"]),
            stdout=out if pipe else subprocess.DEVNULL,
        )
    sender: subprocess.Popen[bytes] | None = None
    try:
        if ready is not None:
            ready()
            started = time.monotonic()
        inp: IO[bytes] | int = open(src, "rb") if pipe else subprocess.DEVNULL
        try:
            sender = start_send(send_cmd + ([] if pipe else [src]), stdin=inp)
        finally:
            if not isinstance(inp, int):
                inp.close()
        scode = _wait(sender, limit_s)
        elapsed = time.monotonic() - started
        rcode = _wait(receiver, 60)
    finally:
        for p in (sender, receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    same = os.path.exists(dst) and sha256_file(src) == sha256_file(dst)
    return Transfer(scode, rcode, elapsed, same, _last_stats(rstats), _last_stats(sstats))


def _why_counts_differ(r: dict[str, Any], s: dict[str, Any]) -> str:
    """Why "dropped" and "repaired" need not be equal, in this run's numbers where they add up.

    ``--drop`` drops any datagram the receiver reads, control ones (the sender's HELLO, PROBEs,
    CLOSE) too, and those are repeated on the sender's timers, not repaired; a dropped DATA is
    repaired, and a dropped repair is repaired again. So the sender's repairs are the DATA
    dropped, plus any duplicates (repairs of ADUs that had arrived already) and any ADUs the
    receiver discarded beyond its window."""
    try:
        dropped = int(r["dropped_injected"])
        data = int(s["adus_new"]) + int(s["adus_repair"])
        kept = int(r["adus_received"]) + int(r["duplicates"]) + int(r["beyond_window"])
        clean = int(r["socket_overflows"]) == 0
    except (KeyError, TypeError, ValueError):
        clean = False
    if clean and 0 <= data - kept <= dropped:
        data_dropped, control_dropped = data - kept, dropped - (data - kept)
        text = (
            f"the drop hits every datagram: {data_dropped} were DATA, and each was sent again, "
            "a repair dropped in turn too"
        )
        dup, beyond = int(r["duplicates"]), int(r["beyond_window"])
        if dup:
            text += f"; {dup} repairs met ADUs that had arrived already"
        if beyond:
            text += f"; {beyond} ADUs arrived beyond the receiver's window and were sent again"
        if control_dropped:
            text += (
                f"; {control_dropped} {'was a' if control_dropped == 1 else 'were'} HELLO, PROBE "
                "or CLOSE, which the sender repeats on its timers instead of repairing"
            )
        return text
    return (
        "the drop hits every datagram, and the sender repeats a lost HELLO, PROBE or CLOSE on "
        "its timers instead of repairing it, while a dropped repair is repaired again: the "
        "counts need not match"
    )


def run_loopback(size: int, drop: float, rate: float, pipe: bool) -> bool:
    with tempfile.TemporaryDirectory(prefix="alf-demo-") as tmp:
        src = random_file(os.path.join(tmp, "input.bin"), size)
        port = free_udp_port()
        how = "through a pipe (stream mode)" if pipe else "as a file"
        _say(
            f"sending {size} random bytes {how} over 127.0.0.1:{port}, "
            f"the receiver drops {drop:.0%} of what arrives"
        )
        t = alf_transfer(
            src,
            tmp,
            pipe,
            [str(port), "--bind", "127.0.0.1", "--timeout", "30", "--drop", str(drop), "--seed", "7"],
            ["127.0.0.1", str(port), "--rate", str(rate), "--timeout", "30"],
        )
    r, s = t.recv_stats, t.send_stats
    _say(
        f"sender exit {t.send_code}, receiver exit {t.recv_code}, {t.seconds:.2f} s "
        f"({size * 8 / t.seconds / 1e6:.0f} Mbit/s)"
    )
    _say(
        f"receiver dropped {r.get('dropped_injected')} datagrams on purpose, "
        f"sent {r.get('naks_sent')} NAKs; sender repaired {s.get('adus_repair')} ADUs "
        f"after {s.get('adus_new')} sent once"
    )
    _say(f"({_why_counts_differ(r, s)})")
    _say(f"sha256 {'identical' if t.same else 'DIFFERENT'}; {'PASS' if t.ok else 'FAIL'}")
    return t.ok


def _lossynet(module: str = "") -> Any:
    """The lab (lossy-net/lossynet), imported only when the WAN part runs: plain ``alf demo``
    never loads it, and it lies outside what mypy checks."""
    return importlib.import_module(f"lossynet.{module}" if module else "lossynet")


def wan_unavailable() -> str | None:
    """None when the lab path can be built here, else why not (one short phrase)."""
    try:
        lab = _lossynet()
    except ImportError:
        return "the lab (lossynet) is not installed"
    why = lab.namespaces_available()
    if why is not None:
        return str(why)
    for tool, package in (("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"the lab needs {tool} ({package})"
    if not os.path.exists("/dev/net/tun"):
        return "the lab's delay needs /dev/net/tun"
    return None


@dataclass(frozen=True)
class TcpFlow:
    received: int
    seconds: float
    same: bool
    code: int | None  # the sender's exit status; None: stopped at the limit


def _tcp_flow(lab: Any, pair: Any, src: str, tmp: str, env: dict[str, str]) -> TcpFlow:
    dst = os.path.join(tmp, "tcp-output.bin")
    probe = [sys.executable, "-m", "lossynet.probe"]
    sink = lab.start(
        pair.b,
        probe + ["tcp-sink-file", str(WAN_PORT + 1), dst],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != b"listening":
            raise _lossynet().LabError("the TCP sink did not start")
        started = time.monotonic()
        sender = lab.start(
            pair.a,
            probe + ["tcp-send-file", pair.addr_b(), str(WAN_PORT + 1), src],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        code = _wait(sender, WAN_TCP_LIMIT_S)
        elapsed = time.monotonic() - started
        if code == 0:
            _wait(sink, 10)  # it has read everything and closed: its output is complete
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    received = os.path.getsize(dst) if os.path.exists(dst) else 0
    size = os.path.getsize(src)
    same = received == size and sha256_file(src) == sha256_file(dst)
    return TcpFlow(received, elapsed, same, code)


def run_wan(size: int, pipe: bool) -> bool | None:
    """alf, then one TCP flow, across the lab path: True/False is alf's verdict; None: the lab
    could not be built (the reason is printed)."""
    net, topo = _lossynet(), _lossynet("topology")
    profile = _lossynet("profiles").PROFILES[WAN_PROFILE]
    here = os.path.dirname(os.path.dirname(os.path.abspath(net.__file__)))
    old = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": here + (os.pathsep + old if old else "")}
    with tempfile.TemporaryDirectory(prefix="alf-demo-wan-") as tmp:
        src = random_file(os.path.join(tmp, "input.bin"), size)
        try:
            with net.Lab() as lab:
                pair = topo.Pair(lab, profile.links)
                cc = lab.run(pair.a, "sysctl", "-n", "net.ipv4.tcp_congestion_control", check=False)
                cc_name = cc.stdout.strip() or "unknown"
                how = "through a pipe (stream mode)" if pipe else "as a file"
                _say(
                    f"WAN: a lab path in network namespaces (lossy-net '{WAN_PROFILE}': "
                    f"{profile.text}); {size} random bytes {how}, first with alf, then with one "
                    f"TCP flow (congestion control {cc_name}, the system's default)"
                )
                port = str(WAN_PORT)
                t = alf_transfer(
                    src,
                    tmp,
                    pipe,
                    [port, "--timeout", "30"],
                    [pair.addr_b(), port, "--transport", "udp", "--timeout", "30"],
                    start_recv=lambda argv, **kw: lab.start(pair.b, argv, **kw),
                    start_send=lambda argv, **kw: lab.start(pair.a, argv, **kw),
                    ready=lambda: topo.wait_port(lab, pair.b, WAN_PORT),
                    limit_s=WAN_ALF_LIMIT_S,
                )
                alf_mbps = size * 8 / t.seconds / 1e6
                _say(
                    f"WAN: alf: sender exit {t.send_code}, receiver exit {t.recv_code}, "
                    f"{t.seconds:.2f} s ({alf_mbps:.1f} Mbit/s), repaired "
                    f"{t.send_stats.get('adus_repair')} ADUs after {t.send_stats.get('adus_new')} "
                    f"sent once; sha256 {'identical' if t.same else 'DIFFERENT'}: "
                    f"{'verified' if t.ok else 'NOT verified'}"
                )
                os.unlink(os.path.join(tmp, "output.bin"))  # room for TCP's copy
                f = _tcp_flow(lab, pair, src, tmp, env)
        except net.LabError as e:
            _say(f"WAN part could not run: {e}")
            return None
    tcp_mbps = f.received * 8 / f.seconds / 1e6
    if f.code == 0:
        ended = f"sha256 {'identical' if f.same else 'DIFFERENT'}"
    elif f.code is None:
        ended = f"stopped at the demo's {WAN_TCP_LIMIT_S:.0f} s limit, incomplete"
    else:
        ended = f"the TCP sender failed (exit {f.code})"
    _say(f"WAN: TCP: {f.received} of {size} bytes in {f.seconds:.2f} s ({tcp_mbps:.1f} Mbit/s), {ended}")
    if t.ok and tcp_mbps > 0:
        _say(f"WAN: alf {alf_mbps:.1f} Mbit/s against one TCP flow's {tcp_mbps:.1f} Mbit/s; PASS")
    else:
        _say(f"WAN: alf {'verified' if t.ok else 'NOT verified'}; {'PASS' if t.ok else 'FAIL'}")
    return t.ok


def run_demo(
    size: int,
    drop: float,
    rate: float,
    pipe: bool,
    wan: bool = False,
    wan_only: bool = False,
    wan_size: int = 96 << 20,
) -> int:
    """0 when every alf transfer that ran was verified; with ``wan_only``, a lab that cannot be
    built is a failure, otherwise it is skipped with one line saying why."""
    ok = True
    if not wan_only:
        ok = run_loopback(size, drop, rate, pipe)
    if wan or wan_only:
        why = wan_unavailable()
        verdict: bool | None = None
        if why is not None:
            _say(
                f"WAN part skipped: {why} (it races alf against one TCP flow on a lossy lab "
                "path with 200 ms RTT; --no-wan skips it quietly)"
            )
        else:
            verdict = run_wan(wan_size, pipe)
        if verdict is None:
            ok = ok and not wan_only
        else:
            ok = ok and verdict
    return 0 if ok else 1
