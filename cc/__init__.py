"""Rate control for alf (docs/cc.md): sans-IO controllers, chosen by name.

    import cc
    controller = cc.create("adaptive", ceiling_bps=1e9, floor_bps=1e6, now=0.0)
    controller.on_feedback(cc.Feedback(...))
    controller.rate_bps

A controller is fed feedback records and ``now`` and answers with a pacing rate; it does no
I/O and reads no clock.
"""

from cc import adaptive, fixed  # noqa: F401  (they register themselves)
from cc.base import Controller, Feedback, create, names, register

__all__ = ["Controller", "Feedback", "create", "names", "register"]
