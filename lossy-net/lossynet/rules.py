"""Rules that drop or mangle alf packets on the userspace wire, by type and field.

A rule is a dict (so it can travel in the wire's JSON config):

    {"type": "NAK", "first": 3, "action": "drop"}                  # the first 3 NAKs
    {"type": "DATA", "where": "index % 100 == 7", "action": "drop"}  # every DATA 7 mod 100
    {"type": "PROBE", "where": "flags & 1", "first": 1, "action": "corrupt", "offset": 60}

``where`` is a Python expression over the fields of the scapy alf layers (``lossynet.scapy_alf``);
``first`` limits the rule to its first N matches; ``corrupt`` flips the byte at ``offset`` of
the UDP payload (default: the last) and zeroes the UDP checksum so the kernel delivers it.
Each rule counts what it matched and what it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import IP, UDP

from lossynet.scapy_alf import Alf, fields


@dataclass
class Rule:
    type: str | None = None
    where: str | None = None
    first: int | None = None
    action: str = "drop"
    offset: int | None = None
    matched: int = 0
    acted: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        if d.get("action", "drop") not in ("drop", "corrupt"):
            raise ValueError(f"unknown rule action {d.get('action')!r}")
        return cls(d.get("type"), d.get("where"), d.get("first"), d.get("action", "drop"), d.get("offset"))

    def counts(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "where": self.where,
            "action": self.action,
            "matched": self.matched,
            "acted": self.acted,
        }

    def matches(self, f: dict[str, Any]) -> bool:
        if self.type is not None and f.get("type") != self.type:
            return False
        if self.where is not None:
            try:
                return bool(eval(self.where, {"__builtins__": {}}, f))  # noqa: S307 (lab-only, our own rules)
            except Exception:
                return False
        return True


def parse(packet: bytes) -> tuple[Any, dict[str, Any]] | None:
    """The alf fields of an IPv4/UDP packet, or None if it is not one."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    ip = IP(packet)
    if UDP not in ip:
        return None
    alf = Alf(bytes(ip[UDP].payload))
    return ip, fields(alf)


def apply(rules: list[Rule], packet: bytes) -> tuple[str, bytes]:
    """("pass" | "drop" | "mangled", packet) after the first rule that acts."""
    parsed = parse(packet)
    if parsed is None:
        return "pass", packet
    _ip, f = parsed
    for rule in rules:
        if not rule.matches(f):
            continue
        rule.matched += 1
        if rule.first is not None and rule.acted >= rule.first:
            continue
        rule.acted += 1
        if rule.action == "drop":
            return "drop", packet
        return "mangled", _flip(packet, rule.offset)
    return "pass", packet


def _flip(packet: bytes, offset: int | None) -> bytes:
    ihl = (packet[0] & 0x0F) * 4
    b = bytearray(packet)
    payload_start = ihl + 8
    pos = payload_start + offset if offset is not None else len(b) - 1
    if payload_start <= pos < len(b):
        b[pos] ^= 0xFF
        b[ihl + 6 : ihl + 8] = b"\0\0"  # UDP checksum "none": the receiver sees the damage
    return bytes(b)
