"""alf as a library: ``send`` and ``receive``, blocking calls that run one transfer each and
return a ``Result`` (docs/api.md). The command line is a thin layer over these two.

Invariants: ``Result.ok`` (exit code 0) only when the receiver verified the whole content;
the library installs no signal handlers and changes no process-wide state (the CLI tunes the
heap and handles signals through an ``Observer``), so two transfers can run in threads of one
process.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import secrets
import select
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

import cc
from alf import stripe as stripe_policies
from alf import wire
from alf.compress import DEFAULT_LEVEL, Adaptive, Compressor
from alf.content import (
    DecompressingSink,
    EitherSink,
    NotResumable,
    OffsetSink,
    OrderedSink,
    Sink,
    SinkError,
    Source,
)
from alf.errors import ExitCode, Outcome
from alf.events import DataArrived, Event, FallBack, Joined, PeerAborted, Rejected
from alf.fec import FEC_CHOICES, codec
from alf.group import MAX_MEMBERS as MAX_MEMBERS
from alf.group import SLOW_POLICIES, GroupSender
from alf.io.common import DriverError, Hooks, LocalAddressError, Path, check_local_address, parse_path
from alf.io.sink import FdWriter, FileBackend, FileWriter, ThreadedDecompressor
from alf.io.source import CompressedStream, FileSource, StreamSource, pump_compressed, pump_stream
from alf.io.tcp import HelloGate, TcpRecvDriver, TcpSendDriver, listener_socket, take_hello
from alf.io.udp import (
    MIN_FITTED_ADU,
    fitting_adu_size,
    group_sender_socket,
    is_multicast,
    join_group,
    peek_datagram,
    read_buffer_bytes,
    receiver_socket,
    route_mtu,
    run_receiver,
    run_sender,
    sender_socket,
    stamp_arrivals,
)
from alf.progress import human_bytes
from alf.receiver import FLOW_FLOOR, MAX_PATHS, Receiver, ReceiverConfig
from alf.resume import Kept
from alf.sender import DEFAULT_CEILING_BPS, DEFAULT_RATE_BPS, Sender, SenderConfig
from alf.session import Dropper, RecvSession, SendSession
from alf.tcp import TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig, paced_frame_bytes
from alf.units import parse_rate, parse_seconds, parse_size
from alf.verdict import unsupported_reason

AUTO_HELLO_TIMEOUT = 1.5  # transport "auto": UDP gets this long to answer before TCP is tried
DEFAULT_TIMEOUT = 30.0
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 1e6  # seconds: --timeout's range (1e6 s is 11.6 days)
COMPRESS_THREADS = 2  # §19: threads that compress a sender's blocks
SLOW_RATE_BPS = 64e3  # below this a rate is more likely a slip than a wish: a note says so
DIGESTS = {"xxh3": wire.DigestAlg.XXH3_128, "blake3": wire.DigestAlg.BLAKE3, "sha256": wire.DigestAlg.SHA256}
TRANSPORTS = ("auto", "udp", "tcp")
STRIPE_POLICIES = stripe_policies.POLICIES
F_SETPIPE_SZ = 1031  # fcntl.h (Linux)

Stats = dict[str, Any]


class UsageError(ValueError):
    """The arguments are wrong (the CLI's exit status 2); nothing was sent or received."""


@dataclass(frozen=True)
class Result:
    """How a transfer ended: ``ok`` only when the content arrived whole and verified."""

    ok: bool
    exit_code: int  # as the CLI exits (docs/usage.md, "Exit status")
    message: str
    stats: Stats  # the last statistics (docs/usage.md, "Statistics")


class Observer:
    """What a caller can watch and steer while a transfer runs; every method has a default.

    The library calls ``attach`` whenever the statistics change hands (a transport starts),
    ``tick`` from the transfer's loop (often: keep it cheap), ``event`` with what the transfer's
    core says happened (``alf.events``: a sender joined or was turned away, data arrived, the
    output is being verified, the outcome), ``say`` with messages for a person (``detail``
    ones only matter to a verbose caller), ``starting`` just before the loop runs, and
    ``finish`` once with the outcome. ``cancelled`` is polled; ``wake``, if set, is a
    non-blocking pipe (read end, write end) the caller writes to (a signal handler's) to wake
    the loop. The CLI's reporter is one; ``send``/``receive`` build one from ``progress=`` and
    ``cancel=`` otherwise.
    """

    wake: tuple[int, int] | None = None

    def attach(self, stats: Callable[[], Stats]) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def say(self, text: str, detail: bool = False) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def starting(self) -> None:
        pass

    def finish(self, outcome: Outcome) -> None:
        pass


class _Tap:
    """What the library itself needs from one transport's events (falling back to TCP, following
    a sender there), each event handed on to the observer."""

    def __init__(self, obs: Observer) -> None:
        self.obs = obs
        self.fallback: FallBack | None = None  # the UDP sender gave up before data got through
        self.session_id: int | None = None  # the session a sender joined
        self.data = False  # the receiver holds DATA of it
        self.peer_abort: wire.AbortCode | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, FallBack):
            self.fallback = event
        elif isinstance(event, Joined):
            self.session_id = event.session_id
        elif isinstance(event, DataArrived):
            self.data = True
        elif isinstance(event, PeerAborted):
            self.peer_abort = event.code
        self.obs.event(event)


def snapshot(stats: Stats, now: float, start: float) -> Stats:
    """The statistics as callers see them (docs/usage.md, "Statistics"): the cores' moment the
    transfer began becomes ``transfer_s``; ``elapsed_s`` counts from ``start``; ``time`` is
    wall-clock time."""
    s = dict(stats)
    began = s.pop("began", None)
    s["elapsed_s"] = round(now - start, 6)
    s["transfer_s"] = None if began is None else round(now - began, 6)
    s["time"] = round(time.time(), 3)
    return s


class _Callbacks(Observer):
    """``progress=`` gets the statistics every ``interval`` seconds (and once at the end);
    ``cancel=`` (a threading.Event) ends the transfer as an interrupt does."""

    def __init__(
        self, progress: Callable[[Stats], object] | None, cancel: threading.Event | None, interval: float
    ) -> None:
        self.progress, self.cancel, self.interval = progress, cancel, interval
        self.stats: Callable[[], Stats] = dict
        self._next = 0.0
        self.start = time.monotonic()

    def attach(self, stats: Callable[[], Stats]) -> None:
        self.stats = stats

    def tick(self, now: float) -> None:
        if self.progress is not None and now >= self._next:
            self._next = now + self.interval
            self.progress(snapshot(self.stats(), now, self.start))

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def finish(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress(snapshot(self.stats(), time.monotonic(), self.start))


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (``alf recv`` listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no port is free for both UDP and TCP")


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _rate(name: str, value: float | str | None) -> float | None:
    try:
        return None if value is None else parse_rate(value)
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None


def _size(name: str, value: int | str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None


def _byte_count(name: str, value: int | str | None) -> int | None:
    """An exact count of bytes (0 allowed: an offset), or a SIZE such as '512M'."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) or str(value).isdigit():
        count = int(value)
        if count < 0:
            raise UsageError(f"{name}: a count of bytes is not negative, not {value}")
        return count
    return _size(name, value)


def _seconds(name: str, value: float | None) -> float | None:
    try:
        return None if value is None else parse_seconds(value, name, MIN_TIMEOUT, MAX_TIMEOUT)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _window(value: int | str) -> int:
    """A window no larger than half this machine's memory: more cannot be held (a pipe's
    sender holds its window, an in-order receiver too), and the ENOMEM would come mid-way."""
    size = _size("window", value)
    assert size is not None
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return size
    if size > memory // 2:
        raise UsageError(
            f"window: {human_bytes(size)} is more than half of this machine's memory "
            f"({human_bytes(memory)}); at most {human_bytes(memory // 2)}"
        )
    return size


def _wake(observer: Observer) -> tuple[int, int, bool]:
    """The loop's wake-up pipe: the observer's, or one of our own (closed at the end)."""
    if observer.wake is not None:
        return observer.wake[0], observer.wake[1], False
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w, True


def _close_wake(r: int, w: int, own: bool) -> None:
    if own:
        os.close(r)
        os.close(w)


def _open_fifo(path: str, wait: float, cancelled: Callable[[], bool]) -> int:
    """Open a FIFO for reading without blocking in open() (which waits for a writer for ever,
    deaf to --timeout), then wait for its first writer for up to ``wait`` seconds, looking at
    ``cancelled`` as it goes. Returns the descriptor (blocking again), or -1 if no writer came.
    Linux reports a FIFO readable (data, or a writer that came and left) only once a writer
    has opened it, so poll() waits for exactly that."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + wait
    while not poller.poll(100):
        if cancelled() or time.monotonic() >= deadline:
            os.close(fd)
            return -1
    os.set_blocking(fd, True)
    return fd


def widen_pipe(fd: int) -> None:
    """Give a pipe a 1 MiB buffer (or the system's maximum): with the default 64 KiB, reading
    a fast producer costs 4x the system calls (0.75 against 2.85 GB/s measured here)."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(int(f.read()), 1 << 20)
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except (OSError, ValueError):
        pass  # a smaller pipe is slower, not wrong


def _copy_thread(
    read: Callable[[int], bytes | None], write: Callable[[bytes], object], close: Callable[[], None]
) -> None:
    """Copy from ``read`` to ``write`` until EOF in a thread: a file object without a
    descriptor (io.BytesIO) joins a pipe's other end."""

    def run() -> None:
        try:
            while chunk := read(1 << 20):
                write(chunk)
        except OSError:
            pass
        finally:
            close()

    threading.Thread(target=run, name="alf-copy", daemon=True).start()


def _source_fd(source: IO[bytes]) -> tuple[int, bool]:
    """The descriptor to read ``source`` from, and whether it is ours to close (a pipe that a
    thread fills from a file object without a descriptor)."""
    try:
        return source.fileno(), False
    except (AttributeError, OSError, ValueError):
        r, w = os.pipe()
        _copy_thread(source.read, lambda b: os.write(w, b), lambda: os.close(w))
        return r, True


def _output_fd(output: IO[bytes]) -> tuple[int, Callable[[], None]]:
    """A descriptor to write ``output`` through, and what to do once the writer is done."""
    try:
        fd = output.fileno()
        output.flush()  # what the caller wrote through the object goes first
        return fd, lambda: None
    except (AttributeError, OSError, ValueError):
        r, w = os.pipe()
        done = threading.Event()

        def closed() -> None:
            os.close(r)
            done.set()

        def finished() -> None:
            os.close(w)
            done.wait(30)

        _copy_thread(lambda n: os.read(r, n), output.write, closed)
        return w, finished


@dataclass
class _TcpOptions:
    paths: list[Path]
    streams: int
    chaos: int
    rate_bps: float | None  # a rate given: the TCP driver paces at it
    stripe: str = "prefer"  # alf.stripe's policy


def _loopback(host: str) -> bool:
    """Whether ``host`` names this host: every address it resolves to is a loopback one."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    except (OSError, ValueError, UnicodeError):
        return False
    mapped = [getattr(a, "ipv4_mapped", None) for a in addrs]
    return bool(addrs) and all(
        a.is_loopback or (m is not None and m.is_loopback) for a, m in zip(addrs, mapped, strict=True)
    )


def fit_adu(
    sock: socket.socket,
    adu_size: int,
    given: bool,
    say: Callable[[str], None],
    mtu: int | None = None,
    overhead: int = 0,
) -> int:
    """The ADU size for a UDP transfer over ``sock``: the default shrinks to fit the route's MTU
    (a tunnel's 1420, PPPoE's 1492), so DATA is never fragmented and GSO stays possible; a size
    given that does not fit is kept, with a warning. ``mtu``: the route's, if known already
    (an unconnected group socket cannot tell)."""
    mtu = mtu if mtu is not None else route_mtu(sock)
    if mtu is None:
        return adu_size
    fit = fitting_adu_size(mtu, sock.family, overhead)
    if not given:
        return max(MIN_FITTED_ADU, min(adu_size, fit))
    if adu_size > fit:
        say(
            f"warning: --adu-size {adu_size} makes datagrams larger than the route's MTU "
            f"({mtu}): the kernel fragments each one, and GSO is off (--adu-size {fit} fits)"
        )
    return adu_size


def send(
    host: str,
    port: int,
    source: str | IO[bytes] | None = None,
    *,
    transport: str = "auto",
    rate: float | str | None = None,
    cc: str = "adaptive",
    min_rate: float | str = 1e6,
    adu_size: int | None = None,
    checksum: bool = False,
    digest: str = "xxh3",
    window: int | str = 256 << 20,
    if_changed: str = "fail",
    streams: int = 8,
    paths: Sequence[str] = (),
    stripe: str = "prefer",
    chaos: int | str | None = None,
    bind: str | None = None,
    checkphrase: str = "",
    timeout: float | None = None,
    drop: float = 0.0,
    seed: int = 1,
    gso: bool = True,
    progress: Callable[[Stats], object] | None = None,
    progress_interval: float = 0.5,
    cancel: threading.Event | None = None,
    observer: Observer | None = None,
    receivers: int | None = None,
    wait: float | None = None,
    quorum: int | None = None,
    ttl: int = 1,
    interface: str | None = None,
    slow: str = "catch-up",
    fec: str = "auto",
    key: str | bytes | None = None,
    offset: int | str | None = None,
    length: int | str | None = None,
    compress: bool | str = False,
    compress_level: int = DEFAULT_LEVEL,
) -> Result:
    """Send ``source`` (a path, a binary file object, or None / "-" for stdin) to a receiver
    at ``host`` ``port``. A regular file goes as a file (its length known, repairs read from it
    again); anything else as a stream. Options are the CLI's long options (docs/usage.md);
    rates are bits/s (or "800M"), sizes bytes (or "256M"). A multicast ``host`` (224.0.0.0/4)
    sends to the receivers that join that group (docs/usage.md, Multicast): ``receivers``,
    ``wait`` and ``quorum`` say when it starts and what counts as success; ``fec`` "auto"
    repairs a group's file with parity for the receivers that decode it (and sends parity with
    a unicast file's last blocks on a long lossy path), a ratio such as "0.05" sends that share
    of parity with every block (unicast), "off" only resends. ``key``: a key file (or its 32
    bytes): the transfer is sealed (docs/usage.md, Encryption). ``offset``, ``length``: send
    only that byte range of a file; the receiver writes it at the same offset of its output
    (docs/usage.md, Byte ranges). ``compress`` (True or "on"): the input goes as zstd blocks
    of 1 MiB (at ``compress_level``), each sent as it is when it does not compress; "auto":
    compressed while that makes the input go faster, found by trying either way in turn
    (docs/usage.md, Compression)."""
    _choice("transport", transport, TRANSPORTS)
    fec_ratio = _fec_ratio(fec)
    psk = _key(key)
    _choice("cc", cc, _cc_names())
    _choice("digest", digest, list(DIGESTS))
    _choice("if_changed", if_changed, ["fail", "warn"])
    _choice("stripe", stripe, list(STRIPE_POLICIES))
    if not 1 <= port <= 65535:
        raise UsageError(f"port must be 1-65535, not {port}")
    if adu_size is not None and not 1 <= adu_size <= wire.MAX_ADU_SIZE:
        raise UsageError(f"adu_size must be 1-{wire.MAX_ADU_SIZE}")
    if not 0.0 <= drop <= 0.99:
        raise UsageError("drop must be between 0 and 0.99")
    if not 1 <= streams <= 64:
        raise UsageError("streams must be 1-64")
    rate_bps, min_bps = _rate("rate", rate), _rate("min_rate", min_rate)
    window_bytes, chaos_bytes = _window(window), _size("chaos", chaos)
    timeout = _seconds("timeout", timeout)
    assert min_bps is not None
    if transport == "udp" and chaos_bytes:
        raise UsageError("chaos is for transport tcp or auto")
    if transport == "tcp" and checksum:
        raise UsageError("checksum is for UDP (TCP checksums every segment itself)")
    group = _group_options(host, transport, paths, chaos_bytes, receivers, wait, quorum, ttl, interface, slow)
    span = (
        None
        if offset is None and length is None
        else (_byte_count("offset", offset) or 0, _byte_count("length", length))
    )
    if span is not None and group is not None:
        raise UsageError("offset/length: a byte range goes to one receiver, not to a group")
    if compress not in (False, True, None, "off", "on", "auto"):
        raise UsageError(f"compress must be on, auto or off, not {compress!r}")
    auto = compress == "auto"
    compress = compress not in (False, None, "off")
    if compress and (span is not None or group is not None):
        raise UsageError("compress: not with a byte range or a multicast group yet")
    if not isinstance(compress_level, int) or not 1 <= compress_level <= 19:
        raise UsageError(f"compress_level must be 1-19, not {compress_level}")
    if group is not None:
        transport = "udp"
        if fec_ratio is not None:
            raise UsageError("fec: a ratio is for unicast (a group's parity follows what its receivers lack)")
    try:
        tcp_paths = [Path(host, port)] + [parse_path(p, port) for p in paths]
    except ValueError as e:
        raise UsageError(f"paths: {e}") from None
    if transport == "tcp" and any(p.rate_bps is not None for p in tcp_paths):
        raise UsageError("paths: ,rate= is for UDP (the TCP transport paces only the total, --rate)")
    if len(tcp_paths) > MAX_PATHS:
        raise UsageError(f"paths: at most {MAX_PATHS - 1} besides HOST PORT")
    seen = set()
    for p in tcp_paths:
        named = (p.host, p.port, p.local, p.device)
        if named in seen:
            raise UsageError(f"paths: {p.describe()} is given twice")
        seen.add(named)
    ceiling = rate_bps if rate_bps is not None else DEFAULT_RATE_BPS if cc == "fixed" else DEFAULT_CEILING_BPS
    patience = timeout or DEFAULT_TIMEOUT
    overhead = wire.SEAL_OVERHEAD if psk is not None else 0
    cfg = SenderConfig(
        adu_size=adu_size or wire.DEFAULT_ADU_SIZE - overhead,
        rate_bps=ceiling,
        checkphrase=checkphrase,
        checksum=checksum,
        timeout=patience,
        digest=DIGESTS[digest],
        cc=cc,
        min_rate_bps=min(min_bps, ceiling),
        hello_timeout=min(AUTO_HELLO_TIMEOUT, patience / 2) if transport == "auto" else None,
        paths=len(tcp_paths),
        backup=tuple(k for k, p in enumerate(tcp_paths) if p.backup),
        stripe=stripe,
        path_rates=tuple(p.rate_bps for p in tcp_paths),
        fec=fec != "off" and transport != "tcp" and codec() is not None,
        fec_ratio=fec_ratio,
        key=psk,
    )
    if compress:
        cfg = replace(cfg, features=cfg.features | wire.FEATURE_COMPRESS)
    # TCP is paced only at a rate given: its own congestion control does the rest.
    tcp = _TcpOptions(tcp_paths, streams, chaos_bytes or 0, rate_bps, stripe)
    obs = observer or _Callbacks(progress, cancel, progress_interval)
    if rate_bps is not None and rate_bps < SLOW_RATE_BPS:
        obs.say(
            f"note: --rate {rate_bps:g} is {rate_bps:g} bit/s (rates are bits per second: 800M is "
            f"800 Mbit/s); at that rate 1 MB takes {8e6 / rate_bps / 3600:.2g} hours"
        )
    return _send(
        host,
        port,
        source,
        cfg,
        window_bytes,
        bind,
        transport,
        drop,
        seed,
        gso,
        tcp,
        obs,
        adu_size,
        if_changed,
        group,
        span,
        compress_level if compress else None,
        auto,
    )


@dataclass(frozen=True)
class _GroupOptions:
    receivers: int | None
    wait: float | None
    quorum: int | None
    ttl: int
    interface: str | None
    slow: str


def _key(key: str | bytes | None) -> bytes | None:
    """--key: the pre-shared key from a key file (or given as its 32 bytes)."""
    if key is None:
        return None
    if isinstance(key, bytes):
        if len(key) != 32:
            raise UsageError("key: a key is 32 bytes (or a key file: alf keygen > FILE)")
        return key
    from alf import seal  # (cryptography costs 70 ms to import: only with a key)

    try:
        return seal.read_key_file(key)
    except seal.KeyFileError as e:
        raise UsageError(f"key: {e}") from None


def _fec_ratio(fec: str) -> float | None:
    """--fec: "auto" or "off" (None), or a ratio of parity to data in (0, 1]."""
    if fec in FEC_CHOICES:
        return None
    try:
        ratio = float(fec)
    except ValueError:
        ratio = 0.0
    if not 0 < ratio <= 1:
        raise UsageError(f"fec: auto, off or a ratio of parity to data in (0, 1], not {fec!r}")
    return ratio


def _group_options(
    host: str,
    transport: str,
    paths: Sequence[str],
    chaos: int | None,
    receivers: int | None,
    wait: float | None,
    quorum: int | None,
    ttl: int,
    interface: str | None,
    slow: str = "catch-up",
) -> _GroupOptions | None:
    """A multicast destination's options, checked (None: a unicast one, which takes none)."""
    if not is_multicast(host):
        named = (("receivers", receivers), ("wait", wait), ("quorum", quorum), ("interface", interface))
        given = [n for n, v in named if v is not None] + (["ttl"] if ttl != 1 else [])
        given += ["slow"] if slow != "catch-up" else []
        if given:
            raise UsageError(f"{', '.join(given)}: for a multicast destination (224.0.0.0/4), not {host}")
        return None
    if transport == "tcp" or chaos:
        raise UsageError("a multicast group is reached over UDP only (not with transport tcp or chaos)")
    if paths:
        raise UsageError("paths: a multicast sender has one path, to the group")
    if ipaddress.ip_address(host.split("%")[0]).version != 4:
        raise UsageError(f"{host}: only IPv4 groups are supported so far")
    if receivers is not None and not 1 <= receivers <= MAX_MEMBERS:
        raise UsageError(f"receivers must be 1-{MAX_MEMBERS}")
    if quorum is not None and not 1 <= quorum <= (receivers or MAX_MEMBERS):
        raise UsageError(f"quorum must be 1-{receivers or MAX_MEMBERS} (at most the receivers expected)")
    if wait is not None and not 0 < wait <= 3600:
        raise UsageError("wait must be more than 0 and at most 3600 seconds")
    if not 1 <= ttl <= 255:
        raise UsageError("ttl must be 1-255")
    _check_interface(interface)
    _choice("slow", slow, list(SLOW_POLICIES))
    return _GroupOptions(receivers, wait, quorum, ttl, interface, slow)


def _check_interface(name: str | None) -> None:
    if name is not None:
        try:
            socket.if_nametoindex(name)
        except OSError:
            raise UsageError(f"interface: this machine has no interface named {name}") from None


def _cc_names() -> list[str]:
    return list(cc.names())


def _close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def _stalled(obs: Observer) -> Callable[[float], None]:
    """What a loop that did not run for a while (``Hooks.turn``) tells the user: the peer's
    silence or timeout that may follow is then no mystery."""

    def say(seconds: float) -> None:
        obs.say(
            f"note: this process did not run for {seconds:.1f} s (stopped, or starved of CPU); "
            "the peer may have timed out meanwhile"
        )

    return say


def _compression_stats(stats: Callable[[], Stats], source: Source) -> Callable[[], Stats]:
    """A sender's statistics, with what compression did (§19) when it compresses."""
    if not isinstance(source, CompressedStream):
        return stats
    counts, adapt = source.counts, source.adapt

    def both() -> Stats:
        out = stats()
        out.update(
            input_bytes=counts.bytes_in,
            compressed_bytes=counts.bytes_out,
            compression_ratio=round(counts.bytes_out / counts.bytes_in, 4) if counts.bytes_in else None,
            blocks=counts.blocks,
            blocks_raw=counts.blocks_raw,
            bytes_held=counts.bytes_held,  # (§18: the blocks the receiver held, not sent)
        )
        if adapt is not None:  # --compress auto: what it decided on, and why
            out.update(
                blocks_auto_raw=counts.blocks_auto_raw,
                auto_trials=adapt.trials,
                auto_rate_compressed_bps=_bits(adapt.rates[True] or 0),
                auto_rate_raw_bps=_bits(adapt.rates[False] or 0),
            )
        return out

    return both


def _bits(bytes_per_s: float) -> int | None:
    """A rate in bytes/s as bits/s for the statistics (None: not measured)."""
    return round(8 * bytes_per_s) if bytes_per_s else None


def _restored_stats(stats: Callable[[], Stats], sink: Sink) -> Callable[[], Stats]:
    """A receiver's statistics, with what a compressed content restored to (§19)."""

    def both() -> Stats:
        out = stats()
        active = sink.active if isinstance(sink, EitherSink) else sink
        if isinstance(active, DecompressingSink):
            out["restored_bytes"] = active.writer.restored
        return out

    return both


def _result(outcome: Outcome, stats: Stats, start: float) -> Result:
    return Result(outcome.ok, int(outcome.code), outcome.message, snapshot(stats, time.monotonic(), start))


def _send(
    host: str,
    port: int,
    given: str | IO[bytes] | None,
    cfg: SenderConfig,
    window: int,
    bind: str | None,
    transport: str,
    drop: float,
    seed: int,
    gso: bool,
    tcp: _TcpOptions,
    obs: Observer,
    adu_given: int | None,
    if_changed: str = "fail",
    group: _GroupOptions | None = None,
    span: tuple[int, int | None] | None = None,
    level: int | None = None,
    auto: bool = False,
) -> Result:
    """``span``: (offset, length or None: to the end), a byte range of a file (§18); ``level``:
    the input goes compressed at that zstd level (§19), a file as a stream."""
    stats: Callable[[], Stats] = lambda: {"role": "send", "state": "handshake"}  # noqa: E731

    t0 = time.monotonic()
    obs.attach(stats)
    fd, own_fd = -1, False  # a descriptor this call opened (a FIFO, a pipe from a file object)

    def fail(outcome: Outcome) -> Result:
        if own_fd:
            os.close(fd)
        obs.finish(outcome)
        return _result(outcome, stats(), t0)

    alg = cfg.digest
    kind, total, path = wire.Kind.STREAM, None, None
    if given is None or given == "-":
        fd = sys.stdin.fileno()
    elif isinstance(given, str):
        try:
            st = os.stat(given)
            if stat.S_ISDIR(st.st_mode):
                return fail(
                    Outcome(
                        ExitCode.LOCAL_IO,
                        f"{given} is a directory: send it as one stream, tar cf - {given} | alf send "
                        f"{host} {port} (and alf recv PORT | tar xf - there)",
                    )
                )
            if stat.S_ISREG(st.st_mode):
                path = given
            elif stat.S_ISFIFO(st.st_mode):
                fd, own_fd = _open_fifo(given, cfg.timeout, obs.cancelled), True
                if fd < 0:
                    own_fd = False
                    return fail(
                        Outcome(ExitCode.CANCELLED, "the sender was interrupted")
                        if obs.cancelled()
                        else Outcome(
                            ExitCode.LOCAL_IO, f"nothing wrote to the FIFO {given} within {cfg.timeout:g} s"
                        )
                    )
            else:
                fd, own_fd = os.open(given, os.O_RDONLY), True
        except OSError as e:
            return fail(Outcome(ExitCode.LOCAL_IO, f"cannot read {given}: {e.strerror}"))
    else:
        fd, own_fd = _source_fd(given)
    named: str | None = None  # a file sent compressed
    named_st: os.stat_result | None = None
    offset: int | None = None  # §18: where the range starts (None: the whole file)
    stamp: tuple[int, int, int] | None = None  # §18: the file, as a receiver can name it
    if level is not None and path is not None:  # §19: a file's compressed blocks are a stream
        try:
            fd, own_fd = os.open(path, os.O_RDONLY), True
        except OSError as e:
            return fail(Outcome(ExitCode.LOCAL_IO, f"cannot read {path}: {e.strerror}"))
        named, path = path, None
        named_st = os.fstat(fd)  # §18: the file as the HELLO names it, and as it must stay
        stamp = (named_st.st_size, named_st.st_mtime_ns, named_st.st_ino)  # (as FileSource's)
    if span is not None and path is None:
        if own_fd:
            os.close(fd)
        raise UsageError("offset/length: a byte range is of a file, not of a pipe or a stream")
    sock = None
    socks: list[socket.socket] = []  # one per path (§14), the first HOST PORT's
    dest: tuple[str, int] | None = None  # §15: the group DATA goes to
    mtu: int | None = None
    try:
        if bind is not None:  # before anything is sent: a local fault, whichever transport
            check_local_address(bind)
        if group is not None:
            sock, dest, mtu = group_sender_socket(host, port, group.interface, group.ttl, bind)
            socks.append(sock)
        elif transport != "tcp":
            sock = sender_socket(host, port, bind)
            socks.append(sock)
            for p in tcp.paths[1:]:
                try:
                    socks.append(sender_socket(p.host, p.port, p.local or bind, p.device))
                except DriverError as e:  # no such host or interface, a local address it lacks
                    raise UsageError(f"path {p.describe()}: {e}") from None
    except LocalAddressError as e:
        _close_all(socks)
        return fail(Outcome(ExitCode.LOCAL_IO, str(e)))
    except DriverError as e:
        _close_all(socks)
        return fail(Outcome(ExitCode.PEER_UNREACHABLE, str(e)))
    except UsageError:
        _close_all(socks)
        if own_fd:
            os.close(fd)
        raise
    if socks:
        # the ADU fits every path's MTU: any ADU can go, or be repaired, on any path
        over = wire.SEAL_OVERHEAD if cfg.key is not None else 0
        fitted = min(fit_adu(s, cfg.adu_size, adu_given is not None, obs.say, mtu, over) for s in socks)

        cfg = replace(cfg, adu_size=fitted)
    else:
        cfg = replace(cfg, paths=1, backup=())  # TCP: its driver stripes itself
    if cfg.key is None and not _loopback(host):  # (said once, whichever transport carries it)
        obs.say("note: this transfer is not encrypted (--key seals it; alf keygen makes a key)")
    adu_size = cfg.adu_size
    source: Source
    if path is not None:
        warn = obs.say if if_changed == "warn" else None
        try:
            first, length = span or (0, None)
            source = FileSource(path, adu_size, alg=alg, warn=warn, offset=first, length=length)
            kind, total = wire.Kind.FILE, source.total_bytes()
        except OSError as e:
            _close_all(socks)
            return fail(Outcome(ExitCode.LOCAL_IO, f"cannot read {path}: {e.strerror}"))
        except ValueError as e:
            _close_all(socks)
            raise UsageError(f"offset/length: {e}") from None
        offset = source.offset if span is not None else None
        stamp = source.stamp if group is None else None
    elif level is not None:
        adapt = Adaptive() if auto else None
        compressor = Compressor(level, adu_size)
        lead = StreamSource.LEAD_BYTES if named is not None else None  # (a file is read as it is sent)
        source = CompressedStream(adu_size, max(1, window // adu_size), alg, compressor, adapt, lead)
    else:
        source = StreamSource(adu_size, max(1, window // adu_size), alg)
    session_id = secrets.randbits(64) or 1
    started = time.monotonic()
    wake_r, wake_w, own_wake = _wake(obs)
    stop = threading.Event()
    pump: threading.Thread | None = None
    if isinstance(source, CompressedStream):
        widen_pipe(fd)
        args = (
            source,
            fd,
            wake_w,
            stop,
            COMPRESS_THREADS,
            named_st,
            obs.say if if_changed == "warn" else None,
        )
        pump = threading.Thread(target=pump_compressed, args=args, name="alf-stdin", daemon=True)
        pump.start()
    elif isinstance(source, StreamSource):
        widen_pipe(fd)
        pump = threading.Thread(
            target=pump_stream, args=(source, fd, wake_w, stop), name="alf-stdin", daemon=True
        )
        pump.start()
    what = f"{path} ({human_bytes(total or 0)})" if path is not None else named or "a stream"
    if level is not None:
        what += f", compressed (zstd level {level}{', while that pays' if auto else ''})"
    if offset is not None:
        what = f"bytes {offset} to {offset + (total or 0)} of {path} ({human_bytes(total or 0)})"
    obs.say(f"{what} to {host} port {port}, session {session_id:016x}", detail=True)
    tap = _Tap(obs)
    hooks = Hooks(tick=obs.tick, cancelled=obs.cancelled, wake_fd=wake_r, event=tap, stalled=_stalled(obs))
    outcome: Outcome | None = None
    udp_refused: float | None = None  # auto: when UDP's port said unreachable, for TCP's verdict
    try:
        if sock is not None:
            sender = (
                Sender(cfg, session_id, kind, total, time.monotonic(), offset, stamp)
                if group is None
                else GroupSender(
                    cfg,
                    session_id,
                    kind,
                    total,
                    time.monotonic(),
                    dest,
                    group.receivers,
                    group.wait,
                    group.quorum,
                    group.slow,
                )
            )
            session = SendSession(sender, source, Dropper(drop, seed) if drop else None)
            stats = _compression_stats(session.stats, source)
            obs.attach(stats)
            obs.starting()
            outcome = run_sender(session, socks, hooks, gso=gso, group=dest)
            if tap.fallback is not None and transport == "auto":
                obs.say(f"{outcome.message}; trying TCP")
                outcome, udp_refused = None, tap.fallback.refused_since
        if outcome is None:
            tcfg = TcpSenderConfig(
                adu_size=adu_size,
                checkphrase=cfg.checkphrase,
                digest=alg,
                timeout=cfg.timeout,
                key=cfg.key,
            )
            tcfg.features |= cfg.features & wire.FEATURE_COMPRESS
            if tcp.rate_bps:
                tcfg.frame_bytes = paced_frame_bytes(tcp.rate_bps, adu_size)
            names = [p.describe() for p in tcp.paths]
            core = TcpSender(
                tcfg, session_id, kind, total, source, started, names, udp_refused, offset, stamp
            )
            driver = TcpSendDriver(
                core, tcp.paths, tcp.streams, hooks, tcp.chaos, seed, bind, tcp.rate_bps, tcp.stripe
            )
            stats = _compression_stats(driver.stats_dict, source)
            obs.attach(stats)
            try:
                obs.starting()
                outcome = driver.run()
            except DriverError as e:
                outcome = Outcome(ExitCode.PEER_UNREACHABLE, str(e))
    finally:
        stop.set()
        _close_all(socks)
        if isinstance(source, FileSource):
            source.close()
        # The reader thread writes to the wake pipe after each read: both descriptors close
        # only once it is done (it reached EOF, or it stops within its 0.1 s wait). A reader
        # still blocked in read() keeps them, so no descriptor number is reused under it.
        if pump is not None:
            pump.join(0.2)
        if pump is None or not pump.is_alive():
            _close_wake(wake_r, wake_w, own_wake)
            if own_fd and fd >= 0:
                os.close(fd)
    obs.finish(outcome)
    return _result(outcome, stats(), t0)


def receive(
    port: int,
    output: str | IO[bytes] | None = None,
    *,
    force: bool = False,
    fsync: bool = False,
    keep_partial: bool = False,
    window: int | str = 256 << 20,
    transport: str = "auto",
    bind: str | None = None,
    checkphrase: str = "",
    timeout: float | None = None,
    drop: float = 0.0,
    seed: int = 1,
    gso: bool = True,
    progress: Callable[[Stats], object] | None = None,
    progress_interval: float = 0.5,
    cancel: threading.Event | None = None,
    observer: Observer | None = None,
    group: str | None = None,
    interface: str | None = None,
    fec: str = "auto",
    key: str | bytes | None = None,
    resume: str | None = None,
) -> Result:
    """Receive one transfer on ``port`` (0: any free one, the same for UDP and TCP) into
    ``output``: a path (written at offsets through PATH.alf-partial, renamed once verified), a
    binary file object, or None / "-" for stdout (both in order). Blocks until the transfer
    ends; without ``timeout`` it waits for its first sender without limit. ``group``: also
    listen on that IPv4 multicast group (on ``interface``), for a group sender (UDP only);
    ``fec`` "auto" decodes its parity (a file output), "off" asks for resends only. ``key``: a
    key file (or its 32 bytes): only a sender with the same key is served, sealed. ``resume``
    "on": take up what an earlier, failed receive into the same ``output`` path wrote (its
    sender sends only the rest; another content starts afresh), "strict": the same, but a
    sender of another content is refused (docs/usage.md, Resume)."""
    _choice("transport", transport, TRANSPORTS)
    _choice("fec", fec, list(FEC_CHOICES))
    if resume is not None:
        _choice("resume", resume, ["on", "strict"])
        if not isinstance(output, str) or output == "-":
            raise UsageError("resume: takes an output file (-o FILE): a pipe cannot be taken up")
        if group is not None:
            raise UsageError("resume: not with a multicast group")
    psk = _key(key)
    if group is not None:
        if not is_multicast(group) or ipaddress.ip_address(group).version != 4:
            raise UsageError(f"group: {group} is not an IPv4 multicast address (224.0.0.0/4)")
        if transport == "tcp":
            raise UsageError("group: a multicast group is served over UDP only (not with transport tcp)")
        if bind is not None:  # a socket bound to one unicast address gets no group datagrams
            raise UsageError("group: not with bind (the group is joined on --interface)")
        transport = "udp"
        _check_interface(interface)
    elif interface is not None:
        raise UsageError("interface: for a multicast group (--group)")
    if not 0 <= port <= 65535:
        raise UsageError(f"port must be 0-65535, not {port}")
    if not 0.0 <= drop <= 0.99:
        raise UsageError("drop must be between 0 and 0.99")
    window_bytes = _window(window)
    timeout = _seconds("timeout", timeout)
    obs = observer or _Callbacks(progress, cancel, progress_interval)
    return _Receive(port, output, force, fsync, keep_partial, window_bytes, transport, bind, checkphrase,
                    timeout, drop, seed, gso, obs, group, interface, fec, psk, resume).run()  # fmt: skip


class _Receive:
    """One receive: the output, the sockets, and with transport "auto" which transport the
    sender takes (and following a sender that moves from UDP to TCP)."""

    def __init__(
        self, port: int, output: str | IO[bytes] | None, force: bool, fsync: bool, keep_partial: bool,
        window: int, transport: str, bind: str | None, checkphrase: str, timeout: float | None,
        drop: float, seed: int, gso: bool, obs: Observer, group: str | None = None,
        interface: str | None = None, fec: str = "auto", key: bytes | None = None,
        resume: str | None = None,
    ) -> None:  # fmt: skip
        self.group, self.interface, self.fec, self.key = group, interface, fec, key
        self.resume = resume
        self.kept: Kept | None = None  # §18: what the output holds of an earlier receive
        self.port, self.output, self.force, self.fsync = port, output, force, fsync
        self.requested_port = port
        self.keep_partial, self.window, self.transport, self.bind = keep_partial, window, transport, bind
        self.checkphrase, self.timeout, self.drop, self.seed, self.gso = checkphrase, timeout, drop, seed, gso
        self.obs = obs
        self.stats: Callable[[], Stats] = lambda: {"role": "recv", "state": "waiting"}
        self._after_write: Callable[[], None] = lambda: None
        self._said_kept = False  # (the output is made again when a sender moves to TCP)
        self.listener: socket.socket | None = None
        self.adopted: list[socket.socket] = []  # TCP connections with a HELLO, unread
        self._gate: HelloGate | None = None  # auto, over UDP: a sender coming over TCP
        self.start = time.monotonic()

    def make_sink(self) -> Sink:
        """The output; a compressed content (§19) is restored into it by the sink the HELLO
        picks (an ``EitherSink``)."""
        out = self.output
        keep = self.keep_partial
        if isinstance(out, str) and out != "-":
            backend = FileBackend(out, self.force, self.fsync, self.resume)
            self.kept = backend.kept
            if backend.kept_note and not self._said_kept:
                self.obs.say(backend.kept_note)
            self._said_kept = True

            def restored_into_file() -> Sink:
                return DecompressingSink(
                    ThreadedDecompressor(FileWriter(backend)), backend, keep, backend.kept
                )

            return EitherSink(OffsetSink(backend, keep_partial=keep), restored_into_file)
        stdout: IO[bytes] = sys.stdout.buffer
        fd, self._after_write = _output_fd(stdout if out is None or isinstance(out, str) else out)
        widen_pipe(fd)
        writer = FdWriter(fd)

        return EitherSink(OrderedSink(writer), lambda: DecompressingSink(ThreadedDecompressor(writer)))

    def finish(self, outcome: Outcome) -> Result:
        self.obs.finish(outcome)
        return _result(outcome, self.stats(), self.start)

    def run(self) -> Result:
        obs, start = self.obs, self.start
        obs.attach(self.stats)
        try:
            sink = self.make_sink()
        except NotResumable as e:
            return self.finish(Outcome(ExitCode.NOT_RESUMABLE, str(e)))
        except SinkError as e:
            return self.finish(Outcome(ExitCode.LOCAL_IO, str(e)))
        udp: socket.socket | None = None
        errors: list[str] = []
        port = self.port
        if self.transport in ("udp", "auto"):
            try:
                udp = receiver_socket(self.bind, port, socket.AF_INET if self.group else None)
                if self.group is not None:
                    try:
                        join_group(udp, self.group, self.interface)
                    except DriverError:
                        udp.close()
                        raise
                port = udp.getsockname()[1]  # port 0: TCP takes the same number
                small = read_buffer_bytes(udp)
                if small < FLOW_FLOOR:
                    obs.say(
                        f"note: the UDP receive buffer is only {small >> 10} KiB (net.core.rmem_max); "
                        "fast or long paths lose datagrams to it and repair them: "
                        "sysctl -w net.core.rmem_max=33554432 (root raises its own buffers by itself)"
                    )
            except DriverError as e:
                errors.append(str(e))
        if self.transport in ("tcp", "auto"):
            try:
                self.listener = listener_socket(self.bind, port)
            except DriverError as e:
                errors.append(str(e))
        if (udp is None and self.listener is None) or (self.transport != "auto" and errors):
            for s in (udp, self.listener):
                if s is not None:
                    s.close()
            sink.close(False)
            return self.finish(Outcome(ExitCode.LOCAL_IO, "; ".join(errors)))
        self.port = port
        kinds = "/".join(k for k, s in (("UDP", udp), ("TCP", self.listener)) if s is not None)
        if self.group is not None:
            kinds += f" and the group {self.group}"
        # a port the system chose is news the user needs (the sender must name it)
        obs.say(f"listening on port {port} ({kinds})", detail=self.requested_port != 0)
        for problem in errors:
            obs.say(f"note: {problem}", detail=True)
        wake_r, wake_w, own_wake = _wake(obs)
        try:
            return self._serve(sink, udp, start, wake_r)
        finally:
            _close_wake(wake_r, wake_w, own_wake)

    def _serve(self, sink: Sink, udp: socket.socket | None, start: float, wake_r: int) -> Result:
        obs = self.obs
        stalled = _stalled(obs)
        hooks = Hooks(
            tick=obs.tick, cancelled=obs.cancelled, wake_fd=wake_r, event=obs.event, stalled=stalled
        )
        if udp is not None and self.listener is not None:
            chosen = self._first_sender(udp, self.listener, wake_r, start)
            if chosen is None:
                udp.close()
                self.listener.close()
                sink.close(False)
                return self.finish(
                    Outcome(ExitCode.CANCELLED, "the receiver was interrupted")
                    if obs.cancelled()
                    else Outcome(ExitCode.PEER_UNREACHABLE, f"no sender arrived within {self.timeout:g} s")
                )
            if isinstance(chosen, list):
                self.adopted = chosen
                udp.close()
                udp = None
        wait = self.timeout or DEFAULT_TIMEOUT
        note: str | None = None
        outcome: Outcome | None = None
        if udp is not None:
            cfg = ReceiverConfig(
                checkphrase=self.checkphrase,
                in_order=sink.in_order,
                window_bytes=self.window,
                timeout=wait,
                wait_timeout=self.timeout,
                fec=self.fec == "auto" and not sink.in_order and codec() is not None,
                key=self.key,
                kept=self.kept,
                resume_strict=self.resume == "strict",
            )
            receiver = Receiver(cfg, start)
            session = RecvSession(receiver, sink, Dropper(self.drop, self.seed) if self.drop else None)
            self.stats = _restored_stats(session.stats, sink)
            obs.attach(self.stats)
            tap = _Tap(obs)
            udp_hooks = Hooks(
                tick=obs.tick,
                cancelled=lambda: obs.cancelled() or self._moved_to_tcp(tap),
                wake_fd=wake_r,
                event=tap,
                stalled=stalled,
            )
            try:
                obs.starting()
                outcome = run_receiver(session, udp, udp_hooks, gro=self.gso)
            finally:
                udp.close()
            if self._gate is not None:
                self._gate.close()
            if (
                not self.adopted
                and self.listener is not None
                and tap.session_id is not None
                and tap.peer_abort == wire.AbortCode.TIMEOUT
                and not tap.data
            ):
                self.adopted = take_hello(self.listener, tap.session_id, 5.0)  # its ABORT came first
            if not self.adopted:
                note = session.close()
                if self.listener is not None:
                    self.listener.close()
                    self.listener = None
            else:
                session.close()  # nothing was written: start the output afresh for TCP
                obs.say("the sender moved to TCP")
                try:
                    sink = self.make_sink()
                except SinkError as e:
                    for s in self.adopted:
                        s.close()
                    assert self.listener is not None
                    self.listener.close()
                    code = ExitCode.NOT_RESUMABLE if isinstance(e, NotResumable) else ExitCode.LOCAL_IO
                    return self.finish(Outcome(code, str(e)))
        if self.listener is not None:
            tcfg = TcpReceiverConfig(
                self.checkphrase,
                self.window,
                wait,
                self.timeout,
                self.key,
                self.kept,
                self.resume == "strict",
            )
            tcore = TcpReceiver(tcfg, sink, start)
            tdriver = TcpRecvDriver(tcore, self.listener, hooks)
            for s in self.adopted:
                tdriver.adopt(s)
            self.stats = _restored_stats(tdriver.stats_dict, sink)
            obs.attach(self.stats)
            try:
                obs.starting()
                outcome = tdriver.run()
            finally:
                self.listener.close()
                held = tcore.gaps.held_runs() if tcore.keepable else None
                note = sink.close(outcome is not None and outcome.ok, held)
        assert outcome is not None
        self._after_write()
        if note:
            obs.say(note)
        return self.finish(outcome)

    def _moved_to_tcp(self, tap: _Tap) -> bool:
        """auto: a sender that gave up on UDP (all our ACCEPTs lost) comes back over TCP with
        the same session id; follow it while no DATA has arrived (and, while UDP bound no
        session, follow whichever sender comes over TCP)."""
        if not self.adopted and self.listener is not None:
            if tap.data:  # DATA flows over UDP: TCP is not coming
                if self._gate is not None:
                    self._gate.close()
                    self._gate = None
                self.listener.close()
                self.listener = None
                return False
            if self._gate is None or self._gate.session_id != tap.session_id:
                if self._gate is not None:
                    self._gate.close()
                self._gate = HelloGate(self.listener, tap.session_id)
            ready = select.select(self._gate.watch(), [], [], 0)[0]
            if ready:
                self.adopted = self._gate.step(ready, time.monotonic()) or []
        return bool(self.adopted)

    def _first_sender(
        self, udp: socket.socket, listener: socket.socket, wake_r: int, start: float
    ) -> socket.socket | list[socket.socket] | None:
        """auto: whichever comes first, a UDP HELLO (``udp``) or a TCP connection that opens
        with a HELLO (it and the other connections pending, unread); anything else that arrives
        over UDP meanwhile is read and dropped, and a connection that sends no HELLO never
        decides. None: cancelled or the timeout."""
        wait, obs = self.timeout, self.obs
        gate = HelloGate(listener, rejected=lambda peer, why: obs.event(Rejected(peer, why)))
        stamps = stamp_arrivals(udp)  # an answer leaves from the address its offer came to
        while not obs.cancelled():
            now = time.monotonic()
            left = 0.5 if wait is None else min(0.5, start + wait - now)
            if left <= 0:
                break
            obs.tick(now)
            watch: list[Any] = [udp, wake_r, *gate.watch()]
            ready, _w, _x = select.select(watch, [], [], left)
            chosen = gate.step(ready, time.monotonic())
            if chosen:
                return chosen
            if udp in ready:
                try:
                    data, addr, source = peek_datagram(udp, wire.HELLO_SIZE + 1, stamps)
                    msg = wire.decode_untrusted(data)
                    if isinstance(msg, wire.Hello):
                        gate.close()
                        return udp
                    if isinstance(msg, wire.Unsupported):  # §4.4: refused by name, as the core does
                        why = unsupported_reason(msg)
                        abort = wire.Abort(msg.session_id, wire.AbortCode.UNSUPPORTED, why)
                        udp.sendmsg([wire.encode_abort(abort)], source, 0, addr)
                        obs.event(Rejected(addr, why))
                except (wire.BadPacket, OSError):
                    pass
                try:
                    udp.recvfrom(1)  # not a HELLO: drop it
                except OSError:
                    pass
            if wake_r in ready:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
        gate.close()
        return None
