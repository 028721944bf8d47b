#!/usr/bin/env python3
"""Side-by-side loopback benchmark: alf against netcat, socat, iperf3, uftp and udpcast.

    python tools/bench.py --size 1G --runs 5 --json docs/bench.json
    python tools/bench.py --only "alf file --drop" --runs 4 --against /tmp/base   # A/B

Every tool moves the same file over 127.0.0.1. For each configuration it reports the median
wall-clock throughput (from the sender's start until both ends have exited), CPU seconds and
peak RSS of each side (from the kernel's rusage of each process tree, via wait4), and whether
the output is byte-identical to the input (hashed independently here; for alf's pipe mode,
whose output goes to /dev/null, alf's own end-to-end verification and its exit status).

The other tools are Debian packages: apt-get install netcat-openbsd socat iperf3 uftp udpcast.
A tool that is missing is reported and skipped. Sends go only to 127.0.0.1. Every row chosen
runs once in turn, then again (``--runs`` rounds, each starting one row further on), so alf
and each peer meet the same host. ``--only`` takes name prefixes, or ``=NAME`` for one row,
separated by commas (a comma and a space belong to a name: "alf file, defaults").

``--against TREE`` (another checkout of alf, e.g. ``git worktree add /tmp/base HEAD~3``) runs
each alf row alternately with this tree and that one, run by run, and reports both: this
machine's speed moves by 20% between phases, so only alternating runs compare code.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import platform
import pty
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import xxhash

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from alf.demo import free_udp_port as free_port  # noqa: E402
from alf.demo import random_file  # noqa: E402

PACKAGES = {
    "nc": "netcat-openbsd",
    "socat": "socat",
    "iperf3": "iperf3",
    "uftp": "uftp",
    "uftpd": "uftp",
    "udp-sender": "udpcast",
    "udp-receiver": "udpcast",
    "/usr/bin/time": "time",
}


@dataclass
class Config:
    name: str
    receiver: str  # shell command; {port} {out} {outdir} {inp} are filled in
    sender: str
    output: str  # "file": compare {out}; "dir": compare {outdir}/<name of input>; "none": exit codes
    needs: tuple[str, ...]
    settle: float = 0.4  # seconds between starting the receiver and the sender
    terminal: bool = False  # each side's stderr is a pty (drained here): alf draws its progress line


def configs(alf: str, rate: str) -> list[Config]:
    a = alf
    return [
        Config(
            "alf file",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --cc fixed --rate {rate} --timeout 30",
            "file",
            (),
        ),
        Config(
            "alf file, defaults (--cc adaptive)",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --timeout 30",
            "file",
            (),
        ),
        Config(
            "alf defaults --drop 0.01",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30 --drop 0.01",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --timeout 30",
            "file",
            (),
        ),
        Config(
            "alf defaults pipe (> /dev/null)",
            f"{a} recv {{port}} --bind 127.0.0.1 --timeout 30 > /dev/null",
            f"cat {{inp}} | {a} send 127.0.0.1 {{port}} --timeout 30",
            "none",
            (),
        ),
        Config(
            "alf file --drop 0.01",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30 --drop 0.01",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --cc fixed --rate {rate} --timeout 30",
            "file",
            (),
        ),
        Config(
            "alf pipe (> /dev/null)",
            f"{a} recv {{port}} --bind 127.0.0.1 --timeout 30 > /dev/null",
            f"cat {{inp}} | {a} send 127.0.0.1 {{port}} --cc fixed --rate {rate} --timeout 30",
            "none",
            (),
        ),
        Config(
            "alf file --no-gso",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30 --no-gso",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --cc fixed --rate 1G --timeout 30 --no-gso",
            "file",
            (),
        ),
        Config(
            "alf tcp file",
            f"{a} recv {{port}} --bind 127.0.0.1 -o {{out}} --force --timeout 30 --transport tcp",
            f"{a} send 127.0.0.1 {{port}} {{inp}} --timeout 30 --transport tcp",
            "file",
            (),
        ),
        Config(
            "alf tcp pipe (> /dev/null)",
            f"{a} recv {{port}} --bind 127.0.0.1 --timeout 30 --transport tcp > /dev/null",
            f"cat {{inp}} | {a} send 127.0.0.1 {{port}} --timeout 30 --transport tcp",
            "none",
            (),
        ),
        Config(
            "netcat pipe (> /dev/null)",
            "nc -l 127.0.0.1 {port} > /dev/null",
            "cat {inp} | nc -N 127.0.0.1 {port}",
            "none",
            ("nc",),
        ),
        Config(
            "netcat (TCP)",
            "nc -l 127.0.0.1 {port} > {out}",
            "nc -N 127.0.0.1 {port} < {inp}",
            "file",
            ("nc",),
        ),
        Config(
            # the peers' rows below are each peer's best in tools/peer_search.py's search
            # (docs/performance.md, "The peers' knobs, searched"): socat's -b 131072
            "socat (TCP)",
            "socat -b 131072 -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr OPEN:{out},creat,trunc",
            "socat -b 131072 -u OPEN:{inp} TCP:127.0.0.1:{port}",
            "file",
            ("socat",),
        ),
        Config(
            "socat pipe (> /dev/null)",
            "socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr - > /dev/null",
            "cat {inp} | socat -u - TCP:127.0.0.1:{port}",
            "none",
            ("socat",),
        ),
        Config(
            "iperf3 (TCP, memory only)",
            "iperf3 -s -1 -B 127.0.0.1 -p {port}",
            "iperf3 -c 127.0.0.1 -p {port} -n {size} -l 1M",
            "none",
            ("iperf3",),
            settle=0.8,
        ),
        Config(
            "uftp 1300 B blocks",
            "exec uftpd -d -D {outdir} -p {port} -B 4194304 -x 0",
            "uftp -M 127.0.0.1 -P 127.0.0.1 -p {port} -b 1300 -B 4194304 -R -1 -x 0 {inp}",
            "dir",
            ("uftp", "uftpd"),
        ),
        Config(
            "uftp 8800 B blocks",
            "exec uftpd -d -D {outdir} -p {port} -B 4194304 -x 0",
            "uftp -M 127.0.0.1 -P 127.0.0.1 -p {port} -b 8800 -B 4194304 -R -1 -x 0 {inp}",
            "dir",
            ("uftp", "uftpd"),
        ),
        Config(
            # its best in the search: short announce timers and a GRTT of 1 ms (at most 10), so
            # neither the handshake nor the end waits out its default 0.5 s GRTT
            "uftp 8800 B blocks, 1 ms GRTT",
            "exec uftpd -d -D {outdir} -p {port} -B 4194304 -x 0",
            "uftp -M 127.0.0.1 -P 127.0.0.1 -p {port} -b 8800 -B 4194304 -R -1 -x 0 -s 10 "
            "-r 0.001:0.001:0.01 {inp}",
            "dir",
            ("uftp", "uftpd"),
        ),
        Config(
            "udpcast (point to point, 8192 B blocks, full duplex)",
            "udp-receiver --file {out} --interface lo --portbase {port} --nokbd",
            "udp-sender --file {inp} --interface lo --portbase {port} --nokbd --min-receivers 1 "
            "--pointopoint --blocksize 8192 --full-duplex",
            "file",
            ("udp-sender", "udp-receiver"),
        ),
    ]


def file_hash(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def timed(cmd: str, stats: str) -> str:
    """Run ``cmd`` under GNU time, which reports CPU and peak RSS of the whole command tree (a
    fork straight from this Python process would count its pages as the child's peak RSS)."""
    return f"exec /usr/bin/time -f '%e %U %S %M' -o {shlex.quote(stats)} sh -c {shlex.quote(cmd)}"


def wait(p: subprocess.Popen[bytes], stats: str, deadline: float) -> tuple[int, float, int]:
    """(exit status, CPU seconds, peak RSS bytes) of a timed command, -9 on timeout.

    A blocking wait, with a timer to kill at the deadline: ``Popen.wait(timeout=...)`` polls,
    sleeping up to 50 ms between looks, and every wall time came out up to 50 ms long (the
    2026-11-30 tables: the runs fell on steps 50 ms apart)."""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        os.killpg(p.pid, 9)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
    timer.start()
    try:
        code = p.wait()
    finally:
        timer.cancel()
    if expired.is_set():
        return -9, 0.0, 0
    try:
        with open(stats) as f:
            lines = f.read().split("\n")
        _e, user, system, rss_k = next(ln for ln in lines if ln and ln[0].isdigit()).split()
        return code, float(user) + float(system), int(rss_k) * 1024
    except (OSError, StopIteration, ValueError):
        return code, 0.0, 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _stderr(cfg: Config) -> int:
    """DEVNULL, or with ``cfg.terminal`` a pty's slave end, its master drained by a thread until
    every writer has gone (as a terminal would read it)."""
    if not cfg.terminal:
        return subprocess.DEVNULL
    master, slave = pty.openpty()

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass
        os.close(master)

    threading.Thread(target=drain, daemon=True).start()
    TERMINALS.append(slave)
    return slave


TERMINALS: list[int] = []  # slave ends handed to this run's processes; closed once they started


def warm(path: str) -> None:
    """Read the input through once more, untimed, before every run of every tool: this VM's
    kernel runs DAMON's proactive reclaim (a ``pageout`` scheme on physical memory), which drops
    page-cache pages that sat idle between runs, and a sender that then faults them back from
    the disk stalls (docs/performance.md, "This machine pages out what sits idle")."""
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _chosen(name: str, only: str) -> bool:
    """--only: ``only`` names the row exactly (``=NAME``) or starts its name."""
    return name == only[1:] if only.startswith("=") else name.startswith(only)


def run_once(cfg: Config, inp: str, size: int, work: str, timeout: float) -> dict[str, object]:
    warm(inp)
    port = free_port()
    out = os.path.join(work, "out.bin")
    outdir = os.path.join(work, "outdir")
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    if os.path.exists(out):
        os.unlink(out)
    fill = dict(port=port, out=shlex.quote(out), outdir=shlex.quote(outdir), inp=shlex.quote(inp), size=size)
    rcmd, scmd = cfg.receiver.format(**fill), cfg.sender.format(**fill)
    rstats, sstats = os.path.join(work, "recv.time"), os.path.join(work, "send.time")
    devnull = subprocess.DEVNULL
    recv = subprocess.Popen(
        timed(rcmd, rstats), shell=True, stdout=devnull, stderr=_stderr(cfg), start_new_session=True
    )
    time.sleep(cfg.settle)
    t0 = time.monotonic()
    send = subprocess.Popen(
        timed(scmd, sstats), shell=True, stdout=devnull, stderr=_stderr(cfg), start_new_session=True
    )
    while TERMINALS:
        os.close(TERMINALS.pop())
    deadline = t0 + timeout
    s_code, s_cpu, s_rss = wait(send, sstats, deadline)
    if cfg.output == "dir":  # uftpd is a server: stop it once the file is complete
        target = os.path.join(outdir, os.path.basename(inp))
        while time.monotonic() < deadline and not (
            os.path.exists(target) and os.path.getsize(target) == size
        ):
            time.sleep(0.01)
        t_end = time.monotonic()
        for shell in children(recv.pid):  # time -> sh (exec) = uftpd: stop the server, not time
            os.kill(shell, 15)
        r_code, r_cpu, r_rss = wait(recv, rstats, time.monotonic() + 10)
        r_code = 0 if r_code in (0, 143) or r_code > 128 else r_code
    else:
        r_code, r_cpu, r_rss = wait(recv, rstats, deadline)
        t_end = time.monotonic()
    elapsed = t_end - t0
    if cfg.output == "none":
        intact = s_code == 0 and r_code == 0
    else:
        path = out if cfg.output == "file" else os.path.join(outdir, os.path.basename(inp))
        intact = os.path.exists(path) and os.path.getsize(path) == size and file_hash(path) == INPUT_HASH[inp]
    return dict(
        wall_s=round(elapsed, 3),
        GBps=round(size / elapsed / 1e9, 3),
        send_exit=s_code,
        recv_exit=r_code,
        send_cpu_s=round(s_cpu, 2),
        recv_cpu_s=round(r_cpu, 2),
        send_rss_MiB=round(s_rss / 2**20, 1),
        recv_rss_MiB=round(r_rss / 2**20, 1),
        intact=intact,
    )


INPUT_HASH: dict[str, str] = {}


def compile_alf(tree: str) -> None:
    """Byte-compile alf and cc as an installed wheel is: with PYTHONDONTWRITEBYTECODE set (as on
    this machine) an editable checkout is otherwise parsed again by every run, 50 ms a process.
    A tree with a C part (setup.py) gets it built in place, as pip install does, so a worktree
    runs as an install of it would."""
    for pkg in ("alf", "cc"):
        compileall.compile_dir(os.path.join(tree, pkg), quiet=1)
    if os.path.exists(os.path.join(tree, "setup.py")):
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=tree,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def alf_command(tree: str) -> str:
    """Run alf from ``tree``; -P: a cc/ folder in the cwd must not shadow cc."""
    return f"env PYTHONPATH={shlex.quote(tree)} {shlex.quote(sys.executable)} -P -m alf"


def report(name: str, runs: list[dict[str, object]]) -> float:
    med: float = statistics.median(r["GBps"] for r in runs)  # type: ignore[misc]
    best = min(runs, key=lambda r: abs(r["GBps"] - med))  # type: ignore[operator]
    print(
        f"{name:28s} median {med:6.3f} GB/s  send cpu {best['send_cpu_s']:5.2f} s  "
        f"recv cpu {best['recv_cpu_s']:5.2f} s  "
        f"rss {best['send_rss_MiB']}/{best['recv_rss_MiB']} MiB  "
        f"intact {all(r['intact'] for r in runs)}",
        file=sys.stderr,
        flush=True,
    )
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="bytes of random input (K/M/G: powers of 1024)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--rate",
        default="20G",
        help="alf's --rate for the --cc fixed GSO rows (loopback has no link rate: at 10G the pace, "
        "not the data path, bounded the file row)",
    )
    ap.add_argument(
        "--only", default="", help="name prefixes to run, comma-separated (=NAME: only the row of that name)"
    )
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--against", default="", help="another alf checkout: alf rows run alternately with it")
    ap.add_argument(
        "--progress-ab",
        action="store_true",
        help="alf rows run alternately as they are and with --progress, stderr a pty (the display's cost)",
    )
    ap.add_argument(
        "--key-ab",
        action="store_true",
        help="alf's rows run alternately as they are and sealed (--key on both sides, a fresh key); "
        "with --against, the other tree's rows both ways too",
    )
    ap.add_argument(
        "--compress-ab",
        action="store_true",
        help="alf's rows run alternately as they are and with the sender's --compress (the input is "
        "random: what the skip rule costs); with --against, the other tree's rows both ways too",
    )
    args = ap.parse_args()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = int(float(args.size[:-1]) * units[args.size[-1]]) if args.size[-1] in units else int(args.size)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    other = os.path.abspath(args.against) if args.against else ""
    for tree in (here, other):
        if tree:
            compile_alf(tree)
    alf = alf_command(here)
    against = configs(alf_command(other), args.rate) if other else []
    terms = [p.strip() for p in re.split(r",(?! )", args.only)] if args.only else []
    rows_all = configs(alf, args.rate)
    names = [c.name for c in rows_all]
    unmatched = [t for t in terms if not any(_chosen(n, t) for n in names)]
    if unmatched:
        sys.exit(f"--only: no row is named {', or '.join(map(repr, unmatched))} (rows: {'; '.join(names)})")
    work = tempfile.mkdtemp(prefix="alf-bench-")
    inp = os.path.join(work, "input.bin")
    random_file(inp, size)
    INPUT_HASH[inp] = file_hash(inp)  # also warms the page cache for every tool alike
    key = os.path.join(work, "bench.key")
    if args.key_ab:
        fd = os.open(key, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.write(fd, subprocess.run([*shlex.split(alf), "keygen"], capture_output=True, check=True).stdout)
        os.close(fd)
    rows = []
    chosen: list[Config] = []
    try:
        for k, cfg in enumerate(rows_all):
            if args.only and not any(_chosen(cfg.name, p) for p in terms):
                continue
            missing = [t for t in (*cfg.needs, "/usr/bin/time") if shutil.which(t) is None]
            if missing:
                pkgs = sorted({PACKAGES.get(t, t) for t in missing})
                print(
                    f"skip {cfg.name}: {', '.join(missing)} not found (apt-get install {' '.join(pkgs)})",
                    file=sys.stderr,
                )
                continue
            pair = [cfg]
            if against and cfg.name.startswith("alf"):
                pair.append(dataclasses.replace(against[k], name=f"{cfg.name} [against]"))
            if args.key_ab and cfg.name.startswith("alf"):
                sealed = f" --key {shlex.quote(key)}"
                for c in list(pair[: 2 if against else 1]):  # (with --against: both trees, both ways)
                    keyed = dict(receiver=c.receiver + sealed, sender=c.sender + sealed)
                    pair.append(dataclasses.replace(c, name=f"{c.name} [--key]", **keyed))
            if args.compress_ab and cfg.name.startswith("alf"):
                for c in list(pair[: 2 if against else 1]):  # (with --against: both trees, both ways)
                    pair.append(
                        dataclasses.replace(c, name=f"{c.name} [--compress]", sender=c.sender + " --compress")
                    )
            if args.progress_ab and cfg.name.startswith("alf"):
                shown = dict(receiver=cfg.receiver + " --progress", sender=cfg.sender + " --progress")
                pair.append(
                    dataclasses.replace(cfg, name=f"{cfg.name} [--progress, pty]", terminal=True, **shown)
                )
            chosen.extend(pair)
        # every row alternately, run by run: a drift of the host spreads over alf and its peers
        # alike (a peer's runs all after alf's would meet another host)
        results: list[list[dict[str, object]]] = [[] for _ in chosen]
        pairs = list(zip(chosen, results, strict=True))
        for k in range(args.runs):
            # Each round starts one row further on: a row that always ran first (or right after
            # a given other) took that place's share of the host's noise every time (a row run
            # twice, the same command, medians 1.014 and 1.390 in one sitting).
            turn = k % len(pairs) if pairs else 0
            for c, runs in pairs[turn:] + pairs[:turn]:
                runs.append(run_once(c, inp, size, work, args.timeout))
        for c, runs in zip(chosen, results, strict=True):
            med = report(c.name, runs)
            rows.append(dict(name=c.name, median_GBps=med, runs=runs, receiver=c.receiver, sender=c.sender))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = dict(
        date=time.strftime("%Y-%m-%d"),
        size_bytes=size,
        runs=args.runs,
        alf_rate=args.rate,
        against=other,
        machine=f"{platform.machine()}, {os.cpu_count()} cpus, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        rows=rows,
    )
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
