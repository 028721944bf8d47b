"""§17: the key schedule (golden vectors, and an independent HKDF), sealed layouts, tampering,
replay, key files, and sealed transfers in the simulator: intact, or refused on both sides."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import seal, wire
from alf.errors import ExitCode
from alf.group import GroupSender
from alf.receiver import Receiver, ReceiverConfig
from alf.sender import SenderConfig
from alf.testing.simnet import SENDER_ADDR, Link, run_group_transfer, run_transfer

SID = 0x1122334455667788
PSK = bytes(range(32))
C_PRIV = X25519PrivateKey.from_private_bytes(bytes([1] * 32))
S_PRIV = X25519PrivateKey.from_private_bytes(bytes([2] * 32))
C_SHARE = bytes([0xC0] * 32) + C_PRIV.public_key().public_bytes_raw()
S_SHARE = bytes([0x5E] * 32) + S_PRIV.public_key().public_bytes_raw()
TAG = wire.checkphrase_tag("")


def _hello(token: int = 5, ts: int = 77) -> bytes:
    h = wire.Hello(
        SID, 1404, wire.Kind.FILE, 1000, ts, TAG, features=wire.FEATURE_KEY, token=token, share=C_SHARE
    )
    return wire.encode_hello(h)


# ---------------------------------------------------------------- an independent key schedule


def _hkdf_expand(prk: bytes, info: bytes, n: int) -> bytes:  # RFC 5869 §2.3, by hand
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def _label(secret: bytes, label: str, context: bytes, n: int) -> bytes:  # RFC 8446 §7.1
    full = b"alf1 " + label.encode()
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return _hkdf_expand(secret, info, n)


def test_key_schedule_matches_an_independent_hkdf_and_the_golden_vectors() -> None:
    hello = _hello()
    early = hmac.new(bytes(32), PSK, hashlib.sha256).digest()
    binder_key = _label(early, "binder", b"", 32)
    binder = hmac.new(binder_key, hello[:168], hashlib.sha256).digest()
    assert seal.binder(PSK, hello[:168]) == binder
    shared = C_PRIV.exchange(S_PRIV.public_key())
    derived = _label(early, "derived", hashlib.sha256(b"").digest(), 32)
    secret = hmac.new(derived, shared, hashlib.sha256).digest()
    assert seal.session_secret(PSK, shared) == secret
    core = bytearray(hello[:168])
    core[32:40] = bytes(8)
    core[64:72] = bytes(8)
    th = hashlib.sha256(b"alf1 transcript" + bytes(core) + S_SHARE).digest()
    assert seal.transcript(hello, S_SHARE) == th
    # the HELLO's timestamp and token (which differ between its copies) are not in the transcript
    assert seal.transcript(_hello(token=0, ts=12345), S_SHARE) == th
    data_key = _label(secret, "s2r data key", th + (0).to_bytes(8, "big"), 32)
    data_iv = _label(secret, "s2r data iv", th, 12)
    # golden vectors: a change to any of these breaks every peer of another version
    assert binder.hex() == "f80ffd8d349c241c314ffc5eee4509c29b999e571a290c1e82bfe5635a383357"
    assert secret.hex() == "05a9356d977bb061c193704ffa55357741cc09a6184b01fbf566e4a5911da4da"
    assert th.hex() == "aa31dc59903464b0c12410c6e8146a15eadbb2391dcd0ebb872b44beead5cbf1"
    assert data_key.hex() == GOLDEN["data_key"]
    assert data_iv.hex() == GOLDEN["data_iv"]
    # the sealed DATA layout: header and packet number in clear, then AES-256-GCM of the payload
    keys = seal.Keys(secret, th, sender=True)
    assert keys.data is not None
    keys.data.pn = 3
    header = wire.pack_data_header(SID, 9, None)
    clear, body = keys.data.seal_into(bytearray(200), 200, [header], [b"hello, sealed world"])
    datagram = bytes(clear[0]) + bytes(body[0])
    nonce = (int.from_bytes(data_iv, "big") ^ 3).to_bytes(12, "big")
    aad = header + (3).to_bytes(8, "big")
    assert datagram == aad + AESGCM(data_key).encrypt(nonce, b"hello, sealed world", aad)
    assert datagram.hex() == GOLDEN["data"]
    # a sealed STATUS: the common header in clear, the body encrypted under the r2s control key
    rkeys = seal.Keys(secret, th, sender=False)
    status = wire.encode_status(wire.Status(SID, 1, 5, 3, 9, 1, 2, 3))
    sealed = rkeys.out.seal(status, wire.HEADER_SIZE)
    ctl_key = _label(secret, "r2s ctrl key", th + (0).to_bytes(8, "big"), 32)
    ctl_iv = _label(secret, "r2s ctrl iv", th, 12)
    aad = status[:16] + bytes(8)
    assert sealed == aad + AESGCM(ctl_key).encrypt(ctl_iv, status[16:], aad)
    assert sealed.hex() == GOLDEN["status"]
    assert keys.into.open(sealed, wire.HEADER_SIZE) == status
    accept_head = wire.encode_accept(wire.Accept(SID, 77, 1000, 5, share=S_SHARE))[:-32]
    fin_key = _label(secret, "finished", th, 32)
    mac = hmac.new(fin_key, hashlib.sha256(th + accept_head).digest(), hashlib.sha256).digest()
    assert seal.finished(secret, th, accept_head) == mac
    assert mac.hex() == GOLDEN["finished"]


def test_a_groups_key_schedule_matches_an_independent_one_and_its_golden_vectors() -> None:
    """§17 rule 8: the group's keys are rule 3's directions over the group secret, with
    ``th = SHA-256("alf1 group" || core)``; a sealed group DATA as a golden vector."""
    hello = _hello()
    secret = bytes(range(100, 132))
    core = bytearray(hello[:168])
    core[32:40] = bytes(8)
    core[64:72] = bytes(8)
    th = hashlib.sha256(b"alf1 group" + bytes(core)).digest()
    keys = seal.group_keys(secret, hello, sender=True)
    assert keys.th == th and keys.data is not None
    assert seal.group_keys(secret, _hello(token=0, ts=12345), sender=True).th == th  # any copy's
    key = _label(secret, "s2r data key", th + bytes(8), 32)
    iv = _label(secret, "s2r data iv", th, 12)
    header = wire.pack_data_header(SID, 9, None)
    clear, body = keys.data.seal_into(bytearray(200), 200, [header], [b"hello, sealed group"])
    datagram = bytes(clear[0]) + bytes(body[0])
    aad = header + bytes(8)
    assert datagram == aad + AESGCM(key).encrypt(iv, b"hello, sealed group", aad)
    assert th.hex() == "fb10bd8db88170901b88b1f0ebbfda74c40d74f536b06c44046ac5f3a6fc2b33"
    assert datagram.hex() == (
        "0103000000000000112233445566778800000000000000090000000000000000aab1dc179fce2755"
        "b680da4966d7f929c90be434b3d052b41833983bfc5d4d4231556e"
    )
    member = seal.group_keys(secret, hello, sender=False)
    assert member.data_in is not None and member.data_in.open(datagram, 24) == header + b"hello, sealed group"


GOLDEN = {
    "data_key": "99722d84f4c8583ea6b410f9b6c534cee9639c76eaf3395b606042eabbf0adba",
    "data_iv": "89a6a72ada9779f40c541a70",
    "data": (
        "01030000000000001122334455667788000000000000000900000000000000039e1a008f450c6347"
        "33ba12a3f453c9025a8bb01fcd344fdc209111fd2c2e7c8193752e"
    ),
    "status": (
        "010400000000000011223344556677880000000000000000d6533e92b4e08718770e1240e6b28b7c"
        "863fea872d9285fa4309c5082735d58f35216648c7eda2d3be8b62cf7e8143a7cd1aca96b24530db"
        "51bb2625cd68b1d70760b728c2cd75d6"
    ),
    "finished": "4c8665c61ccc2d61608ed2561c60915187a9914615b9902f9f63db1160221321",
}


# ---------------------------------------------------------------- the handshake's two halves


def test_initiator_and_responder_agree_and_a_wrong_key_never_does() -> None:
    ini = seal.Initiator(PSK)
    hello = wire.encode_hello(
        wire.Hello(SID, 1404, wire.Kind.FILE, 10, 1, TAG, features=wire.FEATURE_KEY, share=ini.share)
    )
    hello = ini.bind(hello)
    msg = wire.decode_untrusted(hello)
    assert isinstance(msg, wire.Hello) and msg.binder == hello[168:200]
    res = seal.Responder(PSK)
    assert res.binds(wire.encode_hello(msg), msg.binder)
    assert not seal.Responder(os.urandom(32)).binds(hello, msg.binder)
    rkeys = res.respond(hello, msg.share)
    assert rkeys is not None
    head = wire.encode_accept(wire.Accept(SID, 1, 99, share=res.share))[:-32]
    skeys = ini.complete(hello, head, res.share, res.finished(head))
    assert skeys is not None and skeys.secret == rkeys.secret and skeys.th == rkeys.th
    # a finished MAC over another ACCEPT (another window, a replayed one) does not complete
    other = wire.encode_accept(wire.Accept(SID, 1, 100, share=res.share))[:-32]
    assert ini.complete(hello, other, res.share, res.finished(head)) is None
    # a receiver with another key: its MAC never checks
    liar = seal.Responder(os.urandom(32))
    liar.respond(hello, msg.share)
    head2 = wire.encode_accept(wire.Accept(SID, 1, 99, share=liar.share))[:-32]
    assert ini.complete(hello, head2, liar.share, liar.finished(head2)) is None


# ---------------------------------------------------------------- records


def _keys() -> tuple[seal.Keys, seal.Keys]:
    secret, th = os.urandom(32), os.urandom(32)
    return seal.Keys(secret, th, sender=True), seal.Keys(secret, th, sender=False)


def test_every_byte_of_a_sealed_datagram_is_protected() -> None:
    s, r = _keys()
    assert s.data is not None and r.data_in is not None
    header = wire.pack_data_header(SID, 7, None)
    clear, body = s.data.seal_into(bytearray(100), 100, [header], [b"x" * 40])
    data = bytes(clear[0]) + bytes(body[0])
    for k in range(len(data)):
        for bit in (0x01, 0x80):
            b = bytearray(data)
            b[k] ^= bit
            assert not r.data_in.open_in_place(memoryview(b), wire.DATA_HEADER_SIZE), k
    for cut in range(len(data)):
        assert not r.data_in.open_in_place(memoryview(bytearray(data[:cut])), wire.DATA_HEADER_SIZE)
    ok = bytearray(data)
    assert r.data_in.open_in_place(memoryview(ok), wire.DATA_HEADER_SIZE)
    assert bytes(ok[8:-16]) == header + b"x" * 40
    status = wire.encode_status(wire.Status(SID, 1, 5, 3, 9, 1, 2, 3))
    sealed = r.out.seal(status, wire.HEADER_SIZE)
    for k in range(len(sealed)):
        b = bytearray(sealed)
        b[k] ^= 0x04
        assert s.into.open(bytes(b), wire.HEADER_SIZE) is None, k
    assert s.into.open(sealed[:-1], wire.HEADER_SIZE) is None
    # the directions and the kinds have keys of their own: nothing opens under another's
    assert r.into.open(sealed, wire.HEADER_SIZE) is None
    assert s.into.open(data, wire.HEADER_SIZE) is None


def test_control_is_taken_once_and_data_replays_are_only_duplicates() -> None:
    s, r = _keys()
    probes = [s.out.seal(wire.encode_close(wire.Close(SID)), wire.HEADER_SIZE) for _ in range(5)]
    assert r.into.open(probes[3], wire.HEADER_SIZE) is not None
    assert r.into.open(probes[3], wire.HEADER_SIZE) is None  # a replay
    assert r.into.open(probes[1], wire.HEADER_SIZE) is not None  # late, but new
    assert r.into.open(probes[1], wire.HEADER_SIZE) is None
    s.out.pn += seal.REPLAY_WINDOW + 10
    assert r.into.open(s.out.seal(wire.encode_close(wire.Close(SID)), wire.HEADER_SIZE), 16) is not None
    assert r.into.open(probes[4], wire.HEADER_SIZE) is None  # older than the window: refused


def test_keys_change_every_epoch_and_both_sides_follow() -> None:
    s, r = _keys()
    assert s.data is not None and r.data_in is not None
    header = wire.pack_data_header(SID, 1, None)
    s.data.pn = (1 << seal.EPOCH_BITS) - 2  # the batch crosses into epoch 1
    out = bytearray(4 * 64)
    clear, body = s.data.seal_into(out, 64, [header] * 4, [b"abcd"] * 4)
    got = []
    for c, b in zip(clear, body, strict=True):
        d = bytearray(bytes(c) + bytes(b))
        assert r.data_in.open_in_place(memoryview(d), wire.DATA_HEADER_SIZE)
        got.append(int.from_bytes(bytes(c)[24:32], "big"))
    assert got == [(1 << seal.EPOCH_BITS) + k for k in (-2, -1, 0, 1)]
    # under epoch 0's key, a datagram of epoch 1 does not open
    assert s.data.aead(0) is not s.data.aead(1)
    # a number from an epoch far ahead is refused without deriving its key
    far = bytearray(bytes(clear[0]) + bytes(body[0]))
    far[24:32] = (50 << seal.EPOCH_BITS).to_bytes(8, "big")
    assert not r.data_in.open_in_place(memoryview(far), wire.DATA_HEADER_SIZE)


@given(st.binary(min_size=0, max_size=300))
@settings(max_examples=300)
def test_random_bytes_never_open(blob: bytes) -> None:
    _s, r = _keys()
    assert r.into.open(blob, wire.HEADER_SIZE) is None
    assert r.data_in is not None and not r.data_in.open_in_place(memoryview(bytearray(blob)), 24)


# ---------------------------------------------------------------- key files


def test_key_files(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "k")
    text = seal.new_key()
    assert text.startswith(seal.KEY_PREFIX) and len(text) == len(seal.KEY_PREFIX) + 43
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, (text + "\n").encode())
    os.close(fd)
    assert seal.format_key(seal.read_key_file(path)) == text
    os.chmod(path, 0o640)
    with pytest.raises(seal.KeyFileError, match="open to others .mode 0640.: run chmod 600"):
        seal.read_key_file(path)
    os.chmod(path, 0o600)
    for bad in ("", "hello", seal.KEY_PREFIX + "short", text[:-1] + ("A" if text[-1] != "A" else "B") + "x"):
        with open(path, "w") as f:
            f.write(bad)
        with pytest.raises(seal.KeyFileError):
            seal.read_key_file(path)
    with pytest.raises(seal.KeyFileError, match="cannot read"):
        seal.read_key_file(path + ".missing")
    with pytest.raises(seal.KeyFileError, match="not a regular file"):
        seal.read_key_file(str(tmp_path))


# ---------------------------------------------------------------- sealed transfers (simulated)


def _configs(skey: bytes | None, rkey: bytes | None) -> tuple[SenderConfig, ReceiverConfig]:
    return (
        SenderConfig(adu_size=488, rate_bps=50e6, timeout=5.0, key=skey),
        ReceiverConfig(in_order=False, timeout=5.0, window_bytes=1 << 20, key=rkey),
    )


@pytest.mark.parametrize("stream", [False, True])
def test_sealed_transfer_with_loss_is_intact(stream: bool) -> None:
    data = random.Random(3).randbytes(300_000)
    scfg, rcfg = _configs(PSK, PSK)
    rcfg = dataclasses.replace(rcfg, in_order=stream)
    res = run_transfer(
        data,
        stream=stream,
        forward=Link(delay=0.01, loss=0.05),
        backward=Link(delay=0.01, loss=0.05),
        sender_config=scfg,
        receiver_config=rcfg,
        seed=4,
    )
    assert res.sender is not None and res.sender.ok and res.receiver is not None and res.receiver.ok
    assert res.output == data
    assert res.sender_stats["unauthenticated"] == 0 and res.receiver_stats["unauthenticated"] == 0
    assert res.sender_stats["adus_repair"] > 0  # the repairs were sealed and opened too
    assert res.sender_stats["adu_size"] == 488


@pytest.mark.parametrize(
    ("skey", "rkey", "why"),
    [
        (PSK, bytes(32), "the sender's key is not this receiver's key"),
        (None, PSK, "this receiver requires a key"),
        (PSK, None, "the sender uses a key"),
    ],
)
def test_a_key_mismatch_ends_both_sides_with_exit_4(skey: bytes | None, rkey: bytes | None, why: str) -> None:
    scfg, rcfg = _configs(skey, rkey)
    # the refusal goes in three copies: two of them lost, the sender still hears why
    res = run_transfer(b"z" * 50_000, sender_config=scfg, receiver_config=rcfg, seed=1)
    assert res.sender is not None and res.receiver is not None
    assert res.sender.code == res.receiver.code == ExitCode.PEER_ABORTED
    assert why in res.sender.message and why in res.receiver.message
    assert res.output == b"" and res.receiver_stats["adus_received"] == 0


def _bind(r: Receiver, addr: tuple[str, int], features: int = wire.FEATURE_KEY) -> tuple[seal.Keys, bytes]:
    """A keyed sender's handshake with the receiver core ``r``: its keys and tokened HELLO."""
    ini = seal.Initiator(PSK)
    hello = wire.Hello(SID, 1404, wire.Kind.FILE, 100_000, 1, TAG, features=features, share=ini.share)
    r.handle_control(ini.bind(wire.encode_hello(hello)), addr, 0.0)
    retry = wire.decode_untrusted(r.poll(0.0)[-1][0])
    assert (
        isinstance(retry, wire.Accept)
        and retry.retry
        and retry.join == bool(features & wire.FEATURE_MULTICAST)
    )
    tokened = ini.bind(wire.encode_hello(dataclasses.replace(hello, token=retry.token)))
    r.handle_control(tokened, addr, 0.0)
    accept = wire.decode_untrusted(r.poll(0.0)[-1][0])
    assert isinstance(accept, wire.Accept) and accept.share
    head = wire.encode_accept(dataclasses.replace(accept, mac=b""))[:-32]
    keys = ini.complete(tokened, head, accept.share, accept.mac)
    assert keys is not None
    return keys, tokened


def test_clear_data_behind_the_binding_hello_is_refused() -> None:
    """The HELLO that binds and a forged DATA in clear right behind it, in one batch (or one
    GRO read): the DATA does not count, as none in clear ever does at a keyed receiver."""
    from alf.content import MemoryBackend, OffsetSink
    from alf.session import RecvSession

    r = Receiver(ReceiverConfig(in_order=False, key=PSK), 0.0, secret=b"s" * 8)
    sess = RecvSession(r, OffsetSink(MemoryBackend()))
    addr = ("10.0.0.1", 5)
    ini = seal.Initiator(PSK)
    hello = wire.Hello(SID, 1404, wire.Kind.FILE, 100_000, 1, TAG, features=wire.FEATURE_KEY, share=ini.share)
    sess.on_datagrams([(ini.bind(wire.encode_hello(hello)), addr)], 0.0)
    retry = wire.decode_untrusted(sess.poll(0.0)[-1][0])
    assert isinstance(retry, wire.Accept)
    tokened = ini.bind(wire.encode_hello(dataclasses.replace(hello, token=retry.token)))
    evil = wire.encode_data(wire.Data(SID, 0, b"EVIL" * 351))
    sess.on_datagrams([(tokened, addr), (evil, addr)], 0.0)
    assert r.hello is not None and r.keys is not None
    assert r.stats.adus_received == 0 and r.stats.unauthenticated == 1
    sess.on_coalesced(memoryview(bytearray(evil * 3)), len(evil), addr, 0.0)
    assert r.stats.adus_received == 0 and r.stats.unauthenticated == 4


def test_no_answer_to_a_datagram_in_clear_is_sealed() -> None:
    """Once keyed, an offer this version cannot read that carries the session's id gets no
    answer, and the BUSY that a replayed HELLO from elsewhere gets goes in clear, which the
    sender does not take: a forger cannot have the receiver seal an ABORT for it."""
    r = Receiver(ReceiverConfig(in_order=False, key=PSK), 0.0, secret=b"s" * 8)
    addr = ("10.0.0.1", 5)
    keys, tokened = _bind(r, addr)
    other_version = bytearray(wire.encode_hello(wire.Hello(SID, 1404, wire.Kind.FILE, 5, 1, TAG)))
    other_version[0] = 2
    r.handle_control(bytes(other_version), ("10.9.9.9", 7), 1.0)
    assert r.poll(1.0) == []
    r.handle_control(tokened, ("10.9.9.9", 7), 1.0)  # the sender's HELLO, replayed from elsewhere
    ((busy, to),) = r.poll(1.0)
    assert to == ("10.9.9.9", 7) and isinstance(wire.decode_untrusted(busy), wire.Abort)  # in clear
    assert keys.into.open(busy, wire.HEADER_SIZE) is None


def test_forged_and_replayed_control_change_nothing() -> None:
    """A bound, keyed receiver: PROBE, CLOSE and ABORT in clear, a sealed one replayed, and
    one sealed under another session's keys are counted and dropped; none is answered."""
    r = Receiver(ReceiverConfig(in_order=False, key=PSK), 0.0, secret=b"s" * 8)
    ini = seal.Initiator(PSK)
    hello = wire.Hello(SID, 1404, wire.Kind.FILE, 100_000, 1, TAG, features=wire.FEATURE_KEY, share=ini.share)
    addr = ("10.0.0.1", 5)
    r.handle_control(ini.bind(wire.encode_hello(hello)), addr, 0.0)
    retry = wire.decode_untrusted(r.poll(0.0)[-1][0])
    assert isinstance(retry, wire.Accept) and retry.retry
    hello = dataclasses.replace(hello, token=retry.token)  # the binder covers the token: made again
    r.handle_control(ini.bind(wire.encode_hello(hello)), addr, 0.0)
    accept = wire.decode_untrusted(r.poll(0.0)[-1][0])
    assert isinstance(accept, wire.Accept) and accept.share
    head = wire.encode_accept(dataclasses.replace(accept, mac=b""))[:-32]
    keys = ini.complete(ini.bind(wire.encode_hello(hello)), head, accept.share, accept.mac)
    assert keys is not None
    forged = [
        wire.encode_probe(wire.Probe(SID, 10, 1, 1000, True, 100_000, b"\x01" * 32)),
        wire.encode_close(wire.Close(SID)),
        wire.encode_abort(wire.Abort(SID, wire.AbortCode.CANCELLED, "forged")),
    ]
    before = r.stats.unauthenticated
    for d in forged:
        r.handle_control(d, addr, 1.0)
    assert r.stats.unauthenticated == before + 3
    probe = keys.out.seal(wire.encode_probe(wire.Probe(SID, 10, 1, 1000)), wire.HEADER_SIZE)
    r.handle_control(probe, addr, 1.0)
    answered = r.poll(1.0)
    assert answered and all(len(d) > 16 for d, _a in answered)  # the STATUS, sealed
    r.handle_control(probe, addr, 1.1)  # the same PROBE again: a replay
    other = seal.Keys(os.urandom(32), os.urandom(32), sender=True)  # an older session's keys
    r.handle_control(other.out.seal(wire.encode_close(wire.Close(SID)), wire.HEADER_SIZE), addr, 1.1)
    assert r.stats.unauthenticated == before + 5
    assert r.poll(1.1) == [] and r.outcome is None and r.final_digest is None


def test_a_sealed_transfer_over_two_paths_uses_both() -> None:
    """§17 rule 7 with §14: both paths join with the session's share and keys (each ACCEPT's
    finished MAC checks), and each carries sealed data; one loses 3%."""
    data = random.Random(5).randbytes(600_000)
    scfg = SenderConfig(adu_size=488, rate_bps=40e6, timeout=5.0, key=PSK, paths=2, stripe="weighted")
    rcfg = ReceiverConfig(in_order=False, timeout=5.0, window_bytes=1 << 20, key=PSK)
    res = run_transfer(
        data,
        forward=Link(delay=0.01, rate_bps=25e6),
        backward=Link(delay=0.01),
        more_paths=[(Link(delay=0.02, rate_bps=25e6, loss=0.03), Link(delay=0.02))],
        sender_config=scfg,
        receiver_config=rcfg,
        seed=6,
    )
    assert res.sender is not None and res.sender.ok and res.receiver is not None and res.receiver.ok
    assert res.output == data
    paths = res.sender_stats["paths"]
    assert len(paths) == 2 and all(p["bytes_new"] > 50_000 for p in paths)
    assert res.sender_stats["paths_joined"] == 1 and res.receiver_stats["paths_joined"] == 1
    assert res.sender_stats["unauthenticated"] == 0 and res.receiver_stats["unauthenticated"] == 0


def test_tcp_cores_sealed_refuse_forged_frames() -> None:
    """§17 over TCP: a keyed HELLO and ACCEPT give both cores the keys; a sealed DATA frame
    opens and is written; a DATA, FINAL or ABORT frame in clear, and a sealed one altered,
    are counted, change nothing, and close the connection they came on."""
    from alf.content import BytesSource, MemoryBackend, OffsetSink
    from alf.tcp import TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig

    data = random.Random(2).randbytes(5000)
    snd = TcpSender(TcpSenderConfig(adu_size=100, frame_bytes=1000, key=PSK), SID, wire.Kind.FILE, 5000,
                    BytesSource(data, 100))  # fmt: skip
    backend = MemoryBackend()
    rcv = TcpReceiver(TcpReceiverConfig(key=PSK), OffsetSink(backend), 0.0)
    snd.conn_opened(1)
    rcv.conn_opened(1, 0.0)
    assert not rcv.on_frame(1, memoryview(bytearray(snd.hello(0.0)[4:])), 0.0)
    ((cid, accept),) = rcv.poll(0.0).items
    snd.on_message(1, accept[4:], 0.0)
    assert snd.keys is not None and rcv.keys is not None and snd.accepted
    head, payload = snd.next_frame(1, 0.0) or (b"", None)
    assert payload is not None
    frame = bytearray(head[4:] + bytes(payload))
    assert bytes(data[:1000]) not in bytes(frame)
    rcv.on_frame(1, memoryview(frame), 0.0)
    assert rcv.stats.bytes_received == 1000 and rcv.stats.unauthenticated == 0
    forged = [
        wire.frame_data_head(SID, 10, 100)[4:] + b"x" * 100,
        wire.encode_probe(wire.Probe(SID, 50, 1, 0, True, 5000, b"\x01" * 32)),
        wire.encode_abort(wire.Abort(SID, wire.AbortCode.CANCELLED, "forged")),
    ]
    head, payload = snd.next_frame(1, 0.0) or (b"", None)
    altered = bytearray(head[4:] + bytes(payload or b""))
    altered[40] ^= 1
    for k, f in enumerate([*forged, bytes(altered)], start=2):
        rcv.conn_opened(k, 0.0)
        rcv.joined.add(k)  # (as if it had joined: the forgery comes on a connection of the session)
        assert not rcv.on_frame(k, memoryview(bytearray(f)), 0.0)
    replies = rcv.poll(0.0)
    assert rcv.stats.unauthenticated == 4 and {2, 3, 4, 5} <= replies.close
    assert rcv.outcome is None and rcv.final_digest is None and rcv.stats.bytes_received == 1000
    # the sender: a forged DONE (OK) and STATUS in clear are dropped
    snd.on_message(1, wire.encode_done(wire.Done(SID, wire.Verdict.OK, 5000, b"\x02" * 32)), 0.1)
    snd.on_message(1, wire.encode_status(wire.Status(SID, 50, 50, 50, 50, 0, 0, 0)), 0.1)
    assert snd.stats.unauthenticated == 2 and snd.outcome is None and snd.acked == 0


def test_only_a_destination_on_this_host_goes_without_the_note() -> None:
    """Without a key the sender says the transfer is not encrypted unless its receiver is on
    this host (every address the name resolves to is a loopback one)."""
    from alf.api import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("127.3.4.5") and _loopback("localhost")
    assert _loopback("::ffff:127.0.0.1")
    assert (
        not _loopback("10.1.0.2") and not _loopback("2001:db8::1") and not _loopback("no-such-host.invalid")
    )


def test_tcp_close_to_every_connection_is_one_record_each() -> None:
    """The TCP sender's CLOSE (and ABORT) to all its connections: each copy sealed on its own,
    so the receiver opens every one (one record sent twice would be a replay)."""
    from alf.content import BytesSource
    from alf.tcp import ALL, TcpSender, TcpSenderConfig

    snd = TcpSender(
        TcpSenderConfig(adu_size=100, key=PSK), SID, wire.Kind.FILE, 100, BytesSource(b"x" * 100, 100)
    )
    res = seal.Responder(PSK)
    hello = snd.hello(0.0)[4:]
    rkeys = res.respond(hello, wire.decode_untrusted(hello).share)  # type: ignore[union-attr]
    assert rkeys is not None
    for cid in (1, 2, 3):
        snd.conn_opened(cid)
        head = wire.encode_accept(wire.Accept(SID, 1, 10, share=res.share))[:-32]
        snd.on_message(cid, head + res.finished(head), 0.0)
    snd.cancel(wire.AbortCode.CANCELLED, "stop", ExitCode.CANCELLED)
    frames = snd.poll(0.0)
    assert sorted(c for c, _f in frames) == [1, 2, 3] and all(c != ALL for c, _f in frames)
    for _c, f in frames:
        assert rkeys.into.open(f[4:], wire.HEADER_SIZE) is not None


def test_tcp_a_replayed_hello_of_an_older_session_holds_no_place() -> None:
    """§17 over TCP: a HELLO has no token, so an attacker may replay one recorded from an older
    session (same key). It binds nothing for good: the output does not start, and the real
    sender's HELLO takes its place; a sealed DATA frame replayed on another connection is
    refused and that connection closed."""
    from alf.content import BytesSource, MemoryBackend, OffsetSink
    from alf.tcp import TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig

    data = random.Random(3).randbytes(3000)

    def sender(sid: int) -> TcpSender:
        cfg = TcpSenderConfig(adu_size=100, frame_bytes=1000, key=PSK)
        return TcpSender(cfg, sid, wire.Kind.FILE, 3000, BytesSource(data, 100))

    old = sender(0x0BAD).hello(0.0)[4:]  # recorded from an older session
    backend = MemoryBackend()
    rcv = TcpReceiver(TcpReceiverConfig(key=PSK), OffsetSink(backend), 0.0)
    rcv.conn_opened(9, 0.0)
    rcv.on_frame(9, memoryview(bytearray(old)), 0.0)  # the replay comes first
    assert rcv.session_id == 0x0BAD and rcv.poll(0.0).items  # (its ACCEPT goes to the attacker)
    snd = sender(SID)
    snd.conn_opened(1)
    rcv.conn_opened(1, 0.0)
    rcv.on_frame(1, memoryview(bytearray(snd.hello(0.0)[4:])), 0.0)
    replies = rcv.poll(0.0)
    assert rcv.session_id == SID and 9 in replies.close
    accept = next(f for c, f in replies.items if c == 1)
    snd.on_message(1, accept[4:], 0.0)
    assert snd.keys is not None
    while (item := snd.next_frame(1, 0.0)) is not None and item[1] is not None:
        frame = bytearray(item[0][4:] + bytes(item[1]))
        replay = bytearray(frame)
        rcv.on_frame(1, memoryview(frame), 0.0)
    assert rcv.stats.bytes_received == 3000
    rcv.conn_opened(2, 0.0)
    rcv.joined.add(2)  # (as if the attacker's connection had joined with a replayed HELLO)
    rcv.on_frame(2, memoryview(replay), 0.0)
    assert 2 in rcv.poll(0.0).close and rcv.stats.unauthenticated >= 2


# ---------------------------------------------------------------- §17 rule 8: a sealed group


def _group(*losses: float) -> list[tuple[Link, Link]]:
    return [(Link(loss=p), Link(loss=p)) for p in losses]


@pytest.mark.parametrize("stream", [False, True], ids=["file", "pipe"])
def test_a_sealed_group_at_mixed_loss_all_verify(stream: bool) -> None:
    """Four members at 0-10% loss both ways (KEYS copies and asks lost too): each gets its own
    keys and the group's secret, and every output is the input; nothing failed to open."""
    data = random.Random(5).randbytes(600_000)
    scfg, rcfg = _configs(PSK, PSK)
    rcfg = dataclasses.replace(rcfg, in_order=stream)
    r = run_group_transfer(
        data, _group(0.0, 0.01, 0.05, 0.10), stream=stream, expected=4, sender_config=scfg,
        receiver_config=rcfg, seed=3,
    )  # fmt: skip
    assert r.sender is not None and r.sender.ok, r.sender
    assert r.outputs == [data] * 4
    assert r.sender_stats["keys_sent"] >= 4 * 3 and r.sender_stats["unauthenticated"] == 0
    assert all(s["unauthenticated"] == 0 for s in r.receiver_stats)
    assert r.sender_stats["adus_repair"] > 0  # repairs to the group, sealed under its keys


def test_a_sealed_groups_late_member_gets_the_secret_and_the_whole_file() -> None:
    """A file's member that joins at the second announcement after the start (1.2 s, about
    half-way): its KEYS name where the group's numbers are, and it gets the rest and its
    prefix by repair."""
    data = random.Random(6).randbytes(2_000_000)
    scfg, rcfg = _configs(PSK, PSK)
    r = run_group_transfer(
        data, _group(0.0, 0.02, 0.0), quorum=2, wait=0.2, start_at=[0.0, 0.0, 0.5],
        sender_config=dataclasses.replace(scfg, rate_bps=10e6), receiver_config=rcfg, seed=4,
    )  # fmt: skip
    assert r.sender is not None and r.sender.ok, r.sender
    assert r.outputs == [data] * 3
    late = r.sender_stats["receivers"][2]
    assert late["late"] and late["state"] == "ok"


def test_a_member_with_another_key_is_refused_and_the_others_verify() -> None:
    """Rule 4 in a group: the receiver with another key ends with exit 4, writes nothing,
    and holds no place; the members with the key verify (the quorum is theirs)."""
    data = random.Random(7).randbytes(200_000)
    scfg, rcfg = _configs(PSK, PSK)
    wrong = dataclasses.replace(rcfg, key=bytes(32))
    r = run_group_transfer(
        data, _group(0.0, 0.0, 0.0), quorum=2, wait=0.5, sender_config=scfg,
        receiver_configs=[rcfg, wrong, rcfg], seed=5,
    )  # fmt: skip
    assert r.sender is not None and r.sender.ok, r.sender
    assert r.sender.message == "2 of 2 receivers verified the content"
    bad = r.receivers[1]
    assert bad is not None and bad.code == ExitCode.PEER_ABORTED and "key" in bad.message
    assert r.outputs[0] == data and r.outputs[2] == data and r.outputs[1] == b""


def test_a_sealed_group_refuses_forged_group_and_member_traffic() -> None:
    """A member bound to a sealed group: a PROBE or KEYS in clear, a PROBE sealed under the
    member's own keys (only the group's open a PROBE) and a KEYS sealed under the group's
    (only the member's open a KEYS) are all counted and change nothing."""
    r = Receiver(ReceiverConfig(in_order=False, key=PSK), 0.0, secret=b"s" * 8)
    addr = ("10.0.0.1", 5)
    mine, bound = _bind(r, addr, wire.FEATURE_KEY | wire.FEATURE_MULTICAST)
    secret = os.urandom(32)
    group = seal.group_keys(secret, bound, sender=True)
    probe = wire.encode_probe(wire.Probe(SID, 10, 1, 1000))
    keys = wire.encode_keys(wire.Keys(SID, secret, 0, 0))
    before = r.stats.unauthenticated
    for d in (probe, keys, mine.out.seal(probe, 16), group.out.seal(keys, 16)):
        r.handle_control(d, addr, 0.1)
    assert r.stats.unauthenticated == before + 4 and r.group_keys is None
    assert r.poll(0.1) == []  # nothing answered them
    r.handle_control(mine.out.seal(keys, 16), addr, 0.2)  # the sender's KEYS: the group's secret
    assert r.group_keys is not None and r.stats.unauthenticated == before + 4
    r.handle_control(group.out.seal(probe, 16), addr, 0.2)  # now a group PROBE opens: a STATUS
    assert r.stats.unauthenticated == before + 4
    assert r.poll(0.2)


def test_the_group_sender_takes_a_members_accept_only_if_it_proves_itself() -> None:
    """The group sender: an ACCEPT whose finished MAC does not check makes no member and is
    answered with nothing; a proved one is answered with the group's secret (three KEYS, each
    sealed under that member's keys with a number of its own). The same ACCEPT from another
    address (a clone: the JOIN and the ACCEPT replayed from there) is refused: a share is one
    receiver's. If every KEYS is lost the member asks again with its ACCEPT after 250 ms and
    gets one; a replay of that ACCEPT within 250 ms draws nothing and is no sign of life; once
    the member holds the secret it answers announcements no more."""
    scfg, _ = _configs(PSK, PSK)
    g = GroupSender(scfg, SID, wire.Kind.FILE, 100_000, 0.0, ("239.1.2.3", 9), receivers=2)
    announce = next(d for d in g.poll(0.0) if d.data[1] == wire.MsgType.HELLO)
    member, clone, src = ("10.0.0.2", 9), ("10.0.0.3", 9), ("10.0.0.1", 9)
    r = Receiver(ReceiverConfig(in_order=False, key=PSK), 0.0, secret=b"t" * 8)
    r.handle_control(announce.data, src, 0.0)
    ((join, _to),) = r.poll(0.0)
    g.handle_datagram(join, 0.01, addr=member)
    g.handle_datagram(join, 0.01, addr=clone)  # its JOIN replayed from another address
    (tokened,) = [d for d in g.poll(0.01) if d.addr == member]
    r.handle_control(tokened.data, src, 0.02)
    ((accept, _to),) = r.poll(0.02)
    forged = bytearray(accept)
    forged[-1] ^= 1
    g.handle_datagram(bytes(forged), 0.03, addr=member)
    assert g.stats.unauthenticated == 1 and g.stats.keys_sent == 0
    assert [d for d in g.poll(0.03) if d.addr == member] == []
    g.handle_datagram(accept, 0.04, addr=member)
    sent = [d for d in g.poll(0.04) if d.addr == member]
    assert g.stats.keys_sent == 3 and len(sent) == 3
    numbers = {d.data[16:24] for d in sent}
    assert len(numbers) == 3  # three records, three numbers
    g.handle_datagram(accept, 0.05, addr=clone)  # the clone's ACCEPT: the member's, echoing its HELLO
    assert g.stats.unauthenticated == 2 and g.poll(0.05) == [] and g.members[clone].keys is None
    for d in sent:  # sealed: the secret is not on the wire in clear
        assert g._group_secret not in d.data
    # every KEYS lost: the member asks again, once per 250 ms
    assert r.poll(0.2) == [] and r.next_deadline(0.2) <= 0.02 + 0.25 + 1e-9
    ((again, _to),) = r.poll(0.3)
    assert wire.decode_untrusted(again) == wire.decode_untrusted(accept)
    heard = g.members[member].heard_at
    g.handle_datagram(again, 0.31, addr=member)
    ((keys,),) = [[d for d in g.poll(0.31) if d.addr == member]]
    g.handle_datagram(again, 0.32, addr=member)  # a replay: nothing, and no sign of life
    assert g.poll(0.32) == [] and g.members[member].heard_at == heard and g.stats.keys_sent == 4
    assert keys.data[16:24] not in numbers
    r.handle_control(keys.data, src, 0.33)
    assert r.group_keys is not None and r.stats.unauthenticated == 0
    r.handle_control(announce.data, src, 0.5)  # an announcement: no more ACCEPTs
    assert r.poll(0.5) == []


def test_an_opener_started_late_takes_only_what_follows() -> None:
    """§17 rule 8: a late member opens the group's directions from the numbers its KEYS
    names: a control number below is refused as taken, and a DATA epochs ahead opens (which
    it would not without the start: rule 6 tries only the epochs next to the highest)."""
    sealer = seal.Keys(os.urandom(32), os.urandom(32), sender=True)
    assert sealer.data is not None
    far = 5 << seal.EPOCH_BITS
    sealer.out.pn = far + 10
    before = sealer.out.seal(wire.encode_probe(wire.Probe(SID, 1, 2, 3)), 16)
    at = sealer.out.seal(wire.encode_probe(wire.Probe(SID, 1, 2, 4)), 16)
    sealer.data.pn = far
    data = sealer.data.seal(wire.encode_data(wire.Data(SID, 7, b"x" * 100)), 24)
    for start in (False, True):
        opener = seal.Keys(sealer.secret, sealer.th, sender=False)
        assert opener.data_in is not None
        if start:
            opener.into.start_at(far + 11)
            opener.data_in.start_at(far)
        assert (opener.data_in.open(data, 24) is not None) == start
        assert (opener.into.open(at, 16) is not None) == start
        assert opener.into.open(before, 16) is None


def test_a_group_whose_only_receiver_has_another_key_fails_with_exit_4_on_both_sides() -> None:
    data = random.Random(8).randbytes(50_000)
    scfg, rcfg = _configs(PSK, bytes(32))
    r = run_group_transfer(
        data, _group(0.0), expected=1, sender_config=dataclasses.replace(scfg, timeout=2.0),
        receiver_config=rcfg, seed=6, max_time=30,
    )  # fmt: skip
    assert r.sender is not None and r.sender.code == ExitCode.PEER_ABORTED, r.sender
    assert "only 0 of 1 receivers joined" in r.sender.message and "1 refused it" in r.sender.message
    assert "key" in r.sender.message
    assert r.receivers[0] is not None and r.receivers[0].code == ExitCode.PEER_ABORTED
    assert r.group_data == 0 and r.outputs == [b""]


class _GroupAttacker:
    """On every link of a sealed group: flips a bit of one datagram in 50, truncates one in
    100, replays an earlier one of the same direction in 50 (and datagrams of an older
    session, with this session's id written in), and every 100 datagrams injects forgeries in
    clear that seem to come from the real peer: to members a FINAL PROBE, CLOSE, ABORT, DATA
    and a KEYS with a secret of its own; every 10 a member sends, to the sender a STATUS, NAK,
    DONE (OK), ABORT and ACCEPT."""

    def __init__(self, seed: int, old: list[bytes] | None = None) -> None:
        self.rng = random.Random(seed)
        self.seen: dict[bool, list[bytes]] = {True: [], False: []}
        self.old = old or []
        self.recorded: list[bytes] = []
        self.counts = {True: 0, False: 0}
        self.tampered = 0

    def __call__(self, src: object, dst: object, d: bytes) -> list[bytes]:
        rng = self.rng
        down = src == SENDER_ADDR
        seen = self.seen[down]
        sid = int.from_bytes(d[8:16], "big")
        self.recorded.append(d)
        out = [d]
        x = rng.random()
        if x < 0.02:
            b = bytearray(d)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            out = [bytes(b)]
        elif x < 0.03:
            out = [d[: rng.randrange(1, len(d))]]
        elif x < 0.05 and seen:
            out.append(rng.choice(seen[-500:]))
        seen.append(d)
        self.tampered += out != [d]
        self.counts[down] += 1
        if self.counts[down] % (100 if down else 10) == 0 and sid:
            out += self._forged(sid, down)
        return out

    def _forged(self, sid: int, down: bool) -> list[bytes]:
        if down:
            out = [
                wire.encode_probe(wire.Probe(sid, 10, 1, 1000, True, 5, b"\x01" * 32)),
                wire.encode_close(wire.Close(sid)),
                wire.encode_abort(wire.Abort(sid, wire.AbortCode.CANCELLED, "forged")),
                wire.encode_data(wire.Data(sid, 3, b"forged" * 80)),
                wire.encode_keys(wire.Keys(sid, b"\x05" * 32, 0, 0)),
            ]
            for d in self.rng.sample(self.old, min(4, len(self.old))):
                out += [d, d[:8] + sid.to_bytes(8, "big") + d[16:]]
            return out
        return [
            wire.encode_status(wire.Status(sid, 10**6, 10**6, 10**6, 10**7, 1, 1, 1)),
            wire.encode_naks(sid, [(0, 500)], 1)[0][0],
            wire.encode_done(wire.Done(sid, wire.Verdict.OK, 5, b"\x02" * 32)),
            wire.encode_abort(wire.Abort(sid, wire.AbortCode.CANCELLED, "forged")),
            wire.encode_accept(wire.Accept(sid, 1, 1 << 20, 7, share=b"\x03" * 64, mac=b"\x04" * 32)),
        ]


def test_an_on_path_attacker_on_a_sealed_group_never_gets_a_wrong_output_past_exit_0() -> None:
    """Issue 19 point 3 for a group, on the simulated network (every link attacked, both
    ways): the sender and every member end alike (all OK, or the failure reported), an OK
    output is the input, and what was forged, altered or replayed was counted and dropped.
    (The same attacker on a group without a key fails every member: forged FINALs and
    ABORTs end them.)"""
    scfg, rcfg = _configs(PSK, PSK)
    older = _GroupAttacker(1)
    first = random.Random(10).randbytes(200_000)
    run_group_transfer(first, _group(0.0, 0.0), expected=2, sender_config=scfg, receiver_config=rcfg,
                       tamper=older, seed=8)  # fmt: skip
    data = random.Random(11).randbytes(800_000)
    attacker = _GroupAttacker(2, [d for d in older.recorded if len(d) > 100])
    r = run_group_transfer(
        data, _group(0.0, 0.01, 0.02), expected=3, sender_config=scfg, receiver_config=rcfg,
        tamper=attacker, seed=9,
    )  # fmt: skip
    assert attacker.tampered > 100
    assert r.sender is not None and all(o is not None for o in r.receivers)
    assert r.sender.ok == all(o is not None and o.ok for o in r.receivers), (r.sender, r.receivers)
    for o, out in zip(r.receivers, r.outputs, strict=True):
        assert o is not None and (not o.ok or out == data)
    assert r.sender.ok, "the group should survive this much tampering"
    assert r.sender_stats["unauthenticated"] > 10
    assert all(s["unauthenticated"] > 10 for s in r.receiver_stats)


def test_a_replayed_announcement_keeps_no_member_waiting() -> None:
    """A HELLO is in clear and its binder makes it no fresher: a member whose sender has died
    ends at its timeout however often an on-path attacker replays an announcement it saw."""
    r = Receiver(ReceiverConfig(in_order=False, key=PSK, timeout=3.0), 0.0, secret=b"s" * 8)
    addr = ("10.0.0.1", 5)
    _keys, announce = _bind(r, addr, wire.FEATURE_KEY | wire.FEATURE_MULTICAST)  # replayed below
    t = 0.5
    while t < 4.0 and r.outcome is None:
        r.handle_control(announce, addr, t)  # the same announcement, again and again
        r.poll(t)
        t += 0.5
    assert r.outcome is not None and r.outcome.code == ExitCode.PEER_UNREACHABLE, r.outcome
