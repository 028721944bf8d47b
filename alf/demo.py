"""``alf demo``: a real transfer over loopback with loss injected, checked independently.

It runs ``alf recv`` and ``alf send`` as separate processes, exactly as a user would, and
compares the SHA-256 of what went in with what came out itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (``alf recv`` listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no port is free for both UDP and TCP")


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


def _last_stats(path: str) -> dict[str, object]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
        return dict(json.loads(lines[-1])) if lines else {}
    except (OSError, ValueError):
        return {}


def run_demo(size: int, drop: float, rate: float, pipe: bool) -> int:
    alf = [sys.executable, "-m", "alf"]
    with tempfile.TemporaryDirectory(prefix="alf-demo-") as tmp:
        src, dst = os.path.join(tmp, "input.bin"), os.path.join(tmp, "output.bin")
        rstats, sstats = os.path.join(tmp, "recv.json"), os.path.join(tmp, "send.json")
        random_file(src, size)
        port = free_udp_port()
        print(
            f"alf demo: sending {size} random bytes over 127.0.0.1:{port}, "
            f"the receiver drops {drop:.0%} of what arrives",
            file=sys.stderr,
        )
        recv_cmd = alf + [
            "recv",
            str(port),
            "--bind",
            "127.0.0.1",
            "--timeout",
            "30",
            "--drop",
            str(drop),
            "--seed",
            "7",
            "--stats-json",
            rstats,
            "--no-progress",
        ]
        send_cmd = alf + [
            "send",
            "127.0.0.1",
            str(port),
            "--rate",
            str(rate),
            "--timeout",
            "30",
            "--stats-json",
            sstats,
            "--no-progress",
        ]
        started = time.monotonic()
        with open(dst, "wb") as out:
            receiver = subprocess.Popen(
                recv_cmd + ([] if pipe else ["-o", dst, "--force"]),
                stdout=out if pipe else subprocess.DEVNULL,
            )
        try:
            if pipe:
                with open(src, "rb") as inp:
                    sender = subprocess.run(send_cmd, stdin=inp, timeout=600)
            else:
                sender = subprocess.run(send_cmd + [src], stdin=subprocess.DEVNULL, timeout=600)
            rcode = receiver.wait(timeout=60)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
        elapsed = time.monotonic() - started
        same = os.path.exists(dst) and sha256_file(src) == sha256_file(dst)
        r, s = _last_stats(rstats), _last_stats(sstats)
        print(
            f"alf demo: sender exit {sender.returncode}, receiver exit {rcode}, {elapsed:.2f} s "
            f"({size * 8 / elapsed / 1e6:.0f} Mbit/s)",
            file=sys.stderr,
        )
        print(
            f"alf demo: receiver dropped {r.get('dropped_injected')} datagrams on purpose, "
            f"sent {r.get('naks_sent')} NAKs; sender repaired {s.get('adus_repair')} ADUs "
            f"after {s.get('adus_new')} sent once",
            file=sys.stderr,
        )
        ok = sender.returncode == 0 and rcode == 0 and same
        print(
            f"alf demo: sha256 {'identical' if same else 'DIFFERENT'}; {'PASS' if ok else 'FAIL'}",
            file=sys.stderr,
        )
        return 0 if ok else 1
