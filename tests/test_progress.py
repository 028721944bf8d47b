"""alf.progress: the progress line, the rate meter, the summary and the console, exactly."""

from __future__ import annotations

import io

from alf import progress
from alf.progress import Console, RateMeter, progress_line, summary

MIB = 1 << 20


def test_rate_is_the_last_three_seconds_not_the_lifetime() -> None:
    m = RateMeter()
    m.add(0.0, 0, moving=False)  # a receiver waiting: no sample, no start
    assert m.began is None
    for t in range(11):
        m.add(10.0 + t, (100 if t < 5 else 10) * MIB * t, moving=True)
    assert m.began == 10.0
    # the last 3 s: from t=7 (70 MiB) to t=10 (100 MiB)
    assert m.rate() == (100 - 70) * MIB / 3


def test_file_line_has_total_percent_rate_elapsed_eta_and_repairs() -> None:
    m = RateMeter()
    m.add(5.0, 0, True)
    m.add(7.0, 100 * MIB, True)
    stats = {
        "role": "send", "state": "sending", "acked_bytes": 100 * MIB, "total_bytes": 400 * MIB,
        "bytes_sent": 120 * MIB, "bytes_resent": 6 * MIB,
    }  # fmt: skip
    line = progress_line(stats, 7.0, m, start=0.0)
    assert line == "alf send:  100.0 MiB / 400.0 MiB   25%  419 Mbit/s  0:02  ETA 0:06  resent 6.0 MiB (5.0%)"


def test_stream_line_has_no_percent_and_waiting_says_so() -> None:
    m = RateMeter()
    assert progress_line({"role": "recv", "state": "waiting"}, 72.0, m, 0.0) == (
        "alf recv: waiting for a sender  1:12"
    )
    m.add(1.0, 0, True)
    m.add(2.0, 3 * MIB, True)
    line = progress_line({"role": "recv", "state": "receiving", "bytes_received": 3 * MIB}, 2.0, m, 0.0)
    assert line == "alf recv:  3.0 MiB  25.2 Mbit/s  0:01"


def test_summary_on_success_and_failure() -> None:
    ok = {
        "role": "recv",
        "transport": "udp",
        "bytes_received": 64 * MIB,
        "adus_nakked": 12,
        "digest": "xxh3-128",
    }
    assert summary(ok, True, "", 0.5, "into got.bin") == [
        "alf recv: received 64.0 MiB into got.bin in 0.50 s (1.07 Gbit/s); asked again for 12 ADUs; "
        "verified (xxh3-128)"
    ]
    tcp = {"role": "send", "transport": "tcp", "bytes_sent": 2 * MIB, "acked_bytes": MIB, "digest": "blake3"}
    assert summary(tcp, True, "", 2.0, "") == [
        "alf send: sent 2.0 MiB in 2.00 s (8.4 Mbit/s) over TCP; verified by the receiver (blake3)"
    ]
    failed = {"role": "send", "acked_bytes": 3 * MIB, "total_bytes": 8 * MIB}
    assert summary(failed, False, "the receiver went silent for 30 s", 31.0, "") == [
        "alf send: error: the receiver went silent for 30 s",
        "alf send: 3.0 MiB of 8.0 MiB acknowledged in 31.0 s; nothing is verified",
    ]
    assert summary({"role": "send"}, False, "no receiver answered", None, "") == [
        "alf send: error: no receiver answered"
    ]


def test_console_prints_messages_above_the_line_and_cuts_fields() -> None:
    out = io.StringIO()
    c = Console(out, live=True)
    c._width = lambda: 30  # type: ignore[method-assign]
    c.status("alf send:  1.0 MiB  8 Mbit/s  0:01  ETA 0:09")
    c.say("alf send: trying TCP")
    c.end()
    assert out.getvalue() == (
        "\ralf send:  1.0 MiB  8 Mbit/s\x1b[K"  # cut by whole fields to 30 columns
        "\r\x1b[Kalf send: trying TCP\nalf send:  1.0 MiB  8 Mbit/s"  # the message above, the line again
        "\r\x1b[K"
    )
    quiet = io.StringIO()
    Console(quiet, live=False).status("anything")
    assert quiet.getvalue() == ""


def test_several_paths_on_the_line_and_in_the_details() -> None:
    m = RateMeter()
    m.add(5.0, 0, True)
    m.add(7.0, 100 * MIB, True)
    paths = [
        {"path": 1, "state": "up", "backup": False, "bytes_new": 80 * MIB, "bytes_repaired": MIB,
         "loss": 0.0125, "receive_rate_bps": 2.1e9, "srtt_ms": 2.04, "downs": 0},
        {"path": 2, "state": "down", "backup": True, "bytes_new": 20 * MIB, "bytes_repaired": 0,
         "loss": 0.0, "receive_rate_bps": 0, "srtt_ms": 30.0, "downs": 1},
    ]  # fmt: skip
    stats = {
        "role": "send",
        "state": "sending",
        "acked_bytes": 100 * MIB,
        "total_bytes": 400 * MIB,
        "paths": paths,
    }
    line = progress_line(stats, 7.0, m, start=0.0)
    assert line.endswith("ETA 0:06  paths 1: 2.10 Gbit/s, 2: down"), line
    lines = progress.details({"role": "send", "paths": paths})
    assert lines[-2:] == [
        "alf send: path 1 up: 80.0 MiB sent, 1.0 MiB repaired, loss 1.25%, round trip 2.0 ms, down 0 times",
        "alf send: path 2 (backup) down: 20.0 MiB sent, 0 B repaired, loss 0.00%, round trip 30.0 ms, "
        "down 1 times",
    ]


def test_peer_names() -> None:
    assert (
        progress.peer_name((("::ffff:192.0.2.7", 9000, 0, 0), bytes(16))) == "192.0.2.7:9000"
    )  # with its local
    assert progress.peer_name(("::ffff:192.0.2.7", 9000, 0, 0)) == "192.0.2.7:9000"
    assert progress.peer_name(("2001:db8::1", 9000, 0, 0)) == "[2001:db8::1]:9000"
    assert progress.peer_name(("192.0.2.7", 9000)) == "192.0.2.7:9000"
