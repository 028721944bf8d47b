"""CPU cost of the sender's file source (alf.io.source.FileSource): its first pass (read,
hashed, marked) and its repairs, without any network, so small changes show.

    python -P tools/source_bench.py                       # this tree
    python -P tools/source_bench.py --against /tmp/base   # alternating with another checkout

The input is 1 GiB of random bytes in /dev/shm (made once, then reused; removed with
--clean). Each case is timed in process CPU seconds, median of --runs, with the range:

- ``udp A runR lossL``: the UDP sender's pattern: runs of R ADUs of A bytes in order, and a
  seeded share L of the ADUs read again one at a time as repairs, about 2000 ADUs behind the
  first pass (NAKs arrive while it goes on), the rest at the end.
- ``tcp A``: the TCP sender's pattern: blocks of 1 MiB in order (``FileSource.block``).

With --against, each case runs alternately in this tree and that one, in separate processes,
since this machine's speed moves between phases.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

PATH = "/dev/shm/alf-source-bench.bin"
CASES = [("udp", 8800, 64, 0.0), ("udp", 8800, 64, 0.01), ("udp", 1428, 64, 0.01), ("tcp", 1428, 0, 0.0)]


def _one(kind: str, adu: int, run: int, loss: float) -> float:
    from alf.io.source import FileSource

    src = FileSource(PATH, adu)
    n = src.available()
    t = time.process_time()
    if kind == "tcp":
        per = (1 << 20) // adu
        for i in range(0, n, per):
            src.block(i, min(per, n - i))
    else:
        rng = random.Random(1)
        lost: list[int] = []
        i = 0
        while i < n:
            c = min(run, n - i)
            src.read(i, c)
            lost += [j for j in range(i, i + c) if rng.random() < loss]
            while lost and lost[0] < i - 2000:
                src.read(lost.pop(0), 1)
            i += c
        for j in lost:
            src.read(j, 1)
    took = time.process_time() - t
    assert src.digest() is not None and src.error() is None
    src.close()
    return took


def _name(kind: str, adu: int, run: int, loss: float) -> str:
    return f"tcp {adu}" if kind == "tcp" else f"udp {adu} run{run} loss{loss:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--against", help="another alf checkout, run alternately")
    ap.add_argument("--clean", action="store_true", help="remove the input file and exit")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.clean:
        if os.path.exists(PATH):
            os.unlink(PATH)
        return
    if args.child:
        kind, adu, run, loss = args.child
        print(_one(kind, int(adu), int(run), float(loss)))
        return
    if not os.path.exists(PATH):
        with open(PATH, "wb") as f:
            for _ in range(1024):
                f.write(os.urandom(1 << 20))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("this tree", here)] + ([("against", os.path.abspath(args.against))] if args.against else [])
    results: dict[str, dict[str, list[float]]] = {}
    for case in CASES:
        name = _name(*case)
        results[name] = {label: [] for label, _t in trees}
        for _ in range(args.runs):
            for label, tree in trees:
                env = dict(os.environ, PYTHONPATH=tree)
                cmd = [sys.executable, "-P", os.path.abspath(__file__), "--child", *map(str, case)]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                results[name][label].append(float(out))
        row = "  ".join(
            f"{label}: {statistics.median(v):.3f} s ({min(v):.3f}-{max(v):.3f})"
            for label, v in results[name].items()
        )
        print(f"{name:24s} {row}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
