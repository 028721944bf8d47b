"""§19 in the lab: a tar of this Python's standard library through a pipe across a profile
(default ``wan``: 100 Mbit/s, 50 ms RTT, 1% loss), with and without ``--compress`` (and
``--compress=auto``: ``--modes on,auto,off``), alternated. Per run: seconds (the sender's start
to both ends' exit, as ``lossynet run`` measures), the receiver's output identical or not, the
sender's statistics (input bytes, bytes on the wire, what auto decided), and an nftables
counter of the UDP bytes that reached the receiver's namespace (IP and UDP headers included),
to check the statistics against the kernel's. ``--profile loopback`` runs both ends on
127.0.0.1 instead (no lab, no counter): the fast path, where the CPU is the limit.

    python tools/compress_lab.py --runs 3 [--profile wan] [--modes on,off] [--copies 1] [--json out.json]

Needs root (the lab's namespaces). Sends only inside the namespaces the lab makes, or to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PORT = 9000


def stdlib_tar(path: Path) -> None:
    """This Python's standard library (sources and their .pyc, without site-packages)."""
    lib = Path(os.__file__).parent
    with tarfile.open(path, "w") as tar:
        tar.add(lib, arcname=lib.name, filter=lambda t: None if "site-packages" in t.name else t)


def loopback(recv: str, send: str) -> dict[str, object]:
    """Both ends on 127.0.0.1: seconds from the sender's start to both ends' exit."""
    r = subprocess.Popen(["sh", "-c", recv])
    time.sleep(1.0)  # (the receiver listens)
    began = time.monotonic()
    s = subprocess.run(["sh", "-c", send.format(b="127.0.0.1")], timeout=300)
    code = r.wait(timeout=300)
    return {
        "seconds": round(time.monotonic() - began, 3),
        "exit_codes": {"send": s.returncode, "recv0": code},
    }


def one(profile: str, tar: Path, work: Path, mode: str, seed: int) -> dict[str, object]:
    out, rstats, sstats, nft = work / "out.tar", work / "r.json", work / "s.json", work / "nft.json"
    for p in (out, rstats, sstats, nft):
        p.unlink(missing_ok=True)
    alf = f"{sys.executable} -m alf"
    receive = f"{alf} recv {PORT} -o {out} --force --no-progress --timeout 60 --stats-json {rstats}"
    recv = (
        "nft add table inet alfcount && "
        "nft add chain inet alfcount in '{{ type filter hook input priority 10; }}' && "  # (formatted)
        f"nft add rule inet alfcount in udp dport {PORT} counter && "
        f"{receive}; rc=$?; "
        f"nft -j list table inet alfcount > {nft}; exit $rc"
    )
    send = f"cat {tar} | {alf} send {{b}} {PORT} --no-progress --timeout 60 --stats-json {sstats}"
    if mode != "off":
        send += f" --compress={mode}"
    if profile == "loopback":
        lab = loopback(receive, send)
    else:
        lab = _lab(profile, recv, send, seed)
    s = json.loads(sstats.read_text().strip().splitlines()[-1])
    counted = 0
    if nft.exists():
        for item in json.loads(nft.read_text())["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    counted = int(expr["counter"]["bytes"])
    same = hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(tar.read_bytes()).digest()
    return {
        "mode": mode,
        "seconds": lab["seconds"],
        "exit_codes": lab["exit_codes"],
        "identical": same,
        "input_bytes": tar.stat().st_size,
        "bytes_sent": s.get("bytes_sent"),
        "wire_bytes": s.get("wire_bytes"),
        "nft_bytes": counted,
        "blocks": s.get("blocks"),
        "blocks_raw": s.get("blocks_raw"),
        "blocks_auto_raw": s.get("blocks_auto_raw"),
        "auto_trials": s.get("auto_trials"),
        "auto_rate_compressed_bps": s.get("auto_rate_compressed_bps"),
        "auto_rate_raw_bps": s.get("auto_rate_raw_bps"),
    }


def _lab(profile: str, recv: str, send: str, seed: int) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-m", "lossynet", "run", profile, "--recv", recv, "--send", send,
         "--timeout", "300", "--seed", str(seed)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    if not run.stdout.strip():
        raise SystemExit(f"the lab did not run: {run.stderr.strip()[-2000:]}")
    return dict(json.loads(run.stdout))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="wan")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--modes", default="on,off", help="comma-separated: on (--compress), auto, off")
    ap.add_argument("--copies", type=int, default=1, help="the tar this many times over, end to end")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if not modes or any(m not in ("on", "auto", "off") for m in modes):
        ap.error("--modes: on, auto and off, comma-separated")
    with tempfile.TemporaryDirectory(prefix="alf-compress-lab-") as d:
        work = Path(d)
        tar = work / "stdlib.tar"
        stdlib_tar(tar)
        if args.copies > 1:
            one_tar = tar.read_bytes()
            tar.write_bytes(one_tar * args.copies)
        rows = []
        for k in range(args.runs):
            for mode in modes:  # alternated, in one sitting
                row = one(args.profile, tar, work, mode, seed=k + 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for mode in modes:
        secs = [float(r["seconds"]) for r in rows if r["mode"] == mode]  # type: ignore[arg-type]
        share = [int(r["nft_bytes"]) / int(r["input_bytes"]) for r in rows if r["mode"] == mode]  # type: ignore[call-overload]
        sent = [int(r["bytes_sent"] or 0) / int(r["input_bytes"]) for r in rows if r["mode"] == mode]  # type: ignore[call-overload]
        name = {"on": "--compress     ", "auto": "--compress=auto", "off": "plain          "}[mode]
        print(
            f"{name}: median {statistics.median(secs):.2f} s (min {min(secs):.2f}, max {max(secs):.2f}); "
            f"bytes_sent / input: median {statistics.median(sent):.3f}; "
            f"nft bytes / input: median {statistics.median(share):.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "runs": rows}, indent=1) + "\n")
    return 0 if all(r["identical"] and r["exit_codes"] == {"send": 0, "recv0": 0} for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
