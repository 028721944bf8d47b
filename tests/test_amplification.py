"""§4.3 address validation and the receiver's answer bounds: a forged source address gets at
most 3x what was sent from it; nothing is bound, reserved or written before the sender echoed
the RETRY's token; answers to a flood of HELLOs go at a bounded rate; and NAKs are paid from
what a (validated) sender sends, so one that falls silent is not NAKed for ever."""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import time
from typing import Any

from conftest import Procs, handshake, random_file, sha256_file, wait_listening

from alf import wire
from alf.receiver import ANSWER_BURST, ANSWER_RATE, NAK_CREDIT, Receiver, ReceiverConfig
from alf.receiver import State as RState

SID = 0x5EED
FORGED = ("127.0.0.3", 7777)


def attack(send: Any, total: int = 10**7) -> int:
    """The attack of issue 22: a HELLO (1-byte ADUs, a file of ``total``), 2000 one-byte DATA
    at indices k*150, and a PROBE naming the end; returns the bytes sent."""
    out = [wire.encode_hello(wire.Hello(SID, 1, wire.Kind.FILE, total, 1, wire.checkphrase_tag("")))]
    out += [wire.encode_data(wire.Data(SID, k * 150, b"x")) for k in range(2000)]
    out.append(wire.encode_probe(wire.Probe(SID, total, 2, 1000)))
    for d in out:
        send(d)
    return sum(len(d) for d in out)


def test_a_forged_source_gets_at_most_three_times_what_it_sent_core() -> None:
    r = Receiver(ReceiverConfig(in_order=False), 0.0)
    answered = 0
    t = 0.0

    def send(d: bytes) -> None:
        nonlocal answered, t
        r.handle_control(d, FORGED, t) if d[1] != wire.MsgType.DATA else None
        t += 0.0001
        answered += sum(len(a) for a, addr in r.poll(t) if addr == FORGED)

    sent = attack(send)
    for _ in range(3000):  # 30 s of the receiver's timers, forged PROBEs every 2 s
        t += 0.01
        if int(t * 100) % 200 == 0:
            send(wire.encode_probe(wire.Probe(SID, 10**7, 3, 1000)))
            sent += 80
        answered += sum(len(a) for a, addr in r.poll(t) if addr == FORGED)
    assert answered <= 3 * sent, (answered, sent)
    assert r.state == RState.IDLE and r.peers == set() and r.hello is None  # nothing bound
    assert r.stats.retries_sent == 1 and r.stats.foreign > 0


def test_a_forged_source_gets_at_most_three_times_and_a_real_sender_then_succeeds(
    procs: Procs, port: int, tmp_path: os.PathLike[str]
) -> None:
    """Over real sockets: the 'forged' address is a socket at 127.0.0.3 that never echoes the
    token (as a forger, who does not see the answers, cannot), and counts what reaches it."""
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", "-o", dst, "--transport", "udp", "--timeout", "20"
    )
    wait_listening(port)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(FORGED[:1] + (0,))
    victim.connect(("127.0.0.1", port))
    sent = attack(victim.send)
    got, deadline = 0, time.monotonic() + 3.0
    while (left := deadline - time.monotonic()) > 0:
        if select.select([victim], [], [], left)[0]:
            got += len(victim.recv(65536))
    victim.close()
    assert got <= 3 * sent, (got, sent)
    work = os.stat(dst + ".alf-partial")  # made at start-up, to know the output can be written
    assert work.st_size == 0 and work.st_blocks == 0 and not os.path.exists(dst)  # nothing reserved
    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=4)
    s = procs.run("send", "127.0.0.1", str(port), src, "--transport", "udp", timeout=60)
    assert s.returncode == 0, s.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


def test_a_token_binds_only_its_own_address_and_terms() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    hello = wire.Hello(SID, 100, wire.Kind.FILE, 1000, 1, wire.checkphrase_tag(""))
    r.handle_control(wire.encode_hello(hello), ("10.0.0.1", 5), 0.0)
    (retry,) = [wire.decode_untrusted(d) for d, _ in r.poll(0.0)]
    assert isinstance(retry, wire.Accept) and retry.retry and retry.window_limit == 0
    stolen = dataclasses.replace(hello, token=retry.token)
    r.handle_control(wire.encode_hello(stolen), ("10.0.0.2", 5), 0.1)  # another address
    r.handle_control(wire.encode_hello(dataclasses.replace(stolen, total_bytes=10**9)), ("10.0.0.1", 5), 0.1)
    assert r.state == RState.IDLE and r.stats.bad_tokens == 2
    r.handle_control(wire.encode_hello(stolen), ("10.0.0.1", 5), 0.2)  # the right one
    assert r.state == RState.RECEIVING and r.peers == {("10.0.0.1", 5)}


def test_a_token_goes_stale() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    hello = wire.Hello(SID, 100, wire.Kind.FILE, 1000, 1, wire.checkphrase_tag(""))
    r.handle_control(wire.encode_hello(hello), ("10.0.0.1", 5), 0.0)
    (retry,) = [wire.decode_untrusted(d) for d, _ in r.poll(0.0)]
    assert isinstance(retry, wire.Accept)
    r.handle_control(wire.encode_hello(dataclasses.replace(hello, token=retry.token)), ("10.0.0.1", 5), 61.0)
    assert r.state == RState.IDLE and r.stats.bad_tokens == 1  # two epochs on: a replay, refused


def test_a_flood_of_hellos_is_answered_at_a_bounded_rate() -> None:
    r = Receiver(ReceiverConfig(checkphrase="x"), 0.0)
    answers = 0
    for k in range(20_000):  # 20,000 HELLOs in one second, from 20,000 sources
        t = k / 20_000
        h = wire.Hello(k + 1, 100, wire.Kind.FILE, 1000, 1, wire.checkphrase_tag("x" if k % 2 else "y"))
        r.handle_control(wire.encode_hello(h), ("10.1.0.1", 1000 + k), t)
        answers += len(r.poll(t))
    assert answers <= ANSWER_BURST + ANSWER_RATE * 1.0 + 1
    assert r.stats.answers_held >= 20_000 - answers
    assert r.stats.rejected_hellos == 10_000 and r.state == RState.IDLE


def test_naks_are_paid_for_by_what_the_sender_sends() -> None:
    """A validated sender that sends 2000 scattered ADUs of a 10^7-ADU file and falls silent:
    NAK bytes stay within NAK_CREDIT times what arrived (they once ran to 95 MB in 36 s)."""
    r = Receiver(ReceiverConfig(in_order=False, timeout=30.0), 0.0)
    peer = ("10.0.0.1", 5)
    handshake(r, wire.Hello(SID, 1, wire.Kind.FILE, 10**7, 1, wire.checkphrase_tag("")), peer)
    received = 1200  # the HELLO with the token
    for k in range(2000):
        r.on_data_run(k * 150, 1, 1, 0.001)
    received += 2000
    naks = 0
    t = 0.001
    while t < 30.0:
        t += 0.01
        naks += sum(len(d) for d, _ in r.poll(t) if d[1] == wire.MsgType.NAK)
    assert 0 < naks <= NAK_CREDIT * received, (naks, received)
    assert r.stats.nak_rounds_held > 0
