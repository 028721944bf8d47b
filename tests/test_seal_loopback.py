"""§17 over loopback, as a person runs it: a capture of a sealed transfer holds no byte of the
content; an on-path relay that flips bits, truncates, replays (this session's datagrams and
an older session's) and injects forged control in clear never gets a wrong output past exit 0;
key mismatches and bad key files give the documented exit codes and messages."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from alf import seal, wire
from tests.conftest import Procs, key_file, last_json, wait_listening, wait_listening_tcp

MARKER = b"ALF-MARKER-0123456789-SECRET-"


def _capture(procs: Procs, tmp_path: Path, port: int, key: str | None, transport: str) -> bytes:
    """Every loopback packet to or from ``port`` while a marker file goes across, as raw
    bytes (also written as a pcap next to the test's files)."""
    from scapy.all import TCP, UDP, AsyncSniffer, raw, wrpcap

    layer = TCP if transport == "tcp" else UDP

    src = tmp_path / "marked.bin"
    src.write_bytes(MARKER * 40_000)  # 1.1 MiB: 800 datagrams, each full of the marker
    out = tmp_path / "out.bin"
    sealed = ["--transport", transport] + (["--key", key] if key else [])
    sniffer = AsyncSniffer(
        iface="lo", store=True, lfilter=lambda p: layer in p and port in (p[layer].sport, p[layer].dport)
    )
    sniffer.start()
    time.sleep(0.5)
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", "-o", str(out), "--force", "--timeout", "20", *sealed
    )
    (wait_listening_tcp if transport == "tcp" else wait_listening)(port)
    send = procs.run(
        "send", "127.0.0.1", str(port), str(src), "--cc", "fixed", "--rate", "8M", "--timeout", "20", *sealed
    )
    recv.communicate(timeout=30)
    time.sleep(0.3)
    packets = sniffer.stop()
    wrpcap(str(tmp_path / f"{transport}-{'sealed' if key else 'clear'}.pcap"), packets)
    assert send.returncode == 0 and recv.returncode == 0, send.stderr
    assert out.read_bytes() == src.read_bytes()
    assert len(packets) > (500 if transport == "udp" else 20), "the capture missed most of the transfer"
    return b"".join(raw(p) for p in packets)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_capture_of_a_sealed_transfer_holds_no_content(
    procs: Procs, tmp_path: Path, port: int, transport: str
) -> None:
    clear = _capture(procs, tmp_path, port, None, transport)
    assert MARKER in clear  # the capture works: in clear the content is on the wire
    sealed = _capture(procs, tmp_path, port, key_file(tmp_path / "k"), transport)
    assert MARKER not in sealed and MARKER[:12] not in sealed


class Relay(threading.Thread):
    """An on-path attacker between a sender and a receiver on loopback. Towards the receiver
    it flips a bit of one datagram in 50, truncates one in 100, replays an earlier one in 50
    (and, with ``old``, datagrams recorded from an older session, as they were and with this
    session's id written in) and every 300 datagrams injects a forged PROBE (FINAL), CLOSE and
    ABORT in clear; towards the sender the same, and every 10 of its datagrams a forged STATUS,
    NAK, DONE (OK) and ABORT.
    Bounded: it stops after ``limit`` seconds."""

    def __init__(self, to_port: int, seed: int, old: list[bytes] | None = None, limit: float = 40) -> None:
        super().__init__(daemon=True)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", to_port))
        self.rng = random.Random(seed)
        self.old = old or []
        self.limit = limit
        self.recorded: list[bytes] = []
        self.sender: tuple[str, int] | None = None
        self.session = 0
        self.stop = threading.Event()
        self.tampered = 0

    def _mangle(self, d: bytes, seen: list[bytes]) -> list[bytes]:
        rng, out = self.rng, [d]
        x = rng.random()
        if x < 0.02 and len(d) > 16:
            b = bytearray(d)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            out = [bytes(b)]
        elif x < 0.03 and len(d) > 17:
            out = [d[: rng.randrange(1, len(d))]]
        elif x < 0.05 and seen:
            out.append(rng.choice(seen))
        self.tampered += out != [d]
        return out

    def _forged_to_receiver(self) -> list[bytes]:
        sid = self.session
        out = [
            wire.encode_probe(wire.Probe(sid, 10, 1, 1000, True, 5, b"\x01" * 32)),
            wire.encode_close(wire.Close(sid)),
            wire.encode_abort(wire.Abort(sid, wire.AbortCode.CANCELLED, "forged")),
            wire.encode_data(wire.Data(sid, 3, b"forged" * 100)),
        ]
        for d in self.rng.sample(self.old, min(4, len(self.old))):  # the older session's
            out.append(d)
            out.append(d[:8] + struct.pack("!Q", sid) + d[16:])  # ... given this session's id
        return out

    def _forged_to_sender(self) -> list[bytes]:
        sid = self.session
        return [
            wire.encode_status(wire.Status(sid, 10**6, 10**6, 10**6, 10**7, 1, 1, 1)),
            wire.encode_naks(sid, [(0, 500)], 1)[0][0],
            wire.encode_done(wire.Done(sid, wire.Verdict.OK, 5, b"\x02" * 32)),
            wire.encode_abort(wire.Abort(sid, wire.AbortCode.CANCELLED, "forged")),
        ]

    def run(self) -> None:
        try:
            self._relay()
        finally:
            self.front.close()
            self.back.close()

    def _relay(self) -> None:
        end = time.monotonic() + self.limit
        to_r: list[bytes] = []
        to_s: list[bytes] = []
        count = sid = 0
        while not self.stop.is_set() and time.monotonic() < end:
            ready, _w, _x = select.select([self.front, self.back], [], [], 0.05)
            for s in ready:
                try:
                    d, addr = s.recvfrom(70000)
                    count += 1
                    if s is self.front:
                        self.sender = addr
                        if d[1] == wire.MsgType.HELLO:
                            sid = int.from_bytes(d[8:16], "big")
                        elif d[1] == wire.MsgType.DATA:
                            self.session = sid  # (forgeries start after the handshake: §17 rule 4)
                        self.recorded.append(d)
                        for x in self._mangle(d, to_r[-500:]):
                            self.back.send(x)
                        to_r.append(d)
                        if self.session and count % 300 == 0:
                            for x in self._forged_to_receiver():
                                self.back.send(x)
                    elif self.sender is not None:
                        for x in self._mangle(d, to_s[-50:]):
                            self.front.sendto(x, self.sender)
                        to_s.append(d)
                        if self.session and len(to_s) % 10 == 1:
                            for x in self._forged_to_sender():
                                self.front.sendto(x, self.sender)
                except OSError:  # (a side that has ended: its port refuses)
                    continue


def _through_relay(
    procs: Procs,
    tmp_path: Path,
    port: int,
    key: str,
    data: bytes,
    seed: int,
    old: list[bytes] | None,
    name: str,
) -> tuple[int, int, bytes | None, Relay, dict, dict]:
    src = tmp_path / f"{name}.in"
    src.write_bytes(data)
    out = tmp_path / f"{name}.out"
    rj, sj = tmp_path / f"{name}.r.json", tmp_path / f"{name}.s.json"
    relay = Relay(port, seed, old)
    relay.start()
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", "-o", str(out), "--timeout", "15", "--key", key,
        "--stats-json", str(rj),
    )  # fmt: skip
    wait_listening(port)
    send = procs.run(
        "send", "127.0.0.1", str(relay.port), str(src), "--key", key, "--cc", "fixed", "--rate", "200M",
        "--timeout", "15", "--stats-json", str(sj), "--transport", "udp",
    )  # fmt: skip
    recv.communicate(timeout=30)
    relay.stop.set()
    relay.join(5)
    got = out.read_bytes() if out.exists() else None
    return send.returncode, recv.returncode, got, relay, last_json(str(sj)), last_json(str(rj))


def test_an_on_path_attacker_never_gets_a_wrong_output_past_exit_0(
    procs: Procs, tmp_path: Path, port: int
) -> None:
    key = key_file(tmp_path / "k")
    rng = random.Random(9)
    first = rng.randbytes(3 << 20)
    s1, r1, got1, relay1, _ss, _rs = _through_relay(procs, tmp_path, port, key, first, 1, None, "old")
    assert (s1 == 0) == (r1 == 0) and (s1 != 0 or got1 == first)
    data = rng.randbytes(6 << 20)
    sc, rc, got, relay, sstats, rstats = _through_relay(
        procs, tmp_path, port, key, data, 2, relay1.recorded, "new"
    )
    assert relay.tampered > 100
    assert (sc == 0) == (rc == 0), (sc, rc)  # the two sides never disagree
    if sc == 0:
        assert got == data  # exit 0 only with the content intact
    else:
        assert got is None  # a failure keeps nothing (no --keep-partial)
    # the forged, altered, replayed and older-session datagrams were counted and dropped
    assert rstats["unauthenticated"] > 50 and sstats["unauthenticated"] > 10
    assert sc == 0, "the transfer should survive this much tampering"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_key_mismatches_and_bad_key_files(procs: Procs, tmp_path: Path, port: int, transport: str) -> None:
    k1, k2 = key_file(tmp_path / "k1"), key_file(tmp_path / "k2")
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(100_000))
    out = tmp_path / "out.bin"
    for rkey, skey, why in [
        (k1, k2, "the sender's key is not this receiver's key"),
        (k1, None, "this receiver requires a key (--key) and the sender has none"),
        (None, k1, "the sender uses a key (--key) and this receiver has none"),
    ]:
        recv = procs.start(
            "recv", str(port), "--bind", "127.0.0.1", "-o", str(out), "--timeout", "10",
            "--transport", transport, *(["--key", rkey] if rkey else []),
        )  # fmt: skip
        (wait_listening_tcp if transport == "tcp" else wait_listening)(port)
        send = procs.run(
            "send", "127.0.0.1", str(port), str(src), "--timeout", "10", "--transport", transport,
            *(["--key", skey] if skey else []),
        )  # fmt: skip
        _o, rerr = recv.communicate(timeout=20)
        assert send.returncode == 4 and recv.returncode == 4, (send.stderr, rerr)
        assert why in send.stderr.decode() and why in rerr.decode()
        assert not out.exists() and not Path(str(out) + ".alf-partial").exists()
    os.chmod(k1, 0o644)
    bad = procs.run("send", "127.0.0.1", str(port), str(src), "--key", k1)
    assert bad.returncode == 2 and b"open to others (mode 0644): run chmod 600" in bad.stderr
    bad = procs.run("recv", str(port), "-o", str(out), "--key", str(tmp_path / "none"))
    assert bad.returncode == 2 and b"cannot read the key file" in bad.stderr
    (tmp_path / "junk").write_text("hello")
    os.chmod(tmp_path / "junk", 0o600)
    env = dict(os.environ, ALF_KEY_FILE=str(tmp_path / "junk"))
    bad = procs.run("send", "127.0.0.1", str(port), str(src), env=env)
    assert bad.returncode == 2 and b"not an alf key" in bad.stderr


def test_keygen_writes_a_private_key(procs: Procs, tmp_path: Path) -> None:
    path = tmp_path / "made.key"
    with open(path, "wb") as f:  # as `alf keygen > made.key` with umask 022
        os.chmod(path, 0o644)
        done = procs.run("keygen", stdout=f)
    assert done.returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(seal.read_key_file(str(path))) == 32
    again = procs.run("keygen", stdout=-1)
    assert again.stdout.decode().strip() != path.read_text().strip()  # fresh each time


@pytest.mark.parametrize("pipe", [False, True])
def test_sealed_loopback_with_loss(procs: Procs, tmp_path: Path, port: int, pipe: bool) -> None:
    """UDP with 3% of datagrams dropped at the receiver, a file and a pipe: intact."""
    key = key_file(tmp_path / "k")
    data = os.urandom(8 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    out = tmp_path / "out.bin"
    rj = tmp_path / "r.json"
    sink = open(out, "wb")  # noqa: SIM115 (the pipe receiver's stdout, closed below)
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", *(["-o", str(out), "--force"] if not pipe else []),
        "--timeout", "20", "--key", key, "--drop", "0.03", "--stats-json", str(rj), stdout=sink,
    )  # fmt: skip
    wait_listening(port)
    args = ["send", "127.0.0.1", str(port), "-" if pipe else str(src), "--key", key, "--timeout", "20"]
    with open(src, "rb") as f:
        send = procs.run(*args, stdin=f)
    _o, err = recv.communicate(timeout=30)
    sink.close()
    assert send.returncode == 0 and recv.returncode == 0, err
    assert out.read_bytes() == data
    assert b"verified (xxh3-128); encrypted (--key)" in err  # the summary says so
    assert b"; encrypted (--key)" in send.stderr
    stats = last_json(str(rj))
    assert stats["sealed"] is True
    assert stats["dropped_injected"] > 100 and stats["unauthenticated"] == 0
    assert stats["datapath"] == "gro"


@pytest.mark.parametrize("pipe", [False, True])
def test_sealed_tcp_with_connection_resets(procs: Procs, tmp_path: Path, port: int, pipe: bool) -> None:
    """The TCP transport sealed: one connection reset every 2 MiB (--chaos), its runs resent
    on the others under new packet numbers; intact, and nothing failed to open."""
    key = key_file(tmp_path / "k")
    data = os.urandom(12 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    out = tmp_path / "out.bin"
    rj, sj = tmp_path / "r.json", tmp_path / "s.json"
    sink = open(out, "wb")  # noqa: SIM115 (the pipe receiver's stdout, closed below)
    recv = procs.start(
        "recv", str(port), "--bind", "127.0.0.1", *(["-o", str(out), "--force"] if not pipe else []),
        "--timeout", "20", "--key", key, "--transport", "tcp", "--stats-json", str(rj), stdout=sink,
    )  # fmt: skip
    wait_listening_tcp(port)
    args = ["send", "127.0.0.1", str(port), "-" if pipe else str(src), "--key", key, "--timeout", "20"]
    with open(src, "rb") as f:
        send = procs.run(*args, "--transport", "tcp", "--chaos", "2M", "--stats-json", str(sj), stdin=f)
    _o, err = recv.communicate(timeout=30)
    sink.close()
    assert send.returncode == 0 and recv.returncode == 0, (send.stderr, err)
    assert out.read_bytes() == data
    s, r = last_json(str(sj)), last_json(str(rj))
    assert s["chaos_resets"] >= 2 and s["bytes_resent"] > 0
    assert s["unauthenticated"] == 0 and r["unauthenticated"] == 0


def test_keygen_file_is_made_private_and_never_overwritten(procs: Procs, tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    made = procs.run("keygen", str(path))
    assert made.returncode == 0 and path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    again = procs.run("keygen", str(path))
    assert again.returncode == 6 and b"File exists" in again.stderr and path.read_text() == first
    env = dict(os.environ, ALF_KEY_FILE="")
    empty = procs.run("send", "127.0.0.1", "9", str(path), env=env)
    assert empty.returncode == 2 and b"ALF_KEY_FILE is set but empty" in empty.stderr
