"""The ``alf`` command: option parsing, signals, reporting; hands off to the drivers.

Invariant: the process exits 0 only when the peer's verdict (or our own, on the receiving
side) says the whole content arrived and its digest matched; every other ending maps to one
``ExitCode``.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import secrets
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import IO, Any

import click

import cc
from alf import __version__, manpage, progress, wire
from alf.content import OffsetSink, OrderedSink, Sink, SinkError, Source
from alf.errors import ExitCode, Outcome
from alf.io.common import DriverError, Hooks
from alf.io.sink import FdWriter, FileBackend
from alf.io.source import FileSource, StreamSource, pump_stream
from alf.io.tcp import Path, TcpRecvDriver, TcpSendDriver, listener_socket, parse_path, take_hello
from alf.io.udp import (
    MIN_FITTED_ADU,
    fitting_adu_size,
    read_buffer_bytes,
    receiver_socket,
    route_mtu,
    run_receiver,
    run_sender,
    sender_socket,
)
from alf.receiver import FLOW_FLOOR, Receiver, ReceiverConfig
from alf.sender import DEFAULT_CEILING_BPS, DEFAULT_RATE_BPS, Sender, SenderConfig
from alf.session import Dropper, RecvSession, SendSession
from alf.tcp import TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig, paced_frame_bytes

EXIT_CODES_HELP = """\b
Exit status:
  0    the whole content arrived and was verified end to end
  1    internal error (a bug in alf)
  2    usage error (wrong options or arguments)
  3    peer unreachable: no answer, or silent for --timeout
  4    aborted by the peer (checkphrase mismatch, busy, its own error)
  5    verification failed (length or digest mismatch)
  6    local I/O error (input missing, output exists, disk full)
  130  interrupted (SIGINT/SIGTERM)"""

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)

RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _number(text: str, units: Mapping[str, float], what: str) -> float:
    t = text.strip().lower()
    for suffix in ("bit/s", "bps", "b/s", "ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    unit = t[-1:] if t[-1:] in units and t[-1:] != "" else ""
    digits = t[:-1] if unit else t
    try:
        value = float(digits) * units[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a {what} (examples: 800M, 1.5G, 200k)") from None
    if value <= 0:
        raise click.BadParameter(f"{what} must be positive")
    return value


class RateType(click.ParamType):  # type: ignore[type-arg]
    name = "RATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        return value if isinstance(value, float) else _number(str(value), RATE_UNITS, "rate")


class SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        return value if isinstance(value, int) else int(_number(str(value), SIZE_UNITS, "size"))


AUTO_HELLO_TIMEOUT = 1.5  # --transport auto: UDP gets this long to answer before TCP is tried
DEFAULT_TRANSPORT = "auto"


@dataclass
class Common:
    transport: str
    verbose: bool
    quiet: bool
    stats_json: str | None
    progress: bool | None
    timeout: float | None
    drop: float
    seed: int
    checkphrase: str
    gso: bool
    stats_interval: float


class Reporter:
    """Everything this side shows: the progress line and messages (through one ``Console``),
    JSON stats lines, live stats on SIGUSR1/SIGINFO, and the closing summary."""

    def __init__(self, common: Common, role: str, where: str = "") -> None:
        self.role = role
        self.where = where  # the summary's "to got.bin" / "from in.bin"
        self.stats: Callable[[], dict[str, Any]] = self.waiting_stats
        self.rejections: Callable[[], list[tuple[object, str]]] = list  # senders turned away
        self.verbose = common.verbose
        self.quiet = common.quiet
        live = sys.stderr.isatty() if common.progress is None else common.progress
        self.console = progress.Console(sys.stderr, live and not common.quiet)
        self.meter = progress.RateMeter()
        self.json_file: IO[str] | None = None
        if common.stats_json:
            try:
                self.json_file = open(common.stats_json, "a", buffering=1)  # noqa: SIM115
            except OSError as e:
                raise LocalError(f"cannot open {common.stats_json}: {e.strerror}") from None
        self.start = time.monotonic()
        self.interval = common.stats_interval
        self._next_json = self.start
        self._next_sample = self.start
        self.show_now = False
        self.cancel = False
        self.cancel_signal = 0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def waiting_stats(self) -> dict[str, Any]:
        """Before a core exists (a receiver waiting for its first sender): the schema's
        common keys, so every line has them."""
        return {"role": self.role, "state": "waiting" if self.role == "recv" else "handshake"}

    def install_signals(self) -> None:
        def on_stats(signum: int, frame: FrameType | None) -> None:
            self.show_now = True

        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self.cancel:  # a second interrupt: leave at once
                os._exit(ExitCode.CANCELLED)
            self.cancel = True
            self.cancel_signal = signum

        signal.signal(signal.SIGUSR1, on_stats)
        if hasattr(signal, "SIGINFO"):
            signal.signal(signal.SIGINFO, on_stats)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def say(self, text: str) -> None:
        """A message, printed above the progress line (never into it)."""
        self.console.say(f"alf {self.role}: {text}")

    def _say_rejections(self) -> None:
        for notice in progress.rejection_notices(self.rejections()):
            self.say(notice)

    def snapshot(self, now: float) -> dict[str, Any]:
        s = self.stats()
        began = s.pop("began", None)
        s["elapsed_s"] = round(now - self.start, 6)
        s["transfer_s"] = None if began is None else round(now - began, 6)
        s["time"] = round(time.time(), 3)
        return s

    def tick(self, now: float) -> None:
        if self.show_now:
            self.show_now = False
            self.say(json.dumps(self.snapshot(now)))
        if self.json_file is not None and now >= self._next_json:
            self._next_json = now + self.interval
            self.json_file.write(json.dumps(self.snapshot(now)) + "\n")
        if now >= self._next_sample:
            self._next_sample = now + PROGRESS_INTERVAL
            self._say_rejections()
            s = self.stats()
            self.meter.add(now, progress.progress_bytes(s), s.get("state") not in progress.WAITING_STATES)
            self.console.status(progress.progress_line(s, now, self.meter, self.start))

    def finish(self, outcome: Outcome) -> None:
        """The last JSON line, and the closing summary in place of the progress line."""
        now = time.monotonic()
        final = self.snapshot(now)
        final["final"] = True
        final["exit_code"] = int(outcome.code)
        final["result"] = outcome.message
        if self.json_file is not None:
            self.json_file.write(json.dumps(final) + "\n")
            self.json_file.close()
        self._say_rejections()
        self.console.end()
        seconds = final["transfer_s"]
        lines = progress.summary(final, outcome.ok, outcome.message, seconds, self.where)
        if self.verbose:
            lines += progress.details(final)
        for line in lines if not self.quiet else lines[:1] if not outcome.ok else []:
            self.console.say(line)


PROGRESS_INTERVAL = 0.25  # seconds between redraws of the progress line (and rate samples)


HELP_SECTIONS: dict[str, list[str]] = {
    "Essentials": [
        "output",
        "force",
        "transport",
        "checkphrase",
        "timeout",
        "verbose",
        "quiet",
        "progress",
        "help",
    ],
    "Rate control": ["cc_name", "rate", "min_rate"],
    "Reliability and integrity": ["digest", "checksum", "window", "adu_size", "fsync", "keep_partial"],
    "Paths and TCP": ["bind", "streams", "extra_paths", "gso"],
    "Diagnostics and fault injection": ["stats_json", "stats_interval", "drop", "seed", "chaos"],
}
UNITS_HELP = """\b
Units:
  RATE  bits per second; k, M, G, T are powers of 1000 (800M, 1.5G)
  SIZE  bytes; K, M, G, T are powers of 1024 (256M = 256 MiB)"""


class SectionedCommand(click.Command):
    """A command whose --help lists its options in the sections of HELP_SECTIONS, in that
    order, as a man page groups them."""

    sections = HELP_SECTIONS

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, rows in manpage.option_sections(self, ctx, self.sections):
            with formatter.section(title):
                formatter.write_dl(rows)


class LocalError(Exception):
    """A local problem before the transfer starts (missing input, existing output)."""


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--transport",
            type=click.Choice(["auto", "udp", "tcp"]),
            default=DEFAULT_TRANSPORT,
            show_default=True,
            help="udp: alf's own protocol; tcp: framed ADUs over parallel TCP connections (where UDP is "
            "blocked); auto: the receiver listens for both, the sender tries UDP and falls back to TCP "
            f"if UDP gets no answer within {AUTO_HELLO_TIMEOUT:g} s.",
        ),
        click.option("--bind", metavar="ADDR", default=None, help="Local address to use."),
        click.option(
            "--checkphrase",
            default="",
            metavar="WORD",
            help="Both sides must give the same word (guards against a stale or wrong peer; not security).",
        ),
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            help="Say more: the session at the start, details in words at the end.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress and no summary; errors only."),
        click.option(
            "--stats-json",
            metavar="PATH",
            default=None,
            help="Append one JSON object of statistics per second, and one at the end, to PATH.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="The progress line on stderr [default: when stderr is a terminal].",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=None,
            metavar="SECONDS",
            help="Give up when the peer is silent this long [default: 30; the receiver waits for its "
            "first sender without limit unless this is given].",
        ),
        click.option(
            "--drop",
            type=click.FloatRange(0.0, 0.99),
            default=0.0,
            metavar="P",
            help="Fault injection: drop this fraction of incoming datagrams (on a sender these are "
            "the receiver's control datagrams: ACCEPT, STATUS, NAK, DONE).",
        ),
        click.option(
            "--seed", type=int, default=1, show_default=True, metavar="N", help="Seed for --drop and --chaos."
        ),
        click.option(
            "--stats-interval",
            type=click.FloatRange(min=0.01),
            default=1.0,
            show_default=True,
            metavar="SECONDS",
            help="How often --stats-json gets a line.",
        ),
        click.option(
            "--gso/--no-gso",
            default=True,
            help="Move runs of datagrams per system call with UDP GSO (sending) and GRO (receiving) "
            "where the kernel has them [default: on]; --no-gso forces one call per datagram.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="alf")
def main() -> None:
    """alf: move files and pipes over UDP (or parallel TCP where UDP is blocked), intact and
    fast, as easily as netcat.

    \b
      alf recv 8834 > out.bin            receive a stream to stdout, in order
      cat big.tar | alf send HOST 8834   send stdin (length unknown)
      alf recv 8834 -o disk.img          receive a file, written at offsets
      alf send HOST 8834 disk.img        send a file
      alf demo                           a verified transfer on this machine, with loss
    """


@main.command(cls=SectionedCommand, epilog=UNITS_HELP + "\n\n" + EXIT_CODES_HELP)
@click.argument("host")
@click.argument("port", required=False, metavar="PORT")
@click.argument("file", required=False)
@click.option(
    "--cc",
    "cc_name",
    type=click.Choice(cc.names()),
    default="adaptive",
    show_default=True,
    help="Rate control: 'adaptive' finds the path's capacity and backs off when the path is congested "
    "(not on random loss), with --rate as its ceiling and --min-rate as its floor; 'fixed' paces at "
    "--rate.",
)
@click.option(
    "--min-rate", type=RateType(), default="1M", show_default=True, help="The floor of --cc adaptive (RATE)."
)
@click.option(
    "--rate",
    type=RateType(),
    default=None,
    help="RATE, in bits/s: the ceiling of --cc adaptive [default: 10G], or the pacing rate "
    "of --cc fixed [default: 800M, headroom on a 1 Gbit/s link; set it below a slower path's capacity]. "
    "Over TCP, only when given: a cap on what the connections are handed.",
)
@click.option(
    "--adu-size",
    type=click.IntRange(1, wire.MAX_ADU_SIZE),
    default=None,
    metavar="BYTES",
    help=f"Payload bytes per datagram [default: {wire.DEFAULT_ADU_SIZE}, which fits a 1500-byte MTU, IPv4 "
    "or IPv6, or less to fit the route's MTU towards HOST].",
)
@click.option("--checksum", is_flag=True, help="Add a CRC-32 to every datagram, on top of UDP's checksum.")
@click.option(
    "--digest",
    type=click.Choice(["xxh3", "blake3", "sha256"]),
    default="xxh3",
    show_default=True,
    help="End-to-end digest of the whole content, checked by the receiver (XXH3-128 guards against "
    "corruption at 28 GB/s; BLAKE3 and SHA-256 are cryptographic).",
)
@click.option(
    "--window",
    type=SizeType(),
    default="256M",
    show_default=True,
    help="Pipe mode: unacknowledged data kept for repair, a SIZE (stdin is not read while it is full).",
)
@click.option(
    "--streams",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    metavar="N",
    help="TCP: connections per path; whichever is free takes the next run of ADUs. More help on "
    "lossy paths (each TCP connection backs off on every loss), at the cost of fairness.",
)
@click.option(
    "--path",
    "extra_paths",
    multiple=True,
    metavar="HOST[:PORT]",
    help="TCP: another address of the receiver, used when the ones before it are full or gone "
    "(repeatable; HOST PORT is the first; PORT defaults to PORT).",
)
@click.option(
    "--chaos",
    type=SizeType(),
    default=None,
    metavar="SIZE",
    help="Fault injection (TCP): reset one connection, chosen with --seed, after every SIZE bytes sent.",
)
@_common_options
def send(
    host: str,
    port: str | None,
    file: str | None,
    cc_name: str,
    min_rate: float,
    rate: float | None,
    adu_size: int | None,
    checksum: bool,
    digest: str,
    window: int,
    streams: int,
    extra_paths: tuple[str, ...],
    chaos: int | None,
    bind: str | None,
    **kw: Any,
) -> None:
    """Send FILE (or stdin, '-') to an `alf recv` at HOST PORT (or HOST:PORT, [IPv6]:PORT)."""
    host, port_number, file = host_port_file(host, port, file)
    common = Common(**kw)
    tcp_rate = rate  # TCP is paced only at a --rate given (its own congestion control does the rest)
    if rate is None:
        rate = DEFAULT_RATE_BPS if cc_name == "fixed" else DEFAULT_CEILING_BPS
    try:
        paths = [Path(host, port_number)] + [parse_path(p, port_number) for p in extra_paths]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--path") from None
    if common.transport == "udp" and (extra_paths or chaos):
        raise click.UsageError("--path and --chaos are for --transport tcp or auto")
    if common.transport == "tcp" and checksum:
        raise click.UsageError("--checksum is for UDP (TCP checksums every segment itself)")
    tcp = TcpOptions(paths, streams, chaos or 0, tcp_rate)
    cfg = SenderConfig(
        adu_size=adu_size or wire.DEFAULT_ADU_SIZE,
        rate_bps=rate,
        checkphrase=common.checkphrase,
        checksum=checksum,
        timeout=common.timeout or 30.0,
        digest=DIGESTS[digest],
        cc=cc_name,
        min_rate_bps=min(min_rate, rate),
        hello_timeout=min(AUTO_HELLO_TIMEOUT, (common.timeout or 30.0) / 2)
        if common.transport == "auto"
        else None,
    )
    sys.exit(_send(host, port_number, file, cfg, window, bind, common, tcp, adu_given=adu_size is not None))


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def host_port_file(host: str, port: str | None, file: str | None) -> tuple[str, int, str]:
    """HOST PORT [FILE], or HOST:PORT [FILE] as one argument (as ssh, curl and nc users type
    it; [v6addr]:PORT for IPv6). A bare IPv6 address has several colons and stays a host."""
    if port is not None and _port(port) is not None:
        return host, int(port), file or "-"
    head, sep, tail = host.rpartition(":")
    joined = _port(tail) if sep and (head.count(":") == 0 or head.startswith("[")) else None
    if joined is not None and head.strip("[]"):
        if file is not None:
            raise click.UsageError(f"got {host} and then {port!r} and {file!r}: give HOST:PORT [FILE]")
        return head.strip("[]"), joined, port or "-"
    if port is None:
        raise click.UsageError("a PORT is needed: alf send HOST PORT [FILE] (or HOST:PORT)")
    raise click.BadParameter(
        f"{port!r} is not a port (1-65535): alf send HOST PORT [FILE], or HOST:PORT [FILE]", param_hint="PORT"
    )


def _fit_adu(sock: socket.socket, adu_size: int, given: bool) -> int:
    """The ADU size for a UDP transfer over ``sock``: the default shrinks to fit the route's MTU
    (a tunnel's 1420, PPPoE's 1492), so DATA is never fragmented and GSO stays possible; a size
    given that does not fit is kept, with a warning."""
    mtu = route_mtu(sock)
    if mtu is None:
        return adu_size
    fit = fitting_adu_size(mtu, sock.family)
    if not given:
        return max(MIN_FITTED_ADU, min(adu_size, fit))
    if adu_size > fit:
        print(
            f"alf send: warning: --adu-size {adu_size} makes datagrams larger than the route's MTU "
            f"({mtu}): the kernel fragments each one, and GSO is off (--adu-size {fit} fits)",
            file=sys.stderr,
            flush=True,
        )
    return adu_size


@dataclass
class TcpOptions:
    paths: list[Path]
    streams: int
    chaos: int
    rate_bps: float | None = None  # --rate, if given: the TCP driver paces at it


def _send(
    host: str,
    port: int,
    file: str,
    cfg: SenderConfig,
    window: int,
    bind: str | None,
    common: Common,
    tcp: TcpOptions,
    adu_given: bool,
) -> int:
    alg = cfg.digest
    source: Source
    kind = wire.Kind.STREAM
    total: int | None = None
    fd = 0
    stop = threading.Event()
    regular = False
    if file != "-":
        try:
            st = os.stat(file)
            regular = stat.S_ISREG(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                why = (
                    f"{file} is a directory: send it as one stream, tar cf - {file} | alf send {host} "
                    f"{port} (and alf recv PORT | tar xf - there)"
                )
                return _fail("send", Outcome(ExitCode.LOCAL_IO, why))
            if not regular:
                fd = os.open(file, os.O_RDONLY)
        except OSError as e:
            return _fail("send", Outcome(ExitCode.LOCAL_IO, f"cannot read {file}: {e.strerror}"))
    sock = None
    if common.transport != "tcp":
        try:
            sock = sender_socket(host, port, bind)
        except DriverError as e:
            return _fail("send", Outcome(ExitCode.PEER_UNREACHABLE, str(e)))
        cfg = replace(cfg, adu_size=_fit_adu(sock, cfg.adu_size, adu_given))
    adu_size = cfg.adu_size
    if regular:
        try:
            source = FileSource(file, adu_size, alg=alg)
            kind, total = wire.Kind.FILE, source.total_bytes()
        except OSError as e:
            return _fail("send", Outcome(ExitCode.LOCAL_IO, f"cannot read {file}: {e.strerror}"))
    session_id = secrets.randbits(64) or 1
    started = time.monotonic()
    try:
        if kind == wire.Kind.STREAM:
            source = StreamSource(adu_size, max(1, window // adu_size), alg)
        reporter = Reporter(common, "send")
    except LocalError as e:
        return _fail("send", Outcome(ExitCode.LOCAL_IO, str(e)))
    reporter.install_signals()
    if isinstance(source, StreamSource):
        _widen_pipe(fd)
        threading.Thread(
            target=pump_stream, args=(source, fd, reporter.wake_w, stop), name="alf-stdin", daemon=True
        ).start()
    if common.verbose:
        what = f"{file} ({progress.human_bytes(total or 0)})" if kind == wire.Kind.FILE else "a stream"
        reporter.say(f"{what} to {host} port {port}, session {session_id:016x}")
    hooks = Hooks(tick=reporter.tick, cancelled=lambda: reporter.cancel, wake_fd=reporter.wake_r)
    outcome: Outcome | None = None
    udp_refused: float | None = None  # auto: when UDP's port said unreachable, for TCP's verdict
    try:
        if sock is not None:
            sender = Sender(cfg, session_id, kind, total, time.monotonic())
            session = SendSession(sender, source, Dropper(common.drop, common.seed) if common.drop else None)
            reporter.stats = session.stats
            _prepare_heap()
            outcome = run_sender(session, sock, hooks, gso=common.gso)
            if sender.no_answer and common.transport == "auto":
                reporter.say(f"{outcome.message}; trying TCP")
                outcome, udp_refused = None, sender.refused_since
        if outcome is None:
            tcfg = TcpSenderConfig(adu_size=adu_size, checkphrase=cfg.checkphrase, digest=alg)
            if tcp.rate_bps:
                tcfg.frame_bytes = paced_frame_bytes(tcp.rate_bps, adu_size)
            core = TcpSender(tcfg, session_id, kind, total, source)
            driver = TcpSendDriver(
                core, tcp.paths, tcp.streams, hooks, cfg.timeout, tcp.chaos, common.seed, bind, started,
                tcp.rate_bps, udp_refused,
            )  # fmt: skip
            reporter.stats = driver.stats_dict
            try:
                _prepare_heap()
                outcome = driver.run()
            except DriverError as e:
                outcome = Outcome(ExitCode.PEER_UNREACHABLE, str(e))
    finally:
        stop.set()
        if sock is not None:
            sock.close()
        if isinstance(source, FileSource):
            source.close()
    reporter.finish(outcome)
    return int(outcome.code)


@main.command(cls=SectionedCommand, epilog=UNITS_HELP + "\n\n" + EXIT_CODES_HELP)
@click.argument("port", type=click.IntRange(0, 65535))
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    default=None,
    help="Write to FILE at offsets (via FILE.alf-partial, renamed once verified) instead of stdout; "
    "'-' is stdout, even a terminal.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--fsync", is_flag=True, help="Flush FILE to stable storage before reporting success.")
@click.option(
    "--keep-partial", is_flag=True, help="On failure, keep FILE.alf-partial instead of deleting it."
)
@click.option(
    "--window",
    type=SizeType(),
    default="256M",
    show_default=True,
    help="Pipe mode: data that arrived beyond a gap and waits to be written to stdout (a SIZE).",
)
@_common_options
def recv(
    port: int,
    output: str | None,
    force: bool,
    fsync: bool,
    keep_partial: bool,
    window: int,
    bind: str | None,
    **kw: Any,
) -> None:
    """Receive one transfer on PORT; write it to stdout (in order) or to -o FILE."""
    common = Common(**kw)
    sys.exit(_recv(port, output, force, fsync, keep_partial, window, bind, common))


def _recv(
    port: int,
    output: str | None,
    force: bool,
    fsync: bool,
    keep_partial: bool,
    window: int,
    bind: str | None,
    common: Common,
) -> int:
    start = time.monotonic()
    if output is None and sys.stdout.isatty():
        return _fail(
            "recv",
            Outcome(
                ExitCode.USAGE,
                "stdout is a terminal, and the data would be printed on it: redirect it "
                f"(alf recv {port} > FILE), pipe it (alf recv {port} | tar xf -), give -o FILE, "
                "or -o - to print it anyway",
            ),
        )

    def make_sink() -> Sink:
        if output is not None and output != "-":
            return OffsetSink(FileBackend(output, force, fsync), keep_partial=keep_partial)
        _widen_pipe(sys.stdout.fileno())
        return OrderedSink(FdWriter(sys.stdout.fileno()))

    try:
        sink = make_sink()
    except SinkError as e:
        return _fail("recv", Outcome(ExitCode.LOCAL_IO, str(e)))
    udp: socket.socket | None = None
    listener: socket.socket | None = None
    errors: list[str] = []
    if common.transport in ("udp", "auto"):
        try:
            udp = receiver_socket(bind, port)
            port = udp.getsockname()[1]  # port 0: TCP takes the same number
            small = read_buffer_bytes(udp)
            if small < FLOW_FLOOR:
                print(
                    f"alf recv: note: the UDP receive buffer is only {small >> 10} KiB "
                    "(net.core.rmem_max); fast or long paths lose datagrams to it and repair "
                    "them: sysctl -w net.core.rmem_max=33554432 (docs/usage.md, 'Tuning the host')",
                    file=sys.stderr,
                )
        except DriverError as e:
            errors.append(str(e))
    if common.transport in ("tcp", "auto"):
        try:
            listener = listener_socket(bind, port)
        except DriverError as e:
            errors.append(str(e))
    if (udp is None and listener is None) or (common.transport != "auto" and errors):
        for s in (udp, listener):
            if s is not None:
                s.close()
        sink.close(False)
        return _fail("recv", Outcome(ExitCode.LOCAL_IO, "; ".join(errors)))
    try:
        reporter = Reporter(common, "recv", "" if output in (None, "-") else f"into {output}")
    except LocalError as e:
        sink.close(False)
        return _fail("recv", Outcome(ExitCode.LOCAL_IO, str(e)))
    reporter.install_signals()
    if common.verbose:
        kinds = "/".join(k for k, s in (("UDP", udp), ("TCP", listener)) if s is not None)
        reporter.say(f"listening on port {port} ({kinds})")
        for problem in errors:
            reporter.say(f"note: {problem}")
    hooks = Hooks(tick=reporter.tick, cancelled=lambda: reporter.cancel, wake_fd=reporter.wake_r)
    if udp is not None and listener is not None:
        chosen = _first_sender(udp, listener, reporter, common.timeout, start)
        if chosen is None:
            udp.close()
            listener.close()
            sink.close(False)
            outcome = (
                Outcome(ExitCode.CANCELLED, "the receiver was interrupted")
                if reporter.cancel
                else Outcome(ExitCode.PEER_UNREACHABLE, f"no sender arrived within {common.timeout:g} s")
            )
            reporter.finish(outcome)
            return int(outcome.code)
        if chosen is listener:
            udp.close()
            udp = None
    timeout = common.timeout or 30.0
    adopted: socket.socket | None = None
    note: str | None = None
    if udp is not None:
        cfg = ReceiverConfig(
            checkphrase=common.checkphrase,
            in_order=sink.in_order,
            window_bytes=window,
            timeout=timeout,
            wait_timeout=common.timeout,
        )
        receiver = Receiver(cfg, start)
        session = RecvSession(receiver, sink, Dropper(common.drop, common.seed) if common.drop else None)
        reporter.stats, reporter.rejections = session.stats, session.rejections

        def moved_to_tcp() -> bool:
            """auto: a sender that gave up on UDP (all our ACCEPTs lost) comes back over TCP
            with the same session id; follow it while no DATA has arrived."""
            nonlocal adopted, listener
            if adopted is None and listener is not None and receiver.session_id:
                if receiver.gaps.count:  # DATA flows over UDP: TCP is not coming
                    listener.close()
                    listener = None
                elif select.select([listener], [], [], 0)[0]:
                    adopted = take_hello(listener, receiver.session_id, 1.0)
            return adopted is not None

        udp_hooks = Hooks(
            tick=reporter.tick, cancelled=lambda: reporter.cancel or moved_to_tcp(), wake_fd=reporter.wake_r
        )
        try:
            _prepare_heap()
            outcome = run_receiver(session, udp, udp_hooks, gro=common.gso)
        finally:
            udp.close()
        if (
            adopted is None
            and listener is not None
            and receiver.peer_abort == wire.AbortCode.TIMEOUT
            and not receiver.gaps.count
        ):
            adopted = take_hello(listener, receiver.session_id, 5.0)  # its ABORT came first
        if adopted is None:
            note = session.close()
            if listener is not None:
                listener.close()
                listener = None
        else:
            session.close()  # nothing was written: start the output afresh for TCP
            reporter.say("the sender moved to TCP")
            try:
                sink = make_sink()
            except SinkError as e:
                adopted.close()
                assert listener is not None
                listener.close()
                outcome = Outcome(ExitCode.LOCAL_IO, str(e))
                reporter.finish(outcome)
                return int(outcome.code)
    if listener is not None:
        tcore = TcpReceiver(
            TcpReceiverConfig(common.checkphrase, window, timeout, common.timeout), sink, start
        )
        tdriver = TcpRecvDriver(tcore, listener, hooks)
        if adopted is not None:
            tdriver.adopt(adopted)
        reporter.stats, reporter.rejections = tdriver.stats_dict, tdriver.rejections
        try:
            _prepare_heap()
            outcome = tdriver.run()
        finally:
            listener.close()
            note = sink.close(outcome.ok)
    if note:
        reporter.say(note)
    reporter.finish(outcome)
    return int(outcome.code)


def _first_sender(
    udp: socket.socket, listener: socket.socket, reporter: Reporter, wait: float | None, start: float
) -> socket.socket | None:
    """--transport auto: whichever comes first, a UDP HELLO or a TCP connection; anything else
    that arrives over UDP meanwhile is read and dropped. None: interrupted or --timeout."""
    watch: list[Any] = [udp, listener, reporter.wake_r]
    while not reporter.cancel:
        now = time.monotonic()
        left = 0.5 if wait is None else min(0.5, start + wait - now)
        if left <= 0:
            return None
        reporter.tick(now)
        ready, _w, _x = select.select(watch, [], [], left)
        if listener in ready:
            return listener
        if udp in ready:
            try:
                data, _addr = udp.recvfrom(wire.HELLO_SIZE + 1, socket.MSG_PEEK)
                if isinstance(wire.decode_untrusted(data), wire.Hello):
                    return udp
            except wire.BadPacket:
                pass
            except OSError:
                pass
            try:
                udp.recvfrom(1)  # not a HELLO: drop it
            except OSError:
                pass
        if reporter.wake_r in ready:
            try:
                os.read(reporter.wake_r, 4096)
            except BlockingIOError:
                pass
    return None


DIGESTS = {"xxh3": wire.DigestAlg.XXH3_128, "blake3": wire.DigestAlg.BLAKE3, "sha256": wire.DigestAlg.SHA256}
F_SETPIPE_SZ = 1031  # fcntl.h (Linux)


def _widen_pipe(fd: int) -> None:
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


def _prepare_heap() -> None:
    """Two process-wide settings for the transfer that starts now.

    What exists now (modules, the first 8 MiB of the stream ring's slot views) lives until
    exit: ``gc.freeze()`` moves it out of the cyclic collector's sight, so the collections that
    the transfer's short-lived objects trigger look only at those (the collector was 7% of the
    TCP sender's samples in pipe mode, with all 190k views of a 256 MiB ring made at start).
    Slot views made later, as the ring grows, are not frozen. Reference counting still frees
    what is frozen.

    glibc's malloc hands blocks of a few MiB (the pipe receiver's joined runs) to mmap and
    gives freed heap back to the kernel, so each one is fresh memory, faulted in page by page
    (26k-34k faults per GiB in the UDP pipe receiver; 7k-9k with these settings): blocks up to
    32 MiB come from the heap, which keeps up to 256 MiB free for reuse.
    """
    gc.freeze()
    import ctypes  # here, not at the top: 4 ms of every start, `alf --help` included

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


def _fail(role: str, outcome: Outcome) -> int:
    if not outcome.ok:
        print(f"alf {role}: error: {outcome.message}", file=sys.stderr)
    return int(outcome.code)


@main.command()
@click.option(
    "--size", type=SizeType(), default="64M", show_default=True, help="Bytes of random data to send."
)
@click.option(
    "--drop",
    type=click.FloatRange(0.0, 0.5),
    default=0.05,
    show_default=True,
    help="Fraction of datagrams the receiver drops on purpose.",
)
@click.option("--rate", type=RateType(), default="2G", show_default=True, help="Sender pacing rate (RATE).")
@click.option("--pipe", is_flag=True, help="Send through a pipe (stream mode) instead of as a file.")
@click.option(
    "--wan/--no-wan",
    default=True,
    show_default=True,
    help="After the loopback transfer, alf against one TCP flow on a lab path (needs root).",
)
@click.option("--wan-only", is_flag=True, help="Only the lab part; fails where the lab cannot be built.")
@click.option(
    "--wan-size",
    type=SizeType(),
    default="96M",
    show_default=True,
    help="Bytes of random data alf, then TCP, carry across the lab path.",
)
def demo(size: int, drop: float, rate: float, pipe: bool, wan: bool, wan_only: bool, wan_size: int) -> None:
    """Send random data over loopback with loss injected, and verify it independently.

    Then, where this process may make network namespaces (as root), the same story on a lab
    path of 200 Mbit/s, 200 ms RTT and 0.5% random loss (lossy-net's 'intercontinental'):
    --wan-size bytes with alf, then with one TCP flow, each rate printed and each output's
    SHA-256 checked (about 30 s). Elsewhere one line says why that part is skipped. --size,
    --drop and --rate are the loopback part's; --pipe applies to both.

    Exit status 0 when every alf transfer that ran was verified, 1 otherwise.
    """
    from alf.demo import run_demo

    if wan_only and not wan:
        raise click.UsageError("--wan-only and --no-wan leave nothing to run")
    sys.exit(run_demo(size, drop, rate, pipe, wan=wan, wan_only=wan_only, wan_size=wan_size))


@main.command("man", hidden=True)
def man_page() -> None:
    """Print the manual page (roff): alf man | man -l -"""
    click.echo(manpage.render(main, __version__), nl=False)
