#!/usr/bin/env python3
"""Plot a run's --stats-json lines (sender, receiver, or both) as a PNG: rate, goodput, loss and
RTT over time (with several UDP paths, each path's received rate, RTT and down times too).

    alf send ... --stats-json send.json --stats-interval 0.1
    python tools/plot_stats.py send.json [recv.json] -o run.png [--title "wan, adaptive"]

Needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stats", nargs="+", help="--stats-json files")
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_stats: needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    fig, (ax_rate, ax_loss, ax_rtt) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    t0 = min((s["time"] for path in args.stats for s in load(path)), default=0.0)
    for path in args.stats:
        # Lines written before a transfer began (a receiver waiting for its sender) hold only the
        # schema's common keys: they have nothing to plot.
        idle = ("waiting", "handshake")
        rows = [s for s in load(path) if not s.get("final") and s.get("state") not in idle]
        if not rows:
            continue
        t = [s["time"] - t0 for s in rows]
        moved = "acked_bytes" if rows[0].get("role") == "send" else "bytes_received"
        rates = [0.0] + [
            (b.get(moved, 0) - a.get(moved, 0)) * 8 / max(1e-9, b["time"] - a["time"]) / 1e6
            for a, b in zip(rows, rows[1:], strict=False)
        ]
        if rows[0].get("role") == "send":
            if "rate_bps" in rows[0]:
                ax_rate.plot(t, [s["rate_bps"] / 1e6 for s in rows], label=f"pacing rate ({path})")
            if "btl_bps" in rows[0]:
                ax_rate.plot(t, [s["btl_bps"] / 1e6 for s in rows], ":", label="bottleneck estimate")
            ax_rate.plot(t, rates, label="goodput (acknowledged)")
            out = [s["bytes_sent"] + s["bytes_resent"] for s in rows]
            resent = [0.0] + [
                max(0, b["bytes_resent"] - a["bytes_resent"]) / max(1, ob - oa)
                for a, b, oa, ob in zip(rows, rows[1:], out, out[1:], strict=False)
            ]
            ax_loss.plot(t, [100 * x for x in resent], label="resent, % of sent")
            # several UDP paths: each one's delivered rate and round trip, and where it was down
            for k in range(max((len(s.get("paths") or []) for s in rows), default=0)):
                mine = [
                    (x, s["paths"][k]) for x, s in zip(t, rows, strict=True) if len(s.get("paths") or []) > k
                ]
                xs = [x for x, _p in mine]
                ax_rate.plot(
                    xs, [p["receive_rate_bps"] / 1e6 for _x, p in mine], label=f"path {k + 1} received"
                )
                ax_rtt.plot(xs, [p["srtt_ms"] for _x, p in mine], label=f"path {k + 1} RTT")
                down = [x for x, p in mine if p["state"] == "down"]
                if down:
                    ax_rate.plot(down, [0.0] * len(down), "x", label=f"path {k + 1} down")
            if "srtt_ms" in rows[0]:
                ax_rtt.plot(t, [s["srtt_ms"] for s in rows], label="smoothed RTT")
            if "min_rtt_ms" in rows[0]:
                ax_rtt.plot(t, [s["min_rtt_ms"] for s in rows], ":", label="minimum RTT")
        else:
            ax_rate.plot(t, rates, "--", label=f"received ({path})")
    ax_rate.set_ylabel("Mbit/s")
    ax_loss.set_ylabel("%")
    ax_rtt.set_ylabel("ms")
    ax_rtt.set_xlabel("seconds")
    for ax in (ax_rate, ax_loss, ax_rtt):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
