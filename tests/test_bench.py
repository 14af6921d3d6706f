"""The benchmark code: that it measures what it says, reports it right, and cleans up.

Nothing here asserts a speed -- on a shared machine that would be a flaky test.  The runs
are tiny (a few KiB per case) and check shapes and arithmetic: every transport produces
every figure, the table/JSON/PNG come out, ratios and targets are the quotients of the
medians, and bad options fail with their cause.  The allocation tests are behaviour
assertions: reading into a caller's buffer must not allocate per message.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.backends.shm import ShmBackend, emulator_env
from vchansim.bench import footprint, report
from vchansim.bench.endpoints import make_endpoint
from vchansim.bench.results import Latency, Results, Setup, Throughput
from vchansim.bench.runner import Plan, run
from vchansim.bench.transports import (
    TRANSPORTS,
    BenchError,
    Worker,
    c_program,
    pair_cpus,
    start_pair,
)
from vchansim.bench.worker import serve
from vchansim.channel import Vchan
from vchansim.cli import bench as bench_cli
from vchansim.errors import ConfigError
from vchansim.rundir import RunDir
from vchansim.spin import ADAPTIVE_MAX_US, SpinPolicy

HAVE_C = (
    shutil.which(os.environ.get("CC") or "cc") is not None
    and Path("/usr/include/libxenvchan.h").exists()
)
KiB = 1024

#: The smallest plan that still has every kind of figure.
TINY = dict(
    rings=(1 * KiB, 64 * KiB),
    ring_message=4 * KiB,
    messages=(1, 4 * KiB),
    message_ring=64 * KiB,
    pairs=(1, 2),
    aggregate_ring=64 * KiB,
    pair_transports=("vchansim", "libxenvchan"),
    concurrent=2,
    footprint_channels=5,
    xs_clients=(1,),
    xs_seconds=0.05,
    round_trips=40,
    setups=2,
    repeats=2,
    seconds=0.002,
    max_bytes=256 * KiB,
)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vchansim")
    bench_cli.register(parser.add_subparsers())
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, Path]:
    """One tiny run of every transport through the CLI, with JSON and a plot."""
    out = tmp_path_factory.mktemp("bench")
    transports = ",".join(t for t in TRANSPORTS if HAVE_C or t != "libxenvchan")
    plan = Plan(**TINY)
    argv = [
        "--quiet",
        f"--transports={transports}",
        "--rings=1K,64K",
        "--ring-message=4K",
        "--messages=1,4K",
        "--message-ring=64K",
        "--pairs=1,2",
        "--aggregate-ring=64K",
        f"--concurrent={plan.concurrent}",
        f"--footprint-channels={plan.footprint_channels}",
        "--xs-clients=1",
        f"--xs-seconds={plan.xs_seconds}",
        f"--round-trips={plan.round_trips}",
        f"--setups={plan.setups}",
        f"--repeats={plan.repeats}",
        f"--seconds={plan.seconds}",
        "--max-bytes=256K",
        f"--save={out / 'bench.json'}",
        f"--plot={out / 'bench.png'}",
    ]
    assert _cli(*argv) == 0
    return report.read_json(out / "bench.json"), out


def test_every_transport_has_every_figure(measured):
    results, _ = measured
    expected = [t for t in TRANSPORTS if HAVE_C or t != "libxenvchan"]
    assert results.transports == expected
    plan = Plan.from_dict(results.plan)
    for transport in expected:
        for mode in ("stream", "packet"):
            for ring in plan.rings:
                row = results.find_throughput(transport, mode, ring, plan.sweep_message(mode, ring))
                assert row and len(row.rates) == 2 and min(row.rates) > 0, (transport, mode, ring)
            for msg in plan.messages:
                row = results.find_throughput(transport, mode, plan.message_ring, msg)
                assert row and row.total % msg == 0 and row.total >= 4 * msg
        latency = results.find_latency(transport)
        assert latency and all(0 < a <= b for a, b in zip(latency.p50s, latency.p99s, strict=True))
        setup = results.find_setup(transport)
        assert setup and len(setup.samples) == 2 and setup.median > 0
        assert {a.pairs for a in results.aggregate if a.transport == transport} == {1, 2}
        rss = next(r for r in results.rss if r.transport == transport)
        assert rss.server > 1 << 20 and rss.client > 1 << 20  # a process is at least 1 MiB
    vchan = next(a for a in results.aggregate if a.transport == "vchansim" and a.pairs == 2)
    assert len(vchan.cpus) == 2 and vchan.cpu_per_gib > 0


def test_setups_at_once_the_hubs_xenstored_and_a_small_endpoint_are_measured(measured):
    results, _ = measured
    at_once = {c.transport: c for c in results.concurrent}
    assert set(at_once) == ({"vchansim", "libxenvchan"} if HAVE_C else {"vchansim"})
    for row in at_once.values():  # two at once, two repeats
        assert row.count == 2 and len(row.samples) == 4 and 0 < row.p50 <= row.p99
    assert [(x.clients, x.batch) for x in results.xenstore] == [(1, 1), (1, 32)]
    assert all(len(x.rates) == 2 and x.rate > 0 for x in results.xenstore)
    fp = results.footprint
    assert fp is not None and fp.channels == 5 and len(fp.import_s) == 2
    assert min(fp.import_s) > 0 and min(fp.backend_s) > 0
    assert min(fp.bare_rss) > 1 << 20 and min(fp.endpoint_rss) > min(fp.bare_rss)
    assert min(fp.per_channel) > 0  # five idle channels take some memory
    text = report.text_report(results)
    for heading in ("channels set up at the same moment", "hub xenstored", "a small endpoint"):
        assert heading in text


def test_a_domain_holding_many_channels_gets_raised_limits_and_says_so():
    limits, raised = footprint.limits_for(500)
    assert limits.xenstore.nodes >= 3 * 500 and limits.xenstore.node_size > 2048
    assert raised == [
        f"xenstore nodes 1000 -> {limits.xenstore.nodes}",
        f"xenstore node size 2048 -> {limits.xenstore.node_size}",
    ]
    assert footprint.limits_for(10)[1] == []  # Xen's defaults hold ten


def test_vchans_report_their_events_and_kernel_channels_none(measured):
    results, _ = measured
    by_transport = {}
    for row in results.throughput:
        by_transport.setdefault(row.transport, []).append(sum(row.events))
    assert sum(by_transport["vchansim"]) > 0  # a 1 KiB ring fills: somebody slept
    assert sum(by_transport["pipe"]) == sum(by_transport["socketpair"]) == 0
    pairs = {(a.transport, a.pairs): a for a in results.aggregate}
    assert pairs["vchansim", 2].events_per_mib > 0  # a reader that found the ring empty slept
    assert sum(pairs["pipe", 2].events) == 0
    assert "aggregate: event-channel events per MiB moved" in report.text_report(results)


def test_the_ring_granted_is_recorded(measured):
    results, _ = measured
    vchan = results.find_throughput("vchansim", "stream", 1 * KiB, 4 * KiB)
    pipe = results.find_throughput("pipe", "stream", 1 * KiB, 4 * KiB)
    assert vchan and vchan.ring_bytes == 1 * KiB  # the in-page ring of the control page
    assert pipe and pipe.ring_bytes == 4 * KiB  # a pipe holds at least one page


def test_table_json_and_png_come_out(measured):
    results, out = measured
    text = report.text_report(results)
    for heading in (
        "stream throughput, MiB/s, 4K writes, by ring size",
        "packet throughput, MiB/s, 64K ring, by message size",
        "1-byte round trip",
        "channel setup",
        "aggregate stream throughput of N pairs",
        "peak RSS",
        "ratios, subject / baseline",
        "targets",
    ):
        assert heading in text
    data = json.loads((out / "bench.json").read_text())
    assert data["version"] == 1 and data["ratios"] and "targets" in data
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_results_report_and_plot_again(measured, tmp_path, capsys):
    _, out = measured
    assert _cli(f"--from-json={out / 'bench.json'}", f"--plot={tmp_path / 'again.png'}") == 0
    assert "ratios, subject / baseline" in capsys.readouterr().out
    assert (tmp_path / "again.png").stat().st_size > 1000


def _results(vchansim: float, spin: float, c: float, pipe_rtt: float, rtt: float) -> Results:
    """Hand-made results: stream rates at the 1 MiB ring, round trips, set-up."""
    mib = 1 << 20
    rows = [
        Throughput("vchansim", "stream", mib, 64 * KiB, rates=[vchansim, 0.5 * vchansim, 9e9]),
        Throughput("vchansim-spin", "stream", mib, 64 * KiB, rates=[spin]),
        Throughput("libxenvchan", "stream", mib, 64 * KiB, rates=[c, c, 1.0]),
    ]
    latency = [
        Latency("vchansim", 100, p50s=[rtt], p99s=[2 * rtt]),
        Latency("vchansim-spin", 100, p50s=[rtt / 4], p99s=[rtt]),
        Latency("pipe", 100, p50s=[pipe_rtt], p99s=[pipe_rtt]),
    ]
    setup = [Setup("vchansim", 0, samples=[0.001, 0.003, 0.0015])]
    plan = {"transports": list(TRANSPORTS), "ring_message": 64 * KiB}
    return Results(plan=plan, throughput=rows, latency=latency, setup=setup)


def test_ratios_and_targets_are_quotients_of_medians():
    results = _results(vchansim=3e9, spin=4e9, c=2e9, pipe_rtt=10e-6, rtt=10.5e-6)
    ratios = {(r.metric, r.subject, r.baseline): r.value for r in results.ratios()}
    # medians: vchansim 3e9 (of 3e9, 1.5e9, 9e9), libxenvchan 2e9 (of 2e9, 2e9, 1)
    assert ratios[("stream 64K msgs, 1M ring", "vchansim", "libxenvchan")] == pytest.approx(1.5)
    assert ratios[("stream 64K msgs, 1M ring", "vchansim-spin", "libxenvchan")] == 2.0
    assert ratios[("round trip p50", "vchansim", "pipe")] == pytest.approx(1.05)
    targets = {t.name: t for t in results.targets()}
    stream = targets["stream 64K writes, 1M ring, vs libxenvchan"]
    assert (stream.subject, stream.measured, stream.met) == ("vchansim-spin", 2.0, True)
    assert targets["1-byte round trip without polling, vs pipe"].met  # 1.05 <= 1.1
    polling = targets["1-byte round trip with polling, vs pipe"]
    assert polling.measured == pytest.approx(0.2625) and polling.met
    setup = targets["setup median"]
    assert setup.measured == pytest.approx(1.5) and setup.met  # ms, median of three


def test_targets_missed_are_reported_as_missed():
    results = _results(vchansim=1e9, spin=1e9, c=2e9, pipe_rtt=10e-6, rtt=30e-6)
    verdicts = {t.name: t.met for t in results.targets()}
    assert verdicts["stream 64K writes, 1M ring, vs libxenvchan"] is False
    assert verdicts["1-byte round trip without polling, vs pipe"] is False
    assert "NOT met" in report.text_report(results)


def test_json_round_trips():
    results = _results(vchansim=3e9, spin=4e9, c=2e9, pipe_rtt=10e-6, rtt=10.5e-6)
    again = Results.from_json(json.loads(json.dumps(results.to_json())))
    assert again.ratios() == results.ratios() and again.targets() == results.targets()


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"transports": ("carrier-pigeon",)}, "unknown transport"),
        ({"rings": (2 << 20,)}, "outside 0..1M"),
        ({"messages": (0,)}, "outside 1..1M"),
        ({"pairs": (0,)}, "pairs must be"),
        ({"sections": ("speed",)}, "sections must be"),
        ({"round_trips": 3}, "too few for a p99"),
        ({"seconds": 0}, "must be positive"),
        ({"spin": "sometimes"}, "spin must be"),
        ({"placement": "everywhere"}, "placement must be"),
    ],
)
def test_bad_plans_are_refused_with_the_cause(change, cause):
    with pytest.raises(ConfigError, match=cause):
        Plan(**{**TINY, **change}).check()


def test_bad_options_and_files_fail_cleanly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli("--rings=lots")
    assert "is not a size" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ConfigError, match="cannot read benchmark results"):
        _cli(f"--from-json={tmp_path / 'junk.json'}")


def test_an_endpoint_answers_bad_commands_with_errors():
    """The worker loop over a real pipe: replies, never a crash, for bad input."""
    read_fd, write_fd = os.pipe()
    try:
        endpoint = make_endpoint("pipe", fds=(read_fd, write_fd))
        commands = iter(
            [
                "open server p 4096",
                "send stream 8 4",
                "recv stream 8 4",
                "send sideways 1 1",
                "ping 1",
                "fly",
                "close",
                "quit",
            ]
        )
        replies: list[str] = []
        serve(endpoint, lambda: next(commands), replies.append)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert replies[0] == "ready"
    assert replies[1].split()[0] == "ok" and replies[1].split()[2] == "4096"
    assert replies[2].startswith("ok") and replies[3].startswith("ok")  # 8 bytes there and back
    assert replies[4].startswith("error ConfigError: bad transfer: mode 'sideways'")
    assert replies[5].startswith("error ConfigError: ping needs at least 2")
    assert replies[6].startswith("error unknown command")
    assert replies[7] == "ok"


@pytest.mark.skipif(not HAVE_C, reason="needs a C compiler and Xen's headers")
def test_a_c_endpoint_failure_names_the_endpoint_and_cause(rundir: RunDir):
    pair = start_pair("libxenvchan", 0, rundir=Path(rundir.path), spin="off", program=c_program())
    try:
        assert pair.client.reply(60) == []  # "ready"
        with pytest.raises(BenchError, match=r"libxenvchan pair 0 client: error init"):
            pair.client.call(f"open client {pair.client_path('data/nobody-serves-this')}", 30)
    finally:
        pair.stop()


@pytest.mark.skipif(not HAVE_C, reason="needs a C compiler and Xen's headers")
@pytest.mark.parametrize("spin", ["adaptive", "30"])
def test_a_spinning_python_end_and_a_sleeping_c_end_wake_each_other(rundir: RunDir, spin):
    """The C end sleeps on its event channel whenever the 1 KiB ring is full or empty,
    with no timeout: had the spinning Python end skipped one kick it asked for, the
    transfer would hang and the endpoint's deadline would fail the test."""
    root = Path(rundir.path)
    python_end = Worker(
        "python server",
        [
            sys.executable,
            "-m",
            "vchansim.bench.worker",
            "vchansim",
            "--domid=1",
            "--peer=2",
            f"--spin={spin}",
        ],
        {**os.environ, "VCHANSIM_RUNDIR": str(root)},
    )
    c_end = Worker("c client", [str(c_program()), "1"], emulator_env(ShmBackend(2, rundir=root)))
    try:
        assert python_end.reply(60) == [] and c_end.reply(60) == []
        assert python_end.call("open server data/mixed 0", 30)[1] == "1024"
        c_end.call("open client /local/domain/1/data/mixed", 30)
        for receiver, sender in ((python_end, c_end), (c_end, python_end)):
            for mode in ("stream", "packet"):
                receiver.post(f"recv {mode} {256 * KiB} 1000")
                sender.call(f"send {mode} {256 * KiB} 1000", 30)
                receiver.reply(30)
        c_end.call("close", 30)
        python_end.call("close", 30)
    finally:
        c_end.stop()
        python_end.stop()


def test_pairs_are_pinned_as_asked(rundir: RunDir):
    cpus = sorted(os.sched_getaffinity(0))
    assert pair_cpus("any", 0) is None
    assert pair_cpus("same", 1) == (cpus[1 % len(cpus)],) * 2
    server, client = pair_cpus("split", 0)
    assert (server != client) == (len(cpus) > 1)
    pair = start_pair("pipe", 0, rundir=Path(rundir.path), spin="off", placement="split")
    try:
        assert os.sched_getaffinity(pair.server.proc.pid) == {server}
        assert os.sched_getaffinity(pair.client.proc.pid) == {client}
    finally:
        pair.stop()


def test_run_leaves_nothing_behind(rundir: RunDir):
    """A run on a given run directory closes every channel and stops every endpoint
    (the fixture checks for grants, ports, nodes, descriptors and processes)."""
    plan = Plan(
        **{**TINY, "transports": ("vchansim", "pipe"), "rings": (4 * KiB,), "messages": (1,)},
        sections=("setup", "throughput"),
    )
    results = run(plan, rundir=Path(rundir.path), progress=lambda line: None)
    assert results.find_setup("vchansim") and results.find_throughput(
        "pipe", "packet", 4 * KiB, 4 * KiB
    )


# -- the spin policy's probing -----------------------------------------------------------------


def test_adaptive_spinning_that_is_off_probes_with_growing_intervals():
    policy = SpinPolicy("adaptive")
    for _ in range(100):
        policy.observe(5000.0)  # every wait long: the budget is 0
    assert policy.budget_us == 0
    polls: list[int] = []

    def never() -> bool:
        polls.append(1)
        return False

    probed = []
    for _ in range(16):
        before = len(polls)
        assert policy.spin(never) is False
        probed.append(len(polls) > before)
    assert [i for i, p in enumerate(probed) if p] == [0, 2, 6, 14]  # 1, then 3, 7 waits apart


def test_probes_that_catch_the_peer_bring_spinning_back():
    policy = SpinPolicy("adaptive")
    for _ in range(100):
        policy.observe(5000.0)
    for _ in range(100):  # the peer now answers at once: every probe succeeds
        policy.spin(lambda: True)
        if policy.budget_us:
            break
    assert 0 < policy.budget_us <= ADAPTIVE_MAX_US


# -- no allocation per message ---------------------------------------------------------------


@pytest.fixture
def memory_pair():
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "data/alloc", 128 * KiB, 128 * KiB)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, "/local/domain/1/data/alloc")
    yield srv, cli
    cli.close()
    srv.close()


def _traced(step, messages: int) -> tuple[int, int]:
    """(bytes still allocated, peak above the start) over ``messages`` calls of ``step``."""
    for _ in range(50):
        step()  # warm caches (method lookups, interned names) before measuring
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in itertools.repeat(None, messages):  # range() would keep its last int alive
            step()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return now - start, peak - start


@pytest.mark.parametrize("call", ["read_into", "recv_into"])
def test_reading_into_a_buffer_allocates_nothing_per_message(memory_pair, call):
    """A 64 KiB message each time: nothing stays allocated, nothing message-sized is ever
    allocated, and the transient peak (a few integers) does not grow with the number of
    messages."""
    srv, cli = memory_pair
    payload = memoryview(bytes(range(256)) * 256)
    dst = memoryview(bytearray(len(payload)))
    receive = getattr(srv, call)

    def step() -> None:
        cli.write(payload)
        assert receive(dst) == len(payload)

    kept_few, peak_few = _traced(step, 100)
    kept_many, peak_many = _traced(step, 2000)
    assert kept_few == kept_many == 0
    assert peak_many < 2 * KiB and peak_many <= peak_few + 256
    assert bytes(dst) == bytes(payload)


def test_the_allocation_check_would_see_a_copy(memory_pair):
    """The same measurement of ``read`` (which returns new bytes) sees each message."""
    srv, cli = memory_pair
    payload = memoryview(bytes(64 * KiB))

    def step() -> None:
        cli.write(payload)
        assert len(srv.read(len(payload))) == len(payload)

    _, peak = _traced(step, 100)
    assert peak >= 64 * KiB


def test_results_are_saved_and_reported_before_a_plot_fails(measured, tmp_path):
    """Without matplotlib (its import fails) the plot fails last: the results are out."""
    _, out = measured
    saved = tmp_path / "saved.json"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from vchansim.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["bench", f"--from-json={out / 'bench.json'}", f"--save={saved}", "--json",
            f"--plot={tmp_path / 'never.png'}"]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "vchansim bench: plotting needs matplotlib, which is not installed: pip install matplotlib"
    )
    assert json.loads(done.stdout) == json.loads(saved.read_text())
    assert report.read_json(saved).transports == report.read_json(out / "bench.json").transports
    assert not (tmp_path / "never.png").exists()
