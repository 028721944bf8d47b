"""lossy-net: calibration of every impairment, scapy on real captures, rules, and cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import last_json, random_file, sha256_file
from lossynet import Lab, namespaces_available
from lossynet.netns import our_namespaces
from lossynet.profiles import gilbert
from lossynet.topology import LinkSpec, Pair, wait_port

WHY = namespaces_available()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(WHY is not None, reason=f"lab: {WHY}")]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(__file__)), "lossy-net")}


def probe(lab: Lab, ns: str, *args: str) -> dict[str, Any]:
    out = lab.run(ns, PY, "-m", "lossynet.probe", *args).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def start_probe(lab: Lab, ns: str, *args: str) -> subprocess.Popen[str]:
    p = lab.start(ns, [PY, "-m", "lossynet.probe", *args], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout is not None and p.stdout.readline().strip() == "listening"
    return p


def finish(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = p.communicate(timeout=120)
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_a_lab_leaves_no_directory_behind() -> None:
    """The wires' counters live in a directory of the lab's, removed with its namespaces."""
    with Lab() as lab:
        pair = Pair(lab, [LinkSpec(delay=0.001, force_wire=True)])
        made = pair._tmp
        assert os.path.isdir(made) and pair.wire_stats()
    assert not os.path.exists(made)


def test_random_loss_calibration(lab: Lab) -> None:
    """2% configured: 2% +/- 0.5% measured over 60,000 datagrams."""
    pair = Pair(lab, [LinkSpec(loss=0.02)])
    sink = start_probe(lab, pair.b, "udp-sink", "9000", "1.0")
    probe(lab, pair.a, "udp-blast", pair.addr_b(), "9000", "60000", "40000")
    got = finish(sink)
    loss = 1 - got["received"] / 60000
    assert 0.015 <= loss <= 0.025, loss
    # every loss is the rule's; the rule also drops the odd packet that is not the probe's
    # (IPv6 neighbour discovery and MLD on the fresh veth), so its counter may run a few ahead
    lost = 60000 - got["received"]
    assert lost <= pair.nft_drops()[0] <= lost + 5


def test_delay_calibration(lab: Lab) -> None:
    """25 ms one way: a measured RTT of 50 +/- 5 ms."""
    pair = Pair(lab, [LinkSpec(delay=0.025)])
    echo = start_probe(lab, pair.b, "echo", "9001", "20")
    samples = probe(lab, pair.a, "rtt", pair.addr_b(), "9001", "30", "0.01")["samples"]
    echo.kill()
    assert len(samples) == 30
    median = sorted(samples)[15]
    # the median is the calibration; the worst sample also carries the userspace delay line's
    # scheduling on two busy cores (61 ms once in a CI run), so it gets 20 ms, not 10
    assert 0.045 <= median <= 0.055 and max(samples) < 0.07, samples


def test_rate_limit_calibration(lab: Lab) -> None:
    """100 Mbit/s: one TCP flow gets 90-100 Mbit/s."""
    pair = Pair(lab, [LinkSpec(rate_bps=100e6)])
    sink = start_probe(lab, pair.b, "tcp-sink", "9002")
    sent = probe(lab, pair.a, "tcp-send", pair.addr_b(), "9002", "4")
    finish(sink)
    assert 90e6 <= sent["goodput_bps"] <= 100e6, sent


def test_burst_loss_calibration(lab: Lab) -> None:
    """Gilbert-Elliott: the measured mean burst length is the configured one +/- 20%."""
    pair = Pair(lab, [LinkSpec(ge=gilbert(0.05, 4.0))], seed=3)
    sink = start_probe(lab, pair.b, "udp-sink", "9003", "1.0")
    probe(lab, pair.a, "udp-blast", pair.addr_b(), "9003", "40000", "20000")
    got = set(finish(sink)["seqs"])
    bursts, run = [], 0
    for seq in range(40000):
        if seq not in got:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    mean = sum(bursts) / len(bursts)
    assert 3.2 <= mean <= 4.8, (mean, len(bursts))
    assert 0.035 <= 1 - len(got) / 40000 <= 0.065


@pytest.mark.parametrize("userspace", [False, True], ids=["veth", "wire"])
def test_link_down_delivers_nothing_until_up(lab: Lab, userspace: bool) -> None:
    pair = Pair(lab, [LinkSpec(down=[[1.0, 2.0]], force_wire=userspace)])
    sink = start_probe(lab, pair.b, "udp-sink", "9004", "3.0")
    probe(lab, pair.a, "udp-blast", pair.addr_b(), "9004", "3000", "1000")  # 3 s at 1 ms spacing
    # each datagram carries its send time; the schedule counts from the link's setup (a cut or
    # a restore takes effect once a timer thread's nft command has run: ~30 ms on an idle
    # machine, but a datagram sent at 1.050 s got through in a CI run with both cores busy)
    sent_at = sorted(t - pair.started_wall for t in finish(sink)["sent"])
    late = [t for t in sent_at if 1.0 <= t <= 1.5]
    assert not late or max(late) < 1.2, f"delivered while down, up to {max(late):.3f} s"
    assert not [t for t in sent_at if 1.2 <= t <= 1.95], "delivered while down"
    assert any(t < 1.0 for t in sent_at), "nothing before the link went down"
    resumed = min(t for t in sent_at if t > 1.5)
    assert resumed < 2.2, f"the link carried nothing until {resumed:.3f} s"


def test_multipath_destination_picks_the_link(lab: Lab) -> None:
    """multipath: link 0 carries 300 Mbit/s, link 1 100 Mbit/s, and each address uses its own."""
    from lossynet.profiles import PROFILES

    pair = Pair(lab, PROFILES["multipath"].links)

    def tx_bytes(dev: str) -> int:
        out = json.loads(lab.run(pair.a, "ip", "-j", "-s", "link", "show", dev).stdout)
        return int(out[0]["stats64"]["tx"]["bytes"])

    for k, rate, other in ((0, 300e6, 1), (1, 100e6, 0)):
        before = tx_bytes(f"va{other}")
        sink = start_probe(lab, pair.b, "tcp-sink", str(9400 + k))
        sent = probe(lab, pair.a, "tcp-send", pair.addr_b(k), str(9400 + k), "2")
        finish(sink)
        assert 0.85 * rate <= sent["goodput_bps"] <= rate, (k, sent["goodput_bps"])
        assert tx_bytes(f"va{other}") - before < 100_000  # the other link stayed idle


def test_multicast_segment_loss_per_receiver(lab: Lab) -> None:
    """multicast-4: one stream reaches four receivers, each with its own loss."""
    from lossynet.profiles import PROFILES
    from lossynet.topology import Segment

    seg = Segment(lab, PROFILES["multicast-4"].links)
    sinks = [start_probe(lab, ns, "udp-sink", "9300", "1.0", "239.1.2.3") for ns in seg.r]
    probe(lab, seg.s, "udp-blast", "239.1.2.3", "9300", "20000", "20000")
    losses = [1 - finish(p)["received"] / 20000 for p in sinks]
    for got, want in zip(losses, (0.0, 0.01, 0.03, 0.10), strict=True):
        assert abs(got - want) <= max(0.005, want * 0.2), losses


def test_alf_through_the_wire_and_its_capture(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """A real alf run over a lossy, delayed wire; scapy's view of the capture agrees with the
    transfer and with alf's own counters."""
    from lossynet.scapy_alf import Alf, AlfData, AlfHello, AlfNak, AlfProbe, bind_alf
    from scapy.utils import rdpcap

    src = random_file(os.path.join(tmp_path, "in.bin"), 3_000_000, seed=11)
    dst = os.path.join(tmp_path, "out.bin")
    pcap = os.path.join(tmp_path, "run.pcap")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    pair = Pair(lab, [LinkSpec(delay=0.005, loss=0.03, capture=pcap)])
    recv = lab.start(
        pair.b, [PY, "-m", "alf", "recv", "9010", "-o", dst, "--timeout", "20", "--stats-json", rstats]
    )
    wait_port(lab, pair.b, 9010)
    send = lab.run(
        pair.a,
        PY,
        "-m",
        "alf",
        "send",
        pair.addr_b(),
        "9010",
        src,
        "--rate",
        "50M",
        "--timeout",
        "20",
        "--stats-json",
        sstats,
        check=False,
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    pair.wire_stats()  # stops the wire: the capture is complete
    bind_alf(9010)
    packets = [p for p in rdpcap(pcap) if Alf in p]
    s = last_json(sstats)
    r = last_json(rstats)
    data = [p[AlfData].index for p in packets if AlfData in p]
    adus = -(-3_000_000 // 1428)
    assert set(data) == set(range(adus))  # every ADU crossed the wire at least once
    assert sum(1 for p in packets if AlfHello in p and p[AlfHello].total_bytes == 3_000_000) >= 1
    assert len({p[Alf].session for p in packets}) == 1
    naks = [p for p in packets if AlfNak in p]
    # the capture is what the wire delivered: after nftables' loss at the far end, so compare
    # with what each side counted on sending, as a bound
    assert 0 < len(naks) <= r["naks_sent"]
    assert len(data) <= s["adus_new"] + s["adus_repair"]
    finals = [p for p in packets if AlfProbe in p and p[Alf].flags & 1]
    assert finals and finals[0][AlfProbe].total_bytes == 3_000_000


def test_rules_act_exactly_as_configured(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    src = random_file(os.path.join(tmp_path, "in.bin"), 1_000_000, seed=12)
    dst = os.path.join(tmp_path, "out.bin")
    adus = -(-1_000_000 // 1428)  # 701: indices 7, 107, ..., 607 are 7 mod 100
    sevens = len([i for i in range(adus) if i % 100 == 7])
    link = LinkSpec(
        delay=0.002,
        rules_a_to_b=[{"type": "DATA", "where": "index % 100 == 7", "first": sevens, "action": "drop"}],
        rules_b_to_a=[{"type": "NAK", "first": 3, "action": "drop"}],
    )
    pair = Pair(lab, [link])
    recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9011", "-o", dst, "--timeout", "20"])
    wait_port(lab, pair.b, 9011)
    send = lab.run(
        pair.a,
        PY,
        "-m",
        "alf",
        "send",
        pair.addr_b(),
        "9011",
        src,
        "--rate",
        "20M",
        "--timeout",
        "20",
        check=False,
    )
    assert send.returncode == 0, send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    (stats,) = pair.wire_stats()
    (data_rule,) = stats["rules_a_to_b"]
    (nak_rule,) = stats["rules_b_to_a"]
    assert data_rule["acted"] == sevens and data_rule["matched"] >= sevens
    assert nak_rule["acted"] == 3 and nak_rule["matched"] > 3  # later NAKs got through
    assert stats["a_to_b"]["lost_rule"] == sevens and stats["b_to_a"]["lost_rule"] == 3


def test_corrupted_final_is_reported_failed_never_success(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """One byte of the FINAL PROBE's digest flipped on the wire (UDP checksum zeroed, so it is
    delivered): the transfer must end as a verification failure, not as a success."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 200_000, seed=13)
    dst = os.path.join(tmp_path, "out.bin")
    offset = 16 + 32 + 5  # into the digest field of the PROBE (§8)
    link = LinkSpec(
        rules_a_to_b=[
            {"type": "PROBE", "where": "flags & 1", "first": 1, "action": "corrupt", "offset": offset}
        ]
    )
    pair = Pair(lab, [link])
    recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9012", "-o", dst, "--timeout", "10"])
    wait_port(lab, pair.b, 9012)
    send = lab.run(
        pair.a, PY, "-m", "alf", "send", pair.addr_b(), "9012", src, "--timeout", "10", check=False
    )
    # The receiver either verifies against the damaged digest (5: verification failed) or sees
    # the next FINAL disagree with it (4: it aborts with PROTOCOL); never 0.
    rcode = recv.wait(timeout=30)
    assert send.returncode in (4, 5) and rcode in (4, 5), (send.returncode, rcode, send.stderr)
    assert not os.path.exists(dst)
    assert pair.wire_stats()[0]["rules_a_to_b"][0]["acted"] == 1


def process_tree(pid: int) -> list[str]:
    """Each process under ``pid`` (and itself): pid, kernel wait channel and command line."""
    rows = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/{p}/cmdline", "rb") as fb:
                cmd = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
        rows.append(f"{p} [{wchan}] {cmd}")
    return rows


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill", "term", "int"])
def test_runner_cleans_up_when_killed(how: int, tmp_path: os.PathLike[str]) -> None:
    runner = subprocess.Popen(
        [PY, "-m", "lossynet", "run", "wan", "--recv", "sleep 30", "--send", "sleep 30", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "TMPDIR": str(tmp_path)},  # (a SIGKILL leaves the lab's directory: here)
    )
    try:
        # This once failed on CI: the runner's trial namespace (lnet-PID-probe, made and deleted
        # at once) was seen here, and gone by the check below. The runner makes none now. If it
        # ever makes none again, say where each of its processes waits, and its Python stack.
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while not seen and time.monotonic() < deadline and runner.poll() is None:
            seen = our_namespaces(runner.pid)
            time.sleep(0.005)
        assert set(seen) <= {f"lnet-{runner.pid}-a", f"lnet-{runner.pid}-b"}, seen
        if not our_namespaces(runner.pid):
            where = process_tree(runner.pid)
            runner.send_signal(signal.SIGUSR2)  # its Python stack, on its stderr
            time.sleep(0.5)
            runner.kill()
            out, err = runner.communicate()
            raise AssertionError(
                f"the runner made no namespaces (exit {runner.returncode}); it was in: {where}; "
                f"{out[-2000:]} {err[-2000:]}"
            )
        time.sleep(0.5)
        runner.send_signal(how)
        runner.wait(timeout=20)
        deadline = time.monotonic() + 20
        while our_namespaces(runner.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert our_namespaces(runner.pid) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_tcp_multipath_survives_a_link_kill(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """Issue 6, point 3: two paths (300 and 100 Mbit/s); path 0 is cut 1.5 s into the transfer.
    Its connections stall and are replaced on path 1; the rest goes there, intact."""
    from lossynet.profiles import PROFILES

    src = random_file(os.path.join(tmp_path, "in.bin"), 100_000_000, seed=12)
    dst = os.path.join(tmp_path, "out.bin")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    pair = Pair(lab, PROFILES["multipath"].links)
    recv = lab.start(
        pair.b,
        [
            PY,
            "-m",
            "alf",
            "recv",
            "9020",
            "-o",
            dst,
            "--transport",
            "tcp",
            "--timeout",
            "30",
            "--stats-json",
            rstats,
        ],
    )
    wait_port(lab, pair.b, 9020, "tcp")
    send = lab.start(
        pair.a,
        [PY, "-m", "alf", "send", pair.addr_b(0), "9020", src, "--transport", "tcp", "--path", pair.addr_b(1),
         "--timeout", "30", "--stats-json", sstats],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.5)
    pair.set_link(0, False)
    cut_at = time.monotonic()
    _out, err = send.communicate(timeout=120)
    assert send.returncode == 0, err
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    s = last_json(sstats)
    path0, path1 = s["path_bytes"][f"{pair.addr_b(0)}:9020"], s["path_bytes"][f"{pair.addr_b(1)}:9020"]
    assert path0 > 0 and path1 > 0 and path0 + path1 == 100_000_000 + s["bytes_resent"]
    assert s["connection_losses"] >= 1 and s["bytes_resent"] > 0
    # after the cut: 5 s until the stall is noticed, then what was left at 100 Mbit/s
    assert time.monotonic() - cut_at < 5 + 100_000_000 * 8 / 100e6 + 5


def test_auto_falls_back_to_tcp_when_udp_is_dropped(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """Issue 6, point 4: nftables in the receiver's namespace drops all UDP to its port (no ICMP
    answer, as a firewall would); the default sender falls back to TCP within 3 s and completes."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=13)
    dst, sstats = os.path.join(tmp_path, "out.bin"), os.path.join(tmp_path, "s.json")
    pair = Pair(lab, [LinkSpec(rate_bps=200e6)])
    lab.run(
        pair.b,
        "nft",
        "-f",
        "-",
        input="table inet noudp {\n chain in {\n  type filter hook input priority 0; policy accept;\n"
        "  udp dport 9030 counter drop\n }\n}\n",
    )
    recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9030", "-o", dst, "--timeout", "30"])
    wait_port(lab, pair.b, 9030, "tcp")
    t0 = time.monotonic()
    send = lab.start(
        pair.a,
        [PY, "-m", "alf", "send", pair.addr_b(), "9030", src, "--stats-json", sstats],
        stderr=subprocess.PIPE,
    )
    assert send.stderr is not None
    line = send.stderr.readline().decode()
    if line.startswith("alf send: note: this transfer is not encrypted"):  # (said first, off loopback)
        line = send.stderr.readline().decode()
    fell_back_after = time.monotonic() - t0
    assert "no answer over UDP within 1.5 s; trying TCP" in line
    assert fell_back_after < 3
    _out, err = send.communicate(timeout=60)
    assert send.returncode == 0, err
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    assert last_json(sstats)["transport"] == "tcp"
    counters = lab.run(pair.b, "nft", "list", "table", "inet", "noudp").stdout
    assert "packets 0 " not in counters  # the UDP HELLOs did arrive and were dropped


def test_rate_step_down_never_blocks_the_queue(lab: Lab) -> None:
    """tbf changes in place and keeps its queue; a whole GSO send queued under the old, larger
    bucket and longer than the new one could never leave, and the link carried nothing until
    the next change (the lab's 200 -> 50 Mbit/s step did this in 3 of 5 runs). After a step
    down in the middle of a blast of whole GSO sends, datagrams still cross."""
    pair = Pair(lab, [LinkSpec(rate_bps=200e6)])
    blast = lab.start(
        pair.a,
        [PY, "-m", "lossynet.probe", "udp-gso", pair.addr_b(), "9", "0.6", "1400", "40"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(0.3)  # the queue is full of 56 kB GSO sends
    pair.set_rate(0, 50e6)
    assert blast.wait(timeout=10) == 0
    time.sleep(0.2)  # what the blast left in the queue drains (limit: 50 ms + the bucket)
    sink = start_probe(lab, pair.b, "udp-sink", "9005", "1.0")
    probe(lab, pair.a, "udp-blast", pair.addr_b(), "9005", "200", "2000")
    got = finish(sink)
    assert got["received"] >= 190, got


def _reassembled(lab: Lab, ns: str) -> int:
    """IPv4 datagrams the kernel of ``ns`` put together from fragments (Ip: ReasmOKs)."""
    rows = [line.split() for line in lab.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [r for r in rows if r[0] == "Ip:"][:2]
    return int(values[names.index("ReasmOKs")])


def test_default_adu_fits_a_smaller_mtu(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """A 1420-byte MTU, as on a WireGuard tunnel: by default the sender fits its ADUs to the
    route (1420 - 20 - 8 - 24 = 1368), so nothing is fragmented and GSO stays on. A size given
    that does not fit is kept, with a warning, and the transfer is still intact."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=13)
    pair = Pair(lab, [LinkSpec(mtu=1420)])
    for k, extra in enumerate([[], ["--adu-size", "1428"]]):
        dst, sstats = os.path.join(tmp_path, f"out{k}.bin"), os.path.join(tmp_path, f"s{k}.json")
        before = _reassembled(lab, pair.b)
        recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9040", "-o", dst, "--timeout", "20"])
        wait_port(lab, pair.b, 9040)
        send = lab.run(
            pair.a, PY, "-m", "alf", "send", pair.addr_b(), "9040", src, "--transport", "udp",
            "--timeout", "20", "--stats-json", sstats, *extra, check=False,
        )  # fmt: skip
        assert send.returncode == 0, send.stderr
        assert recv.wait(timeout=30) == 0
        assert sha256_file(dst) == sha256_file(src)
        s = last_json(sstats)
        fragmented = _reassembled(lab, pair.b) - before
        if not extra:
            assert s["adu_size"] == 1368 and s["datapath"] == "gso", s
            assert fragmented == 0 and "warning" not in send.stderr
        else:
            assert s["adu_size"] == 1428 and s["datapath"].startswith("per-datagram"), s
            assert fragmented >= 20_000_000 // 1428  # each datagram, in two fragments
            assert "larger than the route's MTU (1420)" in send.stderr
            assert "--adu-size 1368 fits" in send.stderr


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_smaller_mtu_beyond_a_router(lab: Lab, tmp_path: os.PathLike[str], v6: bool) -> None:
    """The sender's own link has a 1500-byte MTU, the receiver's 1420, with a router between.
    A transfer that meets the router's ICMP learns the path MTU mid-way: the kernel reports it
    once on the sender's connected socket (EMSGSIZE), which used to end the sender with a
    traceback; now it goes on, per datagram, and arrives intact. The next transfer starts from
    the learnt MTU and fits its ADUs to it, with GSO.

    The lab's router does not always send that ICMP: sometimes it forwards the sender's GSO
    sends fragmented instead (then nothing is learnt and the receiver reassembles every
    datagram; about one transfer in three here, before this test was written as after). So the
    transfers go on until one has learnt (within five: all five missing it would be a chance
    of well under 1%), and each must arrive intact."""
    from lossynet.topology import Routed

    src = random_file(os.path.join(tmp_path, "in.bin"), 20_000_000, seed=14)
    net = Routed(lab, mtu_a=1500, mtu_b=1420)
    fitted = 1348 if v6 else 1368
    learnt_in = None
    for k in range(6):
        dst, sstats = os.path.join(tmp_path, f"out{k}.bin"), os.path.join(tmp_path, f"s{k}.json")
        recv = lab.start(net.b, [PY, "-m", "alf", "recv", "9050", "-o", dst, "--timeout", "20"])
        wait_port(lab, net.b, 9050)
        send = lab.run(
            net.a, PY, "-m", "alf", "send", net.addr_b(v6), "9050", src, "--transport", "udp",
            "--timeout", "20", "--stats-json", sstats, check=False,
        )  # fmt: skip
        assert send.returncode == 0, send.stderr
        assert recv.wait(timeout=30) == 0
        assert sha256_file(dst) == sha256_file(src)
        s = last_json(sstats)
        if learnt_in is not None:  # the transfer after the one that learnt: fitted, with GSO
            assert s["adu_size"] == fitted and s["datapath"] == "gso", s
            break
        assert s["adu_size"] == 1428, s
        if "mtu 1420" in lab.run(net.a, "ip", "route", "get", net.addr_b(v6)).stdout:
            assert s["datapath"].startswith("per-datagram (GSO refused"), s
            learnt_in = k
        else:
            assert s["datapath"] == "gso", s  # forwarded fragmented: nothing to learn from
    assert learnt_in is not None and learnt_in <= 4, "no transfer learnt the path MTU"


@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_auto_moves_to_tcp_through_a_pmtu_black_hole(lab: Lab, tmp_path: os.PathLike[str], mode: str) -> None:
    """UDP over 1300 bytes vanishes without an ICMP: the HELLO (1228 bytes on the wire) and
    feedback cross, no DATA does. The default sender (auto) sees the receiver answer but hold
    nothing for 3 s, says so and moves to TCP; the receiver follows, and all arrives intact.
    With --transport udp the sender fails after --timeout and names the likely cause."""
    src = random_file(os.path.join(tmp_path, "in.bin"), 5_000_000, seed=15)
    pair = Pair(lab, [LinkSpec(udp_max=1300)])
    dst = os.path.join(tmp_path, "out.bin")
    with open(dst, "wb") as out:
        recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9060", "--timeout", "20"], stdout=out)
    wait_port(lab, pair.b, 9060)
    send_cmd = f"{PY} -m alf send {pair.addr_b()} 9060 --timeout 20"
    if mode == "pipe":
        send = lab.run(pair.a, "sh", "-c", f"cat {src} | {send_cmd}", check=False)
    else:
        send = lab.run(pair.a, "sh", "-c", f"{send_cmd} {src}", check=False)
    assert send.returncode == 0, send.stderr
    assert "got none of the data for 3 s" in send.stderr and "trying TCP" in send.stderr
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    if mode == "file":
        recv = lab.start(pair.b, [PY, "-m", "alf", "recv", "9061", "-o", dst, "--force", "--timeout", "20"])
        wait_port(lab, pair.b, 9061)
        send = lab.run(
            pair.a, PY, "-m", "alf", "send", pair.addr_b(), "9061", src,
            "--transport", "udp", "--timeout", "4", check=False,
        )  # fmt: skip
        assert send.returncode == 3 and "got none of the data for 4 s" in send.stderr
        assert "smaller --adu-size" in send.stderr
        assert recv.wait(timeout=30) == 4  # the sender's ABORT


def _stats_lines(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_udp_multipath_cut_and_restore(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """Issue 16, points 4 and 7: two UDP paths (300 and 100 Mbit/s); path 1 (the 300) is cut
    both ways at 1.0 s and restored at 3.0 s. The sender declares it down (the state change is
    in the stats), its data goes on path 2, the receiver's output grows all along, and after
    the restore path 1 carries data again; intact."""
    from lossynet.profiles import PROFILES

    src = random_file(os.path.join(tmp_path, "in.bin"), 200_000_000, seed=16)
    dst = os.path.join(tmp_path, "out.bin")
    rstats, sstats = os.path.join(tmp_path, "r.json"), os.path.join(tmp_path, "s.json")
    pair = Pair(lab, PROFILES["multipath"].links)
    recv = lab.start(
        pair.b,
        [PY, "-m", "alf", "recv", "9021", "-o", dst, "--transport", "udp", "--timeout", "30",
         "--stats-json", rstats, "--stats-interval", "0.1"],
    )  # fmt: skip
    wait_port(lab, pair.b, 9021, "udp")
    send = lab.start(
        pair.a,
        [PY, "-m", "alf", "send", pair.addr_b(0), "9021", src, "--transport", "udp", "--path", pair.addr_b(1),
         "--stripe", "weighted", "--timeout", "30", "--stats-json", sstats, "--stats-interval", "0.1"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)
    pair.set_link(0, False)
    time.sleep(2.0)
    pair.set_link(0, True)
    _out, err = send.communicate(timeout=120)
    assert send.returncode == 0, err
    assert recv.wait(timeout=30) == 0
    assert sha256_file(dst) == sha256_file(src)
    lines = _stats_lines(sstats)
    states = [s["paths"][0]["state"] for s in lines if "paths" in s]
    assert "down" in states and states[-1] == "up", states
    s = lines[-1]
    assert s["path_downs"] >= 1 and s["paths"][0]["downs"] >= 1
    # path 1 carried data after it came back: its new bytes grew after its last "down" sample
    last_down = max(i for i, s in enumerate(lines) if "paths" in s and s["paths"][0]["state"] == "down")
    assert lines[-1]["paths"][0]["bytes_new"] > lines[last_down]["paths"][0]["bytes_new"]
    # the receiver's output never stood still for a second while the path was down
    got = [(r["elapsed_s"], r["bytes_received"]) for r in _stats_lines(rstats) if "bytes_received" in r]
    moving = [t for (t, b), (_t0, b0) in zip(got[1:], got, strict=False) if b > b0]
    gaps = [b - a for a, b in zip(moving, moving[1:], strict=False)]
    assert max(gaps) <= 1.0, max(gaps)
    assert b"path 1 went silent" in err


def _multipath(
    lab: Lab,
    pair: Pair,
    tmp_path: os.PathLike[str],
    send_args: list[str],
    *,
    size: int,
    pipe: bool = False,
    port: int = 9022,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One UDP transfer from host a to link 0's address on host b with ``--path`` for each
    further link, file mode (output compared) or pipe mode (stdin to stdout, verified by alf);
    the final statistics of the sender and of the receiver."""
    src = random_file(os.path.join(tmp_path, "in.bin"), size, seed=len(send_args))
    dst = os.path.join(tmp_path, "out.bin")
    sstats, rstats = os.path.join(tmp_path, "s.json"), os.path.join(tmp_path, "r.json")
    for f in (sstats, rstats, dst):
        if os.path.exists(f):
            os.unlink(f)
    links = pair.links
    out = ["-o", dst, "--stats-json", rstats] if not pipe else ["--stats-json", rstats]
    with open(os.devnull, "wb") as devnull, open(src, "rb") as stdin:
        recv = lab.start(
            pair.b, [PY, "-m", "alf", "recv", str(port), *out, "--transport", "udp", "--timeout", "30"],
            stdout=devnull if pipe else None,
        )  # fmt: skip
        wait_port(lab, pair.b, port, "udp")
        paths = [a for k in range(1, len(links)) for a in ("--path", pair.addr_b(k))]
        send = lab.start(
            pair.a,
            [PY, "-m", "alf", "send", pair.addr_b(0), str(port), *([] if pipe else [src]), *paths,
             "--transport", "udp", "--timeout", "30", "--stats-json", sstats, *send_args],
            stdin=stdin if pipe else None, stderr=subprocess.PIPE,
        )  # fmt: skip
        _out, err = send.communicate(timeout=180)
        assert send.returncode == 0, err
        assert recv.wait(timeout=30) == 0
    if not pipe:
        assert sha256_file(dst) == sha256_file(src)
    s = last_json(sstats)
    assert all(p["state"] == "up" for p in s["paths"]), s["paths"]
    return s, last_json(rstats)


def _new_share(s: dict[str, Any], k: int) -> float:
    return float(s["paths"][k]["bytes_new"] / sum(p["bytes_new"] for p in s["paths"]))


def test_udp_multipath_shares_follow_capacity_and_prefer_keeps_to_the_first(
    lab: Lab, tmp_path: os.PathLike[str]
) -> None:
    """Issue 16, points 1, 5 and 7: on 300 + 100 Mbit/s `weighted` gives each path data in
    proportion to what it carries (3:1, each controller finding its own path), and `prefer`
    under a --rate the first path can carry alone keeps >= 99% of the bytes on it. (The
    goodput against the sum is measured by tools/multipath_lab.py, not here.)"""
    from lossynet.profiles import PROFILES

    pair = Pair(lab, PROFILES["multipath"].links)
    s, _r = _multipath(lab, pair, tmp_path, ["--stripe", "weighted"], size=100_000_000)
    assert 0.6 <= _new_share(s, 0) <= 0.85, s["paths"]
    s, _r = _multipath(lab, pair, tmp_path, ["--stripe", "prefer", "--rate", "200M"], size=100_000_000)
    # 98.8% with 60 MB: what spills is what the first path's controller could not yet carry
    # in its start-up, the first second (99.83-99.88% of 500 MB: docs/performance.md)
    assert _new_share(s, 0) >= 0.985, s["paths"]


def test_udp_multipath_repairs_go_on_the_clean_path(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """Issue 16, points 3 and 7: 3% random loss on the 300 Mbit/s path only. Most repairs
    travel on the clean path (by shares alone it would carry a quarter of them), the lossy
    path is charged with more loss, and the wire carries at most the loss, the headers and
    1% more than the content. Point 3's own figures are for 500 MB at 1% (tools/
    multipath_lab.py: 97-100% on the clean path). In 100 MB the clean path's start-up
    overshoots its queue by 1-2% of what it carries, which is as much as 1% random loss
    (the two then look alike for the whole transfer), and repairs spill onto the lossy path
    while the clean one's pacer is busy: 86-97% at 3% in five runs, and 73% once in a CI run
    of the whole suite (both cores busy); so the bound is two thirds, still far from the
    quarter that shares alone would give."""
    links = [LinkSpec(rate_bps=300e6, loss=0.03), LinkSpec(rate_bps=100e6)]
    s, _r = _multipath(lab, Pair(lab, links), tmp_path, ["--stripe", "weighted"], size=100_000_000)
    lossy, clean = s["paths"]
    assert lossy["loss"] > clean["loss"], s["paths"]
    assert clean["bytes_repaired"] >= 2 / 3 * (lossy["bytes_repaired"] + clean["bytes_repaired"]), s["paths"]
    headers = s["wire_bytes"] / ((s["adus_new"] + s["adus_repair"]) * s["adu_size"]) - 1
    overhead = s["wire_bytes"] / s["total_bytes"] - 1
    assert overhead <= 0.03 + headers + 0.01, (overhead, headers)


def test_udp_multipath_pipe_over_paths_of_different_delay(lab: Lab, tmp_path: os.PathLike[str]) -> None:
    """Issue 16, points 2 and 7: pipe mode over 100 Mbit/s at 10 ms RTT and 50 Mbit/s at 100 ms.
    Both paths carry a share, and the reordering between them is not taken for loss (the
    receiver's per-address frontier, protocol §14 rule 3): no ADU arrives twice, as one would
    for each hole NAKed while its ADU was still on the far path. (What is NAKed is real: the
    far path's start-up overshoots its queue by ~5% of what it carries.)"""
    links = [LinkSpec(rate_bps=100e6, delay=0.005), LinkSpec(rate_bps=50e6, delay=0.05)]
    s, r = _multipath(lab, Pair(lab, links), tmp_path, ["--stripe", "weighted"], size=60_000_000, pipe=True)
    assert _new_share(s, 1) >= 0.15, s["paths"]
    assert r["duplicates"] == 0, r
