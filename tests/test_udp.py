"""The UDP driver (alf/io/udp.py) on real sockets: the GSO/GRO and per-datagram paths, GSO
refused mid-transfer, receive timestamps, flow control against a slow reader, socket buffers,
the route's MTU, IPv6, and a flood of garbage at a receiving socket."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import subprocess
import time
from typing import Any

import pytest
from conftest import Procs, last_json, random_file, sha256_file, wait_listening

from alf import wire


@pytest.mark.parametrize("sender_gso,receiver_gso", [(False, False), (True, False), (False, True)])
def test_per_datagram_path(
    procs: Procs, port: int, tmp_path: os.PathLike[str], sender_gso: bool, receiver_gso: bool
) -> None:
    """Acceptance 5 of the fast data path: with GSO/GRO forced off on either side (or both),
    the per-datagram path still moves the content intact, loss included."""
    src = random_file(os.path.join(tmp_path, "in.bin"), (8 << 20) + 99, seed=8)
    dst = os.path.join(tmp_path, "out.bin")
    off = ["--no-gso"]
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    recv = procs.start(
        "recv",
        str(port),
        "-o",
        dst,
        "--drop",
        "0.02",
        "--timeout",
        "20",
        "--stats-json",
        rstats,
        *([] if receiver_gso else off),
    )
    wait_listening(port)
    send = procs.run(
        "send",
        "127.0.0.1",
        str(port),
        src,
        "--rate",
        "500M",
        "--timeout",
        "20",
        "--stats-json",
        sstats,
        *([] if sender_gso else off),
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    # each side used the path it was told to (where it was allowed GSO/GRO, the kernel decides)
    if not sender_gso:
        assert last_json(sstats)["datapath"] == "per-datagram"
    if not receiver_gso:
        assert last_json(rstats)["datapath"] == "per-datagram"
    assert {last_json(sstats)["datapath"], last_json(rstats)["datapath"]} <= {"gso", "gro", "per-datagram"}


def test_ipv6_loopback(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"::1 is not usable here: {e}")
    src = random_file(os.path.join(tmp_path, "in.bin"), 2 << 20, seed=5)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "--bind", "::1", "-o", dst, "--timeout", "20")
    time.sleep(0.3)
    send = procs.run("send", "::1", str(port), src, "--timeout", "20")
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


def test_flood_of_garbage_during_a_transfer(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """Acceptance 5: malformed, truncated, random and foreign-session datagrams aimed at the
    receiver while it works: the transfer completes intact, no traceback, drops counted."""
    import random

    src = random_file(os.path.join(tmp_path, "in.bin"), 64 << 20, seed=6)
    dst = os.path.join(tmp_path, "out.bin")
    rstats = os.path.join(tmp_path, "r.json")
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", "-o", dst, "--timeout", "20", "--stats-json", rstats
    )
    wait_listening(port)
    send = procs.start("send", "127.0.0.1", str(port), src, "--rate", "300M", "--timeout", "20")
    rng = random.Random(7)
    good = wire.encode_data(wire.Data(0xDEAD, 5, b"x" * 1428))
    probe = wire.encode_probe(wire.Probe(0xBEEF, 10, 1, 1, True, 99, bytes(32)))
    sent = 0
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
        while send.poll() is None and sent < 200_000 and time.monotonic() < deadline:
            for kind in range(5):
                if kind == 0:
                    d = rng.randbytes(rng.randint(0, 1500))
                elif kind == 1:
                    d = good[: rng.randint(0, len(good) - 1)]  # truncated
                elif kind == 2:
                    d = good  # a foreign session's DATA
                elif kind == 3:
                    b = bytearray(probe)
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)  # one flipped bit
                    d = bytes(b)
                else:
                    d = bytes([1, 3, 0, 0]) + rng.randbytes(rng.randint(20, 60))
                flood.sendto(d, ("127.0.0.1", port))
                sent += 1
            if sent % 500 == 0:
                time.sleep(0.001)
    assert send.wait(timeout=60) == 0
    assert recv.wait(timeout=30) == 0
    err = recv.stderr.read() if recv.stderr else b""
    assert b"Traceback" not in err
    assert sha256_file(dst) == sha256_file(src)
    r = last_json(rstats)
    assert sent > 1000
    assert r["malformed"] + r["foreign"] > 0.5 * sent  # the rest the kernel dropped, or came after the end


def _send_in_process(
    procs: Procs,
    port: int,
    tmp_path: os.PathLike[str],
    sock_class: type[socket.socket],
    size: int,
    seed: int,
    cfg: Any,
    hooks: Any,
    gso: bool,
) -> tuple[Any, Any, Any, str, str, subprocess.Popen[bytes]]:
    """Send a random file of ``size`` from this process through a socket of ``sock_class`` (a
    subclass that misbehaves on cue) to a real `alf recv`; returns the outcome, the sender
    core, the session, the input and output paths, and the receiver."""
    import secrets

    from alf.io.source import FileSource
    from alf.io.udp import _tune, run_sender
    from alf.sender import Sender
    from alf.session import SendSession

    src = random_file(os.path.join(tmp_path, "in.bin"), size, seed=seed)
    dst = os.path.join(tmp_path, "out.bin")
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst, "--transport", "udp")
    wait_listening(port)
    sock = sock_class(socket.AF_INET, socket.SOCK_DGRAM)
    _tune(sock)
    sock.connect(("127.0.0.1", port))
    source = FileSource(src, wire.DEFAULT_ADU_SIZE)
    sender = Sender(cfg, secrets.randbits(63) + 1, wire.Kind.FILE, size, time.monotonic())
    session = SendSession(sender, source)
    try:
        outcome = run_sender(session, sock, hooks, gso=gso)
    finally:
        sock.close()
        source.close()
    return outcome, sender, session, src, dst, recv


def test_gso_refused_mid_transfer_falls_back(procs: Procs, port: int, tmp_path: os.PathLike[str]) -> None:
    """A route whose device cannot segment (the kernel answers a UDP_SEGMENT send with EIO):
    the sender goes on one datagram per call instead of failing."""
    from alf.io.common import Hooks
    from alf.sender import SenderConfig

    class Refusing(socket.socket):
        refused = 0

        def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
            if ancdata:
                Refusing.refused += 1
                raise OSError(errno.EIO, "Input/output error")
            if address is None:
                return super().sendmsg(buffers, ancdata, flags)
            return super().sendmsg(buffers, ancdata, flags, address)

    outcome, _sender, session, src, dst, recv = _send_in_process(
        procs, port, tmp_path, Refusing, 20_000_000, 21, SenderConfig(rate_bps=2e9), Hooks(), True
    )
    assert outcome.ok, outcome
    assert Refusing.refused == 1  # refused once, then never asked again
    assert session.datapath == "per-datagram (GSO refused: Input/output error)"
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)


def test_probe_hold_time_counts_from_its_arrival() -> None:
    """The receiver echoes a PROBE's timestamp with how long it held it. A PROBE read at the
    end of a long receive turn waited in our socket meanwhile. That wait is the receiver's own
    queue, which its flow window bounds: counted in the sender's RTT sample, rate control took
    it for a queue on the path and cut (loopback, --cc adaptive: 0.66 against 0.85 GB/s for a
    fixed rate). The hold time counts from the kernel's receive stamp, so the sample leaves the
    wait out. It must never come out *below* the path's RTT either: stamped with the start of
    its turn, before it arrived, the hold time was too long and a sample of 14 ms was taken on
    the lab's 20 ms path (the minimum-RTT filter kept it for minutes)."""
    import threading

    from alf.content import MemoryWriter, OrderedSink
    from alf.io.common import Hooks
    from alf.io.udp import run_receiver
    from alf.receiver import Receiver, ReceiverConfig
    from alf.session import RecvSession

    per_read = 0.003

    class Slow(socket.socket):
        def recvfrom_into(self, buf: Any, nbytes: int = 0, flags: int = 0) -> Any:
            got = super().recvfrom_into(buf, nbytes, flags)
            time.sleep(per_read)  # a receiver busy with what it reads (writing, hashing)
            return got

    rsock = Slow(socket.AF_INET, socket.SOCK_DGRAM)
    rsock.bind(("127.0.0.1", 0))
    rsock.setblocking(False)
    receiver = Receiver(ReceiverConfig(timeout=5.0), time.monotonic())
    session = RecvSession(receiver, OrderedSink(MemoryWriter()))
    t = threading.Thread(target=run_receiver, args=(session, rsock, Hooks(), False), daemon=True)
    t.start()
    sid, adu, before = 0x1234, 1000, 40
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.connect(rsock.getsockname())

    def us() -> int:
        return int(time.monotonic() * 1e6)

    def until(kind: type, ok: Any = lambda m: True) -> Any:
        while True:
            m = wire.decode_untrusted(client.recv(65536))
            if isinstance(m, kind) and ok(m):
                return m

    try:
        hello = wire.Hello(sid, adu, wire.Kind.FILE, 100 * adu, us(), wire.checkphrase_tag(""))
        client.send(wire.encode_hello(hello))
        retry = until(wire.Accept)  # §4.3: prove the address, then the ACCEPT
        assert retry.retry
        client.send(wire.encode_hello(dataclasses.replace(hello, token=retry.token)))
        until(wire.Accept, lambda m: not m.retry)
        time.sleep(0.2)  # the receiver is back in select, its turn over
        for i in range(before):
            client.send(wire.encode_data(wire.Data(sid, i, bytes(adu))))
        sent_at = us()
        client.send(wire.encode_probe(wire.Probe(sid, before, sent_at, 1000)))
        samples = []
        for _ in range(2):  # the STATUS the PROBE triggers, then the next, from a later turn
            status = until(wire.Status, lambda m: m.echo_timestamp_us == sent_at)
            samples.append((us() - sent_at - status.echo_delay_us) / 1e6)
            time.sleep(0.06)
            client.send(wire.encode_data(wire.Data(sid, before + 1, bytes(adu))))  # data: a STATUS is due
        # The PROBE waited ~120 ms behind `before` slow reads; the path (loopback) is well
        # under a millisecond. Stamped with its read, both samples came out at 120 ms or more.
        assert all(0 <= x < 0.25 * before * per_read for x in samples), samples
        client.send(wire.encode_abort(wire.Abort(sid, wire.AbortCode.CANCELLED, "test over")))
    finally:
        t.join(timeout=10)
        client.close()
        rsock.close()
    assert not t.is_alive()


@pytest.mark.slow
@pytest.mark.parametrize("gro", [True, False])
def test_fast_sender_does_not_overrun_its_receiver(
    procs: Procs, port: int, tmp_path: os.PathLike[str], gro: bool
) -> None:
    """A sender paced far above what the receiver can read (20 Gbit/s) is held by the receiver's
    flow window to what its socket buffer holds: nothing overflows, so nothing is repaired.
    Before the window (and with the 32 MiB buffer silently not applied) 1 GiB at 10G repaired
    27-100% of the file, losses in the receiver's socket buffer."""
    if os.geteuid() != 0:
        pytest.skip("the 32 MiB socket buffer needs root (SO_RCVBUFFORCE); rmem_max bounds it otherwise")
    size = (256 << 20) if gro else (48 << 20)
    src = random_file(os.path.join(tmp_path, "in.bin"), size, seed=9)
    dst = os.path.join(tmp_path, "out.bin")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    off = [] if gro else ["--no-gso"]
    recv = procs.start("recv", str(port), "--bind", "127.0.0.1", "-o", dst, "--stats-json", rstats, *off)
    wait_listening(port)
    send = procs.run(
        "send",
        "127.0.0.1",
        str(port),
        src,
        "--cc",
        "fixed",
        "--rate",
        "20G",
        "--stats-json",
        sstats,
        timeout=120,
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=60) == 0
    assert sha256_file(dst) == sha256_file(src)
    r, s = last_json(rstats), last_json(sstats)
    adus = -(-size // wire.DEFAULT_ADU_SIZE)
    counts = {k: r[k] for k in ("socket_overflows", "duplicates", "adus_nakked", "receive_rate_Bps")}
    assert s["adus_repair"] == 0 and r["socket_overflows"] == 0, (counts, s["srtt_ms"])
    assert r["duplicates"] == 0 and r["adus_nakked"] == 0
    assert s["adus_new"] == adus and r["adus_received"] == adus


def test_receive_buffer_is_the_one_asked_for() -> None:
    """SO_RCVBUFFORCE is not in Python's socket module: the driver names it itself, so as root the
    buffer is 32 MiB whatever net.core.rmem_max says (the flow window is sized from it)."""
    from alf.io.udp import SOCKET_BUFFER, read_buffer_bytes, receiver_socket

    sock = receiver_socket("127.0.0.1", 0)
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        expected = SOCKET_BUFFER if os.geteuid() == 0 else min(SOCKET_BUFFER, rmem_max)
        assert read_buffer_bytes(sock) == expected
    finally:
        sock.close()


def test_adu_size_fits_the_route() -> None:
    """The default ADU fits a 1500-byte MTU on IPv6 exactly (protocol §5), and loopback's large
    MTU leaves it alone; the lab test covers a smaller MTU."""
    from alf.api import fit_adu
    from alf.io.udp import fitting_adu_size, route_mtu

    assert fitting_adu_size(1500, socket.AF_INET6) == wire.DEFAULT_ADU_SIZE
    assert fitting_adu_size(1500, socket.AF_INET) == 1448
    assert fitting_adu_size(1420, socket.AF_INET) == 1368
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", 9))  # a UDP connect sends nothing
        mtu = route_mtu(s)
        assert mtu is not None and mtu >= 1500
        assert fit_adu(s, wire.DEFAULT_ADU_SIZE, False, print) == wire.DEFAULT_ADU_SIZE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # not connected: no route
        assert route_mtu(s) is None
        assert fit_adu(s, 9000, True, print) == 9000


@pytest.mark.parametrize("err, gso", [(errno.EPERM, True), (errno.EACCES, False), (errno.EINVAL, True)])
def test_local_send_errors_are_lost_datagrams(
    procs: Procs, port: int, tmp_path: os.PathLike[str], err: int, gso: bool
) -> None:
    """For 0.3 s mid-transfer every send fails in the local stack, as an nftables rule dropping
    output (EPERM), a prohibit route (EACCES) or a blackhole route (EINVAL) make it: the sender
    counts them, says so once, and finishes (it ended with a traceback, exit 1, a partial left,
    and the peer waiting 30 s). A blackhole's EINVAL to a GSO send is not taken for GSO's fault."""
    from alf.events import Event, SendFailed
    from alf.io.common import Hooks
    from alf.sender import SenderConfig

    window: list[float] = []

    class Failing(socket.socket):
        def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
            now = time.monotonic()
            if window and window[0] <= now < window[0] + 0.3:
                raise OSError(err, os.strerror(err))
            if address is None:
                return super().sendmsg(buffers, ancdata, flags)
            return super().sendmsg(buffers, ancdata, flags, address)

    cfg = SenderConfig(cc="fixed", rate_bps=400e6, timeout=10.0)
    seen: list[Event] = []

    def event(ev: Event) -> None:
        seen.append(ev)
        if ev.__class__.__name__ == "Joined":
            window.append(time.monotonic() + 0.1)  # data is flowing by then

    outcome, sender, session, src, dst, recv = _send_in_process(
        procs, port, tmp_path, Failing, 30_000_000, 22, cfg, Hooks(event=event), gso
    )
    assert outcome.ok, outcome
    assert sender.stats.send_errors > 0
    assert [e for e in seen if isinstance(e, SendFailed)] == [SendFailed(os.strerror(err))]
    if gso:
        assert session.datapath == "gso"  # the route refused, not the segmentation
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
