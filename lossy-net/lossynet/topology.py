"""Topologies of namespaces and the impairments on their links.

- ``Pair``: hosts ``a`` and ``b`` joined by one or more links; link ``k`` is its own subnet
  10.77.k.0/24 (``a`` is .1, ``b`` is .2), so the destination address picks the path.
- ``Segment``: a sender ``s`` and receivers ``r1``..``rN`` on one bridge (10.78.0.0/24), for
  multicast; each receiver has its own loss and rate.

A link is a veth pair (kernel speed) unless it needs what only the userspace wire does (delay,
jitter, burst loss, reordering, duplication, corruption, rules, capture); then it is a pair of
TUN devices joined by a ``lossynet.wire`` process. Either way, random loss is nftables
``numgen random`` at the receiving side's ingress and a rate limit is tbf on the sending side's
egress, so both behave alike. All addresses live inside namespaces this lab made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lossynet.netns import Lab, LabError, _pythonpath, sh
from lossynet.wire import Direction


@dataclass
class LinkSpec:
    rate_bps: float = 0.0  # each direction (tbf); 0: unlimited
    loss: float = 0.0  # each direction (nftables at the receiving end)
    delay: float = 0.0  # one way
    jitter: float = 0.0
    ge: list[float] | None = None  # Gilbert-Elliott burst loss, each direction (userspace wire)
    reorder: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    down: list[list[float]] = field(default_factory=list)  # [[from_s, to_s]] after setup: link cut
    rules_a_to_b: list[dict[str, Any]] = field(default_factory=list)
    rules_b_to_a: list[dict[str, Any]] = field(default_factory=list)
    queue_s: float = 0.0  # tbf queue; 0: max(50 ms, four one-way delays)
    rate_steps: list[list[float]] = field(default_factory=list)  # [[at_s, rate_bps]]: the rate changes
    capture: str | None = None  # pcap of what the wire delivers (forces the userspace wire)
    force_wire: bool = False
    mtu: int = 0  # of both ends' devices; 0: 1500
    udp_max: int = 0  # UDP packets longer than this vanish (a path-MTU black hole); 0: none

    def needs_wire(self) -> bool:
        return bool(
            self.force_wire
            or self.delay
            or self.jitter
            or self.ge
            or self.reorder
            or self.duplicate
            or self.corrupt
            or self.rules_a_to_b
            or self.rules_b_to_a
            or self.capture
        )

    def direction(self, rules: list[dict[str, Any]]) -> Direction:
        return Direction(
            delay=self.delay,
            jitter=self.jitter,
            ge=self.ge,
            reorder=self.reorder,
            duplicate=self.duplicate,
            corrupt=self.corrupt,
            down=self.down,
            rules=rules,
        )


def _mbit(rate_bps: float) -> str:
    return f"{int(rate_bps)}bit"


# A UDP GSO send as a qdisc counts it: up to 64 KiB, plus the IP and UDP headers of each of up
# to 128 segments (qdisc_pkt_len_init); IPv6 headers, to be safe.
GSO_MAX_PACKET = 65_535 + 127 * 48


def rate_burst(rate_bps: float) -> int:
    return max(int(rate_bps / 8 / 250), 16 * 1514)  # a 4 ms bucket, at least 16 frames


def add_rate(lab: Lab, ns: str, dev: str, rate_bps: float, queue_s: float, burst: int = 0) -> None:
    """tbf on ``dev``'s egress; ``burst`` (bytes) if given, else :func:`rate_burst`.

    tbf takes a GSO send whole when it fits the bucket and cuts it into datagrams when it does
    not; its queue sits before the device's segmentation."""
    burst = burst or rate_burst(rate_bps)
    latency_ms = max(1, int(queue_s * 1000))
    lab.run(
        ns,
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        _mbit(rate_bps),
        "burst",
        str(burst),
        "latency",
        f"{latency_ms}ms",
    )


def _ingress_drop(lab: Lab, ns: str, dev: str, match: str, table: str, chain: str) -> None:
    """Drop (and count) the packets arriving on ``dev`` that ``match`` (an nftables match)."""
    rules = f"""
table inet {table} {{
  chain {chain} {{
    type filter hook prerouting priority -300; policy accept;
    iifname "{dev}" {match} counter drop
  }}
}}
"""
    lab.run(ns, "nft", "-f", "-", input=rules)


def add_loss(lab: Lab, ns: str, dev: str, loss: float, table: str = "lnet") -> None:
    """Drop the fraction ``loss`` of packets arriving on ``dev`` (counted by nftables)."""
    threshold = int(round(loss * 1_000_000))
    _ingress_drop(lab, ns, dev, f"numgen random mod 1000000 < {threshold}", table, "ingress_loss")


def add_udp_max(lab: Lab, ns: str, dev: str, size: int) -> None:
    """Drop UDP packets longer than ``size`` bytes (IP header included) arriving on ``dev``,
    without an ICMP: what a path-MTU black hole does to datagrams the path cannot carry. Its
    own table: ``nft_drops`` reads the loss table's counter."""
    _ingress_drop(lab, ns, dev, f"meta l4proto udp meta length > {size}", "lnet_udp_max", "ingress")


def nft_drops(lab: Lab, ns: str, table: str = "lnet") -> int:
    out = lab.run(ns, "nft", "-j", "list", "table", "inet", table, check=False).stdout
    try:
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule:
                for expr in rule["expr"]:
                    if "counter" in expr:
                        return int(expr["counter"]["packets"])
    except (ValueError, KeyError):
        pass
    return 0


class Pair:
    """Hosts ``a`` and ``b`` joined by ``links``."""

    def __init__(self, lab: Lab, links: list[LinkSpec], seed: int = 1) -> None:
        self.lab = lab
        self.links = links
        self.a = lab.ns("a")
        self.b = lab.ns("b")
        self.wires: list[subprocess.Popen[Any]] = []
        self.devs: list[tuple[str, str]] = []
        self.bursts: list[int] = []  # each link's tbf bucket now, bytes
        self._tmp = lab.mkdtemp("lnet-")
        self._timers: list[threading.Timer] = []
        for k, link in enumerate(links):
            self._add_link(k, link, seed + 10 * k)
        self.started = time.monotonic()
        self.started_wall = time.time()  # link schedules count from here
        for k, link in enumerate(links):
            if link.down and not link.needs_wire():
                self._schedule_down(k, link.down)
            for at, rate in link.rate_steps:
                t = threading.Timer(max(0.0, at), self.set_rate, args=(k, rate))
                t.daemon = True
                t.start()
                self._timers.append(t)

    def addr_a(self, k: int = 0) -> str:
        return f"10.77.{k}.1"

    def addr_b(self, k: int = 0) -> str:
        return f"10.77.{k}.2"

    def _add_link(self, k: int, link: LinkSpec, seed: int) -> None:
        lab, a, b = self.lab, self.a, self.b
        if link.needs_wire():
            da, db = f"ta{k}", f"tb{k}"
            cfg = dict(
                ns_a=f"/var/run/netns/{a}",
                ns_b=f"/var/run/netns/{b}",
                dev_a=da,
                dev_b=db,
                seed=seed,
                a_to_b=asdict(link.direction(link.rules_a_to_b)),
                b_to_a=asdict(link.direction(link.rules_b_to_a)),
                capture=link.capture,
                stats=os.path.join(self._tmp, f"wire{k}.json"),
            )
            p = subprocess.Popen(
                [sys.executable, "-m", "lossynet.wire", json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": _pythonpath()},
            )
            lab.procs.append(p)
            assert p.stdout is not None
            if p.stdout.readline().strip() != b"ready":
                raise LabError("the userspace wire did not start")
            self.wires.append(p)
            for ns, dev, mine, peer in (
                (a, da, self.addr_a(k), self.addr_b(k)),
                (b, db, self.addr_b(k), self.addr_a(k)),
            ):
                lab.run(ns, "ip", "addr", "add", mine, "peer", f"{peer}/32", "dev", dev)
                lab.run(ns, "ip", "link", "set", dev, "mtu", str(link.mtu or 1500), "up")
        else:
            da, db = f"va{k}", f"vb{k}"
            lab.run(a, "ip", "link", "add", da, "type", "veth", "peer", "name", db, "netns", b)
            lab.run(a, "ip", "addr", "add", f"{self.addr_a(k)}/24", "dev", da)
            lab.run(b, "ip", "addr", "add", f"{self.addr_b(k)}/24", "dev", db)
            lab.run(a, "ip", "link", "set", da, "mtu", str(link.mtu or 1500), "up")
            lab.run(b, "ip", "link", "set", db, "mtu", str(link.mtu or 1500), "up")
            # Permanent neighbour entries: no ARP on the link, so a cut link carries packets again
            # the moment it is restored.
            macs = {
                ns: json.loads(lab.run(ns, "ip", "-j", "link", "show", dev).stdout)[0]["address"]
                for ns, dev in ((a, da), (b, db))
            }
            lab.run(
                a, "ip", "neigh", "replace", self.addr_b(k), "lladdr", macs[b], "dev", da, "nud", "permanent"
            )
            lab.run(
                b, "ip", "neigh", "replace", self.addr_a(k), "lladdr", macs[a], "dev", db, "nud", "permanent"
            )
        self.devs.append((da, db))
        self.bursts.append(rate_burst(link.rate_bps) if link.rate_bps else 0)
        if link.rate_bps:
            queue = link.queue_s or max(0.05, 4 * link.delay)
            add_rate(lab, a, da, link.rate_bps, queue)
            add_rate(lab, b, db, link.rate_bps, queue)
        if link.udp_max:
            add_udp_max(lab, b, db, link.udp_max)
            add_udp_max(lab, a, da, link.udp_max)
        if link.loss:
            add_loss(lab, b, db, link.loss, f"lnet{k}")
            add_loss(lab, a, da, link.loss, f"lnet{k}")

    def _schedule_down(self, k: int, spans: list[list[float]]) -> None:
        for start, end in spans:
            for when, state in ((start, "down"), (end, "up")):
                t = threading.Timer(max(0.0, when), self.set_link, args=(k, state == "up"))
                t.daemon = True
                t.start()
                self._timers.append(t)

    def set_rate(self, k: int, rate_bps: float) -> None:
        """Change link ``k``'s rate limit now, both directions (the queue keeps its length in time).

        tbf changes in place and keeps its queue, and a queued packet longer than the new bucket
        can never be sent: it blocks the queue until the next change. At a step from 200 to
        50 Mbit/s (bucket 100 kB -> 25 kB) a whole GSO send (up to GSO_MAX_PACKET, taken whole
        under the old bucket) sometimes sat at the head, and the link carried nothing for the whole
        50 Mbit/s phase. So the bucket never shrinks below what the old one let in.
        """
        link = self.links[k]
        queue = link.queue_s or max(0.05, 4 * link.delay)
        burst = max(rate_burst(rate_bps), min(self.bursts[k], GSO_MAX_PACKET))
        self.bursts[k] = burst
        for ns, dev in zip((self.a, self.b), self.devs[k], strict=True):
            add_rate(self.lab, ns, dev, rate_bps, queue, burst)

    def set_link(self, k: int, up: bool) -> None:
        """Cut link ``k`` (both directions) or restore it, now.

        A cut is an nftables rule that drops everything arriving on the link at either end, as
        a cable cut in the middle of a path would: the interfaces stay up (``ip link set down``
        would also work, but the kernel applies a link's return with up to a second of delay).
        """
        for ns, dev in zip((self.a, self.b), self.devs[k], strict=True):
            table = f"lnetcut{k}"
            if up:
                self.lab.run(ns, "nft", "delete", "table", "inet", table, check=False)
            else:
                self.lab.run(
                    ns,
                    "nft",
                    "-f",
                    "-",
                    input=f"""
table inet {table} {{
  chain cut {{
    type filter hook prerouting priority -400; policy accept;
    iifname "{dev}" drop
  }}
}}
""",
                )

    def nft_drops(self, k: int = 0) -> tuple[int, int]:
        """Packets nftables dropped on link ``k``: (arriving at b, arriving at a)."""
        return nft_drops(self.lab, self.b, f"lnet{k}"), nft_drops(self.lab, self.a, f"lnet{k}")

    def wire_stats(self) -> list[dict[str, Any]]:
        """Stop the wires and return their counters."""
        for t in self._timers:
            t.cancel()
        out = []
        for k, p in enumerate(self.wires):
            if p.poll() is None:
                assert p.stdin is not None
                p.stdin.close()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
            path = os.path.join(self._tmp, f"wire{k}.json")
            with open(path) as f:
                out.append(json.load(f))
        return out


class Segment:
    """A sender and ``n`` receivers on one bridge (for multicast)."""

    def __init__(self, lab: Lab, receivers: list[LinkSpec]) -> None:
        self.lab = lab
        self.sw = lab.ns("sw")
        lab.run(self.sw, "ip", "link", "add", "br0", "type", "bridge")
        lab.run(self.sw, "ip", "link", "set", "br0", "up")
        self.s = self._host("s", 1, LinkSpec())
        # The wire's model: the sender's port cuts its GSO sends into datagrams, as a NIC puts
        # them on a wire, and the bridge loses each datagram on its own on the way to a
        # receiver's port. (Kept whole, a 44-datagram GSO send crossed the bridge as one packet
        # and a drop at the receiver lost it whole: alf's loss came in bursts of 44, uftp's,
        # which sends no GSO, one by one. The price: receivers get no GRO batches, as none do
        # from a veth; a NIC's GRO would give them back.)
        lab.run(self.s, "ip", "link", "set", "dev", "eth0", "gso_max_segs", "1")
        self.r = [self._host(f"r{i + 1}", 10 + i, spec) for i, spec in enumerate(receivers)]

    def addr(self, host: int) -> str:
        return f"10.78.0.{host}"

    def _host(self, name: str, host: int, spec: LinkSpec) -> str:
        lab = self.lab
        ns = lab.ns(name)
        port = f"p{name}"
        lab.run(self.sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        lab.run(self.sw, "ip", "link", "set", port, "master", "br0", "up")
        lab.run(ns, "ip", "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
        lab.run(ns, "ip", "link", "set", "eth0", "up")
        lab.run(ns, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")
        if spec.rate_bps:
            add_rate(lab, self.sw, port, spec.rate_bps, spec.queue_s or 0.05)
        if spec.loss:
            threshold = int(round(spec.loss * 1_000_000))
            rules = f"""
table bridge lnet_{port} {{
  chain forward {{
    type filter hook forward priority -300; policy accept;
    oifname "{port}" numgen random mod 1000000 < {threshold} counter drop
  }}
}}
"""
            lab.run(self.sw, "nft", "-f", "-", input=rules)
        return ns


class Routed:
    """Hosts ``a`` and ``b`` on two subnets joined by a router ``r`` (IPv4 and IPv6), with each
    side's MTU its own: a smaller MTU behind the router is found only through its ICMP
    "fragmentation needed" / "packet too big", as on a path into a tunnel."""

    def __init__(self, lab: Lab, mtu_a: int = 1500, mtu_b: int = 1500) -> None:
        self.a, self.r, self.b = lab.ns("a"), lab.ns("r"), lab.ns("b")
        for ns in (self.a, self.r, self.b):
            # No duplicate address detection: it holds a fresh link-local address for a second or
            # two, and neighbour discovery (and so the first packets) waits for it.
            for conf in ("all", "default"):
                lab.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_dad=0")
        for k, (host, mtu) in enumerate(((self.a, mtu_a), (self.b, mtu_b)), start=1):
            dev = f"r{k}"
            lab.run(self.r, "ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", host)
            lab.run(self.r, "ip", "addr", "add", f"10.79.{k}.254/24", "dev", dev)
            lab.run(self.r, "ip", "-6", "addr", "add", f"fd79:{k}::fe/64", "dev", dev, "nodad")
            lab.run(self.r, "ip", "link", "set", dev, "mtu", str(mtu), "up")
            lab.run(host, "ip", "addr", "add", f"10.79.{k}.1/24", "dev", "eth0")
            lab.run(host, "ip", "-6", "addr", "add", f"fd79:{k}::1/64", "dev", "eth0", "nodad")
            lab.run(host, "ip", "link", "set", "eth0", "mtu", str(mtu), "up")
            lab.run(host, "ip", "route", "add", "default", "via", f"10.79.{k}.254")
            lab.run(host, "ip", "-6", "route", "add", "default", "via", f"fd79:{k}::fe")
        lab.run(self.r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

    def addr_b(self, v6: bool = False) -> str:
        return "fd79:2::1" if v6 else "10.79.2.1"


def wait_port(lab: Lab, ns: str, port: int, proto: str = "udp", timeout: float = 10.0) -> None:
    """Wait until something listens on ``port`` inside ``ns`` (bounded)."""
    flag = "-uln" if proto == "udp" else "-tln"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = lab.run(ns, "ss", flag, check=False).stdout
        if f":{port} " in out:
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on {proto} port {port} in {ns}")


__all__ = ["LinkSpec", "Pair", "Segment", "wait_port", "sh"]
