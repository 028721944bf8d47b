"""Erasure-coded repair (docs/protocol.md §16): the code itself, its datagrams, and what it
saves a group on the simulated network (seeded)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alf import fec, wire
from alf.group import GroupSender
from alf.receiver import ReceiverConfig
from alf.sender import SenderConfig
from alf.testing.simnet import GROUP_ADDR, Link, run_group_transfer

CODEC = fec.codec()
needs_codec = pytest.mark.skipif(CODEC is None, reason="no ISA-L library (pyeclib's wheel or libisal)")
MIXED = (0.0, 0.0, 0.01, 0.01, 0.03, 0.03, 0.10, 0.10)


def _block(k: int, size: int, seed: int) -> bytearray:
    return bytearray(random.Random(seed).randbytes(k * size))


def _erase_and_decode(
    data: bytearray, k: int, size: int, lost: list[int], rows: list[int], parity: bytearray, made: list[int]
) -> bytearray:
    """``data`` with ``lost`` zeroed, decoded from ``rows`` of ``parity`` (which holds rows ``made``)."""
    assert CODEC is not None
    out = bytearray(data)
    for j in lost:
        out[j * size : (j + 1) * size] = bytes(size)
    symbols = [parity[made.index(r) * size : (made.index(r) + 1) * size] for r in rows]
    CODEC.decode(out, k, size, lost, rows, symbols)
    return out


@needs_codec
def test_every_erasure_pattern_up_to_the_parity_decodes() -> None:
    """A block of 8 ADUs and 4 parity rows: every set of up to 4 lost ADUs, with every choice
    of as many rows, gives the block back (the code is MDS)."""
    assert CODEC is not None
    k, size, m = 8, 64, 4
    data = _block(k, size, 1)
    parity = CODEC.encode(data, k, size, range(m))
    tried = 0
    for e in range(1, m + 1):
        for lost in itertools.combinations(range(k), e):
            for rows in itertools.combinations(range(m), e):
                assert (
                    _erase_and_decode(data, k, size, list(lost), list(rows), parity, list(range(m))) == data
                )
                tried += 1
    assert tried == sum(
        len(list(itertools.combinations(range(k), e))) * len(list(itertools.combinations(range(m), e)))
        for e in range(1, 5)
    )


@needs_codec
def test_a_full_block_decodes_far_rows_and_a_short_last_block() -> None:
    """The sizes alf uses: 128 ADUs of 1428 bytes, holes anywhere, rows far out (fresh symbols
    of later rounds); and a last block of 5 ADUs whose last is short (coded padded)."""
    assert CODEC is not None
    rng = random.Random(3)
    k, size = fec.BLOCK, wire.DEFAULT_ADU_SIZE
    data = _block(k, size, 2)
    rows = list(range(fec.max_rows(k)))
    parity = CODEC.encode(data, k, size, rows)
    for e in (1, 13, 32, 64, 128):
        lost = rng.sample(range(k), e)
        use = rng.sample(rows, e)
        assert _erase_and_decode(data, k, size, lost, use, parity, rows) == data
    short = _block(5, size, 4)
    short[-100:] = bytes(100)  # the padding of a short last ADU
    parity = CODEC.encode(short, 5, size, [0, 200, 250])
    assert _erase_and_decode(short, 5, size, [0, 4, 2], [0, 200, 250], parity, [0, 200, 250]) == short


@needs_codec
@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 160),
    size=st.integers(1, 200),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_random_erasures_within_the_parity_decode(k: int, size: int, seed: int, data: st.DataObject) -> None:
    assert CODEC is not None
    block = _block(k, size, seed)
    e = data.draw(st.integers(1, min(k, fec.max_rows(k), 40)))
    lost = data.draw(st.lists(st.integers(0, k - 1), min_size=e, max_size=e, unique=True))
    rows = data.draw(st.lists(st.integers(0, fec.max_rows(k) - 1), min_size=e, max_size=e, unique=True))
    made = sorted(rows)
    parity = CODEC.encode(block, k, size, made)
    assert _erase_and_decode(block, k, size, lost, rows, parity, made) == block


def test_parity_and_need_datagrams_round_trip_and_bad_ones_are_refused() -> None:
    d = wire.encode_parity(wire.Parity(7, 12, 3, b"x" * 100))
    assert len(d) == wire.DATA_HEADER_SIZE + 100
    assert wire.decode_untrusted(d) == wire.Parity(7, 12, 3, b"x" * 100)
    bad_row = wire.PARITY_HEADER.pack(wire.VERSION, wire.MsgType.PARITY, 0, 0, 256, 7, 12) + b"x"
    flagged = wire.PARITY_HEADER.pack(wire.VERSION, wire.MsgType.PARITY, 1, 0, 3, 7, 12) + b"x"
    empty = wire.PARITY_HEADER.pack(wire.VERSION, wire.MsgType.PARITY, 0, 0, 3, 7, 12)
    for b in (bad_row, flagged, empty):
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(b)
    nak = wire.Nak(7, ((5, 9),), ((0, 3, 0), (4, 12, 17)))
    assert wire.decode_untrusted(wire.encode(nak)) == nak
    # NEEDs out of order, or asking for more than a block can have, are malformed
    for needs in (((4, 1, 0), (4, 2, 0)), ((4, 256, 0),), ((4, 1, 256),)):
        raw = wire.COMMON.pack(wire.VERSION, wire.MsgType.NAK, 0, 0, len(needs), 7) + b"".join(
            wire.NAK_BLOCK.pack(wire.NakKind.NEED, 0, seen, n, b) for b, n, seen in needs
        )
        with pytest.raises(wire.BadPacket):
            wire.decode_untrusted(raw)
    many = [(b, 5, 0) for b in range(200)]  # 86 NEEDs fill a datagram: three
    datagrams, covered = wire.encode_naks(7, [], 4, many)
    assert len(datagrams) == 3 and covered == 0
    got = [n for d in datagrams for n in wire.decode_untrusted(d).needs]  # type: ignore[union-attr]
    assert got == many
    accept = wire.Accept(7, 1, 2, 3, fec=True)
    assert wire.decode_untrusted(wire.encode(accept)) == accept


def _fec_configs(**kw: object) -> dict[str, object]:
    return dict(
        sender_config=SenderConfig(adu_size=512, rate_bps=50e6, timeout=10.0, fec=True),
        receiver_config=ReceiverConfig(in_order=False, timeout=10.0, window_bytes=1 << 20, fec=True),
        **kw,
    )


def _members(losses: tuple[float, ...]) -> list[tuple[Link, Link]]:
    return [(Link(loss=p), Link()) for p in losses]


@needs_codec
def test_mixed_loss_costs_little_more_than_the_worst_receivers_need() -> None:
    """Issue 18 point 1 on the simulator: 8 receivers at 0/0/1/1/3/3/10/10%, the same seed
    with and without parity. Resending costs the union of the losses (2.5x what the worst
    receiver needs, p/(1-p)); parity costs at most 1.2x it, and all 8 outputs are the input."""
    data = random.Random(5).randbytes(6_000_000)
    content = -(-len(data) // 512)
    need = 0.10 / 0.90 * content
    arq = run_group_transfer(data, _members(MIXED), expected=8, seed=3)
    coded = run_group_transfer(data, _members(MIXED), expected=8, seed=3, **_fec_configs())  # type: ignore[arg-type]
    for r in (arq, coded):
        assert r.sender is not None and r.sender.ok, r.sender
        assert all(out == data for out in r.outputs)
    assert arq.sender_stats["adus_parity"] == 0
    assert arq.sender_stats["adus_repair"] > 2 * need
    s = coded.sender_stats
    assert s["adus_parity"] > 0.9 * s["adus_repair"]  # parity did the repairing
    assert s["adus_repair"] <= 1.2 * need, s["adus_repair"] / need
    assert all(m["fec"] for m in s["receivers"])
    decoded = [x["adus_decoded"] for x in coded.receiver_stats]
    assert decoded[0] == decoded[1] == 0 and decoded[7] > 0.05 * content


@needs_codec
def test_one_lossy_receiver_among_many_costs_its_own_need() -> None:
    """Issue 18 point 2 on the simulator: 32 receivers at 1% and one at 10%. Each parity
    symbol fills a hole at every receiver that has one, so the repairs are about the 10%
    receiver's need alone (resending cost 3.3x it, the union of 33 receivers' losses)."""
    data = random.Random(6).randbytes(3_000_000)
    content = -(-len(data) // 512)
    losses = (0.01,) * 32 + (0.10,)
    r = run_group_transfer(data, _members(losses), expected=33, seed=3, **_fec_configs())  # type: ignore[arg-type]
    assert r.sender is not None and r.sender.ok, r.sender
    assert all(out == data for out in r.outputs)
    assert r.sender_stats["adus_repair"] <= 1.1 * 0.10 / 0.90 * content


@needs_codec
def test_a_clean_group_sends_no_parity() -> None:
    data = random.Random(7).randbytes(1_000_000)
    r = run_group_transfer(data, _members((0.0,) * 4), expected=4, **_fec_configs())  # type: ignore[arg-type]
    assert r.sender is not None and r.sender.ok
    assert r.sender_stats["adus_repair"] == r.sender_stats["adus_parity"] == 0
    assert all(x["parity_received"] == 0 for x in r.receiver_stats)


@needs_codec
def test_a_receiver_without_the_codec_gets_resends_in_a_coded_group() -> None:
    """A receiver that does not decode (its ACCEPT says so) is repaired by resends; the others
    by parity; every output is the input."""
    data = random.Random(8).randbytes(2_000_000)
    plain = ReceiverConfig(in_order=False, timeout=10.0, window_bytes=1 << 20, fec=False)
    coded = ReceiverConfig(in_order=False, timeout=10.0, window_bytes=1 << 20, fec=True)
    r = run_group_transfer(
        data,
        _members((0.03, 0.03, 0.03, 0.05)),
        expected=4,
        sender_config=SenderConfig(adu_size=512, rate_bps=50e6, timeout=10.0, fec=True),
        receiver_configs=[coded, coded, coded, plain],
    )
    assert r.sender is not None and r.sender.ok, r.sender
    assert all(out == data for out in r.outputs)
    assert [m["fec"] for m in r.sender_stats["receivers"]] == [True, True, True, False]
    assert r.receiver_stats[3]["adus_decoded"] == 0 and r.receiver_stats[3]["naks_need"] == 0
    assert r.sender_stats["adus_parity"] > 0
    assert r.sender_stats["adus_repair"] > r.sender_stats["adus_parity"]  # the plain one's resends


@needs_codec
def test_a_late_joiner_asks_for_its_missing_prefix_by_index() -> None:
    """A member that joins half way lacks whole blocks: more than FEC_MAX_NEED symbols each,
    so it asks for the ADUs themselves (decoding a block mostly from parity costs far more
    than reading it), and finishes intact."""
    data = random.Random(9).randbytes(3_000_000)
    scfg = SenderConfig(adu_size=512, rate_bps=20e6, timeout=5.0, fec=True)
    rcfg = ReceiverConfig(in_order=False, timeout=5.0, window_bytes=1 << 20, fec=True)
    r = run_group_transfer(
        data, _members((0.01, 0.01, 0.0)), quorum=2, wait=0.2, start_at=[0.0, 0.0, 0.8],
        sender_config=scfg, receiver_config=rcfg,
    )  # fmt: skip
    assert r.sender is not None and r.sender.ok, r.sender
    assert r.outputs == [data] * 3
    assert r.sender_stats["receivers"][2]["late"]
    assert r.receiver_stats[2]["adus_nakked"] > 0.2 * -(-len(data) // 512)
    assert r.sender_stats["adus_parity"] > 0  # the others' holes went as parity


def test_a_block_whose_rows_run_out_is_sent_again_whole() -> None:
    """The sender never repeats a parity row: a NEED that would take a block past its last
    row queues the block's ADUs instead."""
    cfg = SenderConfig(adu_size=100, fec=True)
    s = GroupSender(cfg, 5, wire.Kind.FILE, 100 * 1000, 0.0, GROUP_ADDR, receivers=2)
    s.next_new = 1000  # as if all were sent
    m = type("M", (), {})()  # the two attributes _on_needs reads of a member, and what it writes
    m.slow, m.acked, m.nakked_adus = False, 0, 0
    s._parity_row[2] = fec.max_rows(fec.BLOCK) - 3
    s._on_needs(((2, 5, s._parity_row[2]), (3, 4, 0)), m, 1.0)  # type: ignore[arg-type]
    assert 2 not in s._parity and s._parity[3] == 4
    assert s._repairs == [(2 * fec.BLOCK, 3 * fec.BLOCK)]
    assert s.stats.blocks_resent == 1


def _satellite(
    data: bytes, fec_on: bool, ratio: float | None, seed: int
) -> tuple[float, dict[str, object], bytes]:
    from alf.testing.simnet import run_transfer

    r = run_transfer(
        data,
        forward=Link(delay=0.3, rate_bps=20e6, loss=0.01, queue_bytes=2_000_000),
        backward=Link(delay=0.3),
        seed=seed,
        sender_config=SenderConfig(
            adu_size=1428, rate_bps=20e6, cc="fixed", timeout=20, fec=fec_on, fec_ratio=ratio
        ),
        receiver_config=ReceiverConfig(in_order=False, timeout=20, fec=fec_on),
        max_time=100,
    )
    assert r.sender is not None and r.sender.ok, r.sender
    return r.elapsed, r.sender_stats, r.output


@needs_codec
def test_parity_sent_unasked_ends_a_long_lossy_transfer_rounds_sooner() -> None:
    """Issue 18 point 4 on the simulator (600 ms round trip, 20 Mbit/s, 1% loss, 5 MB): the
    holes of the last round trips cost NAK rounds of 1.2 s after the end; parity sent with the
    last blocks (--fec auto) or with every block (--fec 0.05) heals most of them in place."""
    data = random.Random(10).randbytes(5_000_000)
    off, s_off, out = _satellite(data, False, None, 1)
    assert out == data and s_off["adus_parity"] == 0
    auto, s_auto, out = _satellite(data, True, None, 1)
    assert out == data
    assert s_auto["parity_proactive"] == s_auto["adus_parity"] > 0
    ratio, s_ratio, out = _satellite(data, True, 0.05, 1)
    assert out == data
    assert s_ratio["parity_proactive"] == sum(-(-min(128, 3502 - b * 128) * 5 // 100) for b in range(28))
    rtt = 0.6
    assert auto <= off - rtt and ratio <= off - rtt, (off, auto, ratio)


def _long_path(data: bytes, fec_on: bool, loss: float, seed: int) -> tuple[float, dict[str, object]]:
    """``data`` with the default (adaptive) controller over 200 Mbit/s and 200 ms (the lab's
    intercontinental), whose 10 MB queue the start-up overflows."""
    from alf.testing.simnet import run_transfer

    r = run_transfer(
        data,
        forward=Link(delay=0.1, rate_bps=200e6, loss=loss, queue_bytes=10_000_000),
        backward=Link(delay=0.1),
        seed=seed,
        sender_config=SenderConfig(adu_size=1428, cc="adaptive", rate_bps=40e9, timeout=30, fec=fec_on),
        receiver_config=ReceiverConfig(in_order=False, timeout=30, fec=fec_on),
        max_time=100,
        max_events=20_000_000,
    )
    assert r.sender is not None and r.sender.ok and r.output == data, r.sender
    return r.elapsed, r.sender_stats


@needs_codec
def test_auto_sizes_parity_by_the_paths_loss_not_the_start_ups() -> None:
    """The start-up overflows the queue (3.4k of 67k ADUs lost): that is no loss of the path.
    --fec auto measures loss from the first ADU sent after the start-up, so a clean path gets
    no parity, and a path losing 0.5% gets about the tail's share of it (parity sized by the
    overshoot was 12% of the content, and 2-3% on the clean path) and still ends sooner."""
    data = random.Random(12).randbytes(96_000_000)
    _t, clean = _long_path(data, True, 0.0, 1)
    assert clean["adus_nak_requested"] > 3000 and clean["adus_parity"] == 0
    off, s_off = _long_path(data, False, 0.005, 3)
    auto, s_auto = _long_path(data, True, 0.005, 3)
    assert 0 < s_auto["adus_parity"] < 0.03 * s_auto["adus_new"]
    assert auto <= off - 0.2, (off, auto)  # a round trip sooner


@needs_codec
def test_auto_sends_no_parity_on_a_short_path() -> None:
    """--fec auto adds parity only where a NAK round is long: not on a 10 ms path, lossy or not."""
    from alf.testing.simnet import run_transfer

    data = random.Random(11).randbytes(3_000_000)
    r = run_transfer(
        data,
        forward=Link(delay=0.005, loss=0.02),
        sender_config=SenderConfig(adu_size=1428, rate_bps=50e6, cc="fixed", timeout=10, fec=True),
        receiver_config=ReceiverConfig(in_order=False, timeout=10, fec=True),
    )
    assert r.sender is not None and r.sender.ok and r.output == data
    assert r.sender_stats["adus_parity"] == 0 and r.sender_stats["adus_repair"] > 0


def test_fec_option_is_checked() -> None:
    from alf import api

    for bad in ("2", "0", "x", "-0.1"):
        with pytest.raises(api.UsageError, match="fec"):
            api.send("127.0.0.1", 9, "/dev/null", fec=bad)
    with pytest.raises(api.UsageError, match="a ratio is for unicast"):
        api.send("239.1.2.3", 9, "/dev/null", fec="0.1")
    with pytest.raises(api.UsageError, match="fec"):
        api.receive(9, "/dev/null", fec="0.1")


def test_a_need_beyond_what_section_16_allows_is_ignored() -> None:
    """A NEED of more than 32 symbols, or one claiming rows never sent, queues nothing."""
    cfg = SenderConfig(adu_size=100, fec=True)
    s = GroupSender(cfg, 5, wire.Kind.FILE, 100 * 1000, 0.0, GROUP_ADDR, receivers=2)
    s.next_new = 1000
    m = type("M", (), {})()
    m.slow, m.acked, m.nakked_adus = False, 0, 0
    s._on_needs(((1, 33, 0), (2, 4, 9)), m, 1.0)  # type: ignore[arg-type]
    assert not s._parity and not s._repairs
    assert s.stats.unexpected == 2
    s._on_needs(((1, 32, 0),), m, 1.0)  # type: ignore[arg-type]
    assert s._parity == {1: 32}
