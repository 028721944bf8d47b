"""What a person sees on stderr: a progress line redrawn in place, messages printed above it,
and a closing summary in words.

Invariants: the functions here only format; ``Console`` is the one writer of stderr while a
line is live, so a message never lands in the middle of the line. Everything reads the
statistics schema of docs/usage.md ("Statistics"), the same for UDP and TCP: the sender's
progress is ``acked_bytes`` (what the receiver confirmed holding), the receiver's
``bytes_received``; both are payload bytes, never header bytes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

RATE_WINDOW = 3.0  # seconds of samples behind the "current" rate and the ETA
WAITING_STATES = ("waiting", "handshake")


def human_bytes(nbytes: float) -> str:
    """Powers of 1024, as ls -h and pv show them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{int(nbytes)} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_s: float) -> str:
    """Bits per second in powers of 1000, as links are sold."""
    bits = bytes_per_s * 8
    if bits >= 1e9:
        return f"{bits / 1e9:.2f} Gbit/s"
    if bits >= 1e6:
        return f"{bits / 1e6:.0f} Mbit/s" if bits >= 1e8 else f"{bits / 1e6:.1f} Mbit/s"
    return f"{bits / 1e3:.0f} kbit/s"


def clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_bytes(stats: Mapping[str, Any]) -> int:
    return int(stats.get("acked_bytes" if stats.get("role") == "send" else "bytes_received", 0) or 0)


def repair_field(stats: Mapping[str, Any]) -> str:
    """Loss and repair in one short field, from what this side knows ('' when there was none)."""
    if stats.get("role") == "send":
        resent, sent = int(stats.get("bytes_resent", 0) or 0), int(stats.get("bytes_sent", 0) or 0)
        return f"resent {human_bytes(resent)} ({100 * resent / sent:.1f}%)" if resent and sent else ""
    asked = int(stats.get("adus_nakked", 0) or 0)
    if asked:
        return f"asked again for {asked} ADUs"
    dup = int(stats.get("duplicate_bytes", 0) or 0)
    return f"{human_bytes(dup)} came twice" if dup else ""


def peer_name(addr: object) -> str:
    """An address as a person writes it: 192.0.2.1:8834, [2001:db8::1]:8834 (of a peer known
    with the local address it came to, the peer's)."""
    if isinstance(addr, tuple) and len(addr) == 2 and isinstance(addr[0], tuple):
        addr = addr[0]
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = str(addr[0]), addr[1]
        if host.startswith("::ffff:") and "." in host:  # IPv4 on a dual-stack socket
            host = host[7:]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


def rejection_notice(who: object, why: str) -> str:
    """A sender the receiver turned away, in words."""
    return f"turned away a sender from {peer_name(who)}: {why}"


class RateMeter:
    """The rate over the last RATE_WINDOW seconds (not since the start), and when the
    transfer began (the first sample past the handshake): the rate of a receiver that waited
    a minute for its sender is not diluted by that minute."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.began: float | None = None

    def add(self, now: float, nbytes: int, moving: bool) -> None:
        if not moving:
            return
        if self.began is None:
            self.began = now
        self.samples.append((now, nbytes))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def progress_line(stats: Mapping[str, Any], now: float, meter: RateMeter, start: float) -> str:
    """The live line: payload of total, percent, current rate, elapsed time, ETA, repairs."""
    role, state = stats.get("role", ""), stats.get("state", "waiting")
    head = f"alf {role}:"
    if state in WAITING_STATES or meter.began is None:
        what = "waiting for a sender" if role == "recv" else "connecting to the receiver"
        return f"{head} {what}  {clock(now - start)}"
    done = progress_bytes(stats)
    total = stats.get("total_bytes")
    rate = meter.rate()
    parts = [head]
    if total:
        parts += [f"{human_bytes(done)} / {human_bytes(total)}", f"{min(100.0, 100 * done / total):3.0f}%"]
    else:
        parts.append(human_bytes(done))
    if len(meter.samples) > 1:
        parts.append(human_rate(rate))
    parts.append(clock(now - meter.began))
    if total and rate > 0 and done < total:
        parts.append(f"ETA {clock((total - done) / rate)}")
    repair = repair_field(stats)
    if repair:
        parts.append(repair)
    paths = paths_field(stats)
    if paths:
        parts.append(paths)
    group = receivers_field(stats)
    if group:
        parts.append(group)
    if state == "finishing":
        parts.append("finishing")
    return "  ".join(parts)


def receivers_field(stats: Mapping[str, Any]) -> str:
    """A group sender: its receivers by state (e.g. "receivers 2 ok, 1 silent"); '' if none."""
    members = stats.get("receivers")
    if members is None:
        return ""
    counts: dict[str, int] = {}
    for m in members:
        state = str(m.get("state"))
        if state == "receiving" and (m.get("stalled") or m.get("slow")):
            state = "silent" if m.get("stalled") else "slow"
        counts[state] = counts.get(state, 0) + 1
    order = ["joining", "receiving", "slow", "silent", "ok", "mismatch", "lost", "aborted", "dropped-slow"]
    text = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
    return f"receivers {text}" if text else "receivers: none yet"


def paths_field(stats: Mapping[str, Any]) -> str:
    """Several UDP paths: how many carry data now, and each one's rate (e.g. "paths 1: 2.10
    Gbit/s, 2: down")."""
    paths = stats.get("paths")
    if not paths:
        return ""
    each = []
    for p in paths:
        state = str(p.get("state", "?"))
        rate = p.get("receive_rate_bps", 0) / 8
        each.append(f"{p.get('path')}: {human_rate(rate) if state == 'up' else state.split(':')[0]}")
    return "paths " + ", ".join(each)


def path_lines(stats: Mapping[str, Any]) -> list[str]:
    """-v: one line per UDP path."""
    out = []
    for p in stats.get("paths") or []:
        out.append(
            f"path {p.get('path')}{' (backup)' if p.get('backup') else ''} {p.get('state')}: "
            f"{human_bytes(p.get('bytes_new', 0))} sent, {human_bytes(p.get('bytes_repaired', 0))} "
            f"repaired, loss {100 * p.get('loss', 0):.2f}%, round trip {p.get('srtt_ms', 0):.1f} ms, "
            f"down {p.get('downs', 0)} times"
        )
    return out


def receiver_lines(stats: Mapping[str, Any], verified: bool) -> list[str]:
    """A group sender's receivers, one line each: those that verified, or those that did not."""
    out = []
    for m in stats.get("receivers") or []:
        if (m.get("state") == "ok") != verified:
            continue
        took = m.get("seconds")
        out.append(
            f"receiver {m.get('address')}{' (joined late)' if m.get('late') else ''} {m.get('state')}"
            f"{': ' + m['reason'] if m.get('state') != 'ok' and m.get('reason') else ''}: "
            f"{human_bytes(m.get('bytes', 0))}{f' in {took:.2f} s' if took else ''}, asked again "
            f"for {m.get('adus_nakked', 0)} ADUs in {m.get('naks', 0)} NAKs, round trip "
            f"{m.get('srtt_ms', 0):.1f} ms"
        )
    return out


def summary(stats: Mapping[str, Any], ok: bool, message: str, seconds: float | None, where: str) -> list[str]:
    """The closing lines in words: what moved, how long, the rate, repairs, the verdict."""
    role = stats.get("role", "")
    head = f"alf {role}:"
    # A verified transfer moved the whole content: every byte was sent once (the last STATUS,
    # and so acked_bytes, may not have come before the verdict).
    done = int(stats.get("bytes_sent", 0) or 0) if ok and role == "send" else progress_bytes(stats)
    if ok:
        verb = "sent" if role == "send" else "received"
        line = f"{head} {verb} {human_bytes(done)}"
        if where:
            line += f" {where}"
        if seconds:
            line += f" in {seconds:.2f} s ({human_rate(done / seconds)})"
        if stats.get("transport") == "tcp":
            line += " over TCP"
        held = int(stats.get("bytes_held", 0) or 0)
        if held:
            line += f", {human_bytes(held)} the receiver held already"
        raw = stats.get("input_bytes" if role == "send" else "restored_bytes")
        if raw:  # §19: compressed
            line += f", {human_bytes(int(raw))} compressed to {100 * done / int(raw):.0f}%"
        repair = repair_field(stats)
        tail = f"verified ({stats.get('digest', 'digest')})"
        group = stats.get("receivers")
        if role == "send":
            by = "the receiver"
            if group is not None:
                verified = sum(1 for m in group if m.get("state") == "ok")
                joined = sum(1 for m in group if m.get("state") != "joining")
                by = f"{verified} of {joined} receivers"
            tail = f"verified by {by} ({stats.get('digest', 'digest')})"
        if stats.get("sealed"):
            tail += "; encrypted (--key)"
        more = [f"{head} {x}" for x in receiver_lines(stats, False)]
        return [f"{line}{'; ' + repair if repair else ''}; {tail}", *more]
    lines = [f"{head} error: {message}"]
    lines += [f"{head} {x}" for x in receiver_lines(stats, False)]
    if done and "receivers" not in stats:  # (a group's: the error says how many verified)
        total = stats.get("total_bytes")
        of = f" of {human_bytes(total)}" if total else ""
        moved = "acknowledged" if role == "send" else "received"
        after = f" in {seconds:.1f} s" if seconds else ""
        lines.append(f"{head} {human_bytes(done)}{of} {moved}{after}; nothing is verified")
    return lines


def details(stats: Mapping[str, Any]) -> list[str]:
    """-v: what the summary leaves out, in words."""
    role, tcp = stats.get("role"), stats.get("transport") == "tcp"
    g = stats.get
    out: list[str] = [f"session {g('session', '?')} over {'TCP' if tcp else 'UDP'}"]
    if tcp and role == "send":
        out.append(
            f"{g('frames_sent', 0)} frames, {g('frames_resent', 0)} sent again; {g('connects', 0)} "
            f"connections, {g('reconnects', 0)} reconnected, {g('stalls', 0)} stalled"
        )
    elif tcp:
        out.append(
            f"{g('frames', 0)} frames on {g('connections_accepted', 0)} connections, "
            f"{g('connection_losses', 0)} lost; {g('rejected_hellos', 0)} senders turned away"
        )
    elif role == "send":
        out.append(
            f"{g('adus_new', 0)} ADUs of {g('adu_size', '?')} bytes sent once, {g('adus_repair', 0)} "
            f"again after {g('naks_received', 0)} NAKs; round trip {g('srtt_ms', 0):.1f} ms; "
            f"datapath {g('datapath', '?')}"
        )
    else:
        out.append(
            f"{g('datagrams', 0)} datagrams, {g('duplicates', 0)} duplicates, {g('nak_rounds', 0)} NAK "
            f"rounds; {g('socket_overflows', 0)} lost in the socket buffer; {g('malformed', 0)} "
            f"malformed, {g('foreign', 0)} foreign, {g('rejected_hellos', 0)} senders turned away; "
            f"datapath {g('datapath', '?')}"
        )
    out += path_lines(stats)
    out += receiver_lines(stats, True)  # (the summary has those that did not verify)
    return [f"alf {role}: {line}" for line in out]


class Console:
    """Owns stderr while a progress line is live: ``status`` redraws the line (cut to the
    terminal's width by whole fields, so it never wraps), ``say`` prints a message above it.
    A stream that cannot be written (a full disk, a closed pipe) is given up for good
    (``broken``): what a person sees must never end a transfer."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self.line = ""
        self.broken = False

    def _write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.broken, self.live = True, False

    def _width(self) -> int:
        try:
            return max(20, os.get_terminal_size(self.stream.fileno()).columns - 1)
        except (OSError, ValueError, AttributeError):
            return 119

    def status(self, text: str) -> None:
        if not self.live:
            return
        width = self._width()
        while len(text) > width and "  " in text:  # drop whole fields from the right
            text = text.rsplit("  ", 1)[0]
        self.line = text[:width]
        self._write("\r" + self.line + "\x1b[K")

    def say(self, text: str) -> None:
        if self.live and self.line:
            self._write("\r\x1b[K" + text + "\n" + self.line)
        else:
            self._write(text + "\n")

    def end(self) -> None:
        """Take the live line away: what follows (the summary) stands in its place."""
        if self.live and self.line:
            self._write("\r\x1b[K")
        self.line = ""
