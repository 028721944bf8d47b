"""The TCP transport's cores, driven through simulated connections that die with frames in flight.

No sockets: each connection is a FIFO of whole frames; killing one loses what it still carries
(as a reset does), and both cores learn of it as the drivers would tell them. Frames of
different connections are delivered in a seeded random interleaving.
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from alf import wire
from alf.content import BytesSource, MemoryBackend, MemoryWriter, OffsetSink, OrderedSink, Sink, Source
from alf.errors import ExitCode
from alf.io.source import StreamSource
from alf.tcp import ALL, ANY, TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig
from alf.wire import FRAME_HEAD

ADU = 100


def body(framed: bytes) -> memoryview:
    return memoryview(bytearray(framed[FRAME_HEAD:]))


class Harness:
    def __init__(self, data: bytes, stream: bool, in_order: bool, seed: int, window: int = 1 << 20) -> None:
        self.rng = random.Random(seed)
        self.data = data
        self.source: Source
        if stream:
            self.stream = StreamSource(ADU, 64)
            self.fed = 0
            self.source = self.stream
            kind, total = wire.Kind.STREAM, None
        else:
            self.source = BytesSource(data, ADU)
            kind, total = wire.Kind.FILE, len(data)
        self.is_stream = stream
        self.sink: Sink
        if in_order:
            self.writer = MemoryWriter()
            self.sink = OrderedSink(self.writer)
        else:
            self.backend = MemoryBackend()
            self.sink = OffsetSink(self.backend)
        cfg = TcpSenderConfig(adu_size=ADU, frame_bytes=7 * ADU)
        self.snd = TcpSender(cfg, 0x1234, kind, total, self.source)
        self.rcv = TcpReceiver(TcpReceiverConfig(window_bytes=window), self.sink, 0.0)
        self.to_rcv: dict[int, deque[memoryview]] = {}
        self.next_cid = 1
        self.now = 0.0
        self.kills = 0
        self.max_ahead = 0  # the most ADUs ever sent beyond what the receiver's output had taken

    def open(self) -> None:
        cid = self.next_cid
        self.next_cid += 1
        self.snd.conn_opened(cid)
        self.to_rcv[cid] = deque([body(self.snd.hello(self.now))])

    def kill(self, cid: int) -> None:
        del self.to_rcv[cid]  # whatever it carried is gone
        self.snd.conn_lost(cid)
        self.rcv.conn_lost(cid)
        self.kills += 1

    def feed(self) -> None:
        if self.is_stream and self.fed < len(self.data):
            n = min(len(self.stream.free_span()), len(self.data) - self.fed, 333)
            if n > 0:
                self.stream.feed(self.data[self.fed : self.fed + n])
                self.fed += n
            if self.fed == len(self.data):
                self.stream.feed_eof()

    def replies(self) -> None:
        out = self.rcv.poll(self.now)
        live = sorted(c for c in self.to_rcv if c in self.rcv.joined)
        for target, framed in out.items:
            targets = live if target == ALL else live[-1:] if target == ANY else [target]
            for cid in targets:
                if cid in self.to_rcv:  # replies travel on a live connection, never lost here
                    self.snd.on_message(cid, body(framed), self.now)

    def run(self, streams: int, kill_p: float, steps: int = 200_000) -> None:
        for _ in range(streams):
            self.open()
        for _ in range(steps):
            self.now += 0.001
            self.feed()
            cids = list(self.to_rcv)
            r = self.rng.random()
            if r < kill_p and cids:
                self.kill(self.rng.choice(cids))
                self.open()
            elif r < 0.5 and cids:
                cid = self.rng.choice(cids)
                item = self.snd.next_frame(cid, self.now)
                if item is not None:
                    head, payload = item
                    self.to_rcv[cid].append(body(head + (bytes(payload) if payload is not None else b"")))
            else:
                busy = [c for c in cids if self.to_rcv[c]]
                if busy:
                    cid = self.rng.choice(busy)
                    self.rcv.on_frame(cid, self.to_rcv[cid].popleft(), self.now)
            self.replies()
            self.max_ahead = max(self.max_ahead, self.snd.next_new - self.rcv.consumed)
            if self.snd.outcome is not None:
                return
        raise AssertionError("no outcome within the step bound")

    def output(self) -> bytes:
        return bytes(self.writer.data) if isinstance(self.sink, OrderedSink) else bytes(self.backend.data)


@pytest.mark.parametrize("seed", range(40))
def test_connections_die_and_everything_arrives_once(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(1, 30_000))
    h = Harness(
        data, stream=seed % 2 == 1, in_order=seed % 4 < 2, seed=seed, window=rng.choice([800, 5000, 1 << 20])
    )
    h.run(streams=rng.randrange(1, 5), kill_p=rng.choice([0.0, 0.005, 0.02]))
    assert h.snd.outcome is not None and h.snd.outcome.code == ExitCode.OK, h.snd.outcome
    assert h.rcv.outcome is not None and h.rcv.outcome.ok
    assert h.output() == data
    # every byte beyond the first copy is a resend, and resends come only from lost connections
    assert h.rcv.stats.bytes_received == len(data)
    if h.kills == 0:
        assert h.snd.stats.bytes_resent == 0 and h.rcv.stats.duplicate_bytes == 0
    assert h.snd.stats.connection_losses == h.kills


def test_fixed_seed_counts() -> None:
    """One run pinned exactly, so a change in what is resent shows up."""
    data = random.Random(99).randbytes(20_000)
    h = Harness(data, stream=False, in_order=True, seed=99)
    h.run(streams=3, kill_p=0.03)
    assert h.output() == data
    st, rs = h.snd.stats, h.rcv.stats
    # 2 connections died; 5 runs (3500 bytes) they carried were queued again; 700 of those
    # bytes had reached the receiver before the reset and were dropped there as duplicates.
    assert (h.kills, st.frames_sent, st.frames_resent, st.bytes_resent) == (2, 29, 5, 3500)
    assert (rs.bytes_received, rs.duplicate_bytes) == (20_000, 700)


def test_window_holds_the_receivers_memory() -> None:
    """An in-order receiver never holds more than its window beyond what was written."""
    data = random.Random(5).randbytes(50_000)
    h = Harness(data, stream=True, in_order=True, seed=5, window=1000)
    h.run(streams=4, kill_p=0.0)
    assert h.output() == data
    window_adus = 1000 // ADU
    assert h.max_ahead == window_adus  # the window was reached, at every step never passed


def test_wrong_checkphrase_and_busy() -> None:
    sink = OffsetSink(MemoryBackend())
    rcv = TcpReceiver(TcpReceiverConfig(checkphrase="a"), sink, 0.0)
    src = BytesSource(b"x" * 500, ADU)
    wrong = TcpSender(TcpSenderConfig(adu_size=ADU, checkphrase="b"), 7, wire.Kind.FILE, 500, src)
    rcv.on_frame(1, body(wrong.hello(0.0)), 0.0)
    out = rcv.poll(0.0)
    assert 1 in out.close and rcv.hello is None  # still waiting for the right sender
    wrong.on_message(1, body(out.items[0][1]), 0.0)
    assert wrong.outcome is not None and wrong.outcome.code == ExitCode.PEER_ABORTED
    assert "CHECKPHRASE" in wrong.outcome.message
    right = TcpSender(TcpSenderConfig(adu_size=ADU, checkphrase="a"), 8, wire.Kind.FILE, 500, src)
    rcv.on_frame(2, body(right.hello(0.0)), 0.0)
    other = TcpSender(TcpSenderConfig(adu_size=ADU, checkphrase="a"), 9, wire.Kind.FILE, 500, src)
    rcv.on_frame(3, body(other.hello(0.0)), 0.0)
    out = rcv.poll(0.0)
    assert 2 in rcv.joined and 3 in out.close
    other.on_message(3, body(out.items[-1][1]), 0.0)
    assert other.outcome is not None and "BUSY" in other.outcome.message


def test_data_beyond_the_announced_end_is_a_protocol_abort() -> None:
    sink = OffsetSink(MemoryBackend())
    rcv = TcpReceiver(TcpReceiverConfig(), sink, 0.0)
    src = BytesSource(b"x" * 500, ADU)
    snd = TcpSender(TcpSenderConfig(adu_size=ADU), 7, wire.Kind.FILE, 500, src)
    rcv.on_frame(1, body(snd.hello(0.0)), 0.0)
    from alf.wire import frame_data_head

    rcv.on_frame(1, body(frame_data_head(7, 5, ADU) + bytes(ADU)), 0.0)  # ADU 5 of a 5-ADU file
    assert rcv.outcome is not None and rcv.outcome.code == ExitCode.PEER_ABORTED
    assert "protocol" in rcv.outcome.message


def test_garbage_before_hello_closes_only_that_connection() -> None:
    sink = OffsetSink(MemoryBackend())
    rcv = TcpReceiver(TcpReceiverConfig(), sink, 0.0)
    for cid, junk in enumerate([b"GET / HTTP/1.1\r\n", bytes(40), random.Random(1).randbytes(1200)], 1):
        rcv.on_frame(cid, memoryview(bytearray(junk)), 0.0)
    out = rcv.poll(0.0)
    assert out.close == {1, 2, 3} and rcv.outcome is None and rcv.stats.malformed == 3
