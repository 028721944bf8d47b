"""alf.events: what the cores tell their drivers, in order, on both transports (virtual time)."""

from __future__ import annotations

import random

import pytest
from conftest import handshake
from test_tcp_core import ADU, Harness, body

from alf import wire
from alf.content import BytesSource, MemoryBackend, OffsetSink
from alf.errors import ExitCode, Outcome
from alf.events import (
    DataArrived,
    Ended,
    Event,
    EventLog,
    FallBack,
    Finished,
    Joined,
    PeerAborted,
    Rejected,
    Verifying,
)
from alf.receiver import Receiver, ReceiverConfig
from alf.sender import Sender, SenderConfig
from alf.tcp import HELLO_WAIT, REFUSED_GIVE_UP, TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig
from alf.testing.simnet import Link, run_transfer


def kinds(log: list[Event]) -> list[type]:
    return [type(e) for e in log]


def assert_well_formed(log: list[Event]) -> Outcome:
    """One Finished, then one Ended, last; returns the outcome it carried."""
    finished = [e for e in log if isinstance(e, Finished)]
    assert len(finished) == 1, log
    assert isinstance(log[-1], Ended) and kinds(log).count(Ended) == 1, log
    assert log.index(finished[0]) < len(log) - 1
    return finished[0].outcome


def test_the_log_keeps_one_finished_and_one_ended() -> None:
    log = EventLog()
    ok, late = Outcome(ExitCode.OK, "verified"), Outcome(ExitCode.CANCELLED, "too late")
    for ev in (Finished(ok), Finished(late), Ended(), Ended()):
        log.add(ev)
    assert log.take() == [Finished(ok), Ended()] and log.take() == []


@pytest.mark.parametrize("seed", range(6))
def test_a_udp_transfer_tells_its_story_in_order(seed: int) -> None:
    data = random.Random(seed).randbytes(60_000)
    r = run_transfer(data, forward=Link(loss=0.05), seed=seed, stream=seed % 2 == 1, in_order=seed % 3 == 0)
    assert r.output == data
    assert assert_well_formed(r.sender_log) == r.sender and r.sender is not None and r.sender.ok
    assert assert_well_formed(r.receiver_log) == r.receiver and r.receiver is not None and r.receiver.ok
    assert kinds(r.sender_log) == [Joined, Finished, Ended]
    assert kinds(r.receiver_log) == [Joined, DataArrived, Verifying, Finished, Ended]
    joined = r.receiver_log[0]
    assert isinstance(joined, Joined) and joined.peer == ("sender", 1)


def test_an_aborting_sender_is_a_peer_abort_at_the_receiver() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    hello = wire.Hello(7, 100, wire.Kind.FILE, 1000, 0, wire.checkphrase_tag(""))
    handshake(r, hello, ("192.0.2.1", 9))
    r.handle_control(wire.encode_abort(wire.Abort(7, wire.AbortCode.CANCELLED, "bye")), ("192.0.2.1", 9), 0.1)
    r.poll(0.1)
    log = r.take_events()
    assert log[:2] == [Joined(("192.0.2.1", 9), 7), PeerAborted(wire.AbortCode.CANCELLED, "bye")]
    assert assert_well_formed(log).code == ExitCode.PEER_ABORTED


def test_no_answer_with_auto_is_a_fall_back_then_the_outcome() -> None:
    s = Sender(SenderConfig(adu_size=100, hello_timeout=1.5, timeout=30.0), 7, wire.Kind.FILE, 1000, 0.0)
    t = 0.0
    s.on_refused(0.3)
    log: list[Event] = []
    while not log or not isinstance(log[-1], Ended):
        s.poll(t)
        log += s.take_events()
        t = s.next_deadline(t)
    assert kinds(log) == [FallBack, Finished, Ended]
    fb = log[0]
    assert isinstance(fb, FallBack) and fb.refused_since == 0.3 and "no answer over UDP" in fb.reason
    assert assert_well_formed(log).code == ExitCode.PEER_UNREACHABLE


def test_no_answer_without_auto_is_no_fall_back() -> None:
    s = Sender(SenderConfig(adu_size=100, timeout=2.0), 7, wire.Kind.FILE, 1000, 0.0)
    t, log = 0.0, []
    while t < 10 and not (log and isinstance(log[-1], Ended)):
        s.poll(t)
        log += s.take_events()
        t = s.next_deadline(t)
    assert kinds(log) == [Finished, Ended]


def test_the_receivers_abort_reaches_the_sender_as_an_event() -> None:
    s = Sender(SenderConfig(adu_size=100), 7, wire.Kind.FILE, 1000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_abort(wire.Abort(7, wire.AbortCode.LOCAL_IO, "disk full")), 0.01)
    s.poll(0.01)
    log = s.take_events()
    assert log[0] == PeerAborted(wire.AbortCode.LOCAL_IO, "disk full")
    assert assert_well_formed(log).code == ExitCode.PEER_ABORTED


# ---------------------------------------------------------------- TCP


def test_a_tcp_transfer_tells_its_story_in_order() -> None:
    data = random.Random(4).randbytes(20_000)
    h = Harness(data, stream=False, in_order=True, seed=4)
    h.run(streams=3, kill_p=0.0)
    assert h.output() == data
    h.snd.poll(h.now)  # the goodbye, and Ended
    snd, rcv = h.snd.take_events(), h.rcv.take_events()
    assert kinds(snd) == [Joined, Joined, Joined, Finished, Ended]
    assert {e.peer for e in snd if isinstance(e, Joined)} == {1, 2, 3}
    assert assert_well_formed(snd).ok
    assert kinds(rcv)[:4] == [Joined, Joined, Joined, DataArrived] and Verifying in kinds(rcv)
    assert isinstance(rcv[-1], Finished) and rcv[-1].outcome.ok  # it lingers: not Ended yet
    for cid in (1, 2, 3):  # the sender leaves: nobody to answer
        h.rcv.conn_lost(cid)
    h.rcv.poll(h.now)
    assert kinds(h.rcv.take_events()) == [Ended]


def test_the_tcp_sender_says_goodbye_once() -> None:
    src = BytesSource(b"x" * 500, ADU)
    snd = TcpSender(TcpSenderConfig(adu_size=ADU), 7, wire.Kind.FILE, 500, src)
    snd.conn_opened(1)
    snd.cancel(wire.AbortCode.CANCELLED, "the sender was interrupted", ExitCode.CANCELLED)
    frames = snd.poll(1.0)
    assert len(frames) == 1 and wire.decode_untrusted(body(frames[0][1])) == wire.Abort(
        7, wire.AbortCode.CANCELLED, "the sender was interrupted"
    )
    assert snd.poll(1.1) == []
    assert kinds(snd.take_events()) == [Finished, Ended]


def test_the_tcp_sender_core_owns_liveness() -> None:
    """No answer within the timeout: the message names each path's last error."""
    src = BytesSource(b"x" * 500, ADU)
    cfg = TcpSenderConfig(adu_size=ADU, timeout=5.0)
    snd = TcpSender(cfg, 7, wire.Kind.FILE, 500, src, 0.0, ["a:1", "b:2"])
    snd.path_failed(1, "No route to host", 0.5)
    assert snd.next_deadline(1.0) == 5.0
    snd.poll(4.9)
    assert snd.outcome is None
    snd.poll(5.1)
    assert snd.outcome is not None and snd.outcome.code == ExitCode.PEER_UNREACHABLE
    assert snd.outcome.message == "no receiver answered within 5 s (TCP b:2: No route to host)"


def test_every_path_refused_ends_the_transfer_soon() -> None:
    src = BytesSource(b"x" * 500, ADU)
    snd = TcpSender(TcpSenderConfig(adu_size=ADU), 7, wire.Kind.FILE, 500, src, 0.0, ["a:1", "b:2"], 0.2)
    snd.path_failed(0, "Connection refused", 0.3, refused=True)
    snd.poll(3.0)
    assert snd.outcome is None  # path b has not refused (yet)
    snd.path_failed(1, "Connection refused", 3.1, refused=True)
    assert 0.2 + REFUSED_GIVE_UP < 3.1 and snd.next_deadline(3.1) == 3.1  # refused long enough: due now
    snd.poll(3.2)
    assert snd.outcome is not None
    assert snd.outcome.message == (
        "nothing listens at a:1, b:2 (UDP: port unreachable, TCP: connection refused)"
    )


def test_the_tcp_receiver_core_names_rejections_and_closes_silent_connections() -> None:
    sink = OffsetSink(MemoryBackend())
    rcv = TcpReceiver(TcpReceiverConfig(checkphrase="a"), sink, 0.0)
    src = BytesSource(b"x" * 500, ADU)
    wrong = TcpSender(TcpSenderConfig(adu_size=ADU, checkphrase="b"), 7, wire.Kind.FILE, 500, src)
    rcv.conn_opened(1, 0.0)
    rcv.conn_opened(2, 0.0)
    rcv.on_frame(1, body(wrong.hello(0.0)), 0.1)
    out = rcv.poll(0.1)
    assert 1 in out.close and rcv.take_events() == [Rejected(1, "checkphrase mismatch")]
    assert 2 not in rcv.poll(HELLO_WAIT - 0.1).close
    assert 2 in rcv.poll(HELLO_WAIT + 0.1).close  # never said HELLO
    rcv.conn_opened(3, 0.0)
    rcv.bad_frame(3)
    assert 3 in rcv.poll(HELLO_WAIT + 0.2).close and rcv.stats.malformed == 1
