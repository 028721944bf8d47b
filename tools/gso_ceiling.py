#!/usr/bin/env python3
"""Python's own ceiling for alf's data path on this machine (issue 21, point 1): a file blasted
over loopback UDP in GSO batches and read in GRO buffers, with no protocol at all (no headers,
pacing, acknowledgement, repair or digest), the receiver writing what arrives in order into a
file (or nowhere). What alf moves per second can only approach this.

    python -P tools/gso_ceiling.py --size 1G --runs 5              # output into a file
    python -P tools/gso_ceiling.py --size 1G --runs 5 --output null

Each run: the input is read through first (as tools/bench.py does), a receiver process and a
sender process start, the wall time runs from the sender's start to the last datagram's
arrival (so it leaves out what alf's figures include: process exit, the closing check), and
each side's CPU comes from wait4. A datagram the receiver's socket had no room for is lost, and
counted: there is nothing to resend it. Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, random_file, warm  # noqa: E402

SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
SEGMENT = 1452  # bytes per datagram: alf's default ADU payload and header on a 1500-byte MTU
BATCH = 44  # datagrams per GSO send (63,888 bytes: under the 64 KiB limit)
BUFFER = 32 << 20  # socket buffers, as alf's (forced as root, past net.core.[rw]mem_max)
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux (Python's socket module lacks the names)


def receive(port: int, size: int, out: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    except PermissionError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    s.setsockopt(SOL_UDP, UDP_GRO, 1)
    s.bind(("127.0.0.1", port))
    s.settimeout(30.0)  # (the sender's start) ... then a second of silence: it is done
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if out else -1
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    got = 0
    last = 0.0
    print("ready", flush=True)
    while got < size:
        try:
            n = s.recv_into(buf)
        except TimeoutError:
            break
        if not got:
            s.settimeout(1.0)
        if fd >= 0:
            os.write(fd, view[:n])
        got += n
        last = time.monotonic()
    print(json.dumps({"received": got, "last": last}), flush=True)


def send(port: int, path: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BUFFER)
    except PermissionError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    s.connect(("127.0.0.1", port))
    gso = [(SOL_UDP, UDP_SEGMENT, SEGMENT.to_bytes(2, sys.byteorder))]
    buf = bytearray(SEGMENT * BATCH)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    offset = 0
    while True:
        n = os.preadv(fd, [view], offset)
        if not n:
            break
        while True:
            try:
                s.sendmsg([view[:n]], gso if n > SEGMENT else [])
                break
            except BlockingIOError:
                time.sleep(0.0001)
        offset += n


def one_run(inp: str, size: int, out: str) -> dict[str, float]:
    warm(inp)
    if out and os.path.exists(out):
        os.unlink(out)
    port = free_port()
    me = [sys.executable, "-P", os.path.abspath(__file__)]
    recv = subprocess.Popen([*me, "--recv", str(port), str(size), out], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    start = time.monotonic()
    sender = subprocess.Popen([*me, "--send", str(port), inp])
    _, sstatus, sru = os.wait4(sender.pid, 0)
    said = json.loads(recv.stdout.readline())
    received = said["received"]
    _, rstatus, rru = os.wait4(recv.pid, 0)
    wall = said["last"] - start  # (to the last datagram: a lost one's second of silence is not counted)
    assert sstatus == 0 and rstatus == 0, (sstatus, rstatus)
    return {
        "GBps": round(received / wall / 1e9, 3),
        "lost_pct": round(100 * (size - received) / size, 2),
        "send_cpu_s": round(sru.ru_utime + sru.ru_stime, 2),
        "recv_cpu_s": round(rru.ru_utime + rru.ru_stime, 2),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--recv":
        receive(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        send(int(sys.argv[2]), sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--output", choices=("file", "null"), default="file")
    args = ap.parse_args()
    from alf.units import parse_size

    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="alf-ceiling-")
    try:
        inp = os.path.join(work, "input.bin")
        random_file(inp, size)
        out = os.path.join(work, "out.bin") if args.output == "file" else ""
        runs = []
        for _ in range(args.runs):
            runs.append(one_run(inp, size, out))
            print(json.dumps(runs[-1]), flush=True)
        rates = sorted(r["GBps"] for r in runs)
        med = statistics.median(rates)
        print(f"median {med:.3f} GB/s ({rates[0]:.3f}-{rates[-1]:.3f}), output {args.output}")
    finally:
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))
        os.rmdir(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
