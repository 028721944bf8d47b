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

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
import operator
import os
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


def _load() -> ctypes.CDLL | None:
    names = []
    found = ctypes.util.find_library("isal")
    if found:
        names.append(found)
    spec = importlib.util.find_spec("pyeclib")
    if spec is not None and spec.origin is not None:
        site = os.path.dirname(os.path.dirname(spec.origin))
        names += sorted(glob.glob(os.path.join(site, "pyeclib.libs", "libisal*.so*")))
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            for fn in ("ec_init_tables", "ec_encode_data", "gf_gen_cauchy1_matrix", "gf_invert_matrix"):
                getattr(lib, fn)
        except (OSError, AttributeError):
            continue
        return lib
    return None


_u8p = ctypes.POINTER(ctypes.c_ubyte)


class IsalCodec:
    """The Cauchy code of ISA-L (``gf_gen_cauchy1_matrix``: any k rows are independent)."""

    name = "isa-l cauchy"

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.gf_invert_matrix.restype = ctypes.c_int

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one codec per process; the matrices are small)
    def _matrix(self, k: int) -> bytes:
        """The (SYMBOLS x k) generator: identity on top, Cauchy rows below."""
        a = (ctypes.c_ubyte * (SYMBOLS * k))()
        self._lib.gf_gen_cauchy1_matrix(a, SYMBOLS, k)
        return bytes(a)

    def _coeffs(self, k: int, rows: Sequence[int]) -> bytearray:
        m = self._matrix(k)
        out = bytearray()
        for r in rows:
            if not 0 <= r < SYMBOLS - k:
                raise ValueError(f"parity row {r} of a block of {k}")
            out += m[(k + r) * k : (k + r + 1) * k]
        return out

    def _apply(
        self, coeffs: bytearray, nin: int, nout: int, size: int, ins: list[int], outs: list[int]
    ) -> None:
        """outs[i] = sum_j coeffs[i*nin + j] * ins[j] over GF(2^8), ``size`` bytes each (addresses)."""
        lib = self._lib
        tables = (ctypes.c_ubyte * (32 * nin * nout))()
        lib.ec_init_tables(nin, nout, (ctypes.c_ubyte * len(coeffs)).from_buffer(coeffs), tables)
        srcs, dsts = (ctypes.c_void_p * nin)(*ins), (ctypes.c_void_p * nout)(*outs)
        lib.ec_encode_data(size, nin, nout, tables, srcs, dsts)

    def encode(self, block: Buffer, k: int, size: int, rows: Sequence[int]) -> bytearray:
        if len(block) != k * size:
            raise ValueError("a block is k symbols of the ADU size")
        out = bytearray(len(rows) * size)
        if not rows:
            return out
        src = block if isinstance(block, bytearray) else bytearray(block)
        base = _address(src)
        dst = _address(out)
        self._apply(
            self._coeffs(k, rows),
            k,
            len(rows),
            size,
            [base + j * size for j in range(k)],
            [dst + i * size for i in range(len(rows))],
        )
        return out

    def decode(
        self,
        block: bytearray,
        k: int,
        size: int,
        missing: Sequence[int],
        rows: Sequence[int],
        parity: Sequence[Buffer],
    ) -> None:
        e = len(missing)
        if e != len(rows) or e != len(parity) or len(block) != k * size:
            raise ValueError("as many parity symbols as missing ones, and a whole block")
        if not e:
            return
        lost = sorted(missing)
        gone = set(lost)
        held = [j for j in range(k) if j not in gone]
        gen = self._coeffs(k, rows)  # e rows of k
        # The syndrome s_i = p_i + sum over held j of C[i][j] d_j = sum over lost j of C[i][j] d_j:
        # one pass over the k - e held symbols and the e parity ones.
        pick_held = operator.itemgetter(*held) if held else None
        coeffs = bytearray()
        unit = bytearray(e)
        for i in range(e):
            row = gen[i * k : (i + 1) * k]
            if pick_held is not None:
                got = pick_held(row)
                coeffs += bytes(got) if isinstance(got, tuple) else bytes((got,))
            unit[i] = 1
            coeffs += unit
            unit[i] = 0
        pbuf = bytearray(b"".join(parity))
        if len(pbuf) != e * size:
            raise ValueError("parity symbols of the ADU size")
        base, pb = _address(block), _address(pbuf)
        syn = bytearray(e * size)
        sb = _address(syn)
        self._apply(
            coeffs,
            k,
            e,
            size,
            [base + j * size for j in held] + [pb + i * size for i in range(e)],
            [sb + i * size for i in range(e)],
        )
        # Then the lost symbols are B^-1 s, with B the e x e columns of the lost ones.
        pick_lost = operator.itemgetter(*lost)
        cols = [pick_lost(gen[i * k : (i + 1) * k]) for i in range(e)]
        sub = (ctypes.c_ubyte * (e * e))(*(c for row_ in cols for c in (row_ if e > 1 else (row_,))))
        inv = (ctypes.c_ubyte * (e * e))()
        if self._lib.gf_invert_matrix(sub, inv, e) != 0:
            raise ValueError("singular decoding matrix")  # cannot happen for a Cauchy code
        self._apply(
            bytearray(inv),
            e,
            e,
            size,
            [sb + i * size for i in range(e)],
            [base + j * size for j in lost],
        )


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


@functools.cache
def codec() -> Codec | None:
    """The codec of this process, or None where no library provides one."""
    lib = _load()
    return None if lib is None else IsalCodec(lib)
