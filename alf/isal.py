"""ISA-L's Reed-Solomon through ctypes: the codec behind alf.fec's ``Codec`` protocol."""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import operator
import os
from collections.abc import Sequence

from alf.fec import SYMBOLS, Buffer


def load() -> ctypes.CDLL | None:
    """ISA-L: the copy in pyeclib's wheel, else the system's (no ldconfig search: it spawns
    processes, 30 ms of every start)."""
    names: list[str] = []
    spec = importlib.util.find_spec("pyeclib")
    if spec is not None and spec.origin is not None:
        site = os.path.dirname(os.path.dirname(spec.origin))
        names += sorted(glob.glob(os.path.join(site, "pyeclib.libs", "libisal*.so*")))
    names.append("libisal.so.2")
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
