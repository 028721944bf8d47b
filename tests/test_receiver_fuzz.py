"""Every message type, every field at its boundaries and at random, mutated and truncated, fed
to the receiving side of both transports (issue 22, acceptance 3): no exception escapes,
nothing is reserved or written before a sender is validated, and every datagram is counted."""

from __future__ import annotations

import dataclasses

from conftest import handshake
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import wire
from alf.content import MemoryBackend, OffsetSink
from alf.receiver import Receiver, ReceiverConfig
from alf.receiver import State as RState
from alf.session import RecvSession
from alf.tcp import TcpReceiver, TcpReceiverConfig

SID = 0xA11F
EDGES = [0, 1, 2, 255, 256, 2**16 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
u64 = st.sampled_from(EDGES) | st.integers(0, 2**64 - 1)
u32 = st.sampled_from([e for e in EDGES if e < 2**32]) | st.integers(0, 2**32 - 1)
sids = st.sampled_from([SID, 0, 1, 2**64 - 1]) | st.integers(0, 2**64 - 1)
tags = st.sampled_from([wire.checkphrase_tag(""), bytes(16)]) | st.binary(min_size=16, max_size=16)
digests = st.binary(min_size=32, max_size=32)

messages = st.one_of(
    st.builds(
        lambda s, a, k, t, ts, tag, d, c, f, tok: wire.encode_hello(
            wire.Hello(s, a, k, t, ts, tag, d, c, f, tok)
        ),
        sids,
        st.sampled_from([1, 2, 1428, wire.MAX_ADU_SIZE]) | st.integers(1, wire.MAX_ADU_SIZE),
        st.sampled_from(list(wire.Kind)),
        u64,
        u64,
        tags,
        st.sampled_from(list(wire.DigestAlg)),
        st.booleans(),
        st.sampled_from([0, 1, 2**63]),
        u64,
    ),
    st.builds(
        lambda s, t, lim, tok, r: wire.encode_accept(wire.Accept(s, t, lim, tok or 1, r)),
        sids,
        u64,
        u64,
        u64,
        st.booleans(),
    ),
    st.builds(
        lambda s, i, p: wire.encode_data(wire.Data(s, i, p)), sids, u64, st.binary(min_size=1, max_size=70)
    ),
    st.builds(
        lambda s, n, t, r, f, total, d: wire.encode_probe(
            wire.Probe(s, n, t, r, f, total if f else 0, d if f else bytes(32))
        ),
        sids,
        u64,
        u64,
        u32,
        st.booleans(),
        u64,
        digests,
    ),
    st.builds(lambda s: wire.encode_close(wire.Close(s)), sids),
    st.builds(
        lambda s, c, r: wire.encode_abort(wire.Abort(s, c, r)),
        sids,
        st.sampled_from(list(wire.AbortCode)),
        st.text(max_size=40),
    ),
    st.builds(lambda s, a, b: wire.encode_status(wire.Status(s, a, a, a, b, b, b, 0)), sids, u64, u64),
    st.builds(
        lambda s, v, n, d: wire.encode_done(wire.Done(s, v, n, d)),
        sids,
        st.sampled_from(list(wire.Verdict)),
        u64,
        digests,
    ),
    st.binary(max_size=1300),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A message as encoded, or with some bytes changed, or cut short, or grown."""
    d = bytearray(draw(messages))
    how = draw(st.sampled_from(["as is", "as is", "flip", "cut", "grow"]))
    if how == "flip" and d:
        for _ in range(draw(st.integers(1, 4))):
            d[draw(st.integers(0, len(d) - 1))] = draw(st.integers(0, 255))
    elif how == "cut" and d:
        d = d[: draw(st.integers(0, len(d) - 1))]
    elif how == "grow":
        d += draw(st.binary(min_size=1, max_size=16))
    return bytes(d)


ADDRS = [("192.0.2.1", 1), ("192.0.2.2", 2), ("2001:db8::1", 3, 0, 0)]


class SpySink(OffsetSink):
    """Records whether the receiver ever reserved or wrote its output."""

    started = False

    def start(self, *a: object, **kw: object) -> None:
        self.started = True
        super().start(*a, **kw)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(mutated(), st.sampled_from(ADDRS)), max_size=40), st.booleans())
def test_udp_receiver_before_validation(items: list[tuple[bytes, object]], in_order: bool) -> None:
    backend = MemoryBackend()
    sink = SpySink(backend)
    r = Receiver(ReceiverConfig(in_order=in_order, timeout=5.0), 0.0, secret=b"fixed")
    session = RecvSession(r, sink)
    t = 0.0
    for d, addr in items:
        t += 0.003
        session.on_datagrams([(d, addr)], t)
        session.poll(t)
    session.poll(t + 10)
    assert r.stats.datagrams == len(items)  # every datagram counted
    assert r.state == RState.IDLE and r.peers == set()  # no token echoed: nothing bound
    assert not sink.started and not backend.data  # nothing reserved, nothing written


@settings(max_examples=300, deadline=None)
@given(st.lists(mutated(), max_size=40), st.booleans())
def test_udp_receiver_of_a_validated_peer(items: list[bytes], in_order: bool) -> None:
    """The same, from the validated peer's address, with its session id patched in half the
    time: the receiver may act on what is valid, and never raises."""
    sink = SpySink(MemoryBackend())
    r = Receiver(ReceiverConfig(in_order=in_order, timeout=5.0), 0.0, secret=b"fixed")
    session = RecvSession(r, sink)
    peer = ADDRS[0]
    hello = wire.Hello(SID, 100, wire.Kind.FILE, 10_000, 1, wire.checkphrase_tag(""))
    session.on_datagrams([(wire.encode_hello(hello), peer)], 0.0)
    (retry,) = [wire.decode_untrusted(x) for x, _ in session.poll(0.0)]
    assert isinstance(retry, wire.Accept)
    session.on_datagrams([(wire.encode_hello(dataclasses.replace(hello, token=retry.token)), peer)], 0.0)
    assert r.state == RState.RECEIVING and sink.started
    t = 0.0
    for k, d in enumerate(items):
        t += 0.003
        if k % 2 and len(d) >= 16:
            d = d[:8] + SID.to_bytes(8, "big") + d[16:]
        session.on_datagrams([(d, peer)], t)
        session.poll(t)
    assert r.stats.datagrams == len(items) + 2
    assert r.gaps.cum <= max(r.gaps.highest, r.gaps.cum) and r.consumed <= r.gaps.cum + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(mutated(), st.integers(1, 3)), max_size=40))
def test_tcp_receiver_core_before_a_valid_hello(items: list[tuple[bytes, int]]) -> None:
    """Frames on connections that never sent an acceptable HELLO (wrong checkphrase): nothing
    written, every frame answered or counted."""
    backend = MemoryBackend()
    sink = SpySink(backend)
    rcv = TcpReceiver(TcpReceiverConfig(checkphrase="only-this"), sink, 0.0)
    for cid in (1, 2, 3):
        rcv.conn_opened(cid, 0.0)
    t = 0.0
    for d, cid in items:
        t += 0.003
        rcv.on_frame(cid, memoryview(bytearray(d)), t)
        rcv.poll(t)
    assert not sink.started and not backend.data and rcv.hello is None
    s = rcv.stats
    assert s.malformed + s.violations + s.rejected_hellos <= len(items)


def test_the_udp_validation_answers_bound_every_hello() -> None:
    """A HELLO is answered by at most one datagram, never larger than itself."""
    r = Receiver(ReceiverConfig(), 0.0, secret=b"fixed")
    h = wire.encode_hello(wire.Hello(SID, 100, wire.Kind.FILE, 10, 1, wire.checkphrase_tag("")))
    r.handle_control(h, ADDRS[0], 0.0)
    out = r.poll(0.0)
    assert len(out) == 1 and len(out[0][0]) < len(h)
    assert handshake(r, wire.Hello(SID, 100, wire.Kind.FILE, 10, 1, wire.checkphrase_tag("")), ADDRS[0])
