"""Shared helpers for tests that run real `alf` processes on loopback, and for tests that
drive a receiver core through its handshake."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from alf import wire
from alf.demo import free_udp_port, sha256_file  # noqa: F401  (sha256_file: for the tests)
from alf.demo import random_file as _random_file


def random_file(path: str, size: int, seed: int = 0) -> str:
    """Incompressible, reproducible content."""
    return _random_file(path, size, seed)


def key_file(path: str | os.PathLike[str]) -> str:
    """A new key file (mode 600, as alf keygen makes it) at ``path``."""
    from alf import seal

    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.write(fd, (seal.new_key() + "\n").encode())
    os.close(fd)
    return str(path)


ALF = [sys.executable, "-m", "alf"]


def handshake(receiver: Any, hello: wire.Hello, addr: object, now: float = 0.0) -> list[tuple[bytes, Any]]:
    """Bind a receiver core to ``hello`` from ``addr`` as a sender does (§4.3): the HELLO, then
    the HELLO again with the RETRY's token. Returns what the receiver answered the second
    (its ACCEPT, or an ABORT)."""
    receiver.handle_control(wire.encode_hello(hello), addr, now)
    out = receiver.poll(now)
    retry = wire.decode_untrusted(out[-1][0]) if out else None
    if not isinstance(retry, wire.Accept) or not retry.retry:
        return list(out)  # refused at once (checkphrase, busy): no token to echo
    echo = dataclasses.replace(hello, token=retry.token)
    receiver.handle_control(wire.encode_hello(echo), addr, now)
    return list(receiver.poll(now))


def last_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return dict(json.loads(lines[-1]))


class Procs:
    """Starts alf processes and always ends them (by PID) when the test is over."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(ALF + list(args), **kw)
        self.started.append(p)
        return p

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        p = self.start(*args, **kw)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def cleanup(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            try:
                p.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def port() -> int:
    return free_udp_port()


def _holds(kind: str, port: int) -> bool:
    """Whether a socket of ``kind`` ("udp", or "tcp" listening) holds local ``port``, read from
    /proc/net. A probe that binds the port itself would race the process it waits for: a bind
    that lands between the probe's bind and close fails with EADDRINUSE (seen in CI)."""
    for name in (kind, kind + "6"):
        try:
            with open(f"/proc/net/{name}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and (kind == "udp" or state == "0A"):
                return True
    return False


def _wait_holding(kind: str, port: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _holds(kind, port):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {kind.upper()} port {port}")


def wait_listening(port: int) -> None:
    """Block until something holds UDP ``port`` (bounded: 10 s)."""
    _wait_holding("udp", port)


def wait_listening_tcp(port: int) -> None:
    """Block until something listens on TCP ``port`` (bounded: 10 s)."""
    _wait_holding("tcp", port)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture
def lab() -> Iterator[Any]:
    """A lossy-net lab whose namespaces are gone, every one, when the test ends."""
    from lossynet import Lab
    from lossynet.netns import our_namespaces

    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
        assert our_namespaces(os.getpid()) == []  # nothing of ours is left
