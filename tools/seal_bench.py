#!/usr/bin/env python3
"""What sealing (protocol §17) costs per datagram on this machine, in thread CPU time.

Rows: one bare AES-256-GCM call on 16 bytes (the call's own cost) and on one ADU; alf's
sealing of a GSO batch (alf.seal.Sealer.seal_into) and its opening of a GRO buffer
(Opener.open_segments), per datagram; and the rejected design, one AES-GCM call over a whole
batch of ADUs, per datagram. Medians of --repeats; the figures go in docs/performance.md.

    python tools/seal_bench.py [--adu 1404] [--batch 44] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from alf import seal, wire  # noqa: E402


def per_call(f: Callable[[], object], calls: int, repeats: int) -> tuple[float, float, float]:
    """(median, min, max) microseconds of thread CPU per call of ``f``."""
    out = []
    for _ in range(repeats):
        t = time.thread_time()
        for _ in range(calls):
            f()
        out.append((time.thread_time() - t) / calls * 1e6)
    return statistics.median(out), min(out), max(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adu", type=int, default=wire.DEFAULT_ADU_SIZE - wire.SEAL_OVERHEAD)
    ap.add_argument("--batch", type=int, default=44)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    adu, batch = args.adu, args.batch
    aead = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), os.urandom(32)
    one = os.urandom(adu)
    out = memoryview(bytearray(adu + 16))
    rows: list[tuple[str, tuple[float, float, float]]] = []
    rows.append(
        ("AES-256-GCM call, 16 B", per_call(lambda: aead.encrypt(nonce, one[:16], aad), 20000, args.repeats))
    )
    rows.append(
        (
            "AES-256-GCM encrypt_into, one ADU",
            per_call(lambda: aead.encrypt_into(nonce, one, aad, out), 20000, args.repeats),
        )
    )
    ct = aead.encrypt(nonce, one, aad)
    plain = memoryview(bytearray(adu))
    rows.append(
        (
            "AES-256-GCM decrypt_into, one ADU",
            per_call(lambda: aead.decrypt_into(nonce, ct, aad, plain), 20000, args.repeats),
        )
    )

    secret, th = os.urandom(32), os.urandom(32)
    s, r = seal.Keys(secret, th, sender=True), seal.Keys(secret, th, sender=False)
    assert s.data is not None and r.data_in is not None
    heads = [wire.pack_data_header(1, i, None) for i in range(batch)]
    payload = memoryview(os.urandom(adu * batch))
    bodies = [payload[i * adu : (i + 1) * adu] for i in range(batch)]
    stride = wire.DATA_HEADER_SIZE + wire.SEAL_OVERHEAD + adu
    sealed = bytearray(batch * stride)
    sealer = s.data
    med = per_call(lambda: sealer.seal_into(sealed, stride, heads, bodies), 400, args.repeats)
    rows.append((f"alf seal_into, per datagram of {batch}", tuple(x / batch for x in med)))  # type: ignore[arg-type]
    s.data.pn = 0
    s.data.seal_into(sealed, stride, heads, bodies)
    blob = bytes(sealed)
    buf = bytearray(blob)
    view = memoryview(buf)
    opener = r.data_in

    def open_once() -> None:
        view[:] = blob  # (a copy of the buffer, as a fresh receive; 0.2 us a datagram)
        if opener.open_segments(view, stride, wire.DATA_HEADER_SIZE, 0):
            raise AssertionError("a datagram failed to open")

    med = per_call(open_once, 400, args.repeats)
    rows.append(
        (f"alf open_segments, per datagram of {batch} (with a copy in)", tuple(x / batch for x in med))
    )  # type: ignore[arg-type]
    whole = bytes(payload)
    med = per_call(lambda: aead.encrypt(nonce, whole, aad), 2000, args.repeats)
    rows.append((f"one AES-256-GCM call per batch of {batch}, per datagram", tuple(x / batch for x in med)))  # type: ignore[arg-type]
    print(f"ADU {adu} bytes, batches of {batch}; us of thread CPU: median (min-max) of {args.repeats}")
    for name, (m, lo, hi) in rows:
        print(f"  {name:58s} {m:6.2f} ({lo:.2f}-{hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
