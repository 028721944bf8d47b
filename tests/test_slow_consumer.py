"""One verdict rule on both transports: a pipe receiver whose consumer drains slower than the
sender sends reports success only once every byte is written, and keeps answering its sender
meanwhile, so both sides end with the same outcome (issue 14, point 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ALF, Procs, random_file, sha256_file, wait_listening

# A reader of stdin that holds a rate: 64 KiB at a time, then a sleep.
SLOW_READER = """
import sys, time
rate, out = float(sys.argv[1]), open(sys.argv[2], "wb")
start, got = time.monotonic(), 0
while chunk := sys.stdin.buffer.read(65536):
    out.write(chunk)
    got += len(chunk)
    ahead = got / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
out.close()
"""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_slow_consumer_both_sides_succeed(
    procs: Procs, port: int, tmp_path: os.PathLike[str], transport: str
) -> None:
    """6 MB into a consumer of 1 MB/s (6 s), with --timeout 2 on both sides: the sender is done
    sending within a second and then waits; it must hear the receiver all along."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 6_000_000, seed=21)
    dst = os.path.join(tmp_path, "out.bin")
    recv = subprocess.Popen(
        ALF + ["recv", str(port), "--timeout", "2", "--transport", transport],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.started.append(recv)
    reader = subprocess.Popen([sys.executable, "-c", SLOW_READER, "1e6", dst], stdin=recv.stdout)
    assert recv.stdout is not None
    recv.stdout.close()  # the reader holds the pipe now
    try:
        if transport == "udp":
            wait_listening(port)
        else:
            from conftest import wait_listening_tcp

            wait_listening_tcp(port)
        send = procs.run("send", "127.0.0.1", str(port), src, "--timeout", "2", "--transport", transport)
        rcode = recv.wait(timeout=60)
        assert reader.wait(timeout=60) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert recv.stderr is not None
    assert (send.returncode, rcode) == (0, 0), (send.stderr, recv.stderr.read())
    assert sha256_file(dst) == sha256_file(src)
