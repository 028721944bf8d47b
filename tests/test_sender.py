"""alf.sender: the sender core, datagrams in and out, virtual time."""

from __future__ import annotations

import pytest

from alf import wire
from alf.errors import ExitCode
from alf.sender import Sender, SenderConfig, State


def test_no_data_before_accept_echoes_the_session() -> None:
    s = Sender(SenderConfig(adu_size=100), 42, wire.Kind.FILE, 1000, 0.0)
    out = s.poll(0.0)
    assert len(out) == 1 and out[0].path == 0 and out[0].addr is None
    assert wire.decode_untrusted(out[0].data) == wire.Hello(
        42, 100, wire.Kind.FILE, 1000, 0, wire.checkphrase_tag("")
    )
    assert s.next_run(0.0, 64) is None
    s.handle_datagram(wire.encode_accept(wire.Accept(41, 0, 10)), 0.001)  # wrong session id
    assert s.state == State.HANDSHAKE and s.next_run(0.001, 64) is None and s.stats.foreign == 1
    s.handle_datagram(wire.encode_accept(wire.Accept(42, 0, 10)), 0.002)
    run = s.next_run(0.002, 64)
    assert s.state == State.SENDING and run is not None and (run.first, run.count) == (0, 10)


def test_hello_retries_back_off_and_time_out() -> None:
    s = Sender(SenderConfig(adu_size=100, timeout=5.0), 42, wire.Kind.FILE, 1000, 0.0)
    times = []
    t = 0.0
    while s.outcome is None:
        if s.poll(t) and s.outcome is None:
            times.append(round(t, 3))
        t = s.next_deadline(t)
    assert times == [0.0, 0.2, 0.6, 1.4, 3.0]  # doubling from 200 ms; the timeout at 5 s wins
    assert s.outcome.code == ExitCode.PEER_UNREACHABLE and "no receiver answered" in s.outcome.message


def test_sender_repairs_first_without_starving_new_data() -> None:
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 100_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 1000)), 0.0)
    first = s.next_run(0.0, 40)
    assert first is not None and (first.first, first.count, first.repair) == (0, 40, False)
    s.handle_datagram(wire.encode_naks(9, [(2, 3), (10, 30)], 1)[0][0], 0.0)
    runs = [s.next_run(0.0, 8) for _ in range(6)]
    got = [(r.first, r.count, r.repair) for r in runs if r]
    # repairs go first; while new data waits too, repairs get at most three ADUs for each new
    # one, counted in ADUs (a one-ADU repair run counts one)
    assert got == [(2, 1, True), (40, 8, False), (10, 8, True), (18, 8, True), (26, 4, True), (48, 8, False)]
    s.handle_datagram(wire.encode_naks(9, [(500, 510)], 1)[0][0], 0.0)  # never sent: ignored
    assert s.repair_pending() == 0


def test_rtt_sample_ends_when_the_feedback_arrived_not_when_it_was_read() -> None:
    # ACCEPT echoes the HELLO sent at 0; it reached the host at 3 ms and was read at 20 ms (the
    # sender's loop was busy sending): the sample is 3 ms. A STATUS echoing a PROBE of 30 ms,
    # held 1 ms by the receiver, arriving at 35 ms and read at 60 ms: 4 ms.
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e9), 9, wire.Kind.FILE, 100_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 1000)), 0.020, arrived=0.003)
    assert s.path.srtt is not None and abs(s.path.srtt - 0.003) < 1e-9
    status = wire.Status(9, 0, 0, 0, 1000, 0, 30_000, 1_000)
    s.handle_datagram(wire.encode_status(status), 0.060, arrived=0.035)
    assert abs(s.path.srtt - (0.875 * 0.003 + 0.125 * 0.004)) < 1e-9
    s.handle_datagram(wire.encode_status(status), 0.070, arrived=0.090)  # a stamp after the read:
    assert abs(s.path.srtt - (0.875 * (0.875 * 0.003 + 0.125 * 0.004) + 0.125 * 0.039)) < 1e-9  # the read


def test_scattered_repairs_share_a_batch() -> None:
    # 10,050 bytes in 100-byte ADUs: ADU 100 is the short last one (50 bytes)
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 10_050, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 101)), 0.0)
    assert [(r.first, r.count) for r in s.next_runs(0.0, 101)] == [(0, 101)]  # the whole first pass
    s.handle_datagram(wire.encode_naks(9, [(3, 4), (7, 9), (40, 41), (100, 101)], 1)[0][0], 0.0)
    s.handle_datagram(wire.encode_naks(9, [(50, 51)], 1)[0][0], 0.0)
    # every repair waiting goes in one batch (the short last ADU, the highest, comes last)
    assert [(r.first, r.count, r.repair) for r in s.next_runs(0.0, 64)] == [
        (3, 1, True),
        (7, 2, True),
        (40, 1, True),
        (50, 1, True),
        (100, 1, True),
    ]
    s.handle_datagram(wire.encode_naks(9, [(1, 2), (60, 61), (100, 101)], 1)[0][0], 0.0)
    assert [(r.first, r.count) for r in s.next_runs(0.0, 64)] == [(1, 1), (60, 1), (100, 1)]
    s.handle_datagram(wire.encode_naks(9, [(10, 20)], 1)[0][0], 0.0)
    assert [(r.first, r.count) for r in s.next_runs(0.0, 4)] == [(10, 4)]  # the batch is full


def test_repairs_of_scattered_loss_keep_their_share() -> None:
    """Random loss makes one-ADU repair runs: they still get three ADUs in four."""
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 10_000_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 10**9)), 0.0)
    assert s.next_run(0.0, 1000) is not None  # 1000 sent once
    holes = [(i, i + 1) for i in range(0, 1000, 20)]  # 50 scattered losses
    s.handle_datagram(wire.encode_naks(9, holes, 1)[0][0], 0.0)
    repair = new = 0
    while s.repair_pending():
        run = s.next_run(0.0, 64)
        assert run is not None
        if run.repair:
            repair += run.count
        else:
            new += run.count
    assert repair == 50 and new <= 64 * (1 + 50 // 3)  # new data never took more than its quarter
    assert new >= 50 // 3  # nor was starved


def test_at_a_low_rate_new_data_still_gets_a_quarter() -> None:
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 10_000_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 10**9)), 0.0)
    assert s.next_run(0.0, 400) is not None
    s.handle_datagram(wire.encode_naks(9, [(0, 400)], 1)[0][0], 0.0)
    kinds = [s.next_run(0.0, 1).repair for _ in range(40)]  # one ADU at a time, as at a low rate
    assert kinds.count(False) == 10 and kinds.count(True) == 30


def test_final_probe_carries_length_and_digest() -> None:
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 250, 0.0)
    s.set_digest(b"\x05" * 32)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 1000)), 0.0)
    s.poll(0.0)
    assert s.next_run(0.0, 64) is not None
    probes = [wire.decode_untrusted(d.data) for d in s.poll(0.0)]
    assert probes == [wire.Probe(9, 3, 0, 0, True, 250, b"\x05" * 32)]
    assert s.state == State.FINISHING


def test_deadline_never_waits_for_more_than_the_bucket_holds() -> None:
    s = Sender(SenderConfig(adu_size=1428, rate_bps=1e9), 9, wire.Kind.FILE, 100_000_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 10**9)), 0.0)
    burst = s.burst_adus
    assert burst == 344  # 4 ms at 1 Gbit/s of 1452-byte datagrams
    while s.next_run(0.0, 1000):  # empty the bucket
        pass
    s.poll(0.0)  # the PROBE due at ACCEPT goes out; the next is 5 ms away
    # asking for 352 must wait only as long as refilling 344 takes, the bucket's whole content
    refill = s.path.pacer.delay_for(burst * 1452, 0.0)
    assert 0.0039 < refill < 0.0041
    assert s.next_deadline(0.0, 352) == s.next_deadline(0.0, burst) == refill


def test_the_sender_core_knows_its_paths_and_its_peer() -> None:
    """Every run records its path; control goes out with its path; the first ACCEPT fixes the
    peer's address and answers from any other address are foreign; RTT belongs to the path."""
    s = Sender(SenderConfig(adu_size=100), 42, wire.Kind.FILE, 1000, 0.0)
    (hello,) = s.poll(0.0)
    assert (hello.path, hello.addr) == (0, None)
    peer = ("192.0.2.1", 9000)
    s.handle_datagram(wire.encode_accept(wire.Accept(42, 0, 10)), 0.003, path=0, addr=peer)
    assert s.peer.addr == peer and s.path.srtt == pytest.approx(0.003)
    s.handle_datagram(
        wire.encode_status(wire.Status(42, 5, 5, 5, 10, 0, 0, 0)), 0.004, addr=("192.0.2.66", 9000)
    )
    assert s.stats.foreign == 1 and s.peer.acked == 0  # another address's STATUS changes nothing
    run = s.next_run(0.004, 64)
    assert run is not None and run.path == 0 and s.path.issued_adus == run.count
    assert all(d.addr == peer and d.path == 0 for d in s.poll(0.004))


def test_each_path_keeps_its_runs_in_flight_until_acknowledged() -> None:
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 10_000, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, wire.NO_LIMIT)), 0.001)
    runs = s.next_runs(0.001, 30) + s.next_runs(0.001, 30)
    assert [(r.first, r.count, r.path) for r in runs] == [(0, 30, 0), (30, 30, 0)]
    assert list(s.path.in_flight) == runs and s.path.issued_adus == 60
    s.handle_datagram(wire.encode_status(wire.Status(9, 45, 59, 55, wire.NO_LIMIT, 0, 0, 0)), 0.01)
    assert list(s.path.in_flight) == runs[1:]  # [0, 30) is acknowledged, [30, 60) not all of it
    s.handle_datagram(wire.encode_status(wire.Status(9, 60, 60, 60, wire.NO_LIMIT, 0, 0, 0)), 0.02)
    assert not s.path.in_flight


def test_the_peers_verdict_is_its_own() -> None:
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, 100, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, wire.NO_LIMIT)), 0.001)
    s.next_runs(0.001, 1)
    done = wire.Done(9, wire.Verdict.OK, 100, bytes(16))
    s.handle_datagram(wire.encode_done(done), 0.01)
    assert s.peer.verdict is not None and s.peer.verdict == s.outcome and s.outcome.ok


def test_a_lost_verdict_is_called_that() -> None:
    """Everything sent, FINALs going, nothing heard: it is the verdict that is missing (the
    message said 'the receiver went silent', which a receiver that got it all had not)."""
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12, timeout=5.0), 9, wire.Kind.FILE, 100, 0.0)
    s.poll(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, wire.NO_LIMIT)), 0.001)
    s.next_runs(0.001, 1)
    s.set_digest(bytes(32))
    s.handle_datagram(wire.encode_status(wire.Status(9, 1, 1, 1, wire.NO_LIMIT, 0, 0, 0)), 0.002)
    t = 0.002
    while s.outcome is None and t < 20:
        s.poll(t)
        t = max(s.next_deadline(t), t + 0.001)
    assert s.outcome is not None and s.outcome.code == ExitCode.PEER_UNREACHABLE
    assert s.outcome.message.startswith("no verdict came from the receiver within 5 s")


def test_a_refused_hello_is_sent_again_soon_not_after_its_gap() -> None:
    """ICMP port unreachable during the handshake: a receiver started with us binds its port
    any moment, so the next HELLO goes 20 ms after the refusal (not after the 0.2 s gap), and
    no faster than that while the port refuses."""
    s = Sender(SenderConfig(adu_size=100), 42, wire.Kind.FILE, 1000, 0.0)
    assert [d.data[1] for d in s.poll(0.0)] == [wire.MsgType.HELLO]
    s.on_refused(0.001)
    assert s.next_deadline(0.001) <= 0.021 + 1e-9
    assert s.poll(0.01) == []
    assert [d.data[1] for d in s.poll(0.021)] == [wire.MsgType.HELLO]
    hellos, t = 0, 0.021
    while t < 1.0:  # refused after every HELLO: one per 20 ms at most
        s.on_refused(t)
        t = s.next_deadline(t)
        hellos += sum(1 for d in s.poll(t) if d.data[1] == wire.MsgType.HELLO)
    assert 40 <= hellos <= 50
