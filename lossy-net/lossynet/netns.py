"""Network namespaces that always go away.

Invariants: every namespace a ``Lab`` makes is named ``lnet-<pid>-<name>`` (``pid`` is the
process that owns the lab), so one lab never touches another's; a guard process watches the
owner through a pipe and, when the owner ends for any reason (SIGKILL included), deletes the
namespaces and ends the processes inside them (which the lab started); ``Lab.close`` does the
same at once and is safe to call twice.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

PREFIX = "lnet-"


class LabError(Exception):
    """The lab could not be set up; the message says which command failed and why."""


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(list(args), capture_output=True, text=True, input=input)
    except FileNotFoundError:
        raise LabError(f"{args[0]}: not found (the lab needs iproute2 and nftables)") from None
    if check and p.returncode != 0:
        raise LabError(f"{shlex.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def namespaces_available() -> str | None:
    """None when this process can make network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"{PREFIX}{os.getpid()}-probe"
    try:
        sh("ip", "netns", "add", name)
    except LabError as e:
        return f"cannot make a network namespace: {e}"
    sh("ip", "netns", "del", name, check=False)
    return None


def our_namespaces(pid: int | None = None) -> list[str]:
    """Names of namespaces made by lab ``pid`` (any lab when None)."""
    out = sh("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    prefix = PREFIX if pid is None else f"{PREFIX}{pid}-"
    return [n for n in names if n.startswith(prefix)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_namespaces(names: Sequence[str]) -> None:
    """End the processes inside (the lab started them), then delete the namespaces."""
    for name in names:
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for name in names:
        for _ in range(50):
            if sh("ip", "netns", "del", name, check=False).returncode == 0:
                break
            time.sleep(0.02)


def clean_stale() -> list[str]:
    """Delete namespaces left by labs whose owner process no longer exists."""
    gone = []
    for name in our_namespaces():
        try:
            owner = int(name[len(PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(owner):
            gone.append(name)
    remove_namespaces(gone)
    return gone


class Lab:
    """A set of namespaces with a guard; use as a context manager."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.tmpdirs: list[str] = []  # made for the lab's topologies, removed with it
        self._closed = False
        r, w = os.pipe()
        # The guard holds the read end; our write end closes when we die, however we die.
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "lossynet.guard", str(self.pid)],
            stdin=r,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        os.close(r)
        self._guard_pipe = w
        os.set_inheritable(w, False)

    def ns(self, name: str) -> str:
        full = f"{PREFIX}{self.pid}-{name}"
        if len(full) > 60:
            raise LabError(f"namespace name too long: {full}")
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.run(full, "ip", "link", "set", "lo", "up")
        return full

    def run(
        self, ns: str, *cmd: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, input=input)

    def mkdtemp(self, prefix: str) -> str:
        """A directory of the lab's own (its wires' counters), removed when the lab closes."""
        path = tempfile.mkdtemp(prefix=prefix)
        self.tmpdirs.append(path)
        return path

    def start(self, ns: str, cmd: Sequence[str] | str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a process inside ``ns`` (a shell command when ``cmd`` is a string)."""
        argv = ["ip", "netns", "exec", ns] + (["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd))
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        remove_namespaces(self.namespaces)
        for path in self.tmpdirs:
            shutil.rmtree(path, ignore_errors=True)
        os.close(self._guard_pipe)  # the guard sees EOF, finds nothing left, and exits
        try:
            self._guard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._guard.kill()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pythonpath() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH", "")
    return here + (os.pathsep + old if old else "")
