"""The erasure code's cost on this machine (issue 18 point 5, docs/performance.md): CPU time
to make parity symbols and to decode lost ADUs from them, per GB of repair, for blocks of
alf's size; and, with ``--peers``, the same work done by the other codecs on PyPI that
docs/design.md "Erasure coding" weighed (zfec, raptorq), where they are installed.

    python -P tools/fec_bench.py
    python -P tools/fec_bench.py --peers --json docs/bench-fec.json

One row per (codec, block size k, symbols per block e): encode is the time to make e parity
symbols of a block of k ADUs (alf makes them when a NAK asks, from the block read back);
decode is the time to restore e lost ADUs of a block from e parity symbols (the receiver's
work). "CPU s/GB" is process CPU time per GB of parity made (or of ADUs restored). A 1 Gbit/s
group whose worst receiver loses 10% needs about 14 MB/s of repair: 0.014 GB each second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from alf import fec, wire  # noqa: E402

SIZE = wire.DEFAULT_ADU_SIZE


def _timed(fn: object, budget: float = 0.5) -> float:
    """CPU seconds per call of ``fn``, over at least ``budget`` seconds."""
    assert callable(fn)
    fn()  # warm (tables, caches)
    n, t0 = 0, time.process_time()
    while True:
        fn()
        n += 1
        spent = time.process_time() - t0
        if spent >= budget:
            return spent / n


def _alf_rows(k: int, e: int, rng: random.Random) -> dict[str, float]:
    codec = fec.codec()
    assert codec is not None
    block = bytearray(rng.randbytes(k * SIZE))
    rows = list(range(e))
    parity = codec.encode(block, k, SIZE, rows)
    lost = sorted(rng.sample(range(k), e))
    symbols = [parity[i * SIZE : (i + 1) * SIZE] for i in range(e)]

    def decode() -> None:
        damaged = bytearray(block)
        codec.decode(damaged, k, SIZE, lost, rows, symbols)

    enc = _timed(lambda: codec.encode(block, k, SIZE, rows))
    dec = _timed(decode)
    check = bytearray(block)
    for j in lost:
        check[j * SIZE : (j + 1) * SIZE] = bytes(SIZE)
    codec.decode(check, k, SIZE, lost, rows, symbols)
    assert check == block
    return {"encode_ms": enc * 1e3, "decode_ms": dec * 1e3}


def _zfec_rows(k: int, e: int, rng: random.Random) -> dict[str, float] | None:
    try:
        import zfec  # type: ignore[import-not-found]
    except ImportError:
        return None
    if k + e > 256:
        return None
    data = [rng.randbytes(SIZE) for _ in range(k)]
    enc_ = zfec.Encoder(k, k + e)
    dec_ = zfec.Decoder(k, k + e)
    parity = enc_.encode(tuple(data), tuple(range(k, k + e)))
    lost = set(rng.sample(range(k), e))
    keep = [j for j in range(k) if j not in lost]

    def decode() -> None:  # fresh tuples each call: zfec reorders what it is given in place
        dec_.decode(tuple([data[j] for j in keep] + list(parity)), tuple(keep + list(range(k, k + e))))

    return {
        "encode_ms": _timed(lambda: enc_.encode(tuple(data), tuple(range(k, k + e)))) * 1e3,
        "decode_ms": _timed(decode) * 1e3,
    }


def _raptorq_rows(k: int, e: int, rng: random.Random) -> dict[str, float] | None:
    try:
        import raptorq  # type: ignore[import-not-found]
    except ImportError:
        return None
    data = rng.randbytes(k * SIZE)
    mtu = SIZE + 4  # its symbol is the packet less a 4-byte id (and a multiple of 8: 1424 here)
    packets = raptorq.Encoder.with_defaults(data, mtu).get_encoded_packets(e)
    source = len(packets) - e
    lost = set(rng.sample(range(source), e))
    use = [p for i, p in enumerate(packets) if i not in lost]

    def decode() -> None:
        d = raptorq.Decoder.with_defaults(len(data), mtu)
        for p in use:
            if d.decode(p) is not None:
                return
        raise AssertionError("raptorq did not decode")

    return {
        "encode_ms": _timed(lambda: raptorq.Encoder.with_defaults(data, mtu).get_encoded_packets(e)) * 1e3,
        "decode_ms": _timed(decode) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", action="store_true", help="also zfec and raptorq, if installed")
    ap.add_argument("--json", default=None, help="append the rows to this file (JSON lines)")
    a = ap.parse_args()
    if fec.codec() is None:
        sys.exit("no ISA-L library: install pyeclib (its wheel bundles it) or Debian's libisal2")
    rng = random.Random(1)
    rows = []
    codecs = [("alf (isa-l cauchy)", _alf_rows)]
    if a.peers:
        codecs += [("zfec", _zfec_rows), ("raptorq", _raptorq_rows)]
    for name, fn in codecs:
        for k in (128, 256):
            for e in (1, 4, 13, 32):
                if name.startswith("alf") and k + e > fec.SYMBOLS:
                    continue
                got = fn(k, e, rng)  # type: ignore[operator]
                if got is None:
                    continue
                gb = e * SIZE / 1e9
                row = {
                    "codec": name,
                    "k": k,
                    "e": e,
                    "encode_ms": round(got["encode_ms"], 3),
                    "decode_ms": round(got["decode_ms"], 3),
                    "encode_cpu_s_per_GB": round(got["encode_ms"] / 1e3 / gb, 2),
                    "decode_cpu_s_per_GB": round(got["decode_ms"] / 1e3 / gb, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
