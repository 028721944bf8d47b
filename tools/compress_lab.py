"""§19 in the lab: a tar of this Python's standard library through a pipe across a profile
(default ``wan``: 100 Mbit/s, 50 ms RTT, 1% loss), with and without ``--compress``,
alternated. Per run: seconds (the sender's start to both ends' exit, as ``lossynet run``
measures), the receiver's output identical or not, the sender's statistics (input bytes,
bytes on the wire), and an nftables counter of the UDP bytes that reached the receiver's
namespace (IP and UDP headers included), to check the statistics against the kernel's.

    python tools/compress_lab.py --runs 3 [--profile wan] [--json out.json]

Needs root (the lab's namespaces). Sends only inside the namespaces the lab makes.
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
from pathlib import Path

PORT = 9000


def stdlib_tar(path: Path) -> None:
    """This Python's standard library (sources and their .pyc, without site-packages)."""
    lib = Path(os.__file__).parent
    with tarfile.open(path, "w") as tar:
        tar.add(lib, arcname=lib.name, filter=lambda t: None if "site-packages" in t.name else t)


def one(profile: str, tar: Path, work: Path, compress: bool, seed: int) -> dict[str, object]:
    out, rstats, sstats, nft = work / "out.tar", work / "r.json", work / "s.json", work / "nft.json"
    for p in (out, rstats, sstats, nft):
        p.unlink(missing_ok=True)
    alf = f"{sys.executable} -m alf"
    recv = (
        "nft add table inet alfcount && "
        "nft add chain inet alfcount in '{{ type filter hook input priority 10; }}' && "  # (formatted)
        f"nft add rule inet alfcount in udp dport {PORT} counter && "
        f"{alf} recv {PORT} -o {out} --force --no-progress --timeout 60 --stats-json {rstats}; rc=$?; "
        f"nft -j list table inet alfcount > {nft}; exit $rc"
    )
    send = f"cat {tar} | {alf} send {{b}} {PORT} --no-progress --timeout 60 --stats-json {sstats}"
    if compress:
        send += " --compress"
    run = subprocess.run(
        [sys.executable, "-m", "lossynet", "run", profile, "--recv", recv, "--send", send,
         "--timeout", "300", "--seed", str(seed)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    if not run.stdout.strip():
        raise SystemExit(f"the lab did not run: {run.stderr.strip()[-2000:]}")
    lab = json.loads(run.stdout)
    s = json.loads(sstats.read_text().strip().splitlines()[-1])
    counted = 0
    for item in json.loads(nft.read_text())["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                counted = int(expr["counter"]["bytes"])
    same = hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(tar.read_bytes()).digest()
    return {
        "compress": compress,
        "seconds": lab["seconds"],
        "exit_codes": lab["exit_codes"],
        "identical": same,
        "input_bytes": tar.stat().st_size,
        "bytes_sent": s.get("bytes_sent"),
        "wire_bytes": s.get("wire_bytes"),
        "nft_bytes": counted,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="wan")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="alf-compress-lab-") as d:
        work = Path(d)
        tar = work / "stdlib.tar"
        stdlib_tar(tar)
        rows = []
        for k in range(args.runs):
            for compress in (True, False):  # alternated, in one sitting
                row = one(args.profile, tar, work, compress, seed=k + 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for compress in (True, False):
        secs = [float(r["seconds"]) for r in rows if r["compress"] is compress]  # type: ignore[arg-type]
        share = [int(r["nft_bytes"]) / int(r["input_bytes"]) for r in rows if r["compress"] is compress]  # type: ignore[call-overload]
        name = "--compress" if compress else "plain     "
        print(
            f"{name}: median {statistics.median(secs):.2f} s (min {min(secs):.2f}, max {max(secs):.2f}); "
            f"nft bytes / input: median {statistics.median(share):.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "runs": rows}, indent=1) + "\n")
    return 0 if all(r["identical"] and r["exit_codes"] == {"send": 0, "recv0": 0} for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
