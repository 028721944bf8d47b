"""alf.receiver: the receiver core, datagrams in and out, virtual time."""

from __future__ import annotations

from conftest import handshake
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import wire
from alf.errors import ExitCode
from alf.receiver import Receiver, ReceiverConfig
from alf.receiver import State as RState

PEER = ("10.9.9.9", 5)  # an address label only: nothing is sent anywhere in these tests


def _hello(r: Receiver, phrase: str = "", sid: int = 77, addr: object = PEER) -> list[tuple[bytes, object]]:
    """The handshake (§4.3); returns the receiver's answer to the HELLO with its token."""
    return handshake(r, wire.Hello(sid, 100, wire.Kind.FILE, 1000, 1, wire.checkphrase_tag(phrase)), addr)


def test_checkphrase_mismatch_rejects_and_stays_idle() -> None:
    r = Receiver(ReceiverConfig(checkphrase="right"), 0.0)
    out = _hello(r, "wrong")
    assert r.state == RState.IDLE and r.stats.rejected_hellos == 1
    abort = wire.decode_untrusted(out[0][0])
    assert isinstance(abort, wire.Abort) and abort.code == wire.AbortCode.CHECKPHRASE_MISMATCH
    accept = wire.decode_untrusted(_hello(r, "right")[0][0])
    assert r.state == RState.RECEIVING
    assert isinstance(accept, wire.Accept) and not accept.retry


def test_second_sender_gets_busy_and_foreign_data_is_counted() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    _hello(r)
    ((d, addr),) = _hello(r, sid=78, addr=("10.9.9.8", 6))
    assert addr == ("10.9.9.8", 6)
    m = wire.decode_untrusted(d)
    assert isinstance(m, wire.Abort) and m.code == wire.AbortCode.BUSY and m.session_id == 78
    r.handle_control(
        wire.encode_probe(wire.Probe(77, 1, 1, 1)), ("10.9.9.8", 6), 0.0
    )  # right id, wrong address
    assert r.stats.foreign == 1


def test_nak_rounds_wait_one_round_and_repeat() -> None:
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    _hello(r)
    r.poll(0.0)
    assert r.on_data_run(0, 3, 100, 0.001) == [(0, 3)]
    assert r.on_data_run(5, 2, 100, 0.001) == [(5, 7)]  # 3 and 4 are missing (or reordered)
    r.poll(0.011)  # first round: records the frontier, NAKs nothing yet
    assert r.stats.naks_sent == 0
    out = r.poll(0.022)  # next round: the hole is older than a round
    naks = [wire.decode_untrusted(d) for d, _ in out if d[1] == wire.MsgType.NAK]
    assert naks == [wire.Nak(77, ((3, 5),))]
    assert r.on_data_run(3, 1, 100, 0.023) == [(3, 4)]
    out = r.poll(0.033)
    naks = [wire.decode_untrusted(d) for d, _ in out if d[1] == wire.MsgType.NAK]
    assert naks == [wire.Nak(77, ((4, 5),))]  # still missing: asked again
    assert r.on_data_run(3, 1, 100, 0.034) == [] and r.stats.duplicates == 1


def test_flow_window_follows_what_was_read() -> None:
    # 100-byte ADUs, 124-byte datagrams: a 12,400-byte read buffer holds 100 of them
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    r.set_read_buffer(12_400)
    (accept,) = [wire.decode_untrusted(d) for d, _ in _hello(r)]
    assert isinstance(accept, wire.Accept) and accept.window_limit == 10  # the file's end
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    r.set_read_buffer(12_400)
    handshake(r, wire.Hello(77, 100, wire.Kind.FILE, 10**7, 1, wire.checkphrase_tag("")), PEER)
    assert r.window_limit == 100  # highest 0 + the buffer
    r.on_data_run(0, 40, 100, 0.001)
    assert r.window_limit == 140
    r.on_data_run(50, 10, 100, 0.002)  # a hole below does not hold the window back
    assert r.window_limit == 160
    # a STATUS goes as soon as the window moved by a quarter since the last one advertised
    out = [wire.decode_untrusted(d) for d, _ in r.poll(0.003)]
    assert [m.window_limit for m in out if isinstance(m, wire.Status)] == [160]
    r.on_data_run(60, 10, 100, 0.004)
    assert r.poll(0.004) == [] and r.next_deadline(0.004) > 0.004  # 10 of 100: not yet
    r.on_data_run(70, 20, 100, 0.005)
    assert r.next_deadline(0.005) == 0.005
    out = [wire.decode_untrusted(d) for d, _ in r.poll(0.005)]
    assert [m.window_limit for m in out if isinstance(m, wire.Status)] == [190]
    # reading fast on a long path: the window covers twice what arrives in a round trip plus a
    # PROBE spacing (a 40 ms srtt: 80 ms), and does not shrink when the rate falls
    r.handle_control(wire.encode_probe(wire.Probe(77, 90, 1, 40_000)), PEER, 0.006)
    r.stats.wire_bytes += 1_240_000  # what the session counts as it reads DATA
    r.on_data_run(90, 10, 100, 0.062)
    r.poll(0.062)  # the STATUS due 50 ms after the last: the rate since the start, 20 MB/s
    assert r.stats.receive_rate_Bps == 20_000_000
    assert r.window_limit == 100 + int(2 * 20e6 * 0.080) // 124 == 25_906
    r.on_data_run(100, 1, 100, 0.2)
    assert r.window_limit == 101 + 25_806
    r.poll(0.2)  # nothing more counted in 138 ms: the flow window falls back to the buffer's
    r.on_data_run(101, 1, 100, 0.21)
    assert r.stats.receive_rate_Bps == 0 and r.window_limit == 101 + 25_806  # never shrinks


def test_short_adu_in_the_middle_is_a_violation() -> None:
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    _hello(r)  # file of 1000 bytes in ADUs of 100: every ADU is full
    assert r.on_data_run(2, 1, 50, 0.0) == []
    assert r.stats.violations == 1
    assert r.on_data_run(20, 1, 100, 0.0) == [] and r.stats.violations == 2  # past the end


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 2**32))
def test_receiver_survives_any_control_garbage(seed: int) -> None:
    import random

    rng = random.Random(seed)
    r = Receiver(ReceiverConfig(), 0.0)
    _hello(r)
    for _ in range(200):
        r.handle_control(bytes(rng.randrange(256) for _ in range(rng.randint(0, 120))), PEER, 0.0)
    assert r.state == RState.RECEIVING


def test_two_different_finals_abort() -> None:
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    _hello(r)  # a file of 1000 bytes in ADUs of 100
    r.poll(0.0)
    r.on_data_run(0, 5, 100, 0.0)
    final = wire.Probe(77, 10, 1, 1, True, 1000, b"\x01" * 32)
    r.handle_control(wire.encode_probe(final), PEER, 0.0)
    r.handle_control(wire.encode_probe(final), PEER, 0.0)  # the same again: fine
    assert r.outcome is None
    r.handle_control(wire.encode_probe(wire.Probe(77, 10, 2, 1, True, 1000, b"\x02" * 32)), PEER, 0.0)
    assert r.outcome is not None and r.outcome.code == ExitCode.PEER_ABORTED
    aborts = [wire.decode_untrusted(d) for d, _ in r.poll(0.0) if d[1] == wire.MsgType.ABORT]
    assert aborts and all(isinstance(a, wire.Abort) and a.code == wire.AbortCode.PROTOCOL for a in aborts)


def test_the_receiver_keeps_the_validated_addresses() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    h = wire.Hello(77, 100, wire.Kind.FILE, 1000, 0, wire.checkphrase_tag(""))
    r.handle_control(wire.encode_hello(h), PEER, 0.0)
    assert r.peers == set()  # §4.3: not before the sender has echoed the RETRY's token
    handshake(r, h, PEER)
    assert r.peers == {PEER}
    r.handle_control(wire.encode_probe(wire.Probe(77, 1, 1, 1000)), ("192.0.2.66", 1), 0.01)
    assert r.stats.foreign == 1
