"""What the UDP and TCP drivers share: the error a socket set-up raises, the hooks the library
plugs into a loop (and the events it gets through them), and draining the wake-up pipe. Neither
driver imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from alf.events import Ended, Event


class DriverError(Exception):
    """A socket could not be set up; the message is for the user."""


@dataclass
class Hooks:
    """What the library plugs into a loop: periodic reporting, cancellation, and what the core
    says happened (alf.events)."""

    tick: Callable[[float], None] = lambda now: None
    cancelled: Callable[[], bool] = lambda: False
    wake_fd: int | None = None
    event: Callable[[Event], None] = lambda event: None

    def forward(self, events: list[Event]) -> bool:
        """Hand a core's events on; True once the core said it has ended."""
        ended = False
        for ev in events:
            self.event(ev)
            ended = ended or isinstance(ev, Ended)
        return ended


def drain(fd: int | None) -> None:
    """Empty a non-blocking wake-up pipe (the signal handler's), if there is one."""
    if fd is not None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
