"""The sans-IO pieces on their own: gap map, pacer, handshake and NAK rules."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import gapmap, wire
from alf.errors import ExitCode
from alf.gapmap import GapMap
from alf.pacing import Pacer
from alf.receiver import Receiver, ReceiverConfig
from alf.receiver import State as RState
from alf.sender import Sender, SenderConfig, State

PEER = ("10.9.9.9", 5)  # an address label only: nothing is sent anywhere in these tests


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=60))
def test_gapmap_matches_a_set(runs: list[tuple[int, int]]) -> None:
    g, held = GapMap(), set()
    for first, count in runs:
        new = g.add_run(first, count)
        expect = sorted(set(range(first, first + count)) - held)
        assert [i for a, b in new for i in range(a, b)] == expect
        held |= set(range(first, first + count))
        cum = 0
        while cum in held:
            cum += 1
        assert g.cum == cum and g.count == len(held) and g.highest == (max(held) + 1 if held else 0)
        missing = [i for a, b in g.missing(0, 400) for i in range(a, b)]
        assert missing == [i for i in range(400) if i not in held]


def test_gapmap_trims_its_prefix() -> None:
    g = GapMap()
    step = 1024
    for first in range(0, gapmap.TRIM_BITS * 3, step):
        g.add_run(first, step)
    assert g.cum == gapmap.TRIM_BITS * 3
    assert len(g._bits) < gapmap.TRIM_BITS  # the all-ones prefix is gone
    assert g.add_run(5, 10) == [] and g.has(5)
    assert g.missing(0, g.cum + 3) == [(g.cum, g.cum + 3)]


def test_pacer_exact_times() -> None:
    p = Pacer(8000.0, burst_bytes=100, now=0.0)  # 1000 bytes/s
    assert p.available(0.0) == 100
    p.consume(100, 0.0)
    assert p.delay_for(50, 0.0) == 0.05
    assert p.available(0.05) == 50
    assert p.available(10.0) == 100  # never above the burst
    p.consume(100, 10.0)
    p.consume(100, 10.0)  # a batch may overdraw; the debt delays what follows
    assert p.delay_for(1, 10.0) == 0.101


def test_pacer_holds_the_rate_over_a_second() -> None:
    rate_bps, size = 200e6, 1452
    p = Pacer(rate_bps, burst_bytes=64 * size, now=0.0)
    now, sent = 0.0, 0
    while now < 1.0:
        n = int(p.available(now) // size)
        if n:
            p.consume(n * size, now)
            sent += n * size
        now += max(p.delay_for(size, now), 1e-5)
    assert abs(sent * 8 - rate_bps) / rate_bps < 0.01


def _hello(r: Receiver, phrase: str = "", sid: int = 77, addr: object = PEER) -> None:
    h = wire.Hello(sid, 100, wire.Kind.FILE, 1000, 1, wire.checkphrase_tag(phrase))
    r.handle_control(wire.encode_hello(h), addr, 0.0)


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


def test_checkphrase_mismatch_rejects_and_stays_idle() -> None:
    r = Receiver(ReceiverConfig(checkphrase="right"), 0.0)
    _hello(r, "wrong")
    out = r.poll(0.0)
    assert r.state == RState.IDLE and r.stats.rejected_hellos == 1
    abort = wire.decode_untrusted(out[0][0])
    assert isinstance(abort, wire.Abort) and abort.code == wire.AbortCode.CHECKPHRASE_MISMATCH
    _hello(r, "right")
    assert r.state == RState.RECEIVING
    assert isinstance(wire.decode_untrusted(r.poll(0.0)[0][0]), wire.Accept)


def test_second_sender_gets_busy_and_foreign_data_is_counted() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    _hello(r)
    r.poll(0.0)
    _hello(r, sid=78, addr=("10.9.9.8", 6))
    ((d, addr),) = r.poll(0.0)
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
    _hello(r)
    (accept,) = [wire.decode_untrusted(d) for d, _ in r.poll(0.0)]
    assert isinstance(accept, wire.Accept) and accept.window_limit == 10  # the file's end
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    r.set_read_buffer(12_400)
    r.handle_control(
        wire.encode_hello(wire.Hello(77, 100, wire.Kind.FILE, 10**7, 1, wire.checkphrase_tag(""))), PEER, 0.0
    )
    r.poll(0.0)
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


def test_output_takes_its_name_only_when_the_digest_matches(tmp_path: os.PathLike[str]) -> None:
    """A digest mismatch leaves the output partial (deleted on close): never a wrong file under
    the final name (found by the lab test that corrupts the FINAL's digest)."""
    from alf.content import OffsetSink
    from alf.digest import digest_bytes
    from alf.io.sink import FileBackend
    from alf.wire import DigestAlg

    data = bytes(range(256)) * 40
    for expected, kept in ((digest_bytes(DigestAlg.XXH3_128, data), True), (bytes(32), False)):
        path = os.path.join(tmp_path, f"out-{kept}")
        sink = OffsetSink(FileBackend(path, force=False))
        sink.start(100, len(data), DigestAlg.XXH3_128)
        sink.write_block(0, len(data) // 100 + 1, data)
        sink.advance(len(data) // 100 + 1)
        nbytes, digest = sink.finish(len(data), expected)
        assert nbytes == len(data) and digest == digest_bytes(DigestAlg.XXH3_128, data)
        assert os.path.exists(path) == kept
        sink.close(kept)
        assert os.path.exists(path) == kept and not os.path.exists(path + ".alf-partial")
        if kept:
            with open(path, "rb") as f:
                assert f.read() == data


def test_read_back_hashes_what_was_written_and_catches_a_truncated_output(
    tmp_path: os.PathLike[str],
) -> None:
    """What arrived beyond a hole is hashed from the output file (through a mapping), in
    windows that need not start on a page; an output cut short behind alf's back is an error,
    not a SIGBUS from reading a mapping past the end of its file."""
    from alf.content import OffsetSink, SinkError
    from alf.digest import digest_bytes
    from alf.io.sink import FileBackend
    from alf.wire import DigestAlg

    data = os.urandom(100 * 997)
    for cut in (False, True):
        path = os.path.join(tmp_path, f"out-{cut}")
        sink = OffsetSink(FileBackend(path, force=False), hash_chunk=5000)
        sink.start(100, len(data), DigestAlg.XXH3_128)
        sink.write_block(1, 996, data[100:])  # beyond the hole at ADU 0: hashed later, read back
        sink.write_block(0, 1, data[:100])
        if cut:
            os.truncate(path + ".alf-partial", 50_000)
            with pytest.raises(SinkError, match="shorter"):
                sink.advance(997)
        else:
            sink.advance(997)
            assert sink.finish(len(data), None)[1] == digest_bytes(DigestAlg.XXH3_128, data)
        sink.close(False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=200), st.integers(0, 2**32))
def test_dropper_does_not_depend_on_how_datagrams_are_grouped(sizes: list[int], seed: int) -> None:
    from alf.session import Dropper

    grouped, single = Dropper(0.1, seed), Dropper(0.1, seed)
    at = 0
    for n in sizes:
        assert [at + k for k in grouped.drops(n)] == [at + k for k in range(n) if single.drop()]
        at += n


def test_dropper_rate_and_independence() -> None:
    from alf.session import Dropper

    d = Dropper(0.05, 7)
    seq = [d.drop() for _ in range(400_000)]
    rate = sum(seq) / len(seq)
    after_drop = sum(1 for a, b in zip(seq, seq[1:], strict=False) if a and b) / sum(seq[:-1])
    assert 0.048 < rate < 0.052 and 0.045 < after_drop < 0.055  # no bursts: a Bernoulli process
    assert Dropper(0.0, 1).drops(10**6) == []


def test_a_batch_of_scattered_repairs_carries_the_right_bytes(tmp_path: os.PathLike[str]) -> None:
    from alf.io.source import FileSource
    from alf.session import SendSession

    data = os.urandom(100 * 30 + 7)
    path = os.path.join(tmp_path, "in")
    with open(path, "wb") as f:
        f.write(data)
    s = Sender(SenderConfig(adu_size=100, rate_bps=1e12), 9, wire.Kind.FILE, len(data), 0.0)
    session = SendSession(s, FileSource(path, 100))
    session.control(0.0)
    s.handle_datagram(wire.encode_accept(wire.Accept(9, 0, 31)), 0.0)
    first = session.next_batch(0.0, 64)
    assert first is not None and first.count == 31
    s.handle_datagram(wire.encode_naks(9, [(2, 3), (5, 8), (30, 31)], 1)[0][0], 0.0)
    batch = session.next_batch(0.0, 64)
    assert batch is not None and [(r.first, r.count) for r in batch.runs] == [(2, 1), (5, 3), (30, 1)]
    got = [
        wire.decode_untrusted(bytes(h) + bytes(p)) for h, p in zip(batch.headers, batch.payloads, strict=True)
    ]
    assert [(m.index, m.payload) for m in got] == [
        (i, data[i * 100 : i * 100 + 100]) for i in (2, 5, 6, 7, 30)
    ]


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


def test_the_receiver_keeps_the_validated_addresses() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    h = wire.Hello(77, 100, wire.Kind.FILE, 1000, 0, wire.checkphrase_tag(""))
    r.handle_control(wire.encode_hello(h), PEER, 0.0)
    assert r.peers == {PEER}
    r.handle_control(wire.encode_probe(wire.Probe(77, 1, 1, 1000)), ("192.0.2.66", 1), 0.01)
    assert r.stats.foreign == 1
