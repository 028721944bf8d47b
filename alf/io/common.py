"""What the UDP and TCP drivers share: the error a socket set-up raises, the hooks the CLI
plugs into a loop, and draining the wake-up pipe. Neither driver imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


class DriverError(Exception):
    """A socket could not be set up; the message is for the user."""


@dataclass
class Hooks:
    """What the CLI plugs into a loop: periodic reporting and cancellation."""

    tick: Callable[[float], None] = lambda now: None
    cancelled: Callable[[], bool] = lambda: False
    wake_fd: int | None = None


def drain(fd: int | None) -> None:
    """Empty a non-blocking wake-up pipe (the signal handler's), if there is one."""
    if fd is not None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
