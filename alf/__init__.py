"""alf: bulk data over imperfect networks, with application-level framing.

The library's calls (docs/api.md) load on first use, so ``import alf.wire`` stays light:
``alf.send``, ``alf.receive``, ``alf.Result``, ``alf.UsageError``, ``alf.Observer``,
``alf.free_port``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["send", "receive", "Result", "UsageError", "Observer", "free_port", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from alf import api

        return getattr(api, name)
    raise AttributeError(f"module 'alf' has no attribute {name!r}")
