#!/usr/bin/env python3
"""Does `--rate` hold? Send for about N seconds at a fixed rate over loopback and measure, at
the receiver, the DATA bytes that arrived in each second (UDP payload: alf header + ADU).

    python tools/rate_check.py --rate 200M --seconds 10
    python tools/rate_check.py --rate 200M --seconds 10 --transport tcp

Over TCP the receiver counts payload bytes, and the rate covers payload and frame headers.

Reports the rate over the whole steady part (first and last second left out) and the worst
single second, against the configured rate. Prints one JSON object; exit 0 if within --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from alf.demo import free_udp_port  # noqa: E402
from alf.tcp import paced_frame_bytes  # noqa: E402
from alf.units import parse_rate  # noqa: E402
from alf.wire import (  # noqa: E402
    DATA_HEADER_SIZE,
    DEFAULT_ADU_SIZE,
    FRAME_HEAD,  # noqa: E402
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="200M")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--no-gso", action="store_true")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    args = ap.parse_args()
    rate = parse_rate(args.rate)
    tcp = args.transport == "tcp"
    if tcp:  # the frames alf send makes under --rate
        frame = paced_frame_bytes(rate, DEFAULT_ADU_SIZE)
        payload_share = frame / (frame + FRAME_HEAD + DATA_HEADER_SIZE)
    else:
        payload_share = DEFAULT_ADU_SIZE / (DEFAULT_ADU_SIZE + DATA_HEADER_SIZE)
    size = int(rate / 8 * args.seconds * payload_share)
    extra = ["--no-gso"] if args.no_gso else []
    if tcp:
        extra = ["--transport", "tcp"]
    counted = "bytes_received" if tcp else "wire_bytes"
    expected = rate * payload_share if tcp else rate
    with tempfile.TemporaryDirectory(prefix="alf-rate-") as tmp:
        src, dst, stats = (os.path.join(tmp, n) for n in ("in.bin", "out.bin", "recv.json"))
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        port = free_udp_port()
        alf = [sys.executable, "-m", "alf"]
        recv = subprocess.Popen(
            alf
            + [
                "recv",
                str(port),
                "--bind",
                "127.0.0.1",
                "-o",
                dst,
                "--timeout",
                "30",
                "--stats-json",
                stats,
                *extra,
            ]
        )
        time.sleep(0.4)
        send = subprocess.run(
            alf
            + [
                "send",
                "127.0.0.1",
                str(port),
                src,
                "--cc",
                "fixed",
                "--rate",
                args.rate,
                "--timeout",
                "30",
                *extra,
            ]
        )
        rcode = recv.wait(timeout=60)
        samples = [json.loads(line) for line in open(stats)]
    # samples from before the session (the receiver waiting for a sender) carry no counters
    points = [(s["elapsed_s"], s[counted]) for s in samples if counted in s and not s.get("final")]
    moving = [p for p in points if p[1] > 0]
    start = next(i for i, p in enumerate(points) if p[1] > 0)  # the first sample with data
    steady = points[start + 1 : -1]  # leave out the first and the last second of data
    (t0, b0), (t1, b1) = steady[0], steady[-1]
    measured = (b1 - b0) * 8 / (t1 - t0)
    per_second = [(y[1] - x[1]) * 8 / (y[0] - x[0]) for x, y in zip(steady, steady[1:], strict=False)]
    worst = max(per_second, key=lambda r: abs(r - expected))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "rate_bps": rate,
        "transport": args.transport,
        "gso": not args.no_gso and not tcp,
        "counted": counted + (f" (payload: {payload_share:.5f} of the rate)" if tcp else ""),
        "steady_seconds": round(t1 - t0, 2),
        "measured_bps": round(measured),
        "error": round(measured / expected - 1, 4),
        "worst_second_bps": round(worst),
        "worst_second_error": round(worst / expected - 1, 4),
        "samples_with_data": len(moving),
        "exit": [send.returncode, rcode],
    }
    print(json.dumps(result, indent=1))
    ok = send.returncode == 0 and rcode == 0 and abs(result["error"]) <= args.tolerance  # type: ignore[operator]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
