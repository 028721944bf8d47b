"""End-to-end content digests (docs/protocol.md §4.1): the algorithms the HELLO can name.

XXH3-128 is the default: 28 GB/s on one core here, against 2.9 GB/s for BLAKE3 and 1.4 GB/s
for SHA-256 with SHA-NI (docs/performance.md), so verification costs almost nothing on a
two-core machine that also runs the transfer. It guards against accidental corruption, which
is its job here: alf does not authenticate its peer, so a cryptographic digest would add no
security (whoever can alter DATA can alter the FINAL digest too). BLAKE3 and SHA-256 remain
for those who want one. Every digest is 32 bytes on the wire: XXH3-128's 16 are followed by
16 zero bytes.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import blake3
import xxhash

from alf.wire import DigestAlg

NAMES = {DigestAlg.XXH3_128: "xxh3-128", DigestAlg.BLAKE3: "blake3", DigestAlg.SHA256: "sha-256"}


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...


class _Xxh3:
    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()
        # The C method itself, not a Python wrapper: the receiver hashes once per ADU, and a
        # wrapper call cost 0.17 s per GiB there (cProfile, 752k calls).
        self.update = self._h.update

    def digest(self) -> bytes:
        return self._h.digest() + bytes(16)


def new_hasher(alg: DigestAlg) -> Hasher:
    if alg == DigestAlg.XXH3_128:
        return _Xxh3()
    if alg == DigestAlg.BLAKE3:
        return blake3.blake3()
    return hashlib.sha256()


def digest_bytes(alg: DigestAlg, data: bytes | bytearray | memoryview) -> bytes:
    h = new_hasher(alg)
    h.update(data)
    return h.digest()
