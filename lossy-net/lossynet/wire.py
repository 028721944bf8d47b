"""The userspace wire: a process that carries IP packets between two TUN devices, one in each
namespace, and does what the kernel here cannot (it has no netem): one-way delay with jitter,
Gilbert-Elliott burst loss, reordering, duplication, corruption, a down/up schedule, rules on
alf packets, and a pcap capture.

Run as ``python -m lossynet.wire CONFIG_JSON``; it prints ``ready`` once both devices exist and
runs until its stdin closes or it gets SIGTERM, then writes its counters to ``stats`` (a path
in the config). Every random choice comes from a PRNG seeded by the config.

Invariants: a packet is delivered at most ``1 + duplicate`` times, never before its send time
plus ``delay``; with ``jitter`` 0 and ``reorder`` 0 the wire keeps order; every packet read is
counted as delivered or in exactly one drop counter.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
LINKTYPE_RAW = 101


@dataclass
class Direction:
    """Impairments for one direction of the wire (all optional)."""

    delay: float = 0.0  # one way, seconds
    jitter: float = 0.0  # uniform extra delay in [0, jitter): reorders packets, as netem's does
    loss: float = 0.0  # independent random loss
    ge: list[float] | None = None  # Gilbert-Elliott [p_good_to_bad, p_bad_to_good, loss_bad, loss_good]
    reorder: float = 0.0  # probability that a packet is held back ``reorder_delay`` longer
    reorder_delay: float = 0.005
    duplicate: float = 0.0
    corrupt: float = 0.0  # flip one payload byte of a UDP packet (its checksum zeroed: undetected)
    rate_bps: float = 0.0  # serialisation at this rate, with a queue of ``queue_s`` (0: no limit)
    queue_s: float = 0.05
    down: list[list[float]] = field(default_factory=list)  # [[from_s, to_s], ...] after start
    rules: list[dict[str, Any]] = field(default_factory=list)  # see lossynet.rules


@dataclass
class Counters:
    read: int = 0
    delivered: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    lost_down: int = 0
    lost_queue: int = 0
    lost_rule: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    mangled_rule: int = 0


class Impairment:
    """The decisions for one direction, independent of any device (tested on its own)."""

    def __init__(self, d: Direction, seed: int, start: float) -> None:
        self.d = d
        self.rng = random.Random(seed)
        self.start = start
        self.bad = False
        self.busy_until = 0.0
        self.c = Counters()
        self.rules = compile_rules(d.rules)

    def fate(self, packet: bytes, now: float) -> list[tuple[float, bytes]]:
        """When (and as what) this packet arrives on the other side: 0, 1 or 2 deliveries."""
        d, rng, c = self.d, self.rng, self.c
        c.read += 1
        t = now - self.start
        if any(a <= t < b for a, b in d.down):
            c.lost_down += 1
            return []
        if d.ge is not None:
            p_gb, p_bg, h, k = d.ge
            lost = rng.random() < (h if self.bad else k)
            self.bad = (rng.random() >= p_bg) if self.bad else (rng.random() < p_gb)
            if lost:
                c.lost_burst += 1
                return []
        if d.loss and rng.random() < d.loss:
            c.lost_random += 1
            return []
        if self.rules:
            verdict, packet = apply_rules(self.rules, packet)
            if verdict == "drop":
                c.lost_rule += 1
                return []
            if verdict == "mangled":
                c.mangled_rule += 1
        depart = now
        if d.rate_bps:
            depart = max(now, self.busy_until)
            if depart - now > d.queue_s:
                c.lost_queue += 1
                return []
            self.busy_until = depart + len(packet) * 8 / d.rate_bps
        if d.corrupt and rng.random() < d.corrupt:
            packet = corrupt_udp(packet, rng)
            c.corrupted += 1
        copies = 2 if d.duplicate and rng.random() < d.duplicate else 1
        if copies == 2:
            c.duplicated += 1
        out = []
        for _ in range(copies):
            at = depart + d.delay + (rng.random() * d.jitter if d.jitter else 0.0)
            if d.reorder and rng.random() < d.reorder:
                at += d.reorder_delay
                c.reordered += 1
            out.append((at, packet))
        return out


def corrupt_udp(packet: bytes, rng: random.Random) -> bytes:
    """Flip one byte of an IPv4 UDP payload and zero the UDP checksum ("none"), so the kernel
    delivers it: the corruption is then for the application to find."""
    if len(packet) < 29 or packet[0] >> 4 != 4 or packet[9] != 17:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    b = bytearray(packet)
    if len(b) <= ihl + 8:
        return packet
    pos = rng.randrange(ihl + 8, len(b))
    b[pos] ^= 1 << rng.randrange(8)
    b[ihl + 6 : ihl + 8] = b"\0\0"
    return bytes(b)


def compile_rules(rules: list[dict[str, Any]]) -> list[Any]:
    if not rules:
        return []
    from lossynet.rules import Rule

    return [Rule.from_dict(r) for r in rules]


def apply_rules(rules: list[Any], packet: bytes) -> tuple[str, bytes]:
    from lossynet.rules import apply

    return apply(rules, packet)


def open_tun(netns_path: str, name: str) -> int:
    """Create TUN device ``name`` inside the namespace at ``netns_path``; return its fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    nsfd = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(nsfd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
    finally:
        os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Pcap:
    def __init__(self, path: str) -> None:
        self.f = open(path, "wb")  # noqa: SIM115
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))

    def write(self, packet: bytes, wall: float) -> None:
        sec = int(wall)
        self.f.write(struct.pack("<IIII", sec, int((wall - sec) * 1e6), len(packet), len(packet)))
        self.f.write(packet)

    def close(self) -> None:
        self.f.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    start = time.monotonic()
    fds = [open_tun(cfg["ns_a"], cfg["dev_a"]), open_tun(cfg["ns_b"], cfg["dev_b"])]
    seed = int(cfg.get("seed", 1))
    dirs = [
        Impairment(Direction(**cfg.get("a_to_b", {})), seed, start),
        Impairment(Direction(**cfg.get("b_to_a", {})), seed + 1, start),
    ]
    pcap = Pcap(cfg["capture"]) if cfg.get("capture") else None
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    heap: list[tuple[float, int, int, bytes]] = []  # (due, seq, out fd index, packet)
    seq = 0
    wall0 = time.time() - time.monotonic()
    while not stop:
        now = time.monotonic()
        timeout = max(0.0, heap[0][0] - now) if heap else 0.2
        try:
            ready, _w, _x = select.select([fds[0], fds[1], 0], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        if 0 in ready and not os.read(0, 4096):
            break
        for i in (0, 1):
            if fds[i] not in ready:
                continue
            for _ in range(256):
                try:
                    packet = os.read(fds[i], 65535)
                except BlockingIOError:
                    break
                # the delay counts from this read: with the time before the batch, a packet that
                # came in meanwhile left up to the batch's length early (an RTT below the path's)
                now = time.monotonic()
                for due, out in dirs[i].fate(packet, now):
                    heapq.heappush(heap, (due, seq, 1 - i, out))
                    seq += 1
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _due, _s, j, packet = heapq.heappop(heap)
            try:
                os.write(fds[j], packet)
                dirs[1 - j].c.delivered += 1
                if pcap is not None:
                    pcap.write(packet, wall0 + now)
            except OSError:
                dirs[1 - j].c.lost_queue += 1  # the device's queue is full
    if pcap is not None:
        pcap.close()
    if cfg.get("stats"):
        with open(cfg["stats"], "w") as f:
            json.dump(
                {
                    "a_to_b": asdict(dirs[0].c),
                    "b_to_a": asdict(dirs[1].c),
                    "rules_a_to_b": [r.counts() for r in dirs[0].rules],
                    "rules_b_to_a": [r.counts() for r in dirs[1].rules],
                },
                f,
            )


if __name__ == "__main__":
    main()
