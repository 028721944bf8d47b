"""Rates and sizes as people write them: 800M, 1.5G, 256M (the "Units" of ``alf send --help``).

Rates are bits per second with k, M, G, T as powers of 1000 (links are sold so); sizes are
bytes with K, M, G, T as powers of 1024. Both ignore case and a trailing unit word (bit/s,
bps, B, iB). Parsing raises ValueError with a message for the user.
"""

from __future__ import annotations

from collections.abc import Mapping

RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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
    if value <= 0:
        raise ValueError(f"{what} must be positive")
    return value


def parse_rate(value: float | str) -> float:
    """Bits per second from a number or a text such as '800M'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("rate must be positive")
        return float(value)
    return _number(str(value), RATE_UNITS, "rate")


def parse_size(value: int | str) -> int:
    """Bytes from a number or a text such as '256M' (256 MiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("size must be positive")
        return value
    return int(_number(str(value), SIZE_UNITS, "size"))
