"""The peers' own knobs, searched: each peer of tools/bench.py over a grid of its options, on
the same input and with the same kind of output as bench.py's row for it, so that the table
puts every peer at its best on this machine (issue 21, point 1).

    python -P tools/peer_search.py --size 1G --runs 2                  # every peer
    python -P tools/peer_search.py --size 1G --runs 2 --only uftp,socat

Each configuration runs ``--runs`` times, the peers' configurations interleaved run by run
(so a drift of the host spreads over all of them); one JSON line per run, then each
configuration's median, best first within its peer. The grids:

- uftp: block size (1300, 8800: its largest), announce and GRTT timers (its defaults; ``-s 10
  -r 0.05``; ``-s 10 -r 0.01:0.001:0.1``; ``-s 10 -r 0.001:0.001:0.01``; ``-s 5``
  fails every run, 10 is its least robustness), rate unlimited (``-R -1``), 4 MiB socket buffers on both sides
  (``net.core.rmem_max`` here: a larger ``-B`` is cut to it).
- udpcast: ``--blocksize`` 1456 (about its default), 4096 and 8192, ``--full-duplex`` or
  not, ``--max-bitrate`` none or 5 Gbit/s, point to point; with 8192-byte blocks also slices
  of 512-1024 blocks from the start (``--min-slice-size 512 --default-slice-size 1024``; its
  slices start at 16 and grow to 1024 in half duplex).
- netcat (OpenBSD): reading the file itself and through ``cat``, with the kernel's socket
  buffers or ``-I/-O 4194304``.
- socat: ``-b`` 8192 (its default), 131072 and 1048576, reading the file itself and through
  ``cat``.
- iperf3 (memory only): ``-l`` 128K (its default) and 1M, with and without ``-Z`` (sendfile).

Outputs are as bench.py's rows: a file into a file (uftp into its directory), a pipe to
/dev/null. Sends only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import INPUT_HASH, Config, file_hash, random_file, run_once  # noqa: E402

from alf.units import parse_size  # noqa: E402

UFTPD = "exec uftpd -d -D {outdir} -p {port} -B 4194304 -x 0"


def grids() -> dict[str, list[Config]]:
    uftp = []
    for block in (1300, 8800):
        for timers in (
            "",
            "-s 10 -r 0.05",
            "-s 10 -r 0.01:0.001:0.1",
            "-s 10 -r 0.001:0.001:0.01",
            "-s 5 -r 0.01:0.001:0.1",
        ):
            cmd = f"uftp -M 127.0.0.1 -P 127.0.0.1 -p {{port}} -b {block} -B 4194304 -R -1 -x 0 {timers}"
            cmd += " {inp}"
            name = f"uftp -b {block} {timers or '(default timers)'}"
            uftp.append(Config(name, UFTPD, " ".join(cmd.split()), "dir", ("uftp", "uftpd")))
    udpcast = []
    slices = ("", "--min-slice-size 512 --default-slice-size 1024")  # (blocks; its defaults 16, 1024 max)
    for block in (1456, 4096, 8192):
        for duplex in ("", "--full-duplex"):
            for rate in ("", "--max-bitrate 5000m"):
                for sl in slices if block == 8192 else ("",):
                    opts = " ".join(x for x in (f"--blocksize {block}", duplex, rate, sl) if x)
                    udpcast.append(
                        Config(
                            f"udpcast {opts}",
                            "udp-receiver --file {out} --interface lo --portbase {port} --nokbd",
                            "udp-sender --file {inp} --interface lo --portbase {port} --nokbd "
                            f"--min-receivers 1 --pointopoint {opts}",
                            "file",
                            ("udp-sender", "udp-receiver"),
                        )
                    )
    netcat = []
    for bufs in ("", "-I 4194304 -O 4194304"):
        label = bufs or "(kernel buffers)"
        netcat.append(
            Config(
                f"netcat file {label}",
                f"nc {bufs} -l 127.0.0.1 {{port}} > {{out}}",
                f"nc {bufs} -N 127.0.0.1 {{port}} < {{inp}}",
                "file",
                ("nc",),
            )
        )
        netcat.append(
            Config(
                f"netcat pipe {label}",
                f"nc {bufs} -l 127.0.0.1 {{port}} > /dev/null",
                f"cat {{inp}} | nc {bufs} -N 127.0.0.1 {{port}}",
                "none",
                ("nc",),
            )
        )
    socat = []
    for block in (8192, 131072, 1048576):
        listen = f"socat -b {block} -u TCP-LISTEN:{{port}},bind=127.0.0.1,reuseaddr"
        socat.append(
            Config(
                f"socat file -b {block}",
                f"{listen} OPEN:{{out}},creat,trunc",
                f"socat -b {block} -u OPEN:{{inp}} TCP:127.0.0.1:{{port}}",
                "file",
                ("socat",),
            )
        )
        socat.append(
            Config(
                f"socat pipe -b {block}",
                f"{listen} - > /dev/null",
                f"cat {{inp}} | socat -b {block} -u - TCP:127.0.0.1:{{port}}",
                "none",
                ("socat",),
            )
        )
    iperf3 = []
    for length in ("128K", "1M"):
        for zero in ("", "-Z"):
            iperf3.append(
                Config(
                    f"iperf3 -l {length} {zero}".strip(),
                    "iperf3 -s -1 -B 127.0.0.1 -p {port}",
                    f"iperf3 -c 127.0.0.1 -p {{port}} -n {{size}} -l {length} {zero}".strip(),
                    "none",
                    ("iperf3",),
                    settle=0.8,
                )
            )
    return {"uftp": uftp, "udpcast": udpcast, "netcat": netcat, "socat": socat, "iperf3": iperf3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated peers (uftp, udpcast, netcat, socat, iperf3)")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    size = parse_size(args.size)
    chosen = {k: v for k, v in grids().items() if not args.only or k in args.only.split(",")}
    work = tempfile.mkdtemp(prefix="alf-peers-")
    inp = os.path.join(work, "input.bin")
    random_file(inp, size)
    INPUT_HASH[inp] = file_hash(inp)
    results: dict[str, list[float]] = {}
    try:
        for run in range(args.runs):
            for peer, cfgs in chosen.items():
                for cfg in cfgs:
                    if any(shutil.which(t) is None for t in cfg.needs):
                        continue
                    got = run_once(cfg, inp, size, work, args.timeout)
                    ok = bool(got["intact"])
                    results.setdefault(cfg.name, []).append(float(str(got["GBps"])) if ok else 0.0)
                    print(json.dumps({"peer": peer, "config": cfg.name, "run": run, **got}), flush=True)
        for peer, cfgs in chosen.items():
            ranked = sorted(
                (statistics.median(results[c.name]), c.name, results[c.name])
                for c in cfgs
                if c.name in results
            )
            for med, name, runs in reversed(ranked):
                print(f"{peer:8} {med:6.3f} GB/s  {name}  (runs: {', '.join(f'{r:.3f}' for r in runs)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
