"""The controller interface and the name registry.

Invariants: ``rate_bps`` is always within [floor_bps, ceiling_bps]; controllers are pure
functions of their inputs (same feedback, same rates).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feedback:
    """What the sender knows when a receiver STATUS arrives."""

    now: float
    rtt: float | None  # this STATUS's RTT sample, seconds (None: no sample)
    receive_rate_bps: float  # what the receiver measured, in datagram bits per second
    sent: int  # ADUs the sender has sent so far (new and repairs), cumulative
    nakked: int  # ADUs the receiver has asked to repair so far, cumulative
    # The sender had nothing to send at some moment since the last feedback while its pacer
    # would have let it (a stream slower than the rate, or a closed window): the receive
    # rate then says how fast the data came, not how much the path takes.
    app_limited: bool = False


class Controller(ABC):
    """A sans-IO rate controller."""

    name = "?"

    def __init__(self, ceiling_bps: float, floor_bps: float, now: float) -> None:
        if not 0 < floor_bps <= ceiling_bps:
            raise ValueError("need 0 < floor <= ceiling")
        self.ceiling_bps = ceiling_bps
        self.floor_bps = floor_bps

    @property
    @abstractmethod
    def rate_bps(self) -> float:
        """The pacing rate to use now."""

    @abstractmethod
    def on_feedback(self, fb: Feedback) -> None:
        """A STATUS arrived."""

    @abstractmethod
    def on_silence(self, now: float, silent_for: float) -> None:
        """No feedback at all for ``silent_for`` seconds while sending (called often)."""

    @property
    def starting(self) -> bool:
        """Still finding the path's rate (a start-up that may overshoot it): the losses of
        what it sends now say more about the start-up than about the path."""
        return False

    def clamp(self, rate: float) -> float:
        return min(self.ceiling_bps, max(self.floor_bps, rate))

    def snapshot(self) -> dict[str, Any]:
        return {"cc": self.name, "rate_bps": round(self.rate_bps)}


_REGISTRY: dict[str, Callable[[float, float, float], Controller]] = {}


def register(name: str) -> Callable[[type[Controller]], type[Controller]]:
    def deco(cls: type[Controller]) -> type[Controller]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def create(name: str, ceiling_bps: float, floor_bps: float, now: float) -> Controller:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown rate controller {name!r} (known: {', '.join(names())})") from None
    return factory(ceiling_bps, floor_bps, now)


def names() -> list[str]:
    return sorted(_REGISTRY)
