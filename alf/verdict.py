"""The verdict rules, one for every transport (docs/protocol.md §8): what the receiver judges
from what it wrote, when a FINAL contradicts the transfer, and what a DONE means to the
sender. The UDP and TCP cores both call these; neither has a rule of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from alf import wire
from alf.errors import ExitCode, Outcome
from alf.ranges import ceil_div


def judge(
    nbytes: int, digest: bytes, total: int | None, expected: bytes | None
) -> tuple[wire.Verdict, Outcome]:
    """The verdict on what was written (``nbytes``, ``digest``) against the sender's FINAL."""
    if nbytes != total:
        return wire.Verdict.LENGTH_MISMATCH, Outcome(
            ExitCode.VERIFY_FAILED, f"wrote {nbytes} bytes, the sender sent {total}"
        )
    if digest != expected:
        return wire.Verdict.DIGEST_MISMATCH, Outcome(
            ExitCode.VERIFY_FAILED, "the digest of the output does not match the sender's"
        )
    return wire.Verdict.OK, Outcome(ExitCode.OK, f"received and verified {nbytes} bytes")


FINAL_CONTRADICTS = "FINAL contradicts the data or the length announced"
INCONSISTENT_FINAL = Outcome(ExitCode.PEER_ABORTED, "the sender broke the protocol: inconsistent FINAL")


def final_contradicts(
    msg: wire.Probe, adu: int, total: int | None, highest: int, digest: bytes | None
) -> bool:
    """§8: a FINAL that disagrees with the length announced, the data held (``highest``), its
    own end, or an earlier FINAL's digest."""
    end = ceil_div(msg.total_bytes, adu)
    return (
        (total is not None and msg.total_bytes != total)
        or highest > end
        or msg.next_index != end
        or (digest is not None and msg.digest != digest)
    )


def verdict_outcome(msg: wire.Done) -> Outcome:
    """What the receiver's DONE means for the sender."""
    if msg.verdict == wire.Verdict.OK:
        return Outcome(ExitCode.OK, "the receiver verified the content")
    return Outcome(
        ExitCode.VERIFY_FAILED, f"the receiver reports {msg.verdict.name}: it got {msg.received_bytes} bytes"
    )


def unsupported_reason(offer: wire.Unsupported) -> str:
    """The ABORT UNSUPPORTED reason for an offer (§4.4), the same over UDP and TCP."""
    return f"this receiver does not support {offer.what}"


def key_mismatch(ours: bool, theirs: bool, binds: Callable[[], bool]) -> str | None:
    """§17 rule 4: why a HELLO's key does not match the receiver's (``ours``: it has a key;
    ``theirs``: the HELLO offers one; ``binds``: its binder checks), or None if it does."""
    if not ours:
        return "the sender uses a key (--key) and this receiver has none" if theirs else None
    if not theirs:
        return "this receiver requires a key (--key) and the sender has none"
    return None if binds() else "the sender's key is not this receiver's key"
