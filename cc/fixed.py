"""``fixed``: pace at the ceiling (the ``--rate``), whatever the path says."""

from __future__ import annotations

from cc.base import Controller, Feedback, register


@register("fixed")
class Fixed(Controller):
    @property
    def rate_bps(self) -> float:
        return self.ceiling_bps

    def on_feedback(self, fb: Feedback) -> None:
        pass

    def on_silence(self, now: float, silent_for: float) -> None:
        pass  # the rate the user fixed; the session's --timeout ends a transfer nobody answers
