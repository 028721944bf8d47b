"""UDP driver: sockets, the monotonic clock and the loop that pumps a session.

This is the only place (with the CLI) that touches sockets and time. Where Linux offers UDP
GSO and GRO it moves a whole run of datagrams per system call: one ``sendmsg`` with a
header/payload scatter list and ``UDP_SEGMENT`` (each datagram still leaves as its own
MTU-sized packet with its own header), and one ``recvmsg_into`` that returns several coalesced
datagrams with their segment size. Elsewhere, or with ``gso=False``, it makes one call per
datagram. The smart batcher decides when a partial batch goes. Every loop is bounded by the
session's own deadlines and timeouts.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from alf import wire
from alf.batching import SmartBatcher
from alf.errors import ExitCode, Outcome
from alf.io.common import DriverError, Hooks, drain
from alf.session import DataBatch, RecvSession, SendSession

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # the kernel takes 64 (128 since 6.x); 64 KiB per call bounds it anyway
GSO_MAX_BYTES = 65000
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
PKTINFO_CMSG_SPACE = socket.CMSG_SPACE(20)  # in6_pktinfo (in_pktinfo is 12 bytes)
SOCKET_BUFFER = 32 << 20
# Linux's asm-generic/socket.h; Python's socket module does not name them, and a getattr with a
# None default made every earlier run fall back to SO_RCVBUF, capped at net.core.rmem_max.
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if sys.platform.startswith("linux") else None)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
SO_MEMINFO = 55  # Linux: u32[SK_MEMINFO_VARS] of the socket's memory; index 8 counts its drops
SK_MEMINFO_DROPS = 8
IP_MTU = 14  # Linux: the MTU of a connected socket's route (linux/in.h), IPv4
IPV6_MTU = 24  # the same for IPv6 (linux/in6.h)
MIN_FITTED_ADU = 512  # below this a fitted ADU costs more in headers than fragments would
SIOCGSTAMPNS = 0x8907  # Linux: the kernel's receive time (CLOCK_REALTIME) of the last datagram read
TIMESPEC = struct.Struct("@qq")
_PROBE = wire.MsgType.PROBE
_TIMED = (wire.MsgType.STATUS, wire.MsgType.ACCEPT)  # carry an echo: the sender's RTT samples
RECV_SLOTS = 64
SLOT_SIZE = 65536
SEND_BUDGET_ADUS = 512  # per loop turn, so incoming feedback is read often
SEND_RETRY_LIMIT = 200  # EAGAIN retries (x 5 ms) before a datagram is given up as lost


class Via(NamedTuple):
    """A peer as the receiver knows it when it listens on every address: its address, and
    the local address its datagrams came to (packed, as IP_PKTINFO/IPV6_PKTINFO give it).
    Answers leave from that local address, so a sender whose socket is connected to it hears
    them (a host with two addresses answered from its first, and a sender that named the
    second never heard back), and two paths to two addresses of the receiver stay apart."""

    peer: Any
    local: bytes


def _pktinfo(sock: socket.socket) -> tuple[int, int] | None:
    """Turn on the destination-address stamp of a socket bound to every address; the level and
    type of its control message, or None (bound to one address: answers leave from it)."""
    try:
        host = sock.getsockname()[0]
        if sock.family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)  # IPv4 too, as ::ffff:a.b.c.d
            return socket.IPPROTO_IPV6, IPV6_PKTINFO
        if sock.family == socket.AF_INET and host == "0.0.0.0":
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            return socket.IPPROTO_IP, IP_PKTINFO
    except OSError:
        pass
    return None


def _local_of(ancillary: list[tuple[int, int, bytes]], info: tuple[int, int]) -> bytes | None:
    """The local address a datagram came to. For IPv4 sent to a group (§15: the header's
    destination is 224.0.0.0/4) it is the address of the interface it came in on
    (``ipi_spec_dst``): answers cannot leave from a group address, and the sender's DATA to
    the group and its unicast HELLO must look like one peer."""
    for level, kind, data in ancillary:
        if (level, kind) == info:
            if level == socket.IPPROTO_IPV6:
                return bytes(data[:16])
            dst = bytes(data[8:12])
            return bytes(data[4:8]) if 224 <= dst[0] <= 239 else dst
    return None


def _source_cmsg(local: bytes) -> list[tuple[int, int, bytes]]:
    """The control message that makes a datagram leave from ``local`` (any interface)."""
    if len(local) == 16:
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, local + bytes(4))]
    return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + local + bytes(4))]


def stamp_arrivals(sock: socket.socket) -> tuple[int, int] | None:
    """Have a socket bound to every address note where each datagram came to, before the
    first one arrives (that one would carry no note); what ``peek_datagram`` then reads
    (None: bound to one address, answers leave from it)."""
    return _pktinfo(sock)


def peek_datagram(
    sock: socket.socket, size: int, info: tuple[int, int] | None
) -> tuple[bytes, Any, list[tuple[int, int, bytes]]]:
    """The next datagram's first ``size`` bytes, left in the socket; its sender; and the
    control messages that make an answer leave from the address it came to (none: ``info``,
    from ``stamp_arrivals``, is None, or the datagram carries no note)."""
    data, ancillary, _flags, addr = sock.recvmsg(size, PKTINFO_CMSG_SPACE if info else 0, socket.MSG_PEEK)
    local = _local_of(ancillary, info) if info else None
    return data, addr, [] if local is None else _source_cmsg(local)


class GsoRefused(Exception):
    """The kernel refused a UDP_SEGMENT send (EIO: the route's device has no checksum offload;
    EINVAL/EOPNOTSUPP/EMSGSIZE: segmentation is not possible there). The driver then falls back
    to one datagram per call for the rest of the session."""


GSO_REFUSALS = (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.EMSGSIZE)
# What a connected UDP socket reports once, on its next call, when an ICMP message came back
# about an earlier datagram (Linux's icmp_err_convert): "fragmentation needed" (EMSGSIZE, a
# smaller MTU further along the path, which the kernel now knows) and a router's
# "unreachable". Neither is the peer's answer, so the transfer goes on: what was dropped is
# repaired, and a peer that stays silent ends it after --timeout. ECONNREFUSED (the peer's
# port is closed) is handled on its own.
ICMP_REPORTS = (errno.EMSGSIZE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENONET)


def gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel takes UDP_SEGMENT on this socket (probed without sending)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError:
        return False


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def route_mtu(sock: socket.socket) -> int | None:
    """The MTU towards a connected socket's peer: its route's device MTU, or a smaller path MTU
    the kernel has learnt. None where the system does not say."""
    v6 = sock.family == socket.AF_INET6
    level, name = (socket.IPPROTO_IPV6, IPV6_MTU) if v6 else (socket.IPPROTO_IP, IP_MTU)
    try:
        return int(sock.getsockopt(level, name))
    except OSError:
        return None


def fitting_adu_size(mtu: int, family: socket.AddressFamily, overhead: int = 0) -> int:
    """The largest ADU whose DATA datagram (``overhead`` more when sealed, §17) fits an
    ``mtu``-byte packet unfragmented."""
    return mtu - (40 if family == socket.AF_INET6 else 20) - 8 - wire.DATA_HEADER_SIZE - overhead


def gso_batch_limit(datagram_size: int) -> int:
    return max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // datagram_size))


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise DriverError(f"cannot resolve {host}: {e.strerror}") from None
    family, _t, _p, _c, addr = infos[0]
    return family, addr  # type: ignore[return-value]


def _tune(sock: socket.socket) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except PermissionError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            except OSError:
                pass
    sock.setblocking(False)


def read_buffer_bytes(sock: socket.socket) -> int:
    """DATA bytes the socket surely holds unread. Linux reports twice the size set (the
    doubling pays for its bookkeeping); measured on loopback it held 0.98x the reported size
    of GRO-coalesced datagrams and 0.63x of single ones. Half the reported size fits both, with
    room left for repairs and control traffic."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped at this socket (its buffer was full), or None where the
    system does not say. One getsockopt, no per-datagram cost."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(info) < 4 * (SK_MEMINFO_DROPS + 1):
        return None
    return int.from_bytes(info[4 * SK_MEMINFO_DROPS : 4 * SK_MEMINFO_DROPS + 4], sys.byteorder)


def arrival_time(sock: socket.socket, now: float) -> float:
    """When the kernel received the datagram just read, on the monotonic clock (``now`` was read
    right after it): earlier than ``now`` by the time it waited in our socket buffer. That wait
    is the receiver's own queue, which the flow window bounds; kept out of a PROBE's echo it
    is kept out of the sender's RTT samples, where rate control took it for a path's queue. The
    stamp is taken after the path, and the monotonic clock is read after the real-time one, so
    a sample can still only err high. ``now`` where the system does not say (the first call
    turns the stamps on)."""
    try:
        sec, nsec = TIMESPEC.unpack(fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, bytes(TIMESPEC.size)))
    except OSError:
        return now
    held = time.time() - sec - nsec * 1e-9
    arrived = time.monotonic() - held
    return arrived if now - 1.0 < arrived <= now else now


def sender_socket(host: str, port: int, bind: str | None = None, device: str | None = None) -> socket.socket:
    """A socket connected to ``host`` ``port``, from the local address ``bind`` and the
    interface ``device`` if given (a path's local side)."""
    family, addr = resolve(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    _tune(sock)
    if device is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        except OSError as e:
            sock.close()
            raise DriverError(f"cannot use the interface {device}: {e.strerror}") from None
    try:
        if bind is not None:
            sock.bind((bind, 0))
        sock.connect(addr)
    except OSError as e:
        sock.close()
        raise DriverError(f"cannot reach {host} port {port}: {e.strerror}") from None
    return sock


IP_MULTICAST_ALL = 49  # Linux: 0 = a socket gets only the groups it joined itself


def is_multicast(host: str) -> bool:
    """``host`` is an IPv4 or IPv6 multicast address (224.0.0.0/4, ff00::/8)."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_multicast
    except ValueError:
        return False


def _ifindex(interface: str | None) -> int:
    if interface is None:
        return 0
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise DriverError(f"no interface named {interface}") from None


def group_sender_socket(
    group: str, port: int, interface: str | None = None, ttl: int = 1, bind: str | None = None
) -> tuple[socket.socket, tuple[str, int], int | None]:
    """A socket that sends to the IPv4 ``group`` (protocol §15) out of ``interface`` with
    ``ttl``, and hears the receivers' unicast answers: not connected (a socket connected to
    the group would drop them). It is bound to the address the kernel picks for the group's
    route, so the group's DATA and the unicast HELLOs leave from one address (the receivers
    take only what comes from the address they were bound to). Also the route's MTU."""
    family, addr = resolve(group, port)
    if family != socket.AF_INET:
        raise DriverError(f"{group}: only IPv4 groups are supported")
    index = _ifindex(interface)
    mreqn = struct.pack("4s4si", bytes(4), bytes(4), index)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (probe, sock):
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        if bind is not None:
            probe.bind((bind, 0))
        probe.connect(addr)
        local = probe.getsockname()[0]
        mtu = route_mtu(probe)
        sock.bind((local, 0))
    except OSError as e:
        sock.close()
        raise DriverError(f"cannot send to the group {group} port {port}: {e.strerror}") from None
    finally:
        probe.close()
    _tune(sock)
    return sock, (str(addr[0]), int(addr[1])), mtu


def join_group(sock: socket.socket, group: str, interface: str | None = None) -> None:
    """Make the receiver's socket a member of the IPv4 ``group`` on ``interface`` (or the
    interface of the group's route), and of no group it did not join itself."""
    try:
        packed = socket.inet_aton(group)
    except OSError:
        raise DriverError(f"{group} is not an IPv4 group address") from None
    mreqn = struct.pack("4s4si", packed, bytes(4), _ifindex(interface))
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    except OSError as e:
        raise DriverError(f"cannot join the group {group}: {e.strerror}") from None


def _any_ipv4(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as e:
        sock.close()
        raise DriverError(f"cannot listen on port {port}: {e.strerror}") from None
    return sock


def receiver_socket(bind: str | None, port: int, family: socket.AddressFamily | None = None) -> socket.socket:
    """Bind the receiver; with no address, both IPv6 and IPv4 where the system allows (or
    ``family`` alone, for a group)."""
    if bind is None and family == socket.AF_INET:
        sock = _any_ipv4(port)
    elif bind is None:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock = _any_ipv4(port)
    else:
        family, addr = resolve(bind, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise DriverError(f"cannot listen on {bind} port {port}: {e.strerror}") from None
    _tune(sock)
    return sock


def _send(
    sock: socket.socket,
    buffers: list[Any],
    addr: Any = None,
    ancillary: list[Any] | None = None,
    failed: Callable[[OSError], None] | None = None,
) -> bool:
    """Send one datagram (or, with a UDP_SEGMENT ``ancillary``, a run of them cut by the kernel);
    False when it had to be given up (it then counts as lost). Any other error of the local
    stack (EPERM from a firewall rule, EACCES from a prohibit route, EINVAL from a blackhole
    one) goes to ``failed`` and is a lost datagram too: the peer's silence, not our error,
    decides when the path is dead (--timeout)."""
    anc = ancillary or []
    if isinstance(addr, Via):
        anc = anc + _source_cmsg(addr.local)
        addr = addr.peer
    for _ in range(SEND_RETRY_LIMIT):
        try:
            if addr is None:
                sock.sendmsg(buffers, anc)
            else:
                sock.sendmsg(buffers, anc, 0, addr)
            return True
        except BlockingIOError:
            select.select([], [sock], [], 0.005)
        except ConnectionRefusedError:
            return False  # an ICMP error from an earlier datagram: the peer's port is closed
        except OSError as e:
            if anc and e.errno in GSO_REFUSALS:
                raise GsoRefused(e.strerror or str(e)) from None
            if e.errno == errno.ENOBUFS or e.errno in ICMP_REPORTS:
                return False
            if failed is None:
                raise
            failed(e)
            return False
    return False


class _PathSocket:
    """One path's socket and how DATA goes on it (GSO, where the route takes it); ``dest``: the
    group it sends DATA to (an unconnected socket, §15), None: the connected peer."""

    def __init__(self, sock: socket.socket, segment: int, gso: bool, dest: Any = None) -> None:
        self.sock = sock
        self.dest = dest
        self.gso = gso and gso_supported(sock)
        self.per_call = gso_batch_limit(segment) if self.gso else 1  # datagrams per system call
        self.datapath = "gso" if self.gso else "per-datagram"


def run_sender(
    session: SendSession,
    socks: socket.socket | Sequence[socket.socket],
    hooks: Hooks,
    gso: bool = True,
    group: tuple[str, int] | None = None,
) -> Outcome:
    """Drive the sender over one connected socket per path (``socks[p]`` carries path ``p``),
    or over one unconnected socket that sends to ``group`` (§15: the answers come from each
    receiver's own address, and control goes where the core says)."""
    sender = session.sender
    clock = time.monotonic
    perf = time.perf_counter
    buf = bytearray(SLOT_SIZE)
    view = memoryview(buf)
    segment = session.segment  # header, ADU (and sealed, §17, packet number and tag)
    paths = [
        _PathSocket(s, segment, gso, group) for s in ([socks] if isinstance(socks, socket.socket) else socks)
    ]
    watch: list[Any] = [p.sock for p in paths] + ([hooks.wake_fd] if hooks.wake_fd is not None else [])
    limit = session.max_run  # datagrams per batch: several GSO calls from one read and one pack
    batcher = SmartBatcher(limit)
    session.datapath = "/".join(dict.fromkeys(p.datapath for p in paths))
    gso_cmsg = [(SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))]
    for p in paths:
        arrival_time(p.sock, clock())  # turns the kernel's receive stamps on

    def fail(e: OSError) -> None:
        sender.on_send_error(e.strerror or str(e))

    def read(k: int, sock: socket.socket) -> None:
        for _ in range(RECV_SLOTS):
            try:
                if group is None:
                    n, addr = sock.recv_into(buf), None
                else:
                    n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                sender.on_refused(clock())
                continue
            except OSError as e:
                if e.errno not in ICMP_REPORTS:
                    raise
                continue
            now = clock()  # read after the datagram: an RTT sample may err high, never low
            # feedback's RTT sample ends when it reached the host, not after it waited in our
            # socket while this loop was sending (or not scheduled: three busy processes on
            # two cores made loopback samples swing, and rate control cut)
            arrived = arrival_time(sock, now) if n > 1 and buf[1] in _TIMED else None
            session.on_datagram(view[:n], now, arrived, k, addr)

    def send_batch(batch: DataBatch) -> None:
        on = paths[batch.path]
        sock, dest = on.sock, on.dest
        n = len(batch.headers)
        if on.gso and n > 1:
            iov = batch.iov()
            for a in range(0, n, on.per_call):
                b = min(a + on.per_call, n)
                try:
                    sent = _send(sock, iov[2 * a : 2 * b], dest, gso_cmsg, fail)
                except GsoRefused as e:  # the rest of this batch one by one; and if that works,
                    went = False  # all after too: the kernel will not segment on this route
                    for k in range(a, n):
                        went = _send(sock, [batch.headers[k], batch.payloads[k]], dest, None, fail) or went
                    if went:  # (a blackhole route says EINVAL to both: then GSO is not to blame)
                        on.gso, on.per_call = False, 1
                        on.datapath = f"per-datagram (GSO refused: {e})"
                        session.datapath = "/".join(dict.fromkeys(p.datapath for p in paths))
                    return
                if not sent:
                    for k in range(a, b):  # given up as a whole (ENOBUFS, an ICMP error): one by one
                        _send(sock, [batch.headers[k], batch.payloads[k]], dest, None, fail)
        else:
            for header, payload in zip(batch.headers, batch.payloads, strict=True):
                _send(sock, [header, payload], dest, None, fail)

    # Sockets to read this turn: after a select, those it found readable (a read of an empty
    # socket costs a system call and an exception, on every path, every turn); after a turn
    # that did not wait, all.
    socks_of = {p.sock: k for k, p in enumerate(paths)}
    readable: Sequence[Any] = [p.sock for p in paths]
    while True:
        now = clock()
        if hooks.cancelled():
            sender.cancel(wire.AbortCode.CANCELLED, "the sender was interrupted", ExitCode.CANCELLED)
        for sock in readable:
            k = socks_of.get(sock)
            if k is not None:
                read(k, sock)
        now = clock()
        for c in session.control(now):  # a connected path's c.addr is its peer; a group's, named
            _send(paths[c.path].sock, [c.data], c.addr if group else None, None, fail)
        budget = SEND_BUDGET_ADUS
        while budget > 0:
            ready = session.ready(now)
            batcher.max_batch = min(limit, sender.burst_adus)  # the rate, and so the bucket, moves
            batcher.observe_ready(sender.sent_count + ready, now)
            take = batcher.take(ready, now)
            if not take:
                break
            batch = session.next_batch(now, min(take, limit))
            if batch is None:
                break
            t0 = perf()
            send_batch(batch)
            batcher.observe_send((perf() - t0) * paths[batch.path].per_call / batch.count)  # per call
            budget -= batch.count
            now = clock()
        for c in session.control(now):  # a FINAL PROBE may be due right after the last run
            _send(paths[c.path].sock, [c.data], c.addr if group else None, None, fail)
        hooks.tick(now)
        if hooks.forward(sender.take_events()):
            break
        if budget <= 0:
            hooks.turn(now, 0.0)
            readable = watch
        else:
            deadline = sender.next_deadline(now, limit if batcher.batching else 1)
            flush_at = batcher.deadline()
            if flush_at is not None:
                deadline = min(deadline, flush_at)
            wait = max(0.0, deadline - clock())
            hooks.turn(now, wait)
            readable, _w, _x = select.select(watch, [], [], wait)
            if hooks.wake_fd is not None and hooks.wake_fd in readable:
                drain(hooks.wake_fd)
    hooks.turn(clock(), 0.0)  # a stall in the last turn
    outcome = sender.outcome
    assert outcome is not None
    return outcome


OUTPUT_WAIT = 0.01  # seconds between looks at a writer that drains to a slow consumer


def run_receiver(session: RecvSession, sock: socket.socket, hooks: Hooks, gro: bool = True) -> Outcome:
    receiver = session.receiver
    clock = time.monotonic
    store = bytearray(RECV_SLOTS * SLOT_SIZE)
    slots = [memoryview(store)[k * SLOT_SIZE : (k + 1) * SLOT_SIZE] for k in range(RECV_SLOTS)]
    cancel_sent = False
    watch = [sock] + ([hooks.wake_fd] if hooks.wake_fd is not None else [])
    gro = gro and enable_gro(sock)
    session.datapath = "gro" if gro else "per-datagram"
    info = _pktinfo(sock)
    cmsg_space = (GRO_CMSG_SPACE if gro else 0) + (PKTINFO_CMSG_SPACE if info else 0)
    receiver.set_read_buffer(read_buffer_bytes(sock))
    drops = socket_drops(sock)
    drops_base = drops or 0  # dropped before the session (another sender's datagrams): not ours
    arrival_time(sock, clock())  # turns the kernel's receive stamps on

    def fail(e: OSError) -> None:
        receiver.on_send_error(e.strerror or str(e))

    while True:
        now = clock()
        if hooks.cancelled() and not cancel_sent:
            receiver.cancel("the receiver was interrupted")
            cancel_sent = True
        items: list[tuple[memoryview, Any]] = []
        calls = 0
        for slot_no, slot in enumerate(slots):
            try:
                if cmsg_space:
                    n, ancillary, _flags, addr = sock.recvmsg_into([slot], cmsg_space)
                    if info is not None:
                        local = _local_of(ancillary, info)
                        if local is not None:
                            addr = Via(addr, local)
                else:
                    n, addr = sock.recvfrom_into(slot)
                    ancillary = None
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue
            # The time after the read is a bound on the arrival: a PROBE read late in a 4 MiB
            # turn, stamped with the turn's start, made the echo's hold time too long and the
            # sender's RTT sample too short (14 ms on a 20 ms path; the minimum-RTT filter kept
            # it and the controller drained to its floor).
            now = clock()
            calls += 1
            segment = 0
            if ancillary:
                for level, kind, data in ancillary:
                    if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
                        segment = int.from_bytes(data[:2] if len(data) == 2 else data[:4], sys.byteorder)
            if 0 < segment < n:
                if items:  # keep arrival order
                    session.on_datagrams(items, now)
                    items = []
                session.on_coalesced(slot[:n], segment, addr, now, slot_no)
            elif n > 1 and slot[1] == _PROBE:  # its echo's hold time counts from its arrival
                if items:
                    session.on_datagrams(items, now)
                    items = []
                session.on_datagrams([(slot[:n], addr)], now, arrival_time(sock, now))
            else:
                items.append((slot[:n], addr))
        if items:
            session.on_datagrams(items, now)
        session.flush(now)  # before the slots are reused
        if drops is not None and calls:
            drops = socket_drops(sock)
            if drops is not None:
                receiver.set_socket_drops(drops - drops_base)
        now = clock()  # the STATUS tells how long it held the PROBE's echo: up to the send
        for datagram, addr in session.poll(now):
            if not _send(sock, [datagram], addr, None, fail):
                receiver.stats.control_lost += 1
        hooks.tick(now)
        if hooks.forward(session.take_events()):
            break
        if calls >= RECV_SLOTS:
            hooks.turn(now, 0.0)
        else:
            timeout = max(0.0, receiver.next_deadline(now) - clock())
            # While the writer drains to a slow consumer, look again soon: the verdict is due
            # the moment it is done, not at the sender's next PROBE.
            cap = OUTPUT_WAIT if receiver.needs_verification and session.output_pending else 0.5
            hooks.turn(now, min(timeout, cap))
            ready, _w, _x = select.select(watch, [], [], min(timeout, cap))
            if hooks.wake_fd is not None and hooks.wake_fd in ready:
                drain(hooks.wake_fd)
    hooks.turn(clock(), 0.0)  # a stall in the last turn
    outcome = receiver.outcome
    assert outcome is not None
    return outcome
