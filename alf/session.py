"""Glue between a protocol core and its data store, still free of I/O.

The sender side turns the core's runs of indices into DATA datagrams (header + payload view,
ready for a scatter-gather send); the receiver side parses DATA headers, groups consecutive
indices into runs for the core, and hands the accepted payloads to the sink. Drivers (UDP
sockets, the simulated network) only move datagrams and read clocks.

Invariant: every incoming datagram is either processed, or counted in exactly one drop
counter (injected loss, malformed, foreign, bad checksum).
"""

from __future__ import annotations

import functools
import math
import random
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alf import fec, wire
from alf.content import MAX_RUN, Buffer, Sink, SinkError, Source, source_failure
from alf.digest import NAMES as digest_names
from alf.events import Event, Verifying
from alf.ranges import ceil_div
from alf.receiver import Addr, Receiver
from alf.receiver import State as RState
from alf.sender import Datagram, Run, Sender

_DATA = wire.MsgType.DATA
_PARITY = wire.MsgType.PARITY
_HDR = wire.DATA_HEADER
_HDR_SIZE = wire.DATA_HEADER_SIZE
_PN, _TAG = wire.SEAL_PN, wire.SEAL_TAG  # §17: a sealed datagram's packet number and tag


class Dropper:
    """``--drop P --seed N``: drop a seeded random fraction of incoming datagrams.

    Each datagram is dropped with probability P, independently (a Bernoulli process), drawn as
    the geometric gap to the next drop: one draw per drop rather than one per datagram, which
    cost 0.2-0.3 s of the receiver's CPU per GiB at 1% (800k draws and a list comprehension).
    """

    def __init__(self, probability: float, seed: int) -> None:
        if not 0.0 <= probability < 1.0:
            raise ValueError("drop probability must be in [0, 1)")
        self._random = random.Random(seed).random
        self._log_keep = math.log1p(-probability) if probability > 0.0 else 0.0
        self._next = self._gap()  # datagrams to let through before the next drop

    def _gap(self) -> int | float:
        if not self._log_keep:
            return math.inf
        # P(gap = g) = (1-p)^g p: the inverse of the geometric distribution's CDF at 1 - U
        return int(math.log(1.0 - self._random()) / self._log_keep)

    def drops(self, count: int) -> list[int]:
        """Which of the next ``count`` datagrams to drop (positions 0..count-1, ascending)."""
        out: list[int] = []
        k = self._next
        while k < count:
            out.append(int(k))
            k += 1 + self._gap()
        self._next = k - count
        return out

    def drop(self) -> bool:
        """Whether to drop the next datagram."""
        return bool(self.drops(1))


@dataclass(frozen=True)
class DataBatch:
    """DATA datagrams for one or more runs, in order: ``headers[k]`` + ``payloads[k]`` is the
    k-th datagram; all are full-size but perhaps the last."""

    runs: list[Run]
    headers: list[memoryview]
    payloads: list[Buffer]

    @property
    def count(self) -> int:
        return len(self.headers)

    @property
    def path(self) -> int:
        """The path every run of the batch goes on."""
        return self.runs[0].path

    def iov(self) -> list[Buffer]:
        """header, payload, header, payload, ...: one scatter list for a GSO send."""
        out: list[Buffer] = [b""] * (2 * len(self.headers))
        out[0::2] = self.headers
        out[1::2] = self.payloads
        return out


class SendSession:
    def __init__(
        self, sender: Sender, source: Source, dropper: Dropper | None = None, max_run: int = MAX_RUN
    ) -> None:
        self.sender = sender
        self.source = source
        sender.source_window = source.window_adus
        self._skipping = False  # the source was told the receiver holds parts of it (§18)
        self._told = False  # the source was told the receiver accepted it (and what it holds)
        self.dropper = dropper
        self.max_run = max_run
        self.datapath = ""  # how the driver moves datagrams ("gso", "per-datagram"), for the stats
        self._headers = bytearray(max_run * _HDR_SIZE)
        hv = memoryview(self._headers)
        self._header_views = [hv[k * _HDR_SIZE : (k + 1) * _HDR_SIZE] for k in range(max_run)]
        self._block: tuple[int, int, bytearray] | None = None  # §16: the block parity was last made from
        self._stride = _HDR_SIZE + sender.adu + sender.overhead  # a sealed datagram's room (§17)
        self._sealed = bytearray(max_run * self._stride) if sender.overhead else bytearray()

    @property
    def segment(self) -> int:
        """The size of a full DATA datagram on the wire (the GSO segment)."""
        return self._stride

    def on_datagram(
        self, buf: Buffer, now: float, arrived: float | None = None, path: int = 0, addr: object | None = None
    ) -> None:
        """A datagram read at ``now`` on ``path`` (from ``addr``, None: the connected socket's
        peer); ``arrived``: when it reached the host, if known."""
        if self.dropper is not None and self.dropper.drop():
            self.sender.stats.dropped_injected += 1
            return
        self.sender.handle_datagram(buf, now, arrived, path, addr)

    def _sync_source(self) -> None:
        s, src = self.sender, self.source
        if s.peer_held is not None and not self._told:
            self._told = True
            src.accepted(s.peer_held)
        if s.stats.adus_held and not self._skipping:
            self._skipping = True
            src.skipping()  # §18: what the receiver holds is hashed, not sent
        s.add_available(src.available())
        if s.end_adus is None:
            total = src.total_bytes()
            if total is not None:
                s.set_end(total)
        if s.digest is None:
            d = src.digest()
            if d is not None:
                s.set_digest(d)
        err = src.error()
        if err is not None:
            s.cancel(wire.AbortCode.LOCAL_IO, err, source_failure(err))
        # Runs handed out later start at or above acked, so their views stay valid.
        src.release(s.peer.acked)

    def control(self, now: float) -> list[Datagram]:
        """Control datagrams due now (HELLO, PROBE, CLOSE, ABORT), with their paths."""
        self._sync_source()
        return self.sender.poll(now)

    def ready(self, now: float) -> int:
        """How many ADUs may be sent right now."""
        self._sync_source()
        return self.sender.ready_count(now)

    def next_batch(self, now: float, max_count: int) -> DataBatch | None:
        """Up to ``max_count`` ADUs as DATA datagrams (None: nothing now): one run of new data,
        or scattered repairs together (they share the system calls: one GSO send for up to 44
        single-ADU repairs, where each took a ``sendmsg`` of its own and arrived alone).

        The batch's views point into buffers reused by the next call: send it before that.
        """
        s = self.sender
        runs = s.next_runs(now, min(max_count, self.max_run))
        if not runs:
            return None
        payloads: list[Buffer] = []
        try:
            for run in runs:
                if run.row >= 0:
                    payloads += self._parity(run)
                else:
                    payloads += self.source.read(run.first, run.count, len(payloads))
        except (OSError, KeyError, ValueError) as e:
            err = self.source.error() or f"cannot read the input: {e}"
            s.cancel(wire.AbortCode.LOCAL_IO, err, source_failure(err))
            return None
        if any(run.row >= 0 for run in runs):
            return self._sealed_batch(self._mixed_batch(runs, payloads))
        first = runs[0].first  # one run (new data, a burst of loss) needs no list of its indices
        indices: Sequence[int] = (
            range(first, first + len(payloads))
            if len(runs) == 1
            else [i for run in runs for i in range(run.first, run.first + run.count)]
        )
        self._data_headers(self._headers, indices, payloads)
        return self._sealed_batch(DataBatch(runs, self._header_views[: len(payloads)], payloads))

    def _sealed_batch(self, batch: DataBatch) -> DataBatch:
        """§17: with a key, the batch sealed (each datagram's header and packet number in
        clear, its payload encrypted with its tag), in the session's own buffer."""
        keys = self.sender.keys
        if keys is None or keys.data is None:
            return batch
        clear, sealed = keys.data.seal_into(self._sealed, self._stride, batch.headers, batch.payloads)
        return DataBatch(batch.runs, clear, list(sealed))

    def _data_headers(
        self, buf: bytearray | memoryview, indices: Sequence[int], payloads: Sequence[Buffer]
    ) -> None:
        """The DATA headers of ``indices`` into ``buf`` (with ``--checksum``, each payload's CRC;
        sealed, §17, the tag is the check)."""
        checksums = None
        if self.sender.cfg.checksum and not self.sender.overhead:
            crc = wire.data_checksum
            checksums = [crc(i, p) for i, p in zip(indices, payloads, strict=True)]
        wire.pack_data_headers_into(buf, self.sender.session_id, indices, checksums)

    def _parity(self, run: Run) -> list[Buffer]:
        """§16: the parity symbols of ``run``, encoded from its block (read once for the runs
        of one block: a block's symbols often go in several runs as the pacer allows)."""
        s = self.sender
        codec = fec.codec()
        if codec is None or s.end_adus is None:
            raise ValueError("parity without a codec")
        block = run.first // fec.BLOCK
        if self._block is None or self._block[0] != block:
            first, k = fec.block_span(block, s.end_adus)
            data = self.source.block(first, k)
            whole = data if isinstance(data, bytearray) else bytearray(data)
            whole += bytes(k * s.adu - len(whole))  # the short last ADU, padded with zeros
            self._block = (block, k, whole)
        _b, k, whole = self._block
        out = codec.encode(whole, k, s.adu, range(run.row, run.row + run.count))
        view = memoryview(out)
        return [view[i * s.adu : (i + 1) * s.adu] for i in range(run.count)]

    def _mixed_batch(self, runs: list[Run], payloads: list[Buffer]) -> DataBatch:
        """A batch with parity in it: each run's headers in turn (DATA or PARITY, §16)."""
        s = self.sender
        pos = 0
        view = memoryview(self._headers)
        sid = s.session_id
        for run in runs:
            if run.row >= 0:
                block = run.first // fec.BLOCK
                for i in range(run.count):
                    wire.PARITY_HEADER.pack_into(
                        self._headers,
                        (pos + i) * _HDR_SIZE,
                        wire.VERSION,
                        _PARITY,
                        0,
                        0,
                        run.row + i,
                        sid,
                        block,
                    )
            else:
                indices = range(run.first, run.first + run.count)
                self._data_headers(view[pos * _HDR_SIZE :], indices, payloads[pos : pos + run.count])
            pos += run.count
        return DataBatch(runs, self._header_views[:pos], payloads)

    def step(self, now: float) -> tuple[list[Datagram], DataBatch | None]:
        """Control datagrams due now, and at most one batch of DATA (no smart batching)."""
        control = self.control(now)
        return control, self.next_batch(now, self.max_run)

    def stats(self) -> dict[str, Any]:
        s = self.sender
        out = asdict(s.stats)
        total = s.total_bytes
        out.update(
            transport="udp",
            role="send",
            state=s.state.value,
            total_bytes=total,
            bytes_sent=(s.next_new * s.adu if total is None else min(s.next_new * s.adu, total))
            - s.held_passed(),  # (§18: what the receiver held is passed, not sent)
            bytes_resent=s.stats.adus_repair * s.adu,
            acked_bytes=s.shown_acked() * s.adu if total is None else min(s.shown_acked() * s.adu, total),
            digest=digest_names[s.cfg.digest],
            began=s.began,
            datapath=self.datapath,
            adu_size=self.sender.adu,
            session=f"{s.session_id:016x}",
            next_new=s.next_new,
            total_adus=s.end_adus,
            repair_pending=s.repair_pending(),
            ceiling_bps=s.cfg.rate_bps,
            sealed=s.keys is not None,
        )
        out.update(s.path.cc.snapshot())
        members = s.member_stats()
        if members is not None:
            out["receivers"] = members
        if s.multipath:
            out["paths"] = [
                {
                    "path": p.id + 1,
                    "state": p.state + (f": {p.failed}" if p.failed else ""),
                    "backup": p.backup,
                    "bytes_new": p.new_adus * s.adu,
                    "bytes_repaired": p.repair_adus * s.adu,
                    "adus_nakked": p.nakked_adus,
                    "loss": round(p.loss, 4),
                    "rate_bps": round(p.cc.rate_bps),
                    "receive_rate_bps": p.receive_rate_Bps * 8,
                    "srtt_ms": round((p.srtt or 0.0) * 1e3, 2),
                    "downs": p.downs,
                }
                for p in s.paths
            ]
            out["rate_bps"] = round(sum(p.cc.rate_bps for p in s.paths if p.up))
        return out


@functools.lru_cache(maxsize=256)
def _headers_struct(segment: int, count: int) -> struct.Struct:
    """Reads the 16-byte common header and the index of ``count`` DATA datagrams laid end to end
    ``segment`` bytes apart (a GRO buffer) in one call, skipping the payloads."""
    return struct.Struct("!" + f"16sQ{segment - _HDR_SIZE}x" * (count - 1) + "16sQ")


class RecvSession:
    def __init__(self, receiver: Receiver, sink: Sink, dropper: Dropper | None = None) -> None:
        self.receiver = receiver
        self.sink = sink
        self.dropper = dropper
        self._started = False
        self._verifying = False
        self.datapath = ""  # how the driver moves datagrams ("gro", "per-datagram"), for the stats
        self._prefix = b""  # the common header every DATA of the bound session carries
        self._run_first = -1  # a run gathered from consecutive GRO buffers, not yet handed on
        self._run: list[Buffer] = []
        self._views: dict[tuple[int, int, int], list[Buffer]] = {}  # payload views per receive slot

    def on_coalesced(
        self, buf: memoryview, segment: int, addr: Addr, now: float, slot: int | None = None
    ) -> None:
        """A GRO buffer: datagrams of ``segment`` bytes end to end (the last may be shorter).

        When they are what a healthy transfer sends (one session, no checksum, consecutive
        indices, full ADUs but perhaps the last) the whole buffer becomes one run with no
        per-datagram Python work; anything else goes through the general path. ``slot`` names
        the driver's reusable receive buffer ``buf`` lies at the start of: its payload views are
        then built once and reused (0.18 s per GiB in cProfile when built per buffer).
        """
        r = self.receiver
        n = len(buf)
        count = ceil_div(n, segment)
        at, tail = _HDR_SIZE, 0  # where each payload starts in its segment, and what follows it
        if r.cfg.key is not None:  # §17: nothing of it counts unless it opens
            if r.data_keys is None or not self._open_coalesced(buf, segment, addr, now, slot):
                if r.data_keys is None:
                    self.on_datagrams([(buf[k : k + segment], addr) for k in range(0, n, segment)], now)
                return
            at, tail = _HDR_SIZE + _PN, _TAG  # §17: opened where it lies: header, number, payload, tag
        if (
            self._prefix
            and addr in r.peers
            and segment == r.adu + at + tail
            and n - (count - 1) * segment > at + tail
        ):
            fields = _headers_struct(segment, count).unpack_from(buf, 0)
            indices = fields[1::2]
            first = indices[0]
            if fields[0::2].count(self._prefix) == count and indices == tuple(range(first, first + count)):
                r.stats.datagrams += count
                r.stats.wire_bytes += n
                if r.multipath:
                    r.path_data(addr, n, first + count, now)
                # a full buffer in a named slot: the same views every time, built once
                key = (slot, segment, count) if slot is not None and n == count * segment else None
                views = self._views.get(key) if key else None
                if views is None:
                    views = [buf[k + at : min(k + segment, n) - tail] for k in range(0, n, segment)]
                    if key:
                        self._views[key] = views
                payloads: list[Buffer] = views[:]  # a copy: _gather may extend it
                if self.dropper is None:
                    self._gather(first, payloads, now)
                    return
                lost = self.dropper.drops(count)
                r.stats.dropped_injected += len(lost)
                start = 0
                for k in [*lost, count]:
                    if k > start:
                        self._gather(first + start, payloads[start:k], now)
                    start = k + 1
                return
        if r.cfg.key is None:
            self.on_datagrams([(buf[k : k + segment], addr) for k in range(0, n, segment)], now)
            return
        items: list[tuple[Buffer, Addr]] = [
            (wire.sealed_plain(buf, k, min(k + segment, n)), addr) for k in range(0, n, segment)
        ]
        self.on_datagrams(items, now, opened=True)

    def _open_coalesced(
        self, buf: memoryview, segment: int, addr: Addr, now: float, slot: int | None
    ) -> bool:
        """§17: opens every segment of a GRO buffer in place (each stays header, number,
        payload, tag); True when all opened. Otherwise those that opened (their headers moved
        up to their payloads) and any control among them go on one by one from here, and the
        DATA and PARITY that did not open are counted."""
        r = self.receiver
        keys = r.data_keys
        assert keys is not None and keys.data_in is not None
        failed = keys.data_in.open_segments(buf, segment, _HDR_SIZE, slot)
        if len(failed) < ceil_div(len(buf), segment):
            r.sender_keyed = True
        if not failed:
            return True
        n = len(buf)
        bad = set(failed)
        items: list[tuple[Buffer, Addr]] = []
        for k in range(0, n, segment):
            end = min(k + segment, n)
            kind = buf[k + 1] if end - k > 1 else 0
            if k not in bad:
                items.append((wire.sealed_plain(buf, k, end), addr))
            elif kind == _DATA or kind == _PARITY:
                r.stats.datagrams += 1
                r.stats.unauthenticated += 1
            else:
                items.append((buf[k:end], addr))  # control: the core opens it (or drops it)
        self.on_datagrams(items, now, opened=True)
        return False

    def _gather(self, first: int, payloads: list[Buffer], now: float) -> None:
        """Add consecutive ADUs to the gathered run, or hand that on and start a new one."""
        run = self._run
        if run and first == self._run_first + len(run) and len(run[-1]) == self.receiver.adu:
            run.extend(payloads)
        else:
            self.flush(now)
            self._run_first, self._run = first, payloads

    def flush(self, now: float) -> None:
        """Hand on the run gathered from GRO buffers. Call it before their memory is reused."""
        if self._run:
            run, self._run = self._run, []
            self._flush(self._run_first, run, now)
            self._after(now)

    def on_datagrams(
        self,
        items: Sequence[tuple[Buffer, Addr]],
        now: float,
        arrived: float | None = None,
        opened: bool = False,
    ) -> None:
        """Datagrams read at ``now``; ``arrived``: when they reached the host, if known.
        ``opened``: their DATA and PARITY are plain already (§17: opened by on_coalesced)."""
        self.flush(now)  # what came before goes first
        r = self.receiver
        st = r.stats
        drop = self.dropper.drop if self.dropper is not None else None
        run_first = -1
        run: list[Buffer] = []
        adu = r.adu
        sealed = r.cfg.key is not None and not opened  # §17: DATA and PARITY must open first
        for buf, addr in items:
            st.datagrams += 1
            n = len(buf)
            kind = buf[1] if n > _HDR_SIZE else 0
            is_data = kind == _DATA
            if is_data or kind == _PARITY:
                st.wire_bytes += n + (wire.SEAL_OVERHEAD if opened else 0)
            if drop is not None and drop():
                st.dropped_injected += 1
                continue
            if sealed and (is_data or kind == _PARITY):
                plain = self._opened(buf) if r.data_keys is not None else None  # §17 (keys come with a HELLO)
                if plain is None:
                    st.unauthenticated += 1
                    continue
                buf, n = plain, len(plain)
            if kind == _PARITY:
                if run:
                    self._flush(run_first, run, now)
                    run = []
                self._on_parity(buf, addr, now)
                continue
            if not is_data:
                if run:
                    self._flush(run_first, run, now)
                    run = []
                r.handle_control(buf, addr, now, arrived)
                if not self._started and r.hello is not None:
                    self._start(now)
                    adu = r.adu
                    if not r.hello.checksum:
                        self._prefix = wire.COMMON.pack(wire.VERSION, _DATA, 0, 0, 0, r.session_id)
                continue
            v, _t, flags, res, aux, sid, index = _HDR.unpack_from(buf, 0)
            if v != wire.VERSION or res or flags & ~wire.DATA_FLAG_CHECKSUM or (aux and not flags):
                st.malformed += 1
                continue
            if sid != r.session_id or addr not in r.peers or r.hello is None:
                st.foreign += 1
                continue
            if r.multipath:
                r.path_data(addr, n, index + 1, now)
            payload = memoryview(buf)[_HDR_SIZE:]
            if bool(flags) != r.hello.checksum or n - _HDR_SIZE > adu:
                st.violations += 1
                continue
            if flags and wire.data_checksum(index, payload) != aux:
                st.bad_checksum += 1
                continue
            if run and index == run_first + len(run) and len(run[-1]) == adu:
                run.append(payload)
            else:
                if run:
                    self._flush(run_first, run, now)
                run_first, run = index, [payload]
        if run:
            self._flush(run_first, run, now)
        self._after(now)

    def _opened(self, buf: Buffer) -> memoryview | None:
        """§17: a sealed DATA or PARITY opened in place (in a copy, if ``buf`` is read-only),
        as its plain datagram; None if it fails."""
        keys = self.receiver.data_keys
        assert keys is not None and keys.data_in is not None
        view = memoryview(buf)
        if view.readonly:
            view = memoryview(bytearray(view))
        if not keys.data_in.open_in_place(view, _HDR_SIZE):
            return None
        self.receiver.sender_keyed = True
        return view[_PN : len(view) - _TAG]

    def _on_parity(self, buf: Buffer, addr: Addr, now: float) -> None:
        """§16: a PARITY symbol; once its block holds as many symbols as it lacks ADUs, the
        block is read back from the output, decoded and the ADUs it lacked written."""
        r = self.receiver
        try:
            msg = wire.decode_untrusted(buf)
        except wire.BadPacket:
            r.stats.malformed += 1
            return
        assert isinstance(msg, wire.Parity)
        if msg.session_id != r.session_id or addr not in r.peers or r.hello is None:
            r.stats.foreign += 1
            return
        r.on_parity(msg.block, msg.row, msg.payload, now)

    def _decode(self, now: float) -> None:
        """§16: each block that holds as many parity symbols as it lacks ADUs is read back from
        the output, decoded, and the ADUs it lacked written."""
        r = self.receiver
        codec = fec.codec()
        assert codec is not None and r.end_adus is not None and r.total_bytes is not None
        adu = r.adu
        while r.decodable:
            block = r.decodable.pop()
            missing, rows, symbols = r.parity_for(block)
            first, k = fec.block_span(block, r.end_adus)
            try:
                data = self.sink.read_block(first, k)
                end = r.total_bytes - first * adu  # the content's last ADU may be short
                if end < len(data):
                    data[end:] = bytes(len(data) - end)  # coded as zeros (a device holds old bytes there)
                codec.decode(data, k, adu, missing, rows, symbols)
                view = memoryview(data)
                for j in missing:
                    self.sink.write_run(first + j, [view[j * adu : min((j + 1) * adu, end)]])
            except SinkError as e:
                r.fail_local(str(e), now)
                return
            except ValueError:  # the codec refused what it was given: its holes go by resend
                r.undecodable(block)
                continue
            r.on_decoded(block, missing, now)

    def _start(self, now: float) -> None:
        r = self.receiver
        assert r.hello is not None
        self._started = True
        try:
            self.sink.start(r.adu, r.total_bytes, r.hello.digest_alg, r.place)
        except SinkError as e:
            r.fail_local(str(e), now)

    def _flush(self, first: int, payloads: Sequence[Buffer], now: float) -> None:
        r = self.receiver
        new = r.on_data_run(first, len(payloads), len(payloads[-1]), now)
        failed: SinkError | None = None
        for a, b in new:  # (each is tried: the sink records which failed, not held for a resume)
            try:
                self.sink.write_run(a, payloads[a - first : b - first])
            except SinkError as e:
                failed = failed or e
        if failed is not None:
            r.fail_local(str(failed), now)

    def _after(self, now: float) -> None:
        r = self.receiver
        if r.state != RState.RECEIVING or not self._started:
            return
        if r.decodable:
            self._decode(now)
        try:
            r.set_consumed(self.sink.advance(r.gaps.cum))
            if r.needs_verification and not self._verifying:
                self._verifying = True
                r.events.add(Verifying())
            if r.needs_verification and not self.output_pending:
                nbytes, digest = self.sink.finish(r.total_bytes or 0, r.final_digest)
                r.verify(nbytes, digest, now)
        except SinkError as e:
            r.fail_local(str(e), now)

    @property
    def output_pending(self) -> bool:
        """Everything is held but the writer has not written it all yet (a consumer slower than
        the sender): the verdict waits, without blocking, while the loop answers the sender.
        The TCP core applies the same rule (TcpReceiver._maybe_verify)."""
        r = self.receiver
        return bool(self.sink.in_order and r.end_adus is not None and r.consumed < r.end_adus)

    def poll(self, now: float) -> list[tuple[bytes, Addr]]:
        self._after(now)
        return self.receiver.poll(now)

    def close(self) -> str | None:
        """Release the output; returns a note for the user (where a partial output is kept)."""
        ok = self.receiver.outcome is not None and self.receiver.outcome.ok
        r = self.receiver
        return self.sink.close(ok, r.gaps.held_runs() if r.keepable else None)

    def take_events(self) -> list[Event]:
        return self.receiver.take_events()

    def stats(self) -> dict[str, Any]:
        r = self.receiver
        out = asdict(r.stats)
        out.update(
            transport="udp",
            role="recv",
            state="waiting" if r.state == RState.IDLE else r.state.value,
            total_bytes=r.total_bytes,
            duplicate_bytes=r.stats.duplicates * r.adu,
            digest=digest_names[r.hello.digest_alg] if r.hello else None,
            began=r.began,
            datapath=self.datapath,
            session=f"{r.session_id:016x}",
            cum_ack=r.gaps.cum,
            highest=r.gaps.highest,
            total_adus=r.end_adus,
            consumed=r.consumed,
            sealed=r.keys is not None,
        )
        return out
