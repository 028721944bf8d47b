"""The ``alf`` command: option parsing, signals, reporting; hands off to the drivers.

Invariant: the process exits 0 only when the peer's verdict (or our own, on the receiving
side) says the whole content arrived and its digest matched; every other ending maps to one
``ExitCode``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

import click

import cc
from alf import __version__, api, events, manpage, progress, wire
from alf.errors import ExitCode, Outcome
from alf.units import parse_rate, parse_size

EXIT_CODES_HELP = """\b
Exit status:
  0    the whole content arrived and was verified end to end
  1    internal error (a bug in alf)
  2    usage error (wrong options or arguments)
  3    peer unreachable: no answer, or silent for --timeout
  4    aborted by the peer (checkphrase or key mismatch, busy, its own error)
  5    verification failed (length or digest mismatch)
  6    local I/O error (input missing, output exists, disk full)
  7    the input file changed while it was being sent: nothing delivered
  8    --resume=strict: the kept partial output is not of the content sent
  130  interrupted (SIGINT/SIGTERM)"""

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


class RateType(click.ParamType):  # type: ignore[type-arg]
    name = "RATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_rate(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None


class Finite(click.FloatRange):
    """A FloatRange that refuses NaN and the infinities (click's lets NaN through: no
    comparison with it fails)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        x = super().convert(value, param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return x


class SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_size(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None


class OptionalValue(click.ParamType):  # type: ignore[type-arg]
    """An option that is a flag ("on") or takes one other value, such as ``--resume[=strict]``:
    it takes the next argument only if that is its value (``SectionedCommand.parse_args``), so
    ``--resume 8834`` and ``--compress HOST`` leave the argument where it is."""

    def __init__(self, option: str, other: str) -> None:
        self.option, self.other = option, other
        self.name = f"[={other}]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in ("on", self.other):
            return str(value)
        o = self.option
        raise click.BadParameter(f"{value!r} is not '{self.other}': write {o} alone, or {o}={self.other}")


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
    key: str | None

    def __post_init__(self) -> None:
        if self.key is None and os.environ.get("ALF_KEY_FILE", None) == "":
            raise click.UsageError("ALF_KEY_FILE is set but empty: name a key file, or unset it")

    def api(self) -> dict[str, Any]:
        """The options both ``api.send`` and ``api.receive`` take, as the CLI was given them."""
        return dict(
            transport=self.transport, checkphrase=self.checkphrase, timeout=self.timeout,
            drop=self.drop, seed=self.seed, gso=self.gso, key=self.key,
        )  # fmt: skip


class Reporter(api.Observer):
    """The CLI's observer of a transfer: the progress line and messages (through one
    ``Console``), JSON stats lines, live stats on SIGUSR1/SIGINFO, interrupts, the heap's
    tuning, and the closing summary. The library itself does none of these."""

    def __init__(self, common: Common, role: str, where: str = "") -> None:
        self.role = role
        self.where = where  # the summary's "to got.bin" / "from in.bin"
        self.stats: Callable[[], dict[str, Any]] = dict  # the library attaches its own at once
        self._said: set[str] = set()  # rejection notices already printed
        self.verbose = common.verbose
        self.quiet = common.quiet
        live = sys.stderr.isatty() if common.progress is None else common.progress
        self.console = progress.Console(sys.stderr, live and not common.quiet)
        self.meter = progress.RateMeter()
        self.json_file: IO[str] | None = None
        self.json_path = common.stats_json
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
        self.wake = (self.wake_r, self.wake_w)

    def attach(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def event(self, event: events.Event) -> None:
        if isinstance(event, events.Rejected):
            # each sender and reason once, and no more than a few: a flood is a count
            notice = progress.rejection_notice(event.peer, event.reason)
            if notice in self._said:
                return
            self._said.add(notice)
            if len(self._said) <= MAX_REJECTION_NOTICES:
                self.say(notice)
            elif len(self._said) == MAX_REJECTION_NOTICES + 1:
                self.say("turning away more senders (rejected_hellos in the statistics counts them)")
        elif isinstance(event, events.SendFailed):
            self.say(
                f"cannot send: {event.reason} (a firewall rule or a route refuses it here); "
                "what is lost is sent again once it clears, or the peer's silence ends it"
            )
        elif isinstance(event, events.MemberSlow):
            self.say(
                f"receiver {progress.peer_name(event.peer)} is slow ({event.why}): the others go on at "
                "their pace, and it gets what it missed after them"
            )
        elif isinstance(event, events.MemberEnded):
            if event.fate != "ok":
                self.say(f"receiver {progress.peer_name(event.peer)} {event.fate}: {event.reason}")
        elif isinstance(event, events.Resumed):
            if event.why is None:
                self.say(
                    f"resuming: {progress.human_bytes(event.held_bytes)} of "
                    f"{progress.human_bytes(event.total_bytes)} are here already; the sender sends the rest"
                )
            else:
                self.say(f"starting afresh: {event.why}")
        elif isinstance(event, events.Verifying):
            self.say("every byte is here: finishing the output and checking its digest", detail=True)

    def cancelled(self) -> bool:
        return self.cancel

    def _json(self, stats: dict[str, Any]) -> None:
        """One line of --stats-json; a file that cannot take it is given up, said once: the
        statistics must never end a transfer."""
        assert self.json_file is not None
        try:
            self.json_file.write(json.dumps(stats) + "\n")
        except OSError as e:
            self._close_json()
            self.say(f"cannot write statistics to {self.json_path}: {e.strerror}; going on without them")

    def _close_json(self) -> None:
        f, self.json_file = self.json_file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def starting(self) -> None:
        _prepare_heap()

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

    def say(self, text: str, detail: bool = False) -> None:
        """A message, printed above the progress line (never into it); details with -v only."""
        if not detail or self.verbose:
            self.console.say(f"alf {self.role}: {text}")

    def snapshot(self, now: float) -> dict[str, Any]:
        return api.snapshot(self.stats(), now, self.start)

    def tick(self, now: float) -> None:
        if self.show_now:
            self.show_now = False
            self.say(json.dumps(self.snapshot(now)))
        if self.json_file is not None and now >= self._next_json:
            self._next_json = now + self.interval
            self._json(self.snapshot(now))
        if now >= self._next_sample:
            self._next_sample = now + PROGRESS_INTERVAL
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
            self._json(final)
            if self.json_file is not None:
                self._close_json()
        self.console.end()
        seconds = final["transfer_s"]
        lines = progress.summary(final, outcome.ok, outcome.message, seconds, self.where)
        if self.verbose:
            lines += progress.details(final)
        for line in lines if not self.quiet else lines[:1] if not outcome.ok else []:
            self.console.say(line)


PROGRESS_INTERVAL = 0.25  # seconds between redraws of the progress line (and rate samples)
MAX_REJECTION_NOTICES = 5  # distinct "turned away a sender" messages before they become a count


HELP_SECTIONS: dict[str, list[str]] = {
    "Essentials": [
        "output",
        "force",
        "transport",
        "key",
        "checkphrase",
        "timeout",
        "verbose",
        "quiet",
        "progress",
        "help",
    ],
    "Rate control": ["cc_name", "rate", "min_rate"],
    "Reliability and integrity": [
        "fec",
        "digest",
        "checksum",
        "window",
        "if_changed",
        "adu_size",
        "fsync",
    ],
    "Resume and byte ranges": ["resume", "keep_partial", "offset", "length"],
    "Compression": ["compress", "compress_level"],
    "Paths and TCP": ["bind", "extra_paths", "stripe", "streams", "gso"],
    "Multicast": ["group", "receivers", "wait", "quorum", "slow", "ttl", "interface"],
    "Diagnostics and fault injection": ["stats_json", "stats_interval", "drop", "seed", "chaos"],
}
UNITS_HELP = """\b
Units:
  RATE  bits per second; k, M, G, T are powers of 1000 (800M, 1.5G); at most 1T
  SIZE  bytes; K, M, G, T are powers of 1024 (256M = 256 MiB); a --window at most
        half of this machine's memory"""


class SectionedCommand(click.Command):
    """A command whose --help lists its options in the sections of HELP_SECTIONS, in that
    order, as a man page groups them."""

    sections = HELP_SECTIONS

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """An ``OptionalValue`` option followed by anything but its values is the flag alone:
        ``--compress FILE`` is ``--compress=on FILE`` (click would take FILE as its value)."""
        takes = {o: p.type for p in self.params if isinstance(p.type, OptionalValue) for o in p.opts}
        out = list(args)
        for i, a in enumerate(args):
            if a == "--":
                break
            t = takes.get(a)
            if t is not None and (i + 1 == len(args) or args[i + 1] not in ("on", t.other)):
                out[i] = a + "=on"
        return super().parse_args(ctx, out)

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
            f"if UDP gets no answer within {api.AUTO_HELLO_TIMEOUT:g} s.",
        ),
        click.option("--bind", metavar="ADDR", default=None, help="Local address to use."),
        click.option(
            "--checkphrase",
            default="",
            metavar="WORD",
            help="Both sides must give the same word (guards against a stale or wrong peer; not security: "
            "that is --key).",
        ),
        click.option(
            "--key",
            metavar="FILE",
            default=None,
            envvar="ALF_KEY_FILE",
            show_envvar=True,
            help="Encrypt and authenticate the transfer with the key in FILE (make one with "
            "alf keygen > FILE; both sides give the same; mode 600). UDP, TCP and multicast alike; "
            "the other side must have it too (else exit 4).",
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
            type=Finite(min=0.1),
            default=None,
            metavar="SECONDS",
            help="Give up when the peer is silent this long [default: 30; the receiver waits for its "
            "first sender without limit unless this is given].",
        ),
        click.option(
            "--drop",
            type=Finite(0.0, 0.99),
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
            type=Finite(min=0.01),
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
    help="RATE, in bits/s: the ceiling of --cc adaptive [default: 40G], or the pacing rate "
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
    type=click.Choice(list(api.DIGESTS)),
    default="xxh3",
    show_default=True,
    help="End-to-end digest of the whole content, checked by the receiver (XXH3-128 guards against "
    "corruption at 28 GB/s; BLAKE3 and SHA-256 are cryptographic).",
)
@click.option(
    "--if-changed",
    "if_changed",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="A FILE written to while it is sent: fail (exit 7, nothing delivered), or warn and send "
    "what the first pass read (a log that grows); bytes that changed under a repair fail either way.",
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
    metavar="HOST[:PORT][@LOCAL][%IFACE][,backup][,rate=RATE]",
    help="Another way to the receiver (repeatable; HOST PORT is the first, PORT defaults to PORT): "
    "its address, the local address or interface to leave from, ',backup' for one that carries "
    "data only while no other path is up, and ',rate=RATE' for the most this path may carry (UDP; "
    "--rate caps the sum). UDP stripes the transfer over every path (each with its own "
    "rate control; the receiver must listen on each address), as TCP does.",
)
@click.option(
    "--stripe",
    type=click.Choice(list(api.STRIPE_POLICIES)),
    default="prefer",
    show_default=True,
    help="How data is spread over the paths: prefer fills the first and gives the next only what it "
    "cannot take; weighted shares by each path's rate; minrtt takes the earliest expected arrival "
    "(TCP: always in the order given).",
)
@click.option(
    "--chaos",
    type=SizeType(),
    default=None,
    metavar="SIZE",
    help="Fault injection (TCP): reset one connection, chosen with --seed, after every SIZE bytes sent.",
)
@click.option(
    "--receivers",
    type=click.IntRange(1, api.MAX_MEMBERS),
    default=None,
    metavar="N",
    help="Multicast (HOST a group, 224.0.0.0/4): start once N receivers have joined; success needs "
    "all N to verify the content (or --quorum) [default: whoever joined within --wait].",
)
@click.option(
    "--wait",
    type=Finite(min=0.01, max=3600),
    default=None,
    metavar="SECONDS",
    help="Multicast: start this long after the first announcement with the receivers that joined "
    "[default: 5 without --receivers].",
)
@click.option(
    "--quorum",
    type=click.IntRange(1, api.MAX_MEMBERS),
    default=None,
    metavar="K",
    help="Multicast: succeed (exit 0) if at least K receivers verified the content, whatever the others "
    "did (the sender still ends only once every receiver has: a silent one after --timeout).",
)
@click.option(
    "--slow",
    type=click.Choice(["catch-up", "drop", "wait"]),
    default="catch-up",
    show_default=True,
    help="Multicast: a receiver far slower than the others (under a quarter of their median rate for "
    "0.5 s): catch-up lets the others go at their pace and sends it what it missed after them (a FILE; "
    "a pipe waits for it); drop sends it away (reported dropped-slow); wait keeps the group at its pace.",
)
@click.option(
    "--fec",
    metavar="auto|off|RATIO",
    default="auto",
    show_default=True,
    help="Parity (erasure coding) for a FILE: auto repairs a group with parity (one parity datagram "
    "fills a different hole at each receiver) and sends parity with a unicast file's last blocks on a "
    "long lossy path; RATIO (unicast, e.g. 0.05) sends that share with every block; off only resends.",
)
@click.option(
    "--offset",
    metavar="SIZE",
    default=None,
    help="Send FILE from this byte on (a SIZE); the receiver writes it at the same offset of its "
    "output, in place, so several transfers can each fill a slice of one file.",
)
@click.option(
    "--length",
    metavar="SIZE",
    default=None,
    help="Send only this many bytes of FILE (a SIZE) [default: to its end].",
)
@click.option(
    "--compress",
    type=OptionalValue("--compress", "auto"),
    metavar="[=auto]",
    is_flag=False,
    flag_value="on",
    default=None,
    help="Compress the input in blocks of 1 MiB (zstd), each sent as it is when a probe says it "
    "does not compress; the receiver restores it. Pays on paths slower than about "
    "1 Gbit/s; a file goes as a stream then (alf recv --resume takes it up in whole MiB). "
    "--compress=auto compresses while that makes the input go faster, found by trying either way.",
)
@click.option(
    "--compress-level",
    type=click.IntRange(1, 19),
    default=1,
    show_default=True,
    metavar="N",
    help="zstd level for --compress (1 is the fastest; higher levels compress more, far slower).",
)
@click.option(
    "--ttl",
    type=click.IntRange(1, 255),
    default=1,
    show_default=True,
    metavar="N",
    help="Multicast: hops the group's datagrams may cross (1: this link only).",
)
@click.option(
    "--interface",
    metavar="NAME",
    default=None,
    help="Multicast: the interface to send on [default: the group's route].",
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
    if_changed: str,
    stripe: str,
    receivers: int | None,
    wait: float | None,
    quorum: int | None,
    ttl: int,
    interface: str | None,
    slow: str,
    fec: str,
    offset: str | None,
    length: str | None,
    compress: str | None,
    compress_level: int,
    **kw: Any,
) -> None:
    """Send FILE (or stdin, '-') to an `alf recv` at HOST PORT (or HOST:PORT, [IPv6]:PORT)."""
    host, port_number, file = host_port_file(host, port, file)
    common = Common(**kw)
    try:
        reporter = Reporter(common, "send")
    except LocalError as e:
        sys.exit(_fail("send", Outcome(ExitCode.LOCAL_IO, str(e))))
    options: dict[str, Any] = dict(
        cc=cc_name, min_rate=min_rate, rate=rate, adu_size=adu_size, checksum=checksum, digest=digest,
        window=window, streams=streams, paths=extra_paths, chaos=chaos, bind=bind, if_changed=if_changed,
        stripe=stripe, receivers=receivers, wait=wait, quorum=quorum, ttl=ttl, interface=interface,
        slow=slow, fec=fec, offset=offset, length=length, compress=compress, compress_level=compress_level,
    )  # fmt: skip
    sys.exit(
        _run(
            reporter, lambda: api.send(host, port_number, file, observer=reporter, **options, **common.api())
        )
    )


def _run(reporter: Reporter, transfer: Callable[[], api.Result]) -> int:
    """The one seam between the command line and the library: signals, then the transfer."""
    reporter.install_signals()
    try:
        return transfer().exit_code
    except api.UsageError as e:
        raise click.UsageError(str(e)) from None


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def host_port_file(host: str, port: str | None, file: str | None) -> tuple[str, int, str]:
    """HOST PORT [FILE], or HOST:PORT [FILE] as one argument (as ssh, curl and nc users type
    it; [v6addr]:PORT for IPv6). A bare IPv6 address has several colons and stays a host."""
    if port is not None and _port(port) is not None:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1] PORT
        return bare, int(port), file or "-"
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
@click.option(
    "--group",
    metavar="ADDR",
    default=None,
    help="Also listen on the IPv4 multicast group ADDR, for an `alf send ADDR PORT` (UDP only).",
)
@click.option(
    "--interface",
    metavar="NAME",
    default=None,
    help="With --group: the interface to join it on [default: the group's route].",
)
@click.option(
    "--fec",
    type=click.Choice(["auto", "off"]),
    default="auto",
    show_default=True,
    help="With -o FILE: decode the sender's parity (off: ask for resends only).",
)
@click.option(
    "--resume",
    type=OptionalValue("--resume", "strict"),
    metavar="[=strict]",
    is_flag=False,
    flag_value="on",
    default=None,
    help="With -o FILE: take up what a failed receive into FILE kept (FILE.alf-partial and "
    "FILE.alf-resume); the sender sends only the rest. A sender of another content starts it "
    "afresh; --resume=strict refuses it instead (exit 8).",
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
    group: str | None,
    interface: str | None,
    fec: str,
    resume: str | None,
    **kw: Any,
) -> None:
    """Receive one transfer on PORT; write it to stdout (in order) or to -o FILE."""
    common = Common(**kw)
    if output is None and sys.stdout.isatty():
        sys.exit(
            _fail(
                "recv",
                Outcome(
                    ExitCode.USAGE,
                    "stdout is a terminal, and the data would be printed on it: redirect it "
                    f"(alf recv {port} > FILE), pipe it (alf recv {port} | tar xf -), give -o FILE, "
                    "or -o - to print it anyway",
                ),
            )
        )
    try:
        reporter = Reporter(common, "recv", "" if output in (None, "-") else f"into {output}")
    except LocalError as e:
        sys.exit(_fail("recv", Outcome(ExitCode.LOCAL_IO, str(e))))
    options: dict[str, Any] = dict(
        force=force, fsync=fsync, keep_partial=keep_partial, window=window, bind=bind, group=group,
        interface=interface, fec=fec, resume=resume,
    )  # fmt: skip
    sys.exit(_run(reporter, lambda: api.receive(port, output, observer=reporter, **options, **common.api())))


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
    type=Finite(0.0, 0.5),
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


@main.command()
@click.argument("file", required=False, metavar="[FILE]")
def keygen(file: str | None) -> None:
    """Make a new random key (256 bits) for --key: alf keygen transfer.key

    FILE is created private to its owner (mode 600) and must not exist. Without FILE the key
    is printed (alf keygen > transfer.key: a file stdout names is made mode 600 before the key
    goes in, but whoever opened it before that keeps access; FILE leaves no such moment).
    Copy the key to the other side over a channel you trust (scp, a password manager).
    """
    from alf import seal

    line = seal.new_key() + "\n"
    if file is None:
        st = os.fstat(sys.stdout.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            os.fchmod(sys.stdout.fileno(), 0o600)
        click.echo(line, nl=False)
        return
    try:
        fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        sys.exit(_fail("keygen", Outcome(ExitCode.LOCAL_IO, f"cannot create {file}: {e.strerror}")))
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@main.command("man", hidden=True)
def man_page() -> None:
    """Print the manual page (roff): alf man | man -l -"""
    click.echo(manpage.render(main, __version__), nl=False)
