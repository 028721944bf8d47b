"""Which path carries the next run: the striping policies of ``--stripe`` (no I/O).

The UDP sender core and the TCP driver both ask this module; neither has a rule of its own.
A policy sees each path as a ``PathView`` (what the caller knows about it now) and returns the
paths that may carry new data, best first; the caller gives the run to the first of them that
can take it now (a pacer with tokens, a connection with room). So a path the policy puts first
but that cannot take more spills onto the next: that is how ``prefer`` fills the first path
and gives the second only what the first cannot carry.

- ``prefer`` (the default, viamillipede's rule): the order the paths were given in.
- ``weighted``: the path that has used the least of its own rate first: each path's
  ``used`` is the seconds its rate would take to carry what it carried (``Shares`` keeps the
  count), so every path carries data in proportion to its rate, also when the sender has less
  to send than the paths could carry (pacer buckets are then all full and tell nothing).
- ``minrtt``: the earliest expected arrival first: the wait for the path's pacer plus half its
  smoothed round trip (a path not measured yet counts as the slowest measured one).

A path marked backup carries data only while no other path is usable. Repairs go to the
healthiest usable path (``repair_order``: least loss, then earliest arrival), not back to the
path that lost them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar

POLICIES = ("prefer", "weighted", "minrtt")


class PathView(NamedTuple):
    """One path as a policy sees it (a named tuple: the sender makes one per path per run)."""

    id: int  # its place in the order given (0 = the first)
    usable: bool = True  # validated, and not down
    backup: bool = False
    ready_in: float = 0.0  # seconds until it may send one more run (0: now)
    used: float = 0.0  # weighted: seconds of its rate it has carried, against the others (Shares)
    srtt: float | None = None  # seconds; None: not measured yet
    loss: float = 0.0  # the share of what it carried that was NAKed, over the transfer so far


class _Path(Protocol):
    @property
    def usable(self) -> bool: ...

    @property
    def backup(self) -> bool: ...


P = TypeVar("P", bound=_Path)


def eligible(paths: Sequence[P]) -> list[P]:
    """The usable paths that are not backups, or, while there is none, the usable backups
    (a ``PathView``, or anything that says whether it is usable and a backup: the UDP sender
    asks it of its own paths too)."""
    usable = [p for p in paths if p.usable]
    main = [p for p in usable if not p.backup]
    return main or usable


def _arrival(p: PathView, slowest: float) -> float:
    return p.ready_in + (slowest if p.srtt is None else p.srtt) / 2


def order(policy: str, paths: Sequence[PathView]) -> list[int]:
    """The ids of the paths that may carry new data, best first."""
    cands = eligible(paths)
    if policy == "prefer":
        ranked = sorted(cands, key=lambda p: p.id)
    elif policy == "weighted":
        ranked = sorted(cands, key=lambda p: (p.used, p.id))
    elif policy == "minrtt":
        slowest = max((p.srtt for p in cands if p.srtt is not None), default=0.0)
        ranked = sorted(cands, key=lambda p: (_arrival(p, slowest), p.srtt is None, p.id))
    else:
        raise ValueError(f"unknown striping policy {policy!r} (known: {', '.join(POLICIES)})")
    return [p.id for p in ranked]


LOSS_STEP = 0.005  # losses this close count as equal: then the earlier arrival decides


def repair_order(paths: Sequence[PathView]) -> list[int]:
    """The ids of the paths that may carry repairs, healthiest first: least loss (in steps of
    half a percent, so noise does not flip the choice), then earliest expected arrival."""
    cands = eligible(paths)
    slowest = max((p.srtt for p in cands if p.srtt is not None), default=0.0)
    ranked = sorted(
        cands, key=lambda p: (round(p.loss / LOSS_STEP), _arrival(p, slowest), p.srtt is None, p.id)
    )
    return [p.id for p in ranked]


def pick(policy: str, paths: Sequence[PathView], home: int | None = None) -> int | None:
    """One path for a connection (TCP): ``home`` while it is eligible, else the best other."""
    ids = order(policy, paths)
    if home is not None and home in ids:
        return home
    return ids[0] if ids else None


class Shares:
    """``weighted``'s count: for each path, the seconds its rate takes to carry what it was
    given (a virtual clock, as in fair queueing). A path that falls behind the others (it was
    down, or just came back) is brought level with the least used usable one, so it gets its
    share from now on, not a burst for the time it missed."""

    def __init__(self, n: int) -> None:
        self.used = [0.0] * n

    def charge(self, path: int, nbytes: int, rate_bps: float) -> None:
        self.used[path] += nbytes * 8 / max(rate_bps, 1.0)

    def level(self, usable: Sequence[int]) -> None:
        """Count from the least used of the ``usable`` paths (it becomes 0, the numbers stay
        small); a path not among them starts level with it. Called as a path joins or comes
        back, before it is counted usable."""
        if not usable:
            return
        floor = min(self.used[p] for p in usable)
        for p in range(len(self.used)):
            self.used[p] = self.used[p] - floor if p in usable else 0.0
