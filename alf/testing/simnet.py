"""A simulated network with virtual time for testing the protocol cores without sockets.

``Network`` holds nodes (any hashable address) joined by one-way links, each with seeded loss,
duplication, reordering, delay with jitter and an optional bottleneck rate, and groups: a
datagram sent to a group goes down the link to each member, and each link decides its fate on
its own (as a multicast tree's branches do). Two addresses of one machine are two nodes, so a
multipath transfer is two links between two pairs of nodes. Like trio's FakeNet, it is the
transport the cores are tested on: ``send`` queues a datagram, ``due`` hands out what has
arrived by a time, in arrival order.

``run_transfer`` wires a sender and a receiver (with in-memory sources and sinks, through the
same session glue as the real drivers) across a two-node network and runs them to their
outcomes. Same seed, same inputs: the same events, counts and times.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from alf import wire
from alf.compress import Compressor, frame_all
from alf.content import (
    BackendWriter,
    BytesSource,
    DecompressingSink,
    DecompressingWriter,
    EitherSink,
    MemoryBackend,
    MemoryWriter,
    OffsetSink,
    OrderedSink,
    Sink,
    Source,
    Writer,
)
from alf.digest import digest_bytes
from alf.errors import Outcome
from alf.events import Ended, Event
from alf.io.source import StreamSource
from alf.receiver import Receiver, ReceiverConfig
from alf.resume import Kept
from alf.sender import Sender, SenderConfig
from alf.session import Dropper, RecvSession, SendSession

SENDER_ADDR = ("sender", 1)
GRO_MAX = 44
DATA_TYPE = bytes([wire.MsgType.DATA])
RECEIVER_ADDR = ("receiver", 2)


@dataclass(frozen=True)
class Link:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability that a datagram is held back by ``reorder_delay``
    reorder_delay: float = 0.004
    delay: float = 0.005  # one way, seconds
    jitter: float = 0.0  # uniform extra delay in [0, jitter)
    rate_bps: float = 0.0  # 0: no bottleneck
    queue_bytes: int = 0  # with rate_bps: a drop-tail queue this deep (0: unbounded)
    rate_steps: tuple[tuple[float, float], ...] = ()  # (from_time, rate_bps): the bottleneck changes
    max_size: int = 0  # larger datagrams vanish without a word (a path-MTU black hole); 0: none
    down: tuple[tuple[float, float], ...] = ()  # [from, until) intervals in which it carries nothing


@dataclass
class LinkCounters:
    sent: int = 0
    lost: int = 0
    queue_drops: int = 0
    duplicated: int = 0
    reordered: int = 0


class Wire:
    """One direction: decides the fate and arrival time of each datagram."""

    def __init__(self, link: Link, rng: random.Random) -> None:
        self.link = link
        self.rng = rng
        self.busy_until = 0.0
        self.counters = LinkCounters()

    def arrivals(self, size: int, now: float) -> list[float]:
        link, rng, c = self.link, self.rng, self.counters
        c.sent += 1
        if link.max_size and size > link.max_size:
            c.lost += 1
            return []
        if any(a <= now < b for a, b in link.down):
            c.lost += 1
            return []
        start = now
        rate = link.rate_bps
        for t, r in link.rate_steps:
            if now >= t:
                rate = r
        if rate:
            start = max(now, self.busy_until)
            if link.queue_bytes and (start - now) * rate / 8 > link.queue_bytes:
                c.queue_drops += 1
                return []
            self.busy_until = start + size * 8 / rate
        if rng.random() < link.loss:
            c.lost += 1
            return []
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            copies = 2
            c.duplicated += 1
        out = []
        for _ in range(copies):
            t = start + link.delay + (rng.random() * link.jitter if link.jitter else 0.0)
            if link.reorder and rng.random() < link.reorder:
                t += link.reorder_delay
                c.reordered += 1
            out.append(t)
        return out


Node = Any  # an address: ("sender", 1), ("10.2.0.1", 8834), ...


class Network:
    """Nodes, one-way links between them and groups, in virtual time. Every link draws from the
    network's one seeded generator, in the order datagrams are sent, so a run is a function of
    the seed and what the nodes send."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.links: dict[tuple[Node, Node], Wire] = {}
        self.groups: dict[Node, list[Node]] = {}
        self.tick: dict[Node, float] = {}  # a node that reads on a clock gets arrivals on its ticks
        self._queue: list[tuple[float, int, Node, Node, bytes]] = []
        self._seq = 0
        # an on-path attacker: what each datagram from src to dst becomes on the way (altered,
        # dropped, joined by replays and forgeries that seem to come from src)
        self.tamper: Callable[[Node, Node, bytes], list[bytes]] | None = None

    def link(self, src: Node, dst: Node, link: Link = Link()) -> Wire:
        """Join ``src`` to ``dst`` (one way); returns the wire, whose counters tell its story."""
        w = self.links[(src, dst)] = Wire(link, self.rng)
        return w

    def join(self, group: Node, member: Node) -> None:
        """``member`` receives what is sent to ``group`` (over the link from the sender to it)."""
        self.groups.setdefault(group, []).append(member)

    def leave(self, group: Node, member: Node) -> None:
        self.groups[group].remove(member)

    def send(self, src: Node, dst: Node, datagram: bytes, now: float) -> None:
        """Send at ``now``; a destination with no link from ``src`` is a black hole."""
        for to in self.groups.get(dst, [dst]):
            w = self.links.get((src, to))
            if w is None:
                continue
            for d in self.tamper(src, to, datagram) if self.tamper is not None else (datagram,):
                for arrival in w.arrivals(len(d), now):
                    tick = self.tick.get(to)
                    if tick:  # it wakes on a tick and finds a backlog
                        arrival = math.ceil(arrival / tick - 1e-9) * tick
                    self.inject(src, to, d, arrival)

    def inject(self, src: Node, dst: Node, datagram: bytes, at: float) -> None:
        """Deliver ``datagram`` to ``dst`` at ``at`` as if from ``src``, past every link (a forger)."""
        heapq.heappush(self._queue, (at, self._seq, src, dst, datagram))
        self._seq += 1

    def next_arrival(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[tuple[Node, Node, bytes]]:
        """(source, destination, datagram) of everything that has arrived by ``now``, in order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _t, _s, src, dst, d = heapq.heappop(self._queue)
            out.append((src, dst, d))
        return out


@dataclass
class SimResult:
    sender: Outcome | None
    receiver: Outcome | None
    output: bytes
    elapsed: float
    sender_stats: dict[str, Any]
    receiver_stats: dict[str, Any]
    forward: LinkCounters
    backward: LinkCounters
    events: int = 0
    first_pass_at: float | None = None  # when every ADU had been sent once
    sender_done_at: float | None = None  # when the sender's outcome was set
    sender_log: list[Event] = field(default_factory=list)  # the cores' events, in order
    receiver_log: list[Event] = field(default_factory=list)
    paths: list[tuple[LinkCounters, LinkCounters]] = field(default_factory=list)  # (forward, back) each
    kept: Kept | None = None  # §18: what the receiver's output kept for a resume (or started with)


def _feed(source: StreamSource, data: bytes, fed: int, rng: random.Random, adu_size: int) -> int:
    """Give a stream source what its ring has room for, in odd-sized reads as from a real
    pipe (ADUs straddle chunk boundaries), and its end after the last byte; how much of
    ``data`` it has been fed now."""
    while source.total_bytes() is None:
        span = len(source.free_span())
        if not span:
            break
        chunk = data[fed : fed + min(span, rng.randint(1, 3 * adu_size + 7))]
        if not chunk:
            source.feed_eof()
            break
        source.feed(chunk)
        fed += len(chunk)
    return fed


def run_transfer(
    data: bytes,
    *,
    stream: bool = False,
    in_order: bool = False,
    forward: Link = Link(),
    backward: Link = Link(),
    seed: int = 0,
    sender_config: SenderConfig | None = None,
    receiver_config: ReceiverConfig | None = None,
    stream_window_adus: int = 256,
    stream_initial_adus: int | None = None,
    max_time: float = 120.0,
    max_events: int = 2_000_000,
    inject: list[tuple[float, bytes]] | None = None,
    kill_sender_at: float = float("inf"),
    kill_receiver_at: float = float("inf"),
    rx_tick: float = 0.001,
    receiver_drop: float = 0.0,
    receiver_buffer: int = 0,
    trace: list[tuple[float, float, int]] | None = None,
    more_paths: list[tuple[Link, Link]] | None = None,
    source_stamp: tuple[int, int, int] | None = None,
    partial: bytes | None = None,
    compress: bool = False,
) -> SimResult:
    """Send ``data`` across the simulated network and return both outcomes and the output.

    ``inject`` lists (time, datagram) pairs delivered to the receiver as if from the sender's
    address, for hostile-input tests. ``kill_*_at`` makes a side vanish at that virtual time:
    it neither sends nor receives again, as if its process were killed. The receiver takes
    DATA on a ``rx_tick`` clock, so what arrived meanwhile comes as a batch (and, as with GRO,
    runs of it come coalesced). ``receiver_drop`` is the receiver's ``--drop``;
    ``receiver_buffer``, if given, is the read buffer the receiver is told it has (a forward
    ``Link`` with a rate and ``queue_bytes`` then models a receiver that reads at that rate
    from a socket buffer that deep, whose drops it reads). ``trace``, if
    given, receives (time, the sender's pacing rate, bottleneck queue drops so far) whenever
    the rate changes. ``more_paths`` adds (forward, backward) links of further paths (§14):
    path ``p`` joins sender node ("sender", 1 + p) to receiver node ("receiver", 2 + p), and
    the sender's config must name that many paths. ``source_stamp`` names the sender's file
    (§18: a receiver may hold part of it); ``partial`` is what the receiver's output holds at
    the start (with ``receiver_config.kept``: a resume). ``compress`` (with ``stream``): the
    content goes as compressed blocks (§19) into a file output (the receiver's ``in_order``
    false) or an ordered one; ``output`` is what they restored to.
    """
    net = Network(seed)
    rng = net.rng
    coalesce_rng = random.Random(seed ^ 0x5A5A)  # its own stream: link fates do not depend on it
    scfg = sender_config or SenderConfig(adu_size=512, rate_bps=50e6, timeout=10.0)
    rcfg = receiver_config or ReceiverConfig(in_order=in_order, timeout=10.0, window_bytes=1 << 20)
    now = 0.0
    session_id = rng.getrandbits(64) or 1
    source: Source
    raw = data
    if compress:  # §19: the stream is the framed blocks; the digest is of the input
        data = b"".join(b"".join(parts) for parts, _ in frame_all(Compressor(1, scfg.adu_size), raw))
        scfg = replace(scfg, features=scfg.features | wire.FEATURE_COMPRESS)
    if stream:
        clock = lambda: now  # noqa: E731 (virtual time, read when the ring decides to grow)
        source = StreamSource(scfg.adu_size, stream_window_adus, scfg.digest, stream_initial_adus, clock)
        if compress:
            input_digest = digest_bytes(scfg.digest, raw)
            source.digest = lambda: input_digest if source.total_bytes() is not None else None  # type: ignore[method-assign]
        sender = Sender(scfg, session_id, wire.Kind.STREAM, None, now)
    else:
        source = BytesSource(data, scfg.adu_size, scfg.digest)
        sender = Sender(scfg, session_id, wire.Kind.FILE, len(data), now, source=source_stamp)
    send = SendSession(sender, source)
    writer = MemoryWriter()
    backend = MemoryBackend(rcfg.kept)
    if partial is not None:
        backend.data = bytearray(partial)
    # a small read-back chunk, so hashing what arrived beyond holes takes many steps
    sink: Sink = OrderedSink(writer) if rcfg.in_order else OffsetSink(backend, hash_chunk=1000)
    # as the api's outputs: a HELLO that says its content is compressed picks the sink that
    # restores the blocks (§19)
    restore_to: Writer = writer if rcfg.in_order else BackendWriter(backend)
    file_backend = None if rcfg.in_order else backend
    sink = EitherSink(sink, lambda: DecompressingSink(DecompressingWriter(restore_to), file_backend))
    receiver = Receiver(rcfg, now, secret=seed.to_bytes(8, "big", signed=True))
    if receiver_buffer:
        receiver.set_read_buffer(receiver_buffer)
    recv = RecvSession(receiver, sink, Dropper(receiver_drop, seed) if receiver_drop else None)
    fwd = net.link(SENDER_ADDR, RECEIVER_ADDR, forward)
    back = net.link(RECEIVER_ADDR, SENDER_ADDR, backward)
    net.tick[RECEIVER_ADDR] = rx_tick
    senders, receivers = [SENDER_ADDR], [RECEIVER_ADDR]
    wires = [(fwd, back)]
    for p, (f, b) in enumerate(more_paths or [], start=1):
        s_node, r_node = ("sender", 1 + p), ("receiver", 2 + p)
        wires.append((net.link(s_node, r_node, f), net.link(r_node, s_node, b)))
        senders.append(s_node)
        receivers.append(r_node)
        net.tick[r_node] = rx_tick
    path_of: dict[Node, int] = {node: p for p, node in enumerate(senders)}
    path_of.update({node: p for p, node in enumerate(receivers)})
    for t, d in inject or []:
        net.inject(SENDER_ADDR, RECEIVER_ADDR, d, t)
    fed = 0
    events = 0
    sender_log: list[Event] = []
    receiver_log: list[Event] = []
    first_pass_at: float | None = None
    sender_done_at: float | None = None

    slot_size = GRO_MAX * send.segment
    slots: list[memoryview] = []  # reusable receive buffers, as the driver's

    def deliver(arrivals: list[tuple[Node, bytes]], t: float) -> None:
        """Hand arrivals to the receiver, coalescing runs of same-size DATA from one source as
        GRO would (on a coin toss, so both receive paths run). Coalesced buffers land in
        reusable slots named to the receiver, as the UDP driver does, each used once before
        the flush."""
        i = 0
        used = 0
        while i < len(arrivals):
            src, d = arrivals[i]
            j = i + 1
            if len(d) > 1 and d[1] == wire.MsgType.DATA and coalesce_rng.random() < 0.5:
                while j < len(arrivals) and j - i < GRO_MAX and arrivals[j][1][1:2] == DATA_TYPE:
                    nxt = arrivals[j][1]
                    if arrivals[j][0] != src or len(nxt) > len(d) or len(arrivals[j - 1][1]) != len(d):
                        break
                    j += 1
            if j - i > 1:
                blob = b"".join(a[1] for a in arrivals[i:j])
                if used == len(slots):
                    slots.append(memoryview(bytearray(slot_size)))
                slots[used][: len(blob)] = blob
                recv.on_coalesced(slots[used][: len(blob)], len(d), src, t, used)
                used += 1
            else:
                recv.on_datagrams([(d, src)], t)
            i = j
        recv.flush(t)
        if receiver_buffer:  # the driver reads its socket's drop count after each turn
            receiver.set_socket_drops(fwd.counters.queue_drops)

    while now <= max_time and events < max_events:
        events += 1
        if isinstance(source, StreamSource):
            fed = _feed(source, data, fed, rng, scfg.adu_size)
        if first_pass_at is None and sender.end_adus is not None and sender.next_new >= sender.end_adus:
            first_pass_at = now
        if sender_done_at is None and sender.outcome is not None:
            sender_done_at = now
        if trace is not None and (not trace or trace[-1][1] != sender.path.cc.rate_bps):
            trace.append((now, sender.path.cc.rate_bps, fwd.counters.queue_drops))
        sender_alive, receiver_alive = now < kill_sender_at, now < kill_receiver_at
        # the sender sends everything it may at this instant
        for _ in range(10_000 if sender_alive else 0):
            control, out = send.step(now)
            for c in control:
                net.send(senders[c.path], receivers[c.path], c.data, now)
            if out is None:
                break
            for header, payload in zip(out.headers, out.payloads, strict=True):
                net.send(senders[out.path], receivers[out.path], bytes(header) + bytes(payload), now)
        if receiver_alive:
            for d, addr in recv.poll(now):  # an answer leaves from the address it answers on
                net.send(receivers[path_of.get(addr, 0)], addr, d, now)
        sender_log += sender.take_events()
        receiver_log += recv.take_events()
        sender_done = bool(sender_log) and isinstance(sender_log[-1], Ended) or not sender_alive
        receiver_done = bool(receiver_log) and isinstance(receiver_log[-1], Ended) or not receiver_alive
        if sender_done and receiver_done:
            break
        arrival = net.next_arrival()
        deadlines = [] if arrival is None else [arrival]
        if not sender_done:
            deadlines.append(min(sender.next_deadline(now), kill_sender_at))
        if not receiver_done:
            deadlines.append(min(receiver.next_deadline(now), kill_receiver_at))
        if not deadlines:
            break
        nxt = min(deadlines)
        now = nxt if nxt > now else now + 1e-6
        arrived: list[tuple[Node, bytes]] = []
        for src, dst, d in net.due(now):
            if dst in receivers:
                if now < kill_receiver_at:
                    arrived.append((src, d))
            elif now < kill_sender_at:
                if arrived:
                    deliver(arrived, now)
                    arrived = []
                p = path_of.get(dst, 0)
                send.on_datagram(d, now, None, p, src if p else None)
        if arrived:
            deliver(arrived, now)
    recv.close()
    output = bytes(writer.data) if rcfg.in_order else bytes(backend.data)
    return SimResult(
        sender.outcome,
        receiver.outcome,
        output,
        now,
        send.stats(),
        recv.stats(),
        fwd.counters,
        back.counters,
        events,
        first_pass_at,
        sender_done_at,
        sender_log,
        receiver_log,
        [(f.counters, b.counters) for f, b in wires],
        backend.kept,
    )


GROUP_ADDR = ("group", 0)


@dataclass
class GroupSimResult:
    sender: Outcome | None
    receivers: list[Outcome | None]
    outputs: list[bytes]
    elapsed: float
    sender_stats: dict[str, Any]
    receiver_stats: list[dict[str, Any]]
    feedback: list[int]  # datagrams each receiver sent the sender (JOIN, STATUS, NAK, DONE)
    naks: list[int]  # of which NAKs
    group_data: int  # DATA datagrams the sender sent to the group
    done_at: list[float | None]  # when each receiver's outcome was set
    sender_log: list[Event] = field(default_factory=list)
    feedback_log: list[tuple[float, int, int]] = field(default_factory=list)  # (time, receiver, type)


def run_group_transfer(
    data: bytes,
    members: list[tuple[Link, Link]],
    *,
    stream: bool = False,
    seed: int = 0,
    sender_config: SenderConfig | None = None,
    receiver_config: ReceiverConfig | None = None,
    expected: int | None = None,
    wait: float | None = None,
    quorum: int | None = None,
    start_at: list[float] | None = None,
    kill_at: list[float] | None = None,
    restart_at: list[float] | None = None,
    upstream_loss: float = 0.0,
    stream_window_adus: int = 256,
    max_time: float = 120.0,
    max_events: int = 3_000_000,
    receiver_buffer: int = 0,
    slow: str = "catch-up",
    receiver_configs: list[ReceiverConfig] | None = None,
    tamper: Callable[[Node, Node, bytes], list[bytes]] | None = None,
) -> GroupSimResult:
    """Send ``data`` from one sender to a group of receivers, one per (forward, backward) link
    pair in ``members``: receiver ``k`` is node ("receiver", k) and joins the group; it starts
    at ``start_at[k]`` and vanishes at ``kill_at[k]``; ``restart_at[k]`` (after its kill) starts a
    new receiver at the same node, with a secret of its own (its output replaces the first's).
    ``upstream_loss`` drops DATA once, before
    the fan-out, so every receiver misses the same datagrams (loss upstream of a bridge).
    ``receiver_buffer``: each receiver's read buffer, so its window follows §6's flow rule.
    ``receiver_configs``: each receiver's own configuration (else ``receiver_config`` for all).
    ``tamper``: an on-path attacker on every link (``Network.tamper``)."""
    from alf.group import GroupSender

    net = Network(seed)
    net.tamper = tamper
    rng = net.rng
    upstream_rng = random.Random(seed ^ 0x0F0F)
    scfg = sender_config or SenderConfig(adu_size=512, rate_bps=50e6, timeout=10.0)
    rcfg = receiver_config or ReceiverConfig(in_order=stream, timeout=10.0, window_bytes=1 << 20)
    now = 0.0
    session_id = rng.getrandbits(64) or 1
    source: Source
    if stream:
        clock = lambda: now  # noqa: E731
        source = StreamSource(scfg.adu_size, stream_window_adus, scfg.digest, None, clock)
        kind, total = wire.Kind.STREAM, None
    else:
        source = BytesSource(data, scfg.adu_size, scfg.digest)
        kind, total = wire.Kind.FILE, len(data)
    sender = GroupSender(scfg, session_id, kind, total, now, GROUP_ADDR, expected, wait, quorum, slow)
    send = SendSession(sender, source)
    n = len(members)
    starts = start_at or [0.0] * n
    kills = list(kill_at or [float("inf")] * n)
    restarts = list(restart_at or [float("inf")] * n)
    lives = [0] * n
    nodes = [("receiver", k) for k in range(n)]
    index = {node: k for k, node in enumerate(nodes)}
    backs = []
    for node, (fwd, back) in zip(nodes, members, strict=True):
        net.link(SENDER_ADDR, node, fwd)
        backs.append(net.link(node, SENDER_ADDR, back))
        net.join(GROUP_ADDR, node)
    rxs: list[Receiver | None] = [None] * n
    sessions: list[RecvSession | None] = [None] * n
    sinks: list[Any] = [None] * n
    feedback, naks = [0] * n, [0] * n
    feedback_log: list[tuple[float, int, int]] = []
    done_at: list[float | None] = [None] * n
    ended = [False] * n
    group_data = 0
    fed = 0
    log: list[Event] = []
    events = 0
    while now <= max_time and events < max_events:
        events += 1
        for k in range(n):
            if now >= restarts[k] and now >= kills[k] and rxs[k] is not None:
                old = sessions[k]
                if old is not None:
                    old.close()
                rxs[k], sessions[k], ended[k], done_at[k] = None, None, False, None
                kills[k] = restarts[k] = float("inf")
                lives[k] += 1
            if rxs[k] is None and now >= starts[k] and now < kills[k]:
                secret = bytes([k, lives[k]]) * 4 if lives[k] else bytes([k]) * 8
                rx = Receiver(receiver_configs[k] if receiver_configs else rcfg, now, secret=secret)
                if receiver_buffer:  # the read buffer each receiver is told it has (its flow window)
                    rx.set_read_buffer(receiver_buffer)
                store: MemoryWriter | MemoryBackend
                if rcfg.in_order:
                    store = MemoryWriter()
                    sink: OrderedSink | OffsetSink = OrderedSink(store)
                else:
                    store = MemoryBackend()
                    sink = OffsetSink(store, hash_chunk=1000)
                rxs[k], sessions[k], sinks[k] = rx, RecvSession(rx, sink), store
        if isinstance(source, StreamSource):
            fed = _feed(source, data, fed, rng, scfg.adu_size)
        for _ in range(10_000):
            control, out = send.step(now)
            for c in control:
                net.send(SENDER_ADDR, c.addr, c.data, now)
            if out is None:
                break
            for header, payload in zip(out.headers, out.payloads, strict=True):
                group_data += 1
                if upstream_loss and upstream_rng.random() < upstream_loss:
                    continue
                net.send(SENDER_ADDR, GROUP_ADDR, bytes(header) + bytes(payload), now)
        log += sender.take_events()
        for k, rs in enumerate(sessions):
            if rs is None or ended[k] or now >= kills[k]:
                continue
            for d, addr in rs.poll(now):
                feedback[k] += 1
                naks[k] += d[1] == wire.MsgType.NAK
                feedback_log.append((now, k, d[1]))
                net.send(nodes[k], addr, d, now)
            if rs.receiver.outcome is not None and done_at[k] is None:
                done_at[k] = now
            if any(isinstance(e, Ended) for e in rs.take_events()):
                ended[k] = True
        sender_done = (
            (bool(log) and isinstance(log[-1], Ended)) or sender.outcome is not None and not sender._out
        )
        alive = [k for k in range(n) if not ended[k] and now < kills[k]]
        if sender_done and not alive:
            break
        deadlines = [t for t in (net.next_arrival(),) if t is not None]
        if not sender_done:
            deadlines.append(sender.next_deadline(now))
        for k in alive:
            made = rxs[k]
            deadlines.append(made.next_deadline(now) if made is not None else starts[k])
            deadlines.append(kills[k])
        deadlines += [t for t in restarts if now < t < float("inf")]
        if not deadlines:
            break
        nxt = min(deadlines)
        now = nxt if nxt > now else now + 1e-6
        arrived: dict[int, list[tuple[bytes, Node]]] = {}
        for src, dst, d in net.due(now):
            if dst == SENDER_ADDR:
                if not sender_done:
                    send.on_datagram(d, now, None, 0, src)
            else:
                k = index[dst]
                if sessions[k] is not None and now < kills[k] and not ended[k]:
                    arrived.setdefault(k, []).append((d, src))
        for k, items in arrived.items():
            rs = sessions[k]
            assert rs is not None
            rs.on_datagrams(items, now)
            rs.flush(now)
    outputs = []
    for k, rs in enumerate(sessions):
        if rs is not None:
            rs.close()
        store = sinks[k]
        outputs.append(b"" if store is None else bytes(store.data))
    return GroupSimResult(
        sender.outcome,
        [None if r is None else r.outcome for r in rxs],
        outputs,
        now,
        send.stats(),
        [{} if rs is None else rs.stats() for rs in sessions],
        feedback,
        naks,
        group_data,
        done_at,
        log,
        feedback_log,
    )
