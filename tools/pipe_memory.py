#!/usr/bin/env python3
"""Pipe-mode memory benchmark: stream N bytes through `alf send` | `alf recv` with loss, and
report each side's peak RSS against its configured window.

    python tools/pipe_memory.py --size 4G --drop 0.02 --window 256M --rate 1.5G
    python tools/pipe_memory.py --size 1G --window 64M --consumer-rate 40M   # a slow consumer

The producer writes a deterministic, non-repeating stream into the sender's stdin and hashes
it; a consumer hashes the receiver's stdout. Peak RSS comes from the kernel's rusage of each
process (wait4), so it is the true high-water mark. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from alf.demo import free_udp_port  # noqa: E402
from alf.units import parse_size  # noqa: E402


def produce(fd: int, size: int, digest: list[str]) -> None:
    block = bytearray(os.urandom(1 << 20))
    h = hashlib.sha256()
    left, counter = size, 0
    with os.fdopen(fd, "wb", buffering=0) as out:
        while left:
            block[:8] = counter.to_bytes(8, "big")  # no two blocks alike
            n = min(left, len(block))
            chunk = bytes(block[:n])
            h.update(chunk)
            out.write(chunk)
            left -= n
            counter += 1
    digest.append(h.hexdigest())


def consume(fd: int, result: list[object], rate_Bps: float) -> None:
    """Hash the receiver's stdout, reading no faster than ``rate_Bps`` (0: as fast as it can)."""
    h = hashlib.sha256()
    total = 0
    start = time.monotonic()
    with os.fdopen(fd, "rb", buffering=0) as inp:
        while chunk := inp.read(1 << 20):
            h.update(chunk)
            total += len(chunk)
            if rate_Bps:
                ahead = total / rate_Bps - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    result.extend([h.hexdigest(), total])


def wait_rusage(p: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of a child, via wait4."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, usage.ru_maxrss * 1024
        time.sleep(0.05)
    p.kill()
    _pid, status, usage = os.wait4(p.pid, 0)
    return -9, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--drop", type=float, default=0.02)
    ap.add_argument("--window", default="256M")
    ap.add_argument("--rate", default="1.5G", help="the sender's fixed rate (--cc fixed)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--consumer-rate", default="0", help="bytes/s the stdout consumer reads at (0: unlimited)"
    )
    args = ap.parse_args()
    size = parse_size(args.size)
    window = parse_size(args.window)
    port = free_udp_port()
    alf = [sys.executable, "-m", "alf"]
    r_out, r_in = os.pipe()
    recv = subprocess.Popen(
        alf
        + [
            "recv",
            str(port),
            "--bind",
            "127.0.0.1",
            "--window",
            args.window,
            "--drop",
            str(args.drop),
            "--timeout",
            "60",
            "-v",
        ],
        stdout=r_in,
        stderr=subprocess.PIPE,
    )
    os.close(r_in)
    consumed: list[object] = []
    consumer_rate = float(parse_size(args.consumer_rate)) if args.consumer_rate != "0" else 0.0
    ct = threading.Thread(target=consume, args=(r_out, consumed, consumer_rate))
    ct.start()
    time.sleep(0.3)
    s_out, s_in = os.pipe()
    send = subprocess.Popen(
        alf
        + [
            "send",
            "127.0.0.1",
            str(port),
            "--window",
            args.window,
            "--cc",
            "fixed",
            "--rate",
            args.rate,
            "--timeout",
            "60",
            "-v",
        ],
        stdin=s_out,
        stderr=subprocess.PIPE,
    )
    os.close(s_out)
    produced: list[str] = []
    pt = threading.Thread(target=produce, args=(s_in, size, produced))
    t0 = time.monotonic()
    pt.start()
    scode, srss = wait_rusage(send, args.timeout)
    rcode, rrss = wait_rusage(recv, 120)
    elapsed = time.monotonic() - t0
    pt.join(timeout=10)
    ct.join(timeout=10)
    serr = send.stderr.read().decode() if send.stderr else ""
    rerr = recv.stderr.read().decode() if recv.stderr else ""

    def final(err: str) -> dict[str, object]:
        for line in reversed(err.splitlines()):
            if line.startswith("alf ") and '"final": true' in line:
                return dict(json.loads(line.split(": ", 1)[1]))
        return {}

    rs = final(rerr)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "size_bytes": size,
        "drop": args.drop,
        "window_bytes": window,
        "rate": args.rate,
        "consumer_rate_Bps": consumer_rate,
        "elapsed_s": round(elapsed, 2),
        "throughput_MBps": round(size / elapsed / 1e6, 1),
        "sender_exit": scode,
        "receiver_exit": rcode,
        "sender_peak_rss_MiB": round(srss / 2**20, 1),
        "receiver_peak_rss_MiB": round(rrss / 2**20, 1),
        "limit_MiB": round((window + 100 * 2**20) / 2**20, 1),
        "verified": bool(produced and consumed and produced[0] == consumed[0] and consumed[1] == size),
        "receiver_dropped_injected": rs.get("dropped_injected"),
        "receiver_naks_sent": rs.get("naks_sent"),
    }
    result["within_limit"] = max(srss, rrss) <= window + 100 * 2**20
    print(json.dumps(result, indent=2))
    if scode or rcode:
        print(serr[-2000:], rerr[-2000:], file=sys.stderr)
    ok = result["verified"] and result["within_limit"] and scode == 0 and rcode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
