"""Authenticated encryption with a pre-shared key (docs/protocol.md §17).

The key schedule follows TLS 1.3 and QUIC: HKDF from the PSK, an ephemeral X25519 exchange
for forward secrecy, a binder that proves the HELLO's sender holds the key, a finished MAC
over the transcript in the ACCEPT, and AES-256-GCM keys per direction and for data and
control. Every sealed datagram carries an explicit 64-bit packet number: its nonce is the
direction's IV XOR that number, so a repair of an ADU never reuses a nonce, and the key
changes every 2^22 packets (RFC 9001 §6.6 allows 2^23 under one AES-GCM key).

Invariants: ``open``/``open_in_place`` return nothing for a datagram that fails, and change
no state for it; a packet number is never sealed twice under one key; control packet numbers
are accepted once (a replay window).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import os
import secrets
import stat
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from alf import wire

try:  # the C batch (setup.py); without it every datagram is one `cryptography` call
    from alf._gcm import Gcm as native
except ImportError:  # built without a compiler or OpenSSL's headers
    native = None  # type: ignore[assignment,misc]

_T = TypeVar("_T")

KEY_SIZE = 32  # the PSK: 256 random bits
SHARE_SIZE = wire.SHARE_SIZE  # a random (32) and an X25519 public key (32), in HELLO and ACCEPT
MAC_SIZE = wire.MAC_SIZE  # the HELLO's binder and the ACCEPT's finished MAC: HMAC-SHA256
PN_SIZE = wire.SEAL_PN
TAG_SIZE = wire.SEAL_TAG
OVERHEAD = wire.SEAL_OVERHEAD  # what sealing adds to a datagram: PN_SIZE + TAG_SIZE
EPOCH_BITS = 22  # a fresh key every 2^22 packets of a direction
REPLAY_WINDOW = 4096  # control packet numbers this far below the highest are still taken once
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
KEY_PREFIX = "alf-key-1:"
ENV_KEY_FILE = "ALF_KEY_FILE"

# HELLO offsets (§17): the share and the binder follow the §4.1 fields
HELLO_SHARE_AT = wire.HELLO_SHARE_AT
HELLO_BINDER_AT = HELLO_SHARE_AT + SHARE_SIZE  # 168
HELLO_SEALED_END = HELLO_BINDER_AT + MAC_SIZE  # 200
_TS = slice(32, 40)  # the HELLO's timestamp and token: they differ between copies of it
_TOKEN = slice(64, 72)


class KeyFileError(ValueError):
    """A key file that cannot be used, with the reason for the user."""


def format_key(raw: bytes) -> str:
    """A key as its printable form (one line)."""
    if len(raw) != KEY_SIZE:
        raise ValueError("a key is 32 bytes")
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_key() -> str:
    """``alf keygen``: 256 random bits from the system's CSPRNG, printable."""
    return format_key(secrets.token_bytes(KEY_SIZE))


def parse_key(text: str) -> bytes:
    """The 32 bytes of a printable key; KeyFileError if it is not one."""
    line = text.strip()
    if not line.startswith(KEY_PREFIX):
        raise KeyFileError(f"not an alf key (it should start with {KEY_PREFIX}; make one with alf keygen)")
    body = line[len(KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raw = b""
    if len(raw) != KEY_SIZE or format_key(raw) != line:
        raise KeyFileError("the key is damaged (it is not 32 bytes of base64url)")
    return raw


def read_key_file(path: str) -> bytes:
    """The key in ``path``. Refused, as ssh refuses a private key, when others may read or
    write it (group or other permission bits), or when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO must not block us)
    except OSError as e:
        raise KeyFileError(f"cannot read the key file {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"the key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"the key file {path} is open to others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"run chmod 600 {path}"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        return parse_key(data.decode("ascii"))
    except UnicodeDecodeError:
        raise KeyFileError(f"the key file {path} is not an alf key") from None
    except KeyFileError as e:
        raise KeyFileError(f"the key file {path}: {e}") from None


# ---------------------------------------------------------------- key schedule


def _extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869) with SHA-256; an empty salt is 32 zero bytes."""
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def expand_label(secret: bytes, label: str, context: bytes, length: int) -> bytes:
    """TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1) with the label prefix ``alf1 ``."""
    full = b"alf1 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def early_secret(psk: bytes) -> bytes:
    return _extract(b"", psk)


def binder(psk: bytes, hello_head: bytes) -> bytes:
    """The HELLO's binder: HMAC under a key only the PSK gives, of the HELLO's first 168
    bytes (everything before the binder, timestamp and token included)."""
    key = expand_label(early_secret(psk), "binder", b"", 32)
    return hmac.new(key, hello_head, hashlib.sha256).digest()


def hello_core(hello_head: bytes) -> bytes:
    """The HELLO's first 168 bytes without its timestamp and token: what every copy of one
    session's HELLO (resent, tokened, on another path) has in common."""
    core = bytearray(hello_head[:HELLO_BINDER_AT])
    core[_TS] = bytes(8)
    core[_TOKEN] = bytes(8)
    return bytes(core)


def transcript(hello_head: bytes, server_share: bytes) -> bytes:
    """The transcript hash the keys are bound to: the HELLO's core and the receiver's share."""
    return hashlib.sha256(b"alf1 transcript" + hello_core(hello_head) + server_share).digest()


def session_secret(psk: bytes, shared: bytes) -> bytes:
    early = early_secret(psk)
    derived = expand_label(early, "derived", hashlib.sha256(b"").digest(), 32)
    return _extract(derived, shared)


def finished(secret: bytes, th: bytes, accept_head: bytes) -> bytes:
    """The ACCEPT's finished MAC over the transcript and the ACCEPT before it."""
    key = expand_label(secret, "finished", th, 32)
    return hmac.new(key, hashlib.sha256(th + accept_head).digest(), hashlib.sha256).digest()


def new_share() -> tuple[X25519PrivateKey, bytes]:
    """An ephemeral X25519 key and the share that carries it: 32 random bytes, then the
    public key."""
    private = X25519PrivateKey.generate()
    return private, secrets.token_bytes(32) + private.public_key().public_bytes_raw()


def exchange(private: X25519PrivateKey, peer_share: bytes) -> bytes | None:
    """The X25519 shared secret with the peer's share (None: a low-order or invalid point)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_share[32:64]))
    except ValueError:
        return None


# ---------------------------------------------------------------- record protection

S2R_DATA = "s2r data"  # DATA and PARITY, sender to receiver
S2R_CONTROL = "s2r ctrl"  # PROBE, CLOSE, ABORT
R2S_CONTROL = "r2s ctrl"  # STATUS, NAK, DONE, ABORT


class _Direction:
    """One direction's keys: an AES-256-GCM key per epoch of 2^22 packet numbers, one IV."""

    def __init__(self, secret: bytes, th: bytes, label: str) -> None:
        self._secret, self._th, self._label = secret, th, label
        self._iv_bytes = expand_label(secret, label + " iv", th, 12)
        self._iv = int.from_bytes(self._iv_bytes, "big")
        self._keys: dict[int, AESGCM] = {}
        self._native = native  # (read when made: a test may set seal.native to None first)
        self._batches: dict[int, native] = {}

    def _key(self, epoch: int) -> bytes:
        return expand_label(self._secret, f"{self._label} key", self._th + epoch.to_bytes(8, "big"), 32)

    def aead(self, epoch: int) -> AESGCM:
        return _of_epoch(self._keys, epoch, lambda: AESGCM(self._key(epoch)))

    def batch(self, epoch: int) -> native | None:
        """The same key for whole batches in one call (alf/_gcm.c), or None without it."""
        make = self._native
        if make is None:
            return None
        return _of_epoch(self._batches, epoch, lambda: make(self._key(epoch), self._iv_bytes))

    def nonce(self, pn: int) -> bytes:
        return (self._iv ^ pn).to_bytes(12, "big")


def _of_epoch(cache: dict[int, _T], epoch: int, make: Callable[[], _T]) -> _T:
    """``cache[epoch]``, made by ``make`` the first time; an epoch two behind is dropped (it is
    never opened again)."""
    got = cache.get(epoch)
    if got is None:
        got = cache[epoch] = make()
        for old in [e for e in cache if e < epoch - 1]:
            del cache[old]
    return got


class Sealer(_Direction):
    """Seals what one side sends in one direction; the packet number only grows."""

    def __init__(self, secret: bytes, th: bytes, label: str) -> None:
        super().__init__(secret, th, label)
        self.pn = 0
        self._slots: dict[tuple[int, int, int], tuple[list[memoryview], list[memoryview]]] = {}

    def seal(self, plain: bytes | bytearray | memoryview, head: int) -> bytes:
        """``plain``'s first ``head`` bytes in clear, then the packet number, then the rest
        encrypted and its tag; the clear bytes and the number are authenticated."""
        pn = self.pn
        self.pn += 1
        aad = bytes(plain[:head]) + pn.to_bytes(PN_SIZE, "big")
        return aad + self.aead(pn >> EPOCH_BITS).encrypt(self.nonce(pn), bytes(plain[head:]), aad)

    def seal_body(self, head: bytes, body: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """One datagram or frame sealed as two parts: its clear head with the packet number,
        and its body encrypted with the tag (a large body is not copied first)."""
        pn = self.pn
        self.pn += 1
        aad = bytes(head) + pn.to_bytes(PN_SIZE, "big")
        return aad, self.aead(pn >> EPOCH_BITS).encrypt(self.nonce(pn), body, aad)

    def seal_into(
        self,
        out: bytearray,
        stride: int,
        heads: Sequence[bytes | bytearray | memoryview],
        bodies: Sequence[bytes | bytearray | memoryview],
    ) -> tuple[list[memoryview], list[memoryview]]:
        """A batch: datagram k sealed into ``out`` at ``k * stride`` (head, number, body
        encrypted with its tag); returns the views of each one's clear part (head and number)
        and of its sealed body, for a scatter-gather send. Every head has one length."""
        n = len(heads)
        if not n:
            return [], []
        pn = self.pn
        if pn >> EPOCH_BITS != (pn + n - 1) >> EPOCH_BITS:  # the batch crosses into a new key
            split = ((pn >> EPOCH_BITS) + 1 << EPOCH_BITS) - pn
            c1, s1 = self.seal_into(out, stride, heads[:split], bodies[:split])
            c2, s2 = self._seal_at(out, stride, split, heads[split:], bodies[split:])
            return c1 + c2, s1 + s2
        return self._seal_at(out, stride, 0, heads, bodies)

    def _seal_at(
        self,
        out: bytearray,
        stride: int,
        first: int,
        heads: Sequence[bytes | bytearray | memoryview],
        bodies: Sequence[bytes | bytearray | memoryview],
    ) -> tuple[list[memoryview], list[memoryview]]:
        n = len(heads)
        h = len(heads[0])
        clear_views, body_views = self._views(out, stride, h)
        pn = self.pn
        self.pn += n
        sealed = body_views[first : first + n]
        clear = clear_views[first : first + n]
        gcm = self.batch(pn >> EPOCH_BITS)
        if gcm is not None:
            at = memoryview(out)[first * stride :] if first else out
            hs = heads if type(heads) is list else list(heads)
            bs = bodies if type(bodies) is list else list(bodies)
            for k in gcm.seal_batch(at, stride, hs, bs, pn, EPOCH_BITS):
                sealed[k] = sealed[k][: len(bodies[k]) + TAG_SIZE]  # a short last ADU
            return clear, sealed
        encrypt = self.aead(pn >> EPOCH_BITS).encrypt_into
        iv = self._iv
        full = stride - h - PN_SIZE
        for k in range(n):
            c = clear[k]
            c[:h] = heads[k]
            c[h:] = pn.to_bytes(PN_SIZE, "big")
            body = bodies[k]
            ct = sealed[k]
            if len(body) + TAG_SIZE != full:  # a short last ADU
                ct = sealed[k] = ct[: len(body) + TAG_SIZE]
            encrypt((iv ^ pn).to_bytes(12, "big"), body, c, ct)
            pn += 1
        return clear, sealed

    def _views(self, out: bytearray, stride: int, h: int) -> tuple[list[memoryview], list[memoryview]]:
        """The clear and sealed views of every slot of ``out``, made once per buffer."""
        key = (id(out), stride, h)
        got = self._slots.get(key)
        if got is None:
            view = memoryview(out)
            edges = range(0, len(out) - stride + 1, stride)
            got = (
                [view[a : a + h + PN_SIZE] for a in edges],
                [view[a + h + PN_SIZE : a + stride] for a in edges],
            )
            self._slots = {key: got}
        return got


class Opener(_Direction):
    """Opens what the peer sent in one direction. With ``replay``, a packet number is taken
    once (within REPLAY_WINDOW below the highest; older ones are refused)."""

    def __init__(self, secret: bytes, th: bytes, label: str, replay: bool) -> None:
        super().__init__(secret, th, label)
        self._replay = replay
        self._views: dict[tuple[int, int, int, int], tuple[list[memoryview], ...]] = {}
        self.highest = -1
        self._seen = 0  # bit k: highest - k was taken

    def start_at(self, pn: int) -> None:
        """Take only numbers from ``pn`` on (§17 rule 8: a member that joins a group late opens
        its directions from where they are; every number below counts as taken)."""
        if pn > 0 and pn - 1 > self.highest:
            self.highest = pn - 1
            self._seen = _WINDOW_MASK

    def _fresh(self, pn: int) -> bool:
        if not self._replay or pn > self.highest:
            return True
        back = self.highest - pn
        return back < REPLAY_WINDOW and not self._seen >> back & 1

    def _take(self, pn: int) -> None:
        if pn > self.highest:
            shift = pn - self.highest
            if not self._replay or shift >= REPLAY_WINDOW:
                self._seen = 1
            else:
                self._seen = ((self._seen << shift) | 1) & _WINDOW_MASK
            self.highest = pn
        elif self._replay:
            self._seen |= 1 << (self.highest - pn)

    def _epoch_ok(self, pn: int) -> bool:
        """Only this epoch, the one before and the one after: a forged number far off costs no
        key derivation."""
        top = max(self.highest, 0) >> EPOCH_BITS
        return top - 1 <= pn >> EPOCH_BITS <= top + 1

    def open(self, buf: bytes | bytearray | memoryview, head: int) -> bytes | None:
        """The plain datagram (clear head, then the opened body), or None."""
        n = len(buf)
        if n < head + OVERHEAD:
            return None
        pn = int.from_bytes(buf[head : head + PN_SIZE], "big")
        if not self._fresh(pn) or not self._epoch_ok(pn):
            return None
        aad = bytes(buf[: head + PN_SIZE])
        try:
            body = self.aead(pn >> EPOCH_BITS).decrypt(self.nonce(pn), bytes(buf[head + PN_SIZE :]), aad)
        except Exception:  # InvalidTag: forged, damaged, or under another key
            return None
        self._take(pn)
        return aad[:head] + body

    def open_in_place(self, buf: memoryview, head: int) -> bool:
        """Opens ``buf`` where it lies: afterwards ``buf[PN_SIZE : len(buf) - TAG_SIZE]`` is the
        plain datagram (its head moved up over the packet number). False: it failed, and
        ``buf`` may hold anything."""
        n = len(buf)
        if n < head + OVERHEAD:
            return False
        pn = int.from_bytes(buf[head : head + PN_SIZE], "big")
        if not self._epoch_ok(pn) or not self._fresh(pn):
            return False
        start = head + PN_SIZE
        try:
            self.aead(pn >> EPOCH_BITS).decrypt_into(
                self.nonce(pn), buf[start:], buf[:start], buf[start : n - TAG_SIZE]
            )
        except Exception:  # InvalidTag
            return False
        self._take(pn)
        buf[PN_SIZE:start] = bytes(buf[:head])
        return True

    def open_segments(self, buf: memoryview, segment: int, head: int, slot: int | None = None) -> list[int]:
        """Opens in place every datagram of a GRO buffer (``segment`` bytes each, the last
        perhaps shorter), leaving each one's head where it is: its plain body then lies
        between its number and its tag. Returns the offsets of those that failed. ``slot``
        names the driver's reusable buffer ``buf`` lies at the start of: the views into it
        are then made once."""
        assert not self._replay
        n = len(buf)
        top = max(self.highest, 0) >> EPOCH_BITS
        gcm = self.batch(top)
        if gcm is not None:
            bad, other, highest = gcm.open_segments(buf, segment, head, EPOCH_BITS, top, _SEALED_KINDS)
            if highest > self.highest:
                self.highest = highest
            if other:  # (numbers of another epoch: the first of the next key, or forged)
                bad = sorted(bad + [k for k in other if not self._open_at(buf, k, min(k + segment, n), head)])
            return bad
        start = head + PN_SIZE
        count = -(-n // segment)
        if n - (count - 1) * segment < start + TAG_SIZE:
            return [k for k in range(0, n, segment) if min(k + segment, n) - k < start + TAG_SIZE] + (
                self.open_segments(buf[: (count - 1) * segment], segment, head) if count > 1 else []
            )
        key = (slot, segment, count, head) if slot is not None and n == count * segment else None
        views = self._views.get(key) if key is not None else None
        if views is None:
            edges = range(0, n, segment)
            views = (
                [buf[k + start : min(k + segment, n)] for k in edges],
                [buf[k : k + start] for k in edges],
                [buf[k + start : min(k + segment, n) - TAG_SIZE] for k in edges],
            )
            if key is not None:
                if len(self._views) > 64:
                    self._views.clear()
                self._views[key] = views
        sealed, clear, plain = views
        numbers = _numbers(segment, count, head).unpack_from(buf, 0)
        failed: list[int] = []
        iv = self._iv
        epoch = -1
        decrypt = None
        for i, pn in enumerate(numbers):
            kind = buf[i * segment + 1]
            if kind != wire.MsgType.DATA and kind != wire.MsgType.PARITY:
                failed.append(i * segment)  # (control: opened under its own key by the caller)
                continue
            if pn >> EPOCH_BITS != epoch or decrypt is None:
                if not self._epoch_ok(pn):
                    failed.append(i * segment)
                    continue
                epoch = pn >> EPOCH_BITS
                decrypt = self.aead(epoch).decrypt_into
            try:
                decrypt((iv ^ pn).to_bytes(12, "big"), sealed[i], clear[i], plain[i])
            except Exception:  # InvalidTag
                failed.append(i * segment)
                continue
            if pn > self.highest:
                self.highest = pn
        return failed

    def _open_at(self, buf: memoryview, k: int, end: int, head: int) -> bool:
        """Opens the datagram at ``buf[k:end]`` in place, its head left where it is (as
        ``open_segments`` does); False if it fails."""
        start = k + head + PN_SIZE
        pn = int.from_bytes(buf[k + head : start], "big")
        if not self._epoch_ok(pn):
            return False
        try:
            self.aead(pn >> EPOCH_BITS).decrypt_into(
                self.nonce(pn), buf[start:end], buf[k:start], buf[start : end - TAG_SIZE]
            )
        except Exception:  # InvalidTag
            return False
        if pn > self.highest:
            self.highest = pn
        return True


_SEALED_KINDS = bytes([wire.MsgType.DATA, wire.MsgType.PARITY])  # what open_segments opens


@functools.lru_cache(maxsize=256)
def _numbers(segment: int, count: int, head: int) -> struct.Struct:
    """Reads the packet numbers of ``count`` sealed datagrams ``segment`` bytes apart."""
    return struct.Struct("!" + f"{head}xQ{segment - head - PN_SIZE}x" * (count - 1) + f"{head}xQ")


class Keys:
    """One side's keys of a session, from the handshake's secret and transcript."""

    def __init__(self, secret: bytes, th: bytes, sender: bool, data_replay: bool = False) -> None:
        self.secret, self.th = secret, th
        if sender:
            self.data: Sealer | None = Sealer(secret, th, S2R_DATA)
            self.data_in: Opener | None = None
            self.out = Sealer(secret, th, S2R_CONTROL)
            self.into = Opener(secret, th, R2S_CONTROL, replay=True)
        else:
            self.data = None
            # a replayed ADU is a duplicate over UDP; over TCP (``data_replay``) a frame is
            # taken once, so a replay cannot make another connection look live
            self.data_in = Opener(secret, th, S2R_DATA, replay=data_replay)
            self.out = Sealer(secret, th, R2S_CONTROL)
            self.into = Opener(secret, th, S2R_CONTROL, replay=True)


def group_keys(secret: bytes, hello_head: bytes, sender: bool) -> Keys:
    """§17 rule 8: a sealed group's keys, from the secret the sender drew for the session (sent
    to each member under that member's own keys) and the session's HELLO: its DATA and
    PARITY, and the PROBEs and ABORTs it sends to the group."""
    th = hashlib.sha256(b"alf1 group" + hello_core(hello_head)).digest()
    return Keys(secret, th, sender)


def new_group_secret() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def proves(keys: Keys, accept_head: bytes, mac: bytes) -> bool:
    """Whether ``mac`` is the finished MAC of another ACCEPT of the session ``keys`` are of
    (a further path's, §14)."""
    return hmac.compare_digest(finished(keys.secret, keys.th, accept_head), mac)


class Initiator:
    """The sender's half of the handshake: its share, the binder of each HELLO it sends, and
    the keys once an ACCEPT's finished MAC checks."""

    def __init__(self, psk: bytes) -> None:
        self.psk = psk
        self._private, self.share = new_share()
        self._binder_key = expand_label(early_secret(psk), "binder", b"", 32)
        self.keys: Keys | None = None  # once an ACCEPT proved itself (``accepts``)
        self._server_share = b""

    def bind(self, hello: bytes) -> bytes:
        """``hello`` (encoded with a zero binder) with its binder in place."""
        mac = hmac.new(self._binder_key, hello[:HELLO_BINDER_AT], hashlib.sha256).digest()
        return hello[:HELLO_BINDER_AT] + mac + hello[HELLO_SEALED_END:]

    def accepts(self, hello: bytes, msg: wire.Accept) -> Keys | None:
        """The session's keys if the ACCEPT ``msg`` (to ``hello``, any copy of the session's)
        proves itself: the first one gives the keys; every later one (another path's, another
        connection's) must carry the same share and a finished MAC that checks. None if not."""
        if not msg.share:
            return None
        head = wire.encode_accept(dataclasses.replace(msg, mac=b""))[: -wire.MAC_SIZE]
        if self.keys is None:
            self.keys = self.complete(hello, head, msg.share, msg.mac)
            self._server_share = msg.share
            return self.keys
        return self.keys if msg.share == self._server_share and proves(self.keys, head, msg.mac) else None

    def complete(self, hello: bytes, accept_head: bytes, server_share: bytes, mac: bytes) -> Keys | None:
        """The session's keys if the ACCEPT (``accept_head``: its bytes before the MAC) proves
        the receiver holds the PSK and answers this HELLO; None if not."""
        shared = exchange(self._private, server_share)
        if shared is None:
            return None
        secret = session_secret(self.psk, shared)
        th = transcript(hello, server_share)
        if not hmac.compare_digest(finished(secret, th, accept_head), mac):
            return None
        return Keys(secret, th, sender=True)


class Responder:
    """The receiver's half: it checks a HELLO's binder, and makes its share and keys once per
    session (every ACCEPT of the session, on every path, carries the same share)."""

    def __init__(self, psk: bytes) -> None:
        self.psk = psk
        self._binder_key = expand_label(early_secret(psk), "binder", b"", 32)
        self.share = b""
        self.keys: Keys | None = None

    def binds(self, hello: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the binder of ``hello`` (its first 168 bytes) under our PSK."""
        want = hmac.new(self._binder_key, hello[:HELLO_BINDER_AT], hashlib.sha256).digest()
        return hmac.compare_digest(want, mac)

    def respond(self, hello: bytes, client_share: bytes, data_replay: bool = False) -> Keys | None:
        """Our share and keys for the session ``hello`` opens (None: its share is unusable)."""
        private, share = new_share()
        shared = exchange(private, client_share)
        if shared is None:
            return None
        secret = session_secret(self.psk, shared)
        self.share = share
        self.keys = Keys(secret, transcript(hello, share), sender=False, data_replay=data_replay)
        return self.keys

    def finished(self, accept_head: bytes) -> bytes:
        assert self.keys is not None
        return finished(self.keys.secret, self.keys.th, accept_head)

    def binds_hello(self, msg: wire.Hello) -> bool:
        """Whether the HELLO ``msg`` offers a key and its binder checks under ours."""
        return bool(msg.features & wire.FEATURE_KEY) and self.binds(wire.encode_hello(msg), msg.binder)

    def accept(self, msg: wire.Accept) -> bytes:
        """The keyed ACCEPT (§17): ``msg`` with our share, and the transcript's finished MAC."""
        head = wire.encode_accept(dataclasses.replace(msg, share=self.share))[: -wire.MAC_SIZE]
        return head + self.finished(head)
