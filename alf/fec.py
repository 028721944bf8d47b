"""Erasure coding of blocks of ADUs (docs/protocol.md §16): a systematic Reed-Solomon code.

A file's ADUs fall into blocks of ``BLOCK`` (the last block may be shorter, and its last ADU
short: it is coded as if padded with zeros to the ADU size). The data ADUs travel as DATA; a
PARITY datagram carries row ``r`` of block ``b``: symbol ``k + r`` of a Cauchy code over
GF(2^8), where any ``k`` of the ``k + rows`` symbols give back the block (the code is MDS).
So one parity ADU repairs a different hole at every receiver that lacks one ADU of the block.

The arithmetic runs in ISA-L (Intel's storage acceleration library: SIMD, 190 MB/s of parity
from blocks of 128 ADUs on this machine, docs/design.md "Erasure coding" has the figures and
the choice), loaded by ctypes from the system's libisal or from the copy that pyeclib's wheel
bundles. Without either, ``codec()`` is None and transfers repair by retransmission only.

Invariant: ``decode`` restores exactly the ADUs that ``encode``'s rows were made from, for any
set of missing ADUs no larger than the parity rows given (tests/test_fec.py tries them all for
small blocks and random patterns for large ones).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

Buffer = bytes | bytearray | memoryview

FEC_CHOICES = ("auto", "off")  # --fec: parity where it pays (a group's file), or resends only
BLOCK = 128  # ADUs per block (§16): k, chosen by measurement (docs/design.md "Erasure coding")
SYMBOLS = 256  # k + rows <= this in GF(2^8)


def block_of(index: int) -> int:
    return index // BLOCK


def block_span(block: int, end_adus: int) -> tuple[int, int]:
    """The first ADU of ``block`` and how many it has (the last block may be shorter)."""
    first = block * BLOCK
    return first, max(0, min(BLOCK, end_adus - first))


def max_rows(k: int) -> int:
    """The parity rows a block of ``k`` ADUs has."""
    return SYMBOLS - k


class Codec(Protocol):
    name: str

    def encode(self, block: Buffer, k: int, size: int, rows: Sequence[int]) -> bytearray:
        """Parity ``rows`` of the ``k`` symbols of ``size`` bytes laid end to end in ``block``
        (exactly k*size bytes), end to end in the result."""
        ...

    def decode(
        self,
        block: bytearray,
        k: int,
        size: int,
        missing: Sequence[int],
        rows: Sequence[int],
        parity: Sequence[Buffer],
    ) -> None:
        """Fill the ``missing`` symbols of ``block`` (k*size bytes; the others hold the data)
        from ``parity[i]``, the symbol of row ``rows[i]``; as many rows as missing symbols."""
        ...


@functools.cache
def codec() -> Codec | None:
    """The codec of this process, or None where no library provides one (loaded on first use:
    the ctypes import and the library cost start-up only where parity is wanted)."""
    from alf import isal

    lib = isal.load()
    return None if lib is None else isal.IsalCodec(lib)
