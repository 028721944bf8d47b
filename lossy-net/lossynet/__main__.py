"""python -m lossynet: run commands across a named profile, and lab housekeeping.

    python -m lossynet list
    python -m lossynet run wan --bytes 100000000 \
        --recv "alf recv 9000 -o /tmp/out" --send "alf send {b} 9000 /tmp/in"
    python -m lossynet cleanup          # remove namespaces left by labs that no longer run
    python -m lossynet ceiling          # what the userspace wire itself can carry
    python -m lossynet tcp wan --seconds 20     # one TCP flow across a profile: the baseline

In --recv/--send, {a} and {b} are the hosts' addresses on link 0 ({a1}, {b1}: link 1, ...);
in a multicast profile --recv runs on every receiver and {s} is the sender's address. The
topology is always torn down, on success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from lossynet.netns import Lab, LabError, clean_stale
from lossynet.profiles import PROFILES
from lossynet.topology import LinkSpec, Pair, Segment


def _addresses(topo: Pair | Segment) -> dict[str, str]:
    if isinstance(topo, Pair):
        out = {"a": topo.addr_a(0), "b": topo.addr_b(0)}
        for k in range(len(topo.links)):
            out[f"a{k}"], out[f"b{k}"] = topo.addr_a(k), topo.addr_b(k)
        return out
    return {"s": topo.addr(1), **{f"r{i + 1}": topo.addr(10 + i) for i in range(len(topo.r))}}


def run(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    result: dict[str, Any] = {"profile": args.profile, "text": profile.text}
    with Lab() as lab:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through Lab.close
        if profile.kind == "pair":
            links = profile.links
            if args.capture:
                links = [*links]
                links[0] = type(links[0])(**{**links[0].__dict__, "capture": args.capture})
            topo: Pair | Segment = Pair(lab, links, seed=args.seed)
            recv_ns, send_ns = [topo.b], topo.a
        else:
            topo = Segment(lab, profile.links)
            recv_ns, send_ns = topo.r, topo.s
        addrs = _addresses(topo)
        result["addresses"] = addrs
        if isinstance(topo, Pair):
            result["link_epoch"] = topo.started_wall  # link schedules (steps, cuts) count from here
        receivers = [lab.start(ns, args.recv.format(**addrs)) for ns in recv_ns]
        time.sleep(args.settle)
        t0 = time.monotonic()
        sender = lab.start(send_ns, args.send.format(**addrs))
        deadline = t0 + args.timeout
        codes: dict[str, int | None] = {}
        for name, p in [("send", sender)] + [(f"recv{i}", r) for i, r in enumerate(receivers)]:
            try:
                codes[name] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = None
        elapsed = time.monotonic() - t0
        result.update(seconds=round(elapsed, 3), exit_codes=codes)
        if args.bytes:
            result["throughput_mbps"] = round(args.bytes * 8 / elapsed / 1e6, 2)
        if isinstance(topo, Pair):
            result["wires"] = topo.wire_stats()
            result["nft_drops"] = [topo.nft_drops(k) for k in range(len(topo.links))]
    print(json.dumps(result, indent=1))
    return 0 if all(c == 0 for c in codes.values()) else 1


def _probe(lab: Lab, ns: str, *args: str) -> dict[str, Any]:
    out = lab.run(ns, sys.executable, "-m", "lossynet.probe", *args).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _start_probe(lab: Lab, ns: str, *args: str) -> subprocess.Popen[str]:
    p = lab.start(ns, [sys.executable, "-m", "lossynet.probe", *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "listening":
        raise LabError(f"probe {args[0]} did not start")
    return p


def ceiling(args: argparse.Namespace) -> int:
    """Offer the userspace wire (no impairment) more and more datagrams; report what it carries."""
    rows = []
    with Lab() as lab:
        pair = Pair(lab, [LinkSpec(force_wire=True)])
        for pps in args.rates:
            count = int(pps * args.seconds)
            sink = _start_probe(lab, pair.b, "udp-sink", "9100", "1.0")
            blast = _probe(
                lab, pair.a, "udp-blast", pair.addr_b(), "9100", str(count), str(pps), str(args.size)
            )
            out, _ = sink.communicate(timeout=120)
            got = json.loads(out.strip().splitlines()[-1])["received"]
            offered = count / blast["seconds"]
            rows.append(
                {
                    "offered_pps": round(offered),
                    "delivered_pps": round(got / blast["seconds"]),
                    "loss": round(1 - got / count, 4),
                    "delivered_mbps": round(got * args.size * 8 / blast["seconds"] / 1e6, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"size": args.size, "rows": rows}, indent=1))
    return 0


def tcp(args: argparse.Namespace) -> int:
    """One TCP flow (the kernel's default congestion control) across a profile."""
    profile = PROFILES[args.profile]
    with Lab() as lab:
        pair = Pair(lab, profile.links, seed=args.seed)
        sink = _start_probe(lab, pair.b, "tcp-sink", "9200")
        sent = _probe(lab, pair.a, "tcp-send", pair.addr_b(), "9200", str(args.seconds), args.cc)
        sink.communicate(timeout=120)
        cc = (
            args.cc
            or lab.run(pair.a, "sysctl", "-n", "net.ipv4.tcp_congestion_control", check=False).stdout.strip()
        )
    print(
        json.dumps(
            {
                "profile": args.profile,
                "text": profile.text,
                "congestion_control": cc,
                "seconds": round(sent["seconds"], 2),
                "goodput_mbps": round(sent["goodput_bps"] / 1e6, 2),
                "per_second_mbps": [
                    round((b - a) * 8 / 1e6, 2)
                    for a, b in zip([0] + sent["per_second"], sent["per_second"], strict=False)
                ],
            },
            indent=1,
        )
    )
    return 0


def main() -> int:
    faulthandler.register(signal.SIGUSR2)  # a stuck runner prints where it is (tests use it)
    ap = argparse.ArgumentParser(
        prog="python -m lossynet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the profiles")
    sub.add_parser("cleanup", help="remove namespaces of labs that no longer run")
    r = sub.add_parser("run", help="run a receiver and a sender across a profile")
    r.add_argument("profile", choices=sorted(PROFILES))
    r.add_argument("--recv", required=True, help="shell command for the receiver(s)")
    r.add_argument("--send", required=True, help="shell command for the sender")
    r.add_argument("--bytes", type=int, default=0, help="bytes moved, for a throughput figure")
    r.add_argument("--timeout", type=float, default=300)
    r.add_argument("--settle", type=float, default=0.5, help="seconds between starting receiver and sender")
    r.add_argument("--capture", default="", help="pcap of link 0 (through the userspace wire)")
    r.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("ceiling", help="measure the userspace wire's own limit")
    c.add_argument("--rates", type=float, nargs="+", default=[10000, 20000, 40000, 60000, 80000, 120000])
    c.add_argument("--seconds", type=float, default=2.0)
    c.add_argument("--size", type=int, default=1400, help="UDP payload bytes")
    t = sub.add_parser("tcp", help="one TCP flow across a profile (the baseline)")
    t.add_argument("profile", choices=sorted(k for k, v in PROFILES.items() if v.kind == "pair"))
    t.add_argument("--seconds", type=float, default=20.0)
    t.add_argument("--cc", default="", help="TCP congestion control (default: the system's)")
    t.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "list":
        for name, p in PROFILES.items():
            print(f"{name:18s} {p.text}")
        return 0
    if args.cmd == "cleanup":
        print("removed:", " ".join(clean_stale()) or "nothing")
        return 0
    # No trial namespace here: one named after this process would look like the lab's own for
    # a moment (a test waiting for the lab's namespaces once took it for them). Without the
    # right, the lab's first `ip netns add` fails with a LabError, reported below.
    if os.geteuid() != 0:
        print("lossynet: network namespaces need root", file=sys.stderr)
        return 2
    try:
        return {"run": run, "ceiling": ceiling, "tcp": tcp}[args.cmd](args)
    except LabError as e:
        print(f"lossynet: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
