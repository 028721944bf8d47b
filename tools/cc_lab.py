#!/usr/bin/env python3
"""Rate-control experiments in the lossy-net lab (docs/cc.md): one command per acceptance point.

    python tools/cc_lab.py single bottleneck-200     # goodput and self-inflicted loss, one flow
    python tools/cc_lab.py single wan
    python tools/cc_lab.py step                      # 200 -> 50 -> 200 Mbit/s
    python tools/cc_lab.py fair                      # two alf flows on one bottleneck, 35 s
    python tools/cc_lab.py tcp                       # one alf flow against one TCP flow

Each prints a JSON summary and leaves the senders' --stats-json files (0.1 s apart) in --out,
ready for tools/plot_stats.py. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from alf.demo import random_file  # noqa: E402

ALF = f"{shlex.quote(sys.executable)} -m alf"
ENV = {
    **os.environ,
    "PYTHONPATH": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lossy-net"),
}


def make_input(path: str, size: int) -> str:
    if not os.path.exists(path) or os.path.getsize(path) != size:
        random_file(path, size)
    return path


def lab_run(profile: str, recv: str, send: str, nbytes: int, timeout: float) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossynet",
            "run",
            profile,
            "--recv",
            recv,
            "--send",
            send,
            "--bytes",
            str(nbytes),
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    if out.returncode not in (0, 1):
        raise SystemExit(out.stderr)
    return dict(json.loads(out.stdout))


def series(path: str) -> list[dict[str, object]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def goodput_per_second(stats: list[dict[str, object]], epoch: float) -> dict[int, float]:
    """Receiver-side goodput per whole second (from the sender's acked ADUs), keyed by second."""
    out: dict[int, float] = {}
    prev = None
    for s in stats:
        t = float(s["time"]) - epoch  # type: ignore[arg-type]
        acked = int(s["acked_adus"])  # type: ignore[arg-type]
        if prev is not None and int(t) != int(prev[0]):
            out[int(prev[0])] = (acked - prev[1]) * 1428 * 8 / (t - prev[0]) / 1e6
            prev = (t, acked)
        elif prev is None:
            prev = (t, acked)
    return out


def single(args: argparse.Namespace) -> dict[str, object]:
    size = {"bottleneck-200": 300, "wan": 150, "intercontinental": 400, "satellite": 40}.get(
        args.profile, 200
    ) << 20
    src = make_input(os.path.join(args.out, f"in-{size}"), size)
    sstats = os.path.join(args.out, f"{args.profile}-send.json")
    if os.path.exists(sstats):
        os.unlink(sstats)
    run = lab_run(
        args.profile,
        f"{ALF} recv 9000 -o {args.out}/out --force --timeout 30",
        f"{ALF} send {{b}} 9000 {src} --cc adaptive --rate 1G --timeout 30 --stats-json {sstats} "
        "--stats-interval 0.1",
        size,
        300,
    )
    last = series(sstats)[-1]
    intact = subprocess.run(["cmp", "-s", src, f"{args.out}/out"]).returncode == 0
    return {
        "profile": args.profile,
        "seconds": run["seconds"],
        "exit_codes": run["exit_codes"],
        "goodput_mbps": run["throughput_mbps"],
        "intact": intact,
        "repaired_pct": round(100 * int(last["adus_repair"]) / max(1, int(last["adus_new"])), 2),
        "nft_drops": run.get("nft_drops"),
    }


def step(args: argparse.Namespace) -> dict[str, object]:
    size = 450 << 20
    src = make_input(os.path.join(args.out, f"in-{size}"), size)
    sstats = os.path.join(args.out, "step-send.json")
    if os.path.exists(sstats):
        os.unlink(sstats)
    run = lab_run(
        "step-200-50-200",
        f"{ALF} recv 9000 -o {args.out}/out --force --timeout 30",
        f"{ALF} send {{b}} 9000 {src} --cc adaptive --rate 1G --timeout 30 --stats-json {sstats} "
        "--stats-interval 0.1",
        size,
        300,
    )
    epoch = float(run["link_epoch"])  # type: ignore[arg-type]
    s = series(sstats)

    def rate_between(t0: float, t1: float) -> float:
        pts = [(float(x["time"]) - epoch, int(x["wire_bytes"])) for x in s]  # type: ignore[arg-type]
        a = min(pts, key=lambda p: abs(p[0] - t0))
        b = min(pts, key=lambda p: abs(p[0] - t1))
        return (b[1] - a[1]) * 8 / (b[0] - a[0]) / 1e6

    def repairs_between(t0: float, t1: float) -> int:
        pts = [(float(x["time"]) - epoch, int(x["adus_repair"])) for x in s]  # type: ignore[arg-type]
        a = min(pts, key=lambda p: abs(p[0] - t0))
        b = min(pts, key=lambda p: abs(p[0] - t1))
        return b[1] - a[1]

    return {
        "seconds": run["seconds"],
        "exit_codes": run["exit_codes"],
        "sent_mbps_8_10": round(rate_between(8, 10), 1),
        "sent_mbps_12_20": round(rate_between(12, 20), 1),
        "sent_mbps_22_26": round(rate_between(22, 26), 1),
        "repairs_10_12": repairs_between(10, 12),
        "repairs_12_20": repairs_between(12, 20),
        "repairs_20_22": repairs_between(20, 22),
    }


def fair(args: argparse.Namespace, tcp: bool) -> dict[str, object]:
    size = 600 << 20
    src = make_input(os.path.join(args.out, f"in-{size}"), size)
    s1, s2 = os.path.join(args.out, "fair1.json"), os.path.join(args.out, "fair2.json")
    for p in (s1, s2):
        if os.path.exists(p):
            os.unlink(p)
    seconds = 30
    py = shlex.quote(sys.executable)
    if tcp:
        recv = (
            f"{ALF} recv 9000 -o {args.out}/o1 --force --timeout 40 & "
            f"{py} -m lossynet.probe tcp-sink 9001 > {args.out}/tcp-sink.json; wait"
        )
        send = (
            f"timeout {seconds + 5} {ALF} send {{b}} 9000 {src} --cc adaptive --rate 1G --timeout 40 "
            f"--stats-json {s1} --stats-interval 0.5 & "
            f"{py} -m lossynet.probe tcp-send {{b}} 9001 {seconds} cubic > {args.out}/tcp.json; wait"
        )
    else:
        recv = (
            f"{ALF} recv 9000 -o {args.out}/o1 --force --timeout 40 & "
            f"{ALF} recv 9001 -o {args.out}/o2 --force --timeout 40; wait"
        )
        send = (
            f"timeout {seconds} {ALF} send {{b}} 9000 {src} --cc adaptive --rate 1G --timeout 40 "
            f"--stats-json {s1} --stats-interval 0.5 & sleep 1; "
            f"timeout {seconds - 1} {ALF} send {{b}} 9001 {src} --cc adaptive --rate 1G --timeout 40 "
            f"--stats-json {s2} --stats-interval 0.5; wait"
        )
    run = lab_run("bottleneck-200", recv, send, 0, 120)
    epoch = float(run["link_epoch"])  # type: ignore[arg-type]
    a = goodput_per_second(series(s1), epoch)
    if tcp:
        with open(f"{args.out}/tcp.json") as f:
            t = json.load(f)
        marks = [0] + t["per_second"]
        tcp_rates = [(y - x) * 8 / 1e6 for x, y in zip(marks, marks[1:], strict=False)]
        alf_mean = sum(a.values()) / max(1, len(a))
        tcp_mean = t["goodput_bps"] / 1e6
        return {
            "alf_mbps": round(alf_mean, 1),
            "tcp_cubic_mbps": round(tcp_mean, 1),
            "tcp_share": round(tcp_mean / (alf_mean + tcp_mean), 3),
            "tcp_per_second": [round(x, 1) for x in tcp_rates],
        }
    b = goodput_per_second(series(s2), epoch)
    common = sorted(set(a) & set(b))[2:-1]  # both running, after their start-ups
    x, y = sum(a[k] for k in common) / len(common), sum(b[k] for k in common) / len(common)
    jain = (x + y) ** 2 / (2 * (x * x + y * y))
    return {
        "seconds_compared": len(common),
        "flow1_mbps": round(x, 1),
        "flow2_mbps": round(y, 1),
        "jain": round(jain, 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["single", "step", "fair", "tcp"])
    ap.add_argument("profile", nargs="?", default="bottleneck-200")
    ap.add_argument("--out", default="/tmp/alf-cc")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    if args.what == "single":
        result = single(args)
    elif args.what == "step":
        result = step(args)
    else:
        result = fair(args, tcp=args.what == "tcp")
    result["date"] = time.strftime("%Y-%m-%d")
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
