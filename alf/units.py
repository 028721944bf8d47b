"""Rates and sizes as people write them: 800M, 1.5G, 256M (the "Units" of ``alf send --help``).

Rates are bits per second with k, M, G, T as powers of 1000 (links are sold so); sizes are
bytes with K, M, G, T as powers of 1024. Both ignore case and a trailing unit word (bit/s,
bps, B, iB). Parsing raises ValueError with a message for the user: a value must be a
finite, positive number no larger than what any transfer could use (MAX_RATE_BPS, MAX_SIZE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_RATE_BPS = 1e12  # 1 Tbit/s: far beyond any one host's NIC
MAX_SIZE = 1 << 50  # 1 PiB


def _number(text: str, units: Mapping[str, float], what: str) -> float:
    t = text.strip().lower()
    for suffix in ("bit/s", "bps", "b/s", "ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    unit = t[-1:] if t[-1:] in units and t[-1:] != "" else ""
    digits = t[:-1] if unit else t
    try:
        value = float(digits) * units[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a {what} (examples: 800M, 1.5G, 200k)") from None
    return value


def _bounded(value: float, what: str, top: float, top_text: str) -> float:
    if not math.isfinite(value) or not 0 < value <= top:
        raise ValueError(f"{what} must be a number above 0 and at most {top_text}, not {value:g}")
    return value


def parse_rate(value: float | str) -> float:
    """Bits per second from a number or a text such as '800M'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _bounded(float(value), "a rate", MAX_RATE_BPS, "1T (1 Tbit/s)")
    return _bounded(_number(str(value), RATE_UNITS, "rate"), "a rate", MAX_RATE_BPS, "1T (1 Tbit/s)")


def parse_size(value: int | str) -> int:
    """Bytes from a number or a text such as '256M' (256 MiB)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        number = _number(str(value), SIZE_UNITS, "size")
    return int(_bounded(number, "a size", MAX_SIZE, "1024T (1 PiB)"))


def parse_seconds(value: float | str, what: str, low: float, high: float) -> float:
    """Seconds (a finite number) between ``low`` and ``high``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise ValueError(f"{what} must be between {low:g} and {high:g} seconds, not {value}")
    return x
