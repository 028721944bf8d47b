"""Multicast side by side in the lab: alf and uftp, alternately, on one bridge in namespaces
this tool makes (lossy-net's Segment), the same input, every output hashed.

    python -P tools/multicast_lab.py --size 200M --runs 3 --tools alf,uftp
    python -P tools/multicast_lab.py --size 200M --runs 3 --tools alf --pipe
    python -P tools/multicast_lab.py --size 200M --runs 3 --tools uni,alf --loss 0,0,0,0,0,0,0,0 --rate 1G
    python -P tools/multicast_lab.py --size 200M --runs 3 --tools alf,alf-arq

``--loss`` gives each receiver's random loss (nftables at its ingress; default the issue's
0/0/1/1/3/3/10/10%), ``--rate`` each receiver's bridge port a tbf limit. ``alf`` is `alf send
GROUP --receivers N` to every receiver (its default ``--fec auto``: a file's repairs are
erasure-coded parity), ``alf-arq`` the same with ``--fec off`` (repairs resend what was lost),
``alf-key`` the same as ``alf`` sealed (``--key`` on every side, protocol §17 rule 8),
``uni`` alf unicast to the first receiver alone (the
same segment), ``uftp`` Debian's uftp/uftpd with ``--uftp-args`` (its knobs; the default is
the best of the search in docs/performance.md). Each run prints one JSON line: the wall time
from the sender's start to its exit, how many outputs are intact, and the multicast datagrams
the sender sent beyond the content's (alf: its own counts of DATA, repairs, PROBEs and HELLOs,
since GSO makes the interface count a run as one packet; uftp: the sender's interface's
packets), and for alf its repair datagrams against the worst receiver's need, p/(1-p) of the
content's datagrams (docs/performance.md). Needs root; sends only inside the namespaces it
makes, and removes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lossy-net"))
from lossynet import Lab  # noqa: E402
from lossynet.topology import LinkSpec, Segment, wait_port  # noqa: E402

from alf.units import parse_rate, parse_size  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import warm  # noqa: E402

PY = sys.executable
GROUP, PORT, UFTP_PORT = "239.1.2.3", 8834, 1044
UFTP_BEST = "-b 1400 -B 4194304 -R 600000 -s 10 -r 0.01:0.001:1"
ALF_ADU = 1428


def _sha(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _last_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            lines = f.read().strip().splitlines()
    except OSError:
        return {}
    return dict(json.loads(lines[-1])) if lines else {}


def _tx_packets(lab: Lab, ns: str) -> int:
    out = lab.run(ns, "ip", "-j", "-s", "link", "show", "eth0").stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def _run_alf(
    lab: Lab, seg: Segment, src: str, tmp: str, group: bool, pipe: bool, extra: str = "", key: str = ""
) -> tuple[float, list[str], int, dict[str, Any]]:
    hosts = seg.r if group else seg.r[:1]
    procs = []
    outs = [os.path.join(tmp, f"out{k}.bin") for k in range(len(hosts))]
    rstats = [os.path.join(tmp, f"r{k}.json") for k in range(len(hosts))]
    for ns, out, rs in zip(hosts, outs, rstats, strict=True):
        cmd = [PY, "-m", "alf", "recv", str(PORT), "--timeout", "30", "--no-progress", "-q"]
        cmd += ["--stats-json", rs]
        cmd += ["--group", GROUP] if group else []
        cmd += ["--key", key] if key else []
        if pipe:
            with open(out, "wb") as f:
                procs.append(lab.start(ns, [*cmd, "-o", "-"], stdout=f))
        else:
            procs.append(lab.start(ns, [*cmd, "-o", out]))
    for ns in hosts:
        wait_port(lab, ns, PORT)
    stats = os.path.join(tmp, "s.json")
    dest = f"{GROUP} {PORT} --receivers {len(hosts)}" if group else f"{seg.addr(10)} {PORT}"
    send = f"{PY} -m alf send {dest} --no-progress -q --timeout 30 --stats-json {stats} {extra}"
    send += f" --key {key}" if key else ""
    t = time.monotonic()
    s = lab.start(seg.s, f"cat {src} | {send}" if pipe else f"{send} {src}")
    s.wait(timeout=600)
    seconds = time.monotonic() - t
    for p in procs:
        p.wait(timeout=60)
    with open(stats) as f:
        last = json.loads(f.read().strip().splitlines()[-1])
    sent = last["adus_new"] + last["adus_repair"] + last["probes_sent"] + last["hellos_sent"]
    counts = {"repairs": last["adus_repair"], "parity": last.get("adus_parity", 0)}
    for key in ("socket_overflows", "adus_decoded", "unauthenticated"):  # each receiver's, in order
        counts[key] = [_last_json(rs).get(key, 0) for rs in rstats]
    return seconds, outs, sent, counts


def _run_uftp(lab: Lab, seg: Segment, src: str, tmp: str, args: str) -> tuple[float, list[str], int]:
    procs = []
    dirs = [os.path.join(tmp, f"u{k}") for k in range(len(seg.r))]
    for ns, d in zip(seg.r, dirs, strict=True):
        os.makedirs(d, exist_ok=True)
        cmd = ["uftpd", "-d", "-D", d, "-B", "4194304", "-x", "0", "-p", str(UFTP_PORT)]
        procs.append(lab.start(ns, cmd, stderr=subprocess.DEVNULL))
    for ns in seg.r:
        wait_port(lab, ns, UFTP_PORT)
    before = _tx_packets(lab, seg.s)
    t = time.monotonic()
    s = lab.start(seg.s, ["uftp", "-p", str(UFTP_PORT), "-x", "0", *args.split(), src])
    s.wait(timeout=600)
    seconds = time.monotonic() - t
    for p in procs:  # uftpd is a server: it stays until stopped
        p.kill()
        p.wait(timeout=10)
    return seconds, [os.path.join(d, os.path.basename(src)) for d in dirs], _tx_packets(lab, seg.s) - before


def _key_file(top: str) -> str:
    """``alf-key``: a key both sides of every run are given (made once, mode 600)."""
    path = os.path.join(top, "lab.key")
    if not os.path.exists(path):
        subprocess.run([PY, "-m", "alf", "keygen", path], check=True)
    return path


def _clear_outputs(top: str, src: str) -> None:
    """The outputs of the run before (alf's outK.bin, uftpd's uK/ copies), not the input
    (nor the key of ``alf-key``)."""
    for where, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(where, name)
            if path != src and name != "lab.key":
                os.remove(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="200M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="alf,uftp")
    ap.add_argument("--loss", default="0,0,0.01,0.01,0.03,0.03,0.1,0.1")
    ap.add_argument("--rate", default=None, help="each receiver's port limit (RATE)")
    ap.add_argument("--pipe", action="store_true", help="alf: cat FILE | alf send, receivers to stdout")
    ap.add_argument("--uftp-args", default=UFTP_BEST)
    ap.add_argument("--alf-args", default="", help="more options for alf's sender (all alf tools)")
    ap.add_argument("--dir", default="/dev/shm/alf-multicast-lab")
    a = ap.parse_args()
    size = parse_size(a.size)
    losses = [float(x) for x in a.loss.split(",")]
    rate = parse_rate(a.rate) if a.rate else 0.0
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "in.bin")
    if not os.path.exists(src) or os.path.getsize(src) != size:
        with open(src, "wb") as f:
            for _ in range(0, size, 1 << 20):
                f.write(os.urandom(min(1 << 20, size - f.tell())))
    want = _sha(src)
    with Lab() as lab:
        seg = Segment(lab, [LinkSpec(loss=p, rate_bps=rate) for p in losses])
        for run in range(a.runs):
            for tool in a.tools.split(","):
                _clear_outputs(a.dir, src)
                warm(src)  # (this VM pages out what sat idle: tools/bench.py's warm says why)
                repairs: dict[str, Any] = {}
                if tool == "uftp":
                    seconds, outs, sent = _run_uftp(lab, seg, src, a.dir, a.uftp_args)
                    block = int(a.uftp_args.split("-b ")[1].split()[0]) if "-b " in a.uftp_args else 1300
                else:
                    extra = ("--fec off " if tool == "alf-arq" else "") + a.alf_args
                    key = _key_file(a.dir) if tool == "alf-key" else ""
                    seconds, outs, sent, repairs = _run_alf(
                        lab, seg, src, a.dir, tool != "uni", a.pipe, extra, key
                    )
                    block = ALF_ADU - (24 if key else 0)  # (sealed: a number and a tag in each)
                content = -(-size // block)
                row = {
                    "tool": tool,
                    "run": run,
                    "seconds": round(seconds, 2),
                    "Mbit/s": round(size * 8 / seconds / 1e6, 1),
                    "intact": sum(_sha(o) == want for o in outs),
                    "receivers": len(outs),
                    "datagrams": sent,
                    "beyond_content": round(sent / content - 1, 4),
                }
                worst = max(losses) if tool != "uni" else losses[0]
                row.update(repairs)
                if repairs and worst > 0:
                    need = worst / (1 - worst) * content
                    row["repair_vs_worst_need"] = round(repairs["repairs"] / need, 3)
                if tool == "uftp":
                    row["uftp_args"] = a.uftp_args
                elif a.alf_args:
                    row["alf_args"] = a.alf_args
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
