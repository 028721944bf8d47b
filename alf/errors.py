"""Outcomes of a transfer and the process exit codes they map to (docs/usage.md).

Invariant: exit code 0 means the whole content arrived and its digest was verified end to end;
every failure has exactly one of the non-zero codes below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in alf: please report it
    USAGE = 2  # wrong options or arguments
    PEER_UNREACHABLE = 3  # no peer answered, or it went silent for --timeout
    PEER_ABORTED = 4  # the peer refused or ended the transfer (checkphrase, busy, its own error)
    VERIFY_FAILED = 5  # the content arrived but its length or digest does not match
    LOCAL_IO = 6  # this side cannot read its input or write its output
    INPUT_CHANGED = 7  # the sender's input file changed while it was sent: nothing is delivered
    NOT_RESUMABLE = 8  # --resume strict: what the receiver holds is not of the content sent
    CANCELLED = 130  # stopped by the user (SIGINT/SIGTERM)


@dataclass(frozen=True)
class Outcome:
    code: ExitCode
    message: str

    @property
    def ok(self) -> bool:
        return self.code == ExitCode.OK


def aborted_by(peer: str, code: str, reason: str) -> Outcome:
    """The outcome when the peer (``"sender"`` or ``"receiver"``) sent ABORT ``code``."""
    return Outcome(ExitCode.PEER_ABORTED, f"the {peer} aborted ({code}): {reason}")
