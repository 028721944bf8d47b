#!/usr/bin/env python3
"""UDP multipath in the lossy-net lab (issue 16's acceptance points; docs/performance.md).

    python tools/multipath_lab.py aggregate     # 300 + 100 Mbit/s: each alone, weighted, prefer
    python tools/multipath_lab.py delay         # 100 Mbit/s at 10 ms RTT + 50 Mbit/s at 100 ms
    python tools/multipath_lab.py loss          # 1% random loss on the 300 Mbit/s path only
    python tools/multipath_lab.py cut           # the 300 path cut at 2 s, restored at 12 s
    python tools/multipath_lab.py prefer-cap    # prefer with --rate 200M: the first path alone
    python tools/multipath_lab.py cpu           # CPU per GB: one path against two, same rate

Every case builds its own namespaces (two hosts, a link per path: 10.77.k.1 -> 10.77.k.2),
moves --size bytes of random data (file mode unless said; input and output in /dev/shm) and
prints one JSON line per run and a summary. Goodput is payload bytes over the sender's wall
time (start to exit, handshake and verdict included). Runs of one case alternate their
variants (A B C, A B C, ...). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lossy-net"))
from lossynet import Lab  # noqa: E402
from lossynet.topology import LinkSpec, Pair, wait_port  # noqa: E402

from alf.demo import random_file  # noqa: E402

PY = sys.executable
PORT = 9050


def _series(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _wait(p: subprocess.Popen[Any], timeout: float) -> tuple[int, float]:
    """Exit status and CPU seconds (user + system) of a lab process (``ip netns exec`` execs
    the command: its pid is alf's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(0.02)
    p.kill()
    raise SystemExit(f"timed out: {p.args}")


def run(
    links: list[LinkSpec],
    src: str,
    send_args: list[str],
    *,
    paths: list[int],
    pipe: bool = False,
    events: Sequence[tuple[float, int, bool]] = (),
    timeout: float = 300.0,
) -> dict[str, Any]:
    """One transfer over ``links``, sending to link ``paths[0]`` with ``--path`` for the rest."""
    size = os.path.getsize(src)
    lab = Lab()
    try:
        pair = Pair(lab, links)
        dst = "/dev/shm/alf-mp-out.bin"
        rstats, sstats = "/dev/shm/alf-mp-r.json", "/dev/shm/alf-mp-s.json"
        for f in (dst, rstats, sstats):
            if os.path.exists(f):
                os.unlink(f)
        stats = ["--stats-json", rstats, "--stats-interval", "0.1"]
        if pipe:
            out = open(os.devnull, "wb")  # noqa: SIM115
            recv = lab.start(
                pair.b, [PY, "-m", "alf", "recv", str(PORT), "--transport", "udp", *stats], stdout=out
            )
        else:
            recv = lab.start(
                pair.b, [PY, "-m", "alf", "recv", str(PORT), "-o", dst, "--transport", "udp", *stats]
            )
        wait_port(lab, pair.b, PORT, "udp")
        cmd = [PY, "-m", "alf", "send", pair.addr_b(paths[0]), str(PORT)]
        cmd += [] if pipe else [src]
        for k in paths[1:]:
            cmd += ["--path", pair.addr_b(k)]
        cmd += ["--transport", "udp", "--stats-json", sstats, "--stats-interval", "0.1", *send_args]
        t0, wall0 = time.monotonic(), time.time()
        stdin = open(src, "rb") if pipe else None  # noqa: SIM115
        send = lab.start(pair.a, cmd, stdin=stdin, stderr=subprocess.PIPE)
        for at, k, up in sorted(events):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            pair.set_link(k, up)
        send_rc, send_cpu = _wait(send, timeout)
        wall = time.monotonic() - t0
        recv_rc, recv_cpu = _wait(recv, 60)
        if stdin is not None:
            stdin.close()
        intact = recv_rc == 0 if pipe else (recv_rc == 0 and _same(src, dst))
        s, r = _series(sstats), _series(rstats)
        return {
            "send_exit": send_rc,
            "recv_exit": recv_rc,
            "intact": intact,
            "wall_s": round(wall, 3),
            "goodput_Mbps": round(size * 8 / wall / 1e6, 1),
            "send_cpu_s": round(send_cpu, 2),
            "recv_cpu_s": round(recv_cpu, 2),
            "sender": s[-1],
            "sender_series": s,
            "receiver_series": r,
            "epoch": wall0,  # the statistics' "time" is wall-clock time
        }
    finally:
        lab.close()


def _same(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _brief(name: str, r: dict[str, Any]) -> dict[str, Any]:
    s = r["sender"]
    out = {
        k: r[k]
        for k in ("send_exit", "recv_exit", "intact", "wall_s", "goodput_Mbps", "send_cpu_s", "recv_cpu_s")
    }
    out["name"] = name
    out["repair_share"] = round(s.get("adus_repair", 0) / max(1, s.get("adus_new", 1)), 4)
    if "paths" in s:
        out["paths"] = [
            {k: p[k] for k in ("path", "state", "bytes_new", "bytes_repaired", "adus_nakked", "downs")}
            for p in s["paths"]
        ]
    print(json.dumps(out), flush=True)
    return out


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def _spread(rows: list[dict[str, Any]], key: str) -> str:
    vals = [float(r[key]) for r in rows]
    return f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})"


def case_aggregate(src: str, runs: int, fast: float = 300e6, slow: float = 100e6) -> None:
    links = [LinkSpec(rate_bps=fast), LinkSpec(rate_bps=slow)]
    variants = {
        "path 1 alone": ([0], []),
        "path 2 alone": ([1], []),
        "weighted": ([0, 1], ["--stripe", "weighted"]),
        "prefer": ([0, 1], ["--stripe", "prefer"]),
    }
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for _ in range(runs):
        for name, (paths, args) in variants.items():
            rows[name].append(_brief(name, run(links, src, args, paths=paths)))
    alone = _median(rows["path 1 alone"], "goodput_Mbps") + _median(rows["path 2 alone"], "goodput_Mbps")
    summary: dict[str, Any] = {name: _spread(v, "goodput_Mbps") for name, v in rows.items()}
    summary["sum of the two alone"] = f"{alone:.1f}"
    for name in ("weighted", "prefer"):
        summary[f"{name} / sum"] = round(_median(rows[name], "goodput_Mbps") / alone, 3)
    print(json.dumps({"case": "aggregate", "summary": summary}))


def case_delay(src: str, runs: int) -> None:
    near, far = LinkSpec(rate_bps=100e6, delay=0.005), LinkSpec(rate_bps=50e6, delay=0.05)
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(runs):
        for mode in ("file", "pipe"):
            for name, paths, args in (
                ("near alone", [0], []),
                ("far alone", [1], []),
                ("both, weighted", [0, 1], ["--stripe", "weighted"]),
            ):
                key = f"{mode}: {name}"
                r = run([near, far], src, args, paths=paths, pipe=mode == "pipe")
                rows.setdefault(key, []).append(_brief(key, r))
    summary: dict[str, Any] = {k: _spread(v, "goodput_Mbps") for k, v in rows.items()}
    for mode in ("file", "pipe"):
        n, f = (
            _median(rows[f"{mode}: near alone"], "goodput_Mbps"),
            _median(rows[f"{mode}: far alone"], "goodput_Mbps"),
        )
        both = _median(rows[f"{mode}: both, weighted"], "goodput_Mbps")
        best = max(n, f)
        summary[f"{mode}: aggregation benefit"] = round((both - best) / (n + f - best), 3)
    print(json.dumps({"case": "delay", "summary": summary}))


def case_loss(src: str, runs: int) -> None:
    links = [LinkSpec(rate_bps=300e6, loss=0.01), LinkSpec(rate_bps=100e6)]
    rows = []
    for _ in range(runs):
        r = run(links, src, ["--stripe", "weighted"], paths=[0, 1])
        b = _brief("1% on path 1", r)
        p1, p2 = r["sender"]["paths"]
        rep = p1["bytes_repaired"] + p2["bytes_repaired"]
        b["repairs_on_clean_path"] = round(p2["bytes_repaired"] / rep, 3) if rep else None
        s = r["sender"]
        payload = os.path.getsize(src)
        b["wire_overhead"] = round(s["wire_bytes"] / payload - 1, 4)
        b["header_overhead"] = round(24 / s["adu_size"], 4)
        rows.append(b)
        print(json.dumps(b))
    print(
        json.dumps(
            {
                "case": "loss",
                "goodput_Mbps": _spread(rows, "goodput_Mbps"),
                "repairs_on_clean_path": _spread(rows, "repairs_on_clean_path"),
                "wire_overhead": _spread(rows, "wire_overhead"),
            }
        )
    )


def case_cut(src: str, runs: int, cut_at: float = 2.0, back_at: float = 12.0) -> None:
    links = [LinkSpec(rate_bps=300e6), LinkSpec(rate_bps=100e6)]
    out = []
    for _ in range(runs):
        r = run(
            links,
            src,
            ["--stripe", "weighted"],
            paths=[0, 1],
            events=[(cut_at, 0, False), (back_at, 0, True)],
        )
        b = _brief("cut", r)
        # the receiver's output over time: the longest stretch with nothing new after the cut
        pts = [
            (float(x["elapsed_s"]), int(x["bytes_received"]))
            for x in r["receiver_series"]
            if "bytes_received" in x
        ]
        moving = [t for (t, v), (_t0, v0) in zip(pts[1:], pts, strict=False) if v > v0]
        b["longest_stall_s"] = round(max(b - a for a, b in zip(moving, moving[1:], strict=False)), 2)
        # path 1's receive rate, as the sender reports it, in the 3 s after the restore
        epoch = r["epoch"]
        after = [
            x["paths"][0]["receive_rate_bps"]
            for x in r["sender_series"]
            if "paths" in x and back_at <= float(x["time"]) - epoch + 0 <= back_at + 3.0
        ]
        b["restored_rate_Mbps_max_in_3s"] = round(max(after, default=0) / 1e6, 1)
        downs = [
            float(x["time"]) - epoch
            for x in r["sender_series"]
            if "paths" in x and x["paths"][0]["state"] == "down"
        ]
        b["declared_down_after_s"] = round(min(downs) - cut_at, 2) if downs else None
        b["up_again_after_s"] = round(
            min((float(x["time"]) - epoch for x in r["sender_series"] if "paths" in x
                 and float(x["time"]) - epoch > back_at and x["paths"][0]["state"] == "up"), default=-1)
            - back_at, 2,
        )  # fmt: skip
        out.append(b)
        print(json.dumps(b))
    print(json.dumps({"case": "cut", "runs": len(out)}))


def case_prefer_cap(src: str, runs: int) -> None:
    links = [LinkSpec(rate_bps=300e6), LinkSpec(rate_bps=100e6)]
    for _ in range(runs):
        r = run(links, src, ["--stripe", "prefer", "--rate", "200M"], paths=[0, 1])
        b = _brief("prefer --rate 200M", r)
        p1, p2 = r["sender"]["paths"]
        b["share_on_path_1"] = round(p1["bytes_new"] / (p1["bytes_new"] + p2["bytes_new"]), 4)
        print(json.dumps(b))


def case_cpu(src: str, runs: int) -> None:
    links = [LinkSpec(rate_bps=300e6), LinkSpec(rate_bps=300e6)]
    rows: dict[str, list[dict[str, Any]]] = {"one path": [], "two paths": []}
    size_gb = os.path.getsize(src) / 1e9
    for _ in range(runs):
        for name, paths in (("one path", [0]), ("two paths", [0, 1])):
            r = run(links, src, ["--cc", "fixed", "--rate", "200M", "--stripe", "weighted"], paths=paths)
            b = _brief(name, r)
            b["cpu_s_per_GB"] = round((r["send_cpu_s"] + r["recv_cpu_s"]) / size_gb, 3)
            rows[name].append(b)
            print(json.dumps(b))
    one, two = _median(rows["one path"], "cpu_s_per_GB"), _median(rows["two paths"], "cpu_s_per_GB")
    summary: dict[str, Any] = {k: _spread(v, "cpu_s_per_GB") for k, v in rows.items()}
    summary["two / one"] = round(two / one, 3)
    print(json.dumps({"case": "cpu", "summary": summary}))


CASES = {
    "aggregate": case_aggregate,
    "delay": case_delay,
    "loss": case_loss,
    "cut": case_cut,
    "prefer-cap": case_prefer_cap,
    "cpu": case_cpu,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=list(CASES))
    ap.add_argument("--size", default="500M", help="bytes of random input (K/M/G: powers of 1000)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}
    size = int(float(args.size[:-1]) * mult[args.size[-1]]) if args.size[-1] in mult else int(args.size)
    src = f"/dev/shm/alf-mp-in-{size}.bin"
    if not os.path.exists(src) or os.path.getsize(src) != size:
        random_file(src, size)
    print(json.dumps({"case": args.case, "size": size, "runs": args.runs, "date": time.strftime("%Y-%m-%d")}))
    CASES[args.case](src, args.runs)


if __name__ == "__main__":
    main()
