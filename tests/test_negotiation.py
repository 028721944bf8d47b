"""Negotiation (protocol §4.4): a HELLO this receiver cannot serve is answered with ABORT
UNSUPPORTED naming what it lacks, and the sender ends at once with that reason (exit 4)."""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from typing import Any

import pytest
from conftest import Procs, random_file, wait_listening, wait_listening_tcp

import alf
import alf.api
from alf import wire
from alf.events import Rejected
from alf.receiver import Receiver, ReceiverConfig
from alf.wire import FRAME_LEN, frame

FEATURE = 1 << 9  # no version defines it: a later version's capability


def _hello(features: int = 0, **kw: Any) -> bytes:
    return wire.encode_hello(
        wire.Hello(0x1234, 1428, wire.Kind.FILE, 5000, 1, bytes(16), features=features, **kw)
    )


def _patch(buf: bytes, offset: int, value: int) -> bytes:
    return buf[:offset] + bytes([value]) + buf[offset + 1 :]


@pytest.mark.parametrize(
    "offer, what",
    [
        (_hello(features=FEATURE), "features 0x0000000000000200"),
        (_patch(_hello(), 0, 2), "protocol version 2"),
        (_patch(_hello(), 21, 9), "digest algorithm 9"),
        (_patch(_hello(), 22, 0x80), "data flags 0x80"),
        (_patch(_hello(), 20, 7), "content kind 7"),
    ],
)
def test_offers_this_version_cannot_serve_decode_as_unsupported(offer: bytes, what: str) -> None:
    assert wire.decode_untrusted(offer) == wire.Unsupported(0x1234, what)


def test_a_known_hello_round_trips_with_its_features_field() -> None:
    hello = wire.decode_untrusted(_hello())
    assert isinstance(hello, wire.Hello) and hello.features == 0
    assert _hello(features=FEATURE)[56:64] == struct.pack("!Q", FEATURE)  # protocol §4.1, offset 56


@pytest.mark.parametrize("offer", [_hello(features=FEATURE), _patch(_hello(), 0, 2)])
def test_truncated_or_padded_offers_stay_malformed(offer: bytes) -> None:
    for cut in (offer[:-1], offer + b"\0"):
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(cut)


def test_the_receiver_core_answers_abort_unsupported_and_stays_idle() -> None:
    r = Receiver(ReceiverConfig(), 0.0)
    r.handle_control(_hello(features=FEATURE), ("192.0.2.9", 4000), 0.1)
    out = r.poll(0.1)
    assert len(out) == 1 and out[0][1] == ("192.0.2.9", 4000)
    abort = wire.decode_untrusted(out[0][0])
    assert abort == wire.Abort(
        0x1234, wire.AbortCode.UNSUPPORTED, "this receiver does not support features 0x0000000000000200"
    )
    assert r.state.value == "idle" and r.stats.rejected_hellos == 1
    assert r.take_events() == [
        Rejected(("192.0.2.9", 4000), "this receiver does not support features 0x0000000000000200")
    ]


HUGE = wire.encode_hello(wire.Hello(0x1234, 1, wire.Kind.FILE, 2**64 - 2, 1, bytes(16)))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "offer, what",
    [
        (_patch(_hello(), 21, 9), "digest algorithm 9"),
        # it crashed a file receiver's posix_fallocate (OverflowError, exit 1, no answer)
        (HUGE, "a content of 18446744073709551614 bytes (at most 2^63-1)"),
    ],
)
def test_a_raw_offer_gets_the_abort(
    procs: Procs, port: int, tmp_path: Any, transport: str, offer: bytes, what: str
) -> None:
    """On the wire, against a real `alf recv` (defaults: auto, both transports)."""
    recv = procs.start("recv", str(port), "-o", os.path.join(tmp_path, "out"), "--timeout", "5")
    wait_listening(port)
    wait_listening_tcp(port)
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(offer, ("127.0.0.1", port))
            reply = s.recv(2048)
    else:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(frame(offer))
            head = s.recv(FRAME_LEN.size, socket.MSG_WAITALL)
            reply = s.recv(FRAME_LEN.unpack(head)[0], socket.MSG_WAITALL)
    assert wire.decode_untrusted(reply) == wire.Abort(
        0x1234, wire.AbortCode.UNSUPPORTED, f"this receiver does not support {what}"
    )
    assert recv.wait(timeout=20) == 3  # it kept waiting for a sender it can serve, until --timeout
    assert recv.stderr is not None
    assert b"turned away a sender from 127.0.0.1:" in recv.stderr.read()


@pytest.mark.parametrize(
    ("transport", "host"), [("udp", "127.0.0.1"), ("tcp", "127.0.0.1"), ("udp", "127.0.0.2")]
)
def test_a_sender_offering_an_unknown_feature_exits_4_at_once(
    procs: Procs, port: int, tmp_path: Any, transport: str, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender of a later version (here: this one, asking for a feature bit no version has).
    To 127.0.0.2 the receiver listening on every address answers from 127.0.0.2 (before, its
    ABORT left from 127.0.0.1, the sender's connected socket never saw it, and it gave up
    after its UDP wait with exit 3)."""
    monkeypatch.setattr(alf.api, "SenderConfig", functools.partial(alf.api.SenderConfig, features=FEATURE))
    monkeypatch.setattr(
        alf.api, "TcpSenderConfig", functools.partial(alf.api.TcpSenderConfig, features=FEATURE)
    )
    src = random_file(os.path.join(tmp_path, "in.bin"), 10_000)
    recv = procs.start("recv", str(port), "-o", os.path.join(tmp_path, "out"), "--timeout", "5")
    wait_listening(port)
    wait_listening_tcp(port)
    t0 = time.monotonic()
    result = alf.send(host, port, src, transport=transport)
    took = time.monotonic() - t0
    assert result.exit_code == 4, result.message
    assert result.message == (
        "the receiver aborted (UNSUPPORTED): this receiver does not support features 0x0000000000000200"
    )
    assert took < 2, took  # one round trip on loopback; not the 30 s timeout (about 0.01 s here)
    assert recv.wait(timeout=20) == 3
