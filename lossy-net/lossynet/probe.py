"""Small measuring programs run inside the lab's namespaces (``python -m lossynet.probe ...``).

- ``udp-sink PORT SECONDS [GROUP]``: (joining multicast GROUP) count numbered datagrams until
  SECONDS pass with nothing new after the first; print JSON with the sequence numbers
  received, their send times and a sample of their one-way delays.
- ``udp-blast HOST PORT COUNT RATE_PPS [SIZE]``: send COUNT numbered datagrams (8-byte
  sequence + 8-byte send time), paced; bounded by COUNT.
- ``udp-gso HOST PORT SECONDS SEGMENT SEGMENTS``: for SECONDS, UDP GSO sends of SEGMENTS
  datagrams of SEGMENT bytes each, unpaced (they fill a rate limiter's queue with whole sends).
- ``echo PORT SECONDS`` / ``rtt HOST PORT N INTERVAL``: UDP echo and round-trip samples.
- ``tcp-sink PORT`` / ``tcp-send HOST PORT SECONDS [CC]``: one TCP flow (congestion control CC,
  or the system's default); the sender reports goodput.
- ``tcp-sink-file PORT PATH`` / ``tcp-send-file HOST PORT PATH [CC]``: one TCP connection
  carries a file's content (``sendfile``) into PATH; the sender returns once the sink has read
  everything and closed, so its run time is the transfer's.
Every loop here is bounded in count and time; destinations are the lab's own addresses.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

REC = struct.Struct("!Qd")


def udp_sink(port: int, idle: float, group: str = "") -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind(("0.0.0.0", port))
    if group:
        mreq = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    print("listening", flush=True)
    s.settimeout(60.0)  # the first datagram must come within a minute
    seqs: list[int] = []
    sent: list[float] = []
    delays: list[float] = []
    try:
        while True:
            data = s.recv(65535)
            s.settimeout(idle)
            seq, t = REC.unpack_from(data)
            seqs.append(seq)
            sent.append(t)
            delays.append(time.time() - t)
    except TimeoutError:
        pass
    print(
        json.dumps(
            {
                "received": len(seqs),
                "seqs": seqs,
                "sent": sent,
                "delays": delays[:: max(1, len(delays) // 2000)],
            }
        )
    )


def udp_blast(host: str, port: int, count: int, pps: float, size: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = bytes(max(0, size - REC.size))
    start = time.monotonic()
    for seq in range(count):
        due = start + seq / pps
        while True:
            now = time.monotonic()
            if now >= due:
                break
            if due - now > 0.001:
                time.sleep(due - now - 0.0005)
        try:
            s.sendto(REC.pack(seq, time.time()) + pad, (host, port))
        except OSError:
            pass  # a full queue or a link that is down: counted as lost by the sink
    print(json.dumps({"sent": count, "seconds": time.monotonic() - start}))


def udp_gso(host: str, port: int, seconds: float, segment: int, segments: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_UDP, 103, segment)  # UDP_SEGMENT
    s.connect((host, port))
    s.setblocking(False)
    payload = bytes(segment * segments)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            s.send(payload)
            sent += 1
        except BlockingIOError:
            select.select([], [s], [], 0.01)  # the queue holds the socket's buffer
        except OSError:
            pass  # an ICMP error from the closed port
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}))


def echo(port: int, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("listening", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            data, addr = s.recvfrom(2048)
        except TimeoutError:
            break
        s.sendto(data, addr)


def rtt(host: str, port: int, n: int, interval: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    samples = []
    for seq in range(n):
        t0 = time.monotonic()
        s.sendto(REC.pack(seq, t0), (host, port))
        try:
            while True:
                data = s.recv(2048)
                if REC.unpack_from(data)[0] == seq:
                    samples.append(time.monotonic() - t0)
                    break
        except TimeoutError:
            pass
        time.sleep(interval)
    print(json.dumps({"samples": samples}))


def _accept_one(port: int) -> socket.socket:
    """Listen on ``port`` (inside the lab's namespace), say so, and take one connection."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(60.0)
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(120.0)
    return conn


def tcp_sink(port: int) -> None:
    conn = _accept_one(port)
    total = 0
    while chunk := conn.recv(1 << 20):
        total += len(chunk)
    print(json.dumps({"received": total}))


def _connect(host: str, port: int, cc: str) -> socket.socket:
    """One TCP connection to ``host`` ``port`` with congestion control ``cc`` (the system's if
    empty)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    s.settimeout(30)
    s.connect((host, port))
    return s


def tcp_send(host: str, port: int, seconds: float, cc: str = "") -> None:
    s = _connect(host, port, cc)
    block = bytes(1 << 16)
    sent = 0
    start = time.monotonic()
    samples = []
    next_mark = start + 1.0
    while (now := time.monotonic()) - start < seconds:
        sent += s.send(block)
        if now >= next_mark:
            samples.append(sent)
            next_mark += 1.0
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    s.recv(1)  # wait until the sink has read everything and closed
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {"sent": sent, "seconds": elapsed, "goodput_bps": sent * 8 / elapsed, "per_second": samples}
        )
    )


def tcp_sink_file(port: int, path: str) -> None:
    conn = _accept_one(port)
    total = 0
    buf = memoryview(bytearray(1 << 20))
    with open(path, "wb") as out:
        while n := conn.recv_into(buf):
            out.write(buf[:n])
            total += n
    conn.close()
    print(json.dumps({"received": total}))


def tcp_send_file(host: str, port: int, path: str, cc: str = "") -> None:
    start = time.monotonic()
    s = _connect(host, port, cc)
    s.settimeout(120)
    with open(path, "rb") as f:
        sent = s.sendfile(f)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # wait until the sink has read everything and closed
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": elapsed, "goodput_bps": sent * 8 / elapsed}))


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "udp-sink":
        udp_sink(int(args[0]), float(args[1]), args[2] if len(args) > 2 else "")
    elif cmd == "udp-blast":
        udp_blast(args[0], int(args[1]), int(args[2]), float(args[3]), int(args[4]) if len(args) > 4 else 64)
    elif cmd == "udp-gso":
        udp_gso(args[0], int(args[1]), float(args[2]), int(args[3]), int(args[4]))
    elif cmd == "echo":
        echo(int(args[0]), float(args[1]))
    elif cmd == "rtt":
        rtt(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif cmd == "tcp-sink":
        tcp_sink(int(args[0]))
    elif cmd == "tcp-send":
        tcp_send(args[0], int(args[1]), float(args[2]), args[3] if len(args) > 3 else "")
    elif cmd == "tcp-sink-file":
        tcp_sink_file(int(args[0]), args[1])
    elif cmd == "tcp-send-file":
        tcp_send_file(args[0], int(args[1]), args[2], args[3] if len(args) > 3 else "")
    else:
        raise SystemExit(f"unknown probe {cmd}")


if __name__ == "__main__":
    main()
