"""Run the benchmark plan: every transport, the same cases, interleaved, in one run.

Each transport gets its own pairs of endpoint processes (:mod:`.transports`), all started
up front on a private hub.  Cases go transport by transport *inside* each repeat, so a
burst of load from elsewhere on the machine hits every transport alike; the figures are
medians of the repeats.  A throughput case first moves a small probe, then sizes each
repeat to last about ``plan.seconds`` at the probed rate.
"""

from __future__ import annotations

import itertools
import mmap
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..backends.shm import ShmBackend
from ..cbuild import BuildError
from ..errors import ConfigError
from ..hub.launcher import open_hub, private_hub
from ..hub.limits import HubLimits
from ..hub.protocol import Op
from ..spin import SpinPolicy
from ..statspage import STATS_SIZE
from . import footprint, xsrate
from .results import (
    Aggregate,
    ConcurrentSetup,
    Latency,
    Results,
    Rss,
    Setup,
    Throughput,
    XenstoreRate,
    size_label,
)
from .transports import (
    KERNEL_TRANSPORTS,
    PAIRS_MAX,
    START_DEADLINE,
    TRANSPORTS,
    Pair,
    c_program,
    start_pair,
)

KiB, MiB = 1 << 10, 1 << 20
PLACEMENTS = ("split", "same", "any")
#: What a run can measure, in the order it measures it.
SECTIONS = (
    "setup",
    "latency",
    "throughput",
    "aggregate",
    "concurrent",
    "rss",
    "footprint",
    "xenstore",
)
#: Every transport gets up to this many pairs; only ``Plan.pair_transports`` get more.
FEW_PAIRS = 4
#: A command may take this many times its expected duration, plus slack, before the
#: endpoint is declared hung.
_PATIENCE, _SLACK = 50.0, 30.0


@dataclass
class Plan:
    """What to measure.  The default takes a minute or two; :meth:`quick` seconds."""

    transports: tuple[str, ...] = TRANSPORTS
    #: ring sizes of the ring sweeps, from the in-page rings up to the vchan maximum
    rings: tuple[int, ...] = (1 * KiB, 2 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB)
    #: message size of the ring sweeps (packets are cut to the ring when larger)
    ring_message: int = 64 * KiB
    #: message sizes of the message sweeps
    messages: tuple[int, ...] = (1, 64, 1 * KiB, 16 * KiB, 64 * KiB, MiB)
    #: ring of the message sweeps
    message_ring: int = MiB
    modes: tuple[str, ...] = ("stream", "packet")
    #: concurrent pairs for the aggregate figures, and their ring
    pairs: tuple[int, ...] = (1, 2, 4, 16, 64)
    aggregate_ring: int = 64 * KiB
    #: the transports run with more than FEW_PAIRS pairs (aggregate, concurrent set-up)
    pair_transports: tuple[str, ...] = ("vchansim", "libxenvchan")
    #: channels set up at the same moment, one per pair, by the pair transports
    concurrent: int = 64
    #: idle channels one endpoint holds for the per-channel memory figure
    footprint_channels: int = 500
    #: clients asking the hub's xenstored at once, and seconds of each rate figure
    xs_clients: tuple[int, ...] = (1, 4)
    xs_seconds: float = 1.0
    #: one-byte round trips per repeat, and the ring they use
    round_trips: int = 5000
    latency_ring: int = 4 * KiB
    #: channels set up and torn down per transport, and their ring (0: the in-page rings)
    setups: int = 30
    setup_ring: int = 0
    repeats: int = 3
    #: target duration of one throughput repeat, and a cap on its bytes
    seconds: float = 0.1
    max_bytes: int = 512 * MiB
    #: spin policy of the vchansim-spin transport
    spin: str | float = "adaptive"
    #: where the two ends of a pair run: "split" (two CPUs), "same" (one) or "any"
    placement: str = "split"
    sections: tuple[str, ...] = SECTIONS

    def sweep_message(self, mode: str, ring: int) -> int:
        """The message size of the ring sweep at ``ring``: packets no larger than the ring
        (0 asks for the in-page rings, whose client -> server ring is 1 KiB)."""
        return min(self.ring_message, max(ring, KiB)) if mode == "packet" else self.ring_message

    @classmethod
    def quick(cls) -> Plan:
        """A few seconds: the targets' cases and a thin slice of everything else."""
        return cls(
            rings=(1 * KiB, 64 * KiB, MiB),
            messages=(1, 64 * KiB),
            pairs=(1, 2),
            concurrent=8,
            footprint_channels=100,
            xs_clients=(1, 2),
            xs_seconds=0.3,
            round_trips=1000,
            setups=5,
            repeats=1,
            seconds=0.03,
            max_bytes=64 * MiB,
        )

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Plan:
        """The plan a results file recorded (JSON turned its tuples into lists)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known
        }
        return cls(**values)

    def check(self) -> Plan:
        """Refuse plans that cannot run, naming the bad value."""
        unknown = [t for t in self.transports if t not in TRANSPORTS]
        if unknown or not self.transports:
            raise ConfigError(
                f"unknown transport(s) {unknown}; choose from {', '.join(TRANSPORTS)}"
            )
        rings = (*self.rings, self.message_ring, self.aggregate_ring, self.latency_ring)
        for ring in (*rings, self.setup_ring):
            if not 0 <= ring <= MiB:
                raise ConfigError(f"ring size {ring} is outside 0..1M (the vchan limit)")
        for msg in (*self.messages, self.ring_message):
            if not 1 <= msg <= MiB:
                raise ConfigError(f"message size {msg} is outside 1..1M")
        if min(self.repeats, self.setups, self.max_bytes) < 1 or self.seconds <= 0:
            raise ConfigError("repeats, setups, seconds and max bytes must be positive")
        if not 1 <= self.concurrent <= PAIRS_MAX or not 1 <= self.footprint_channels <= 1000:
            raise ConfigError(
                f"concurrent set-ups must be 1..{PAIRS_MAX}, footprint channels 1..1000"
            )
        if not self.xs_clients or min(self.xs_clients) < 1 or self.xs_seconds <= 0:
            raise ConfigError("xenstore clients and seconds must be positive")
        if self.round_trips < 10:
            raise ConfigError(f"{self.round_trips} round trips are too few for a p99 (10 at least)")
        SpinPolicy(self.spin)  # names a bad policy now, not in every endpoint
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {', '.join(PLACEMENTS)}")
        if not self.sections or any(s not in SECTIONS for s in self.sections):
            raise ConfigError(f"sections must be some of {', '.join(SECTIONS)}")
        if any(not 1 <= n <= PAIRS_MAX for n in self.pairs) or any(
            m not in ("stream", "packet") for m in self.modes
        ):
            raise ConfigError(f"pairs must be 1..{PAIRS_MAX} and modes stream or packet")
        return self


Progress = Callable[[str], None]


class _EventCounter:
    """Events sent both ways on one vchan, read from its statistics page (EVT_STATS).

    The count per MiB moved says how wake-up bound a transfer is: a reader or writer
    that has to sleep asks for an event, and its peer sends one.
    """

    def __init__(self, rundir: Path, domid: int, port: int) -> None:
        with open_hub(rundir, 0) as conn:
            reply = conn.call(Op.EVT_STATS, domid, port)
        try:
            self._map = mmap.mmap(reply.fds[0], STATS_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            reply.close_fds()
        self._counts = memoryview(self._map)[:16].cast("Q")

    def total(self) -> int:
        return self._counts[0] + self._counts[1]

    def close(self) -> None:
        self._counts.release()
        self._map.close()


@dataclass
class _Channel:
    """An open channel of one pair: the ring it was granted and, for vchans, its events."""

    pair: Pair
    ring_bytes: int
    events: _EventCounter | None

    def event_total(self) -> int:
        return self.events.total() if self.events else 0


@dataclass
class _Run:
    """The state of one run: its pairs, path counter and results."""

    plan: Plan
    rundir: Path
    pairs: dict[str, list[Pair]]
    progress: Progress
    results: Results
    paths: Iterator[int] = field(default_factory=itertools.count)

    @property
    def transports(self) -> list[str]:
        return list(self.pairs)

    # -- channels ----------------------------------------------------------------------
    def open(self, pair: Pair, ring: int, *, count_events: bool = False) -> tuple[float, _Channel]:
        """Open a fresh channel on ``pair``; return its set-up seconds and the channel."""
        path = f"data/bench/{next(self.paths)}"
        server = pair.server.call(f"open server {path} {ring}", _SLACK)
        client = pair.client.call(f"open client {pair.client_path(path)}", _SLACK)
        port = int(server[2])
        events = None
        if count_events and port:
            try:
                events = _EventCounter(self.rundir, pair.server_domid, port)
            except BaseException:
                self.close(pair)
                raise
        return float(server[0]) + float(client[0]), _Channel(pair, int(server[1]), events)

    def close(self, pair: Pair) -> None:
        pair.server.post("close")
        pair.client.post("close")
        pair.server.reply(_SLACK)
        pair.client.reply(_SLACK)

    @contextmanager
    def channels(self, ring: int, count: int = 1) -> Iterator[dict[str, list[_Channel]]]:
        """``count`` open channels per transport, with their event counters."""
        opened: dict[str, list[_Channel]] = {}
        try:
            for transport, pairs in self.pairs.items():
                for pair in pairs[:count]:
                    chan = self.open(pair, ring, count_events=True)[1]
                    opened.setdefault(transport, []).append(chan)
            yield opened
        finally:
            for chans in opened.values():
                for chan in chans:
                    if chan.events:
                        chan.events.close()
                    self.close(chan.pair)

    # -- moving data ---------------------------------------------------------------------
    def transfer(
        self, pairs: list[Pair], mode: str, total: int, msg: int, expect: float
    ) -> tuple[float, float]:
        """Move ``total`` bytes client -> server on every pair at once.  Returns bytes/s
        over all pairs, and the CPU seconds the endpoints used per second of transfer."""
        for pair in pairs:
            pair.server.post(f"recv {mode} {total} {msg}")
            pair.client.post(f"send {mode} {total} {msg}")
        timeout = expect * _PATIENCE + _SLACK
        sent = [pair.client.reply(timeout) for pair in pairs]
        received = [pair.server.reply(timeout) for pair in pairs]
        elapsed = max(max(float(r[1]) for r in received) - min(float(s[0]) for s in sent), 1e-9)
        cpu = sum(float(r[2]) for r in (*sent, *received))
        return len(pairs) * total / elapsed, cpu / elapsed

    def sized_total(self, pair: Pair, mode: str, msg: int) -> int:
        """Probe ``pair`` and return the byte count that takes about ``plan.seconds``."""
        probe = msg * max(16, min(2000, MiB // msg))
        rate, _ = self.transfer([pair], mode, probe, msg, expect=1.0)
        wanted = min(rate * self.plan.seconds, self.plan.max_bytes)
        return max(int(wanted) // msg, 4) * msg

    def throughput_case(self, mode: str, ring: int, msg: int) -> None:
        rows: dict[str, tuple[Throughput, _Channel]] = {}
        with self.channels(ring) as opened:
            for transport, [chan] in opened.items():
                if (
                    mode == "packet"
                    and msg > chan.ring_bytes
                    and transport not in KERNEL_TRANSPORTS
                ):
                    continue  # a vchan packet can never be larger than its ring
                row = Throughput(transport, mode, ring, msg, ring_bytes=chan.ring_bytes)
                self.results.throughput.append(row)
                row.total = self.sized_total(chan.pair, mode, msg)
                rows[transport] = (row, chan)
            for _ in range(self.plan.repeats):
                for row, chan in rows.values():
                    before = chan.event_total()
                    rate, cpu = self.transfer([chan.pair], mode, row.total, msg, self.plan.seconds)
                    row.rates.append(rate)
                    row.cpus.append(cpu)
                    row.events.append(chan.event_total() - before)
        shown = ", ".join(f"{t} {_rate(r.rate)}" for t, (r, _) in rows.items())
        self.progress(f"{mode:6} ring {size_label(ring):>4} msg {size_label(msg):>4}: {shown}")

    def aggregate_case(self, count: int) -> None:
        plan = self.plan
        msg = plan.ring_message
        with self.channels(plan.aggregate_ring, count) as opened:
            rows = []
            for transport, chans in opened.items():
                pairs = [chan.pair for chan in chans]
                if len(pairs) < count:
                    continue
                row = Aggregate(transport, count, plan.aggregate_ring, msg)
                self.results.aggregate.append(row)
                total = self.sized_total(pairs[0], "stream", msg)
                row.total = total * count
                rows.append((row, chans, total))
            for _ in range(plan.repeats):
                for row, chans, total in rows:
                    pairs = [chan.pair for chan in chans]
                    before = sum(chan.event_total() for chan in chans)
                    rate, cpu = self.transfer(pairs, "stream", total, msg, count * plan.seconds)
                    row.rates.append(rate)
                    row.cpus.append(cpu)
                    row.events.append(sum(chan.event_total() for chan in chans) - before)
        shown = ", ".join(
            f"{row.transport} {_rate(row.rate)} ({row.cpu_per_gib:.2f} CPU s/GiB, "
            f"{row.events_per_mib:.1f} events/MiB)"
            for row, _, _ in rows
        )
        self.progress(f"{count} pair(s) at once: {shown}")

    # -- latency and set-up -------------------------------------------------------------
    def latency(self) -> None:
        plan = self.plan
        count = plan.round_trips
        rows = {t: Latency(t, count) for t in self.transports}
        self.results.latency.extend(rows.values())
        with self.channels(plan.latency_ring) as opened:
            for _ in range(plan.repeats):
                for transport, [chan] in opened.items():
                    pair = chan.pair
                    pair.server.post(f"pong {count}")
                    p50, p99 = pair.client.call(f"ping {count}", count * 1e-3 + _SLACK)
                    pair.server.reply(_SLACK)
                    rows[transport].p50s.append(float(p50))
                    rows[transport].p99s.append(float(p99))
        shown = ", ".join(f"{t} {r.p50 * 1e6:.1f}/{r.p99 * 1e6:.1f}" for t, r in rows.items())
        self.progress(f"round trip p50/p99 µs: {shown}")

    def setup(self) -> None:
        plan = self.plan
        rows = {t: Setup(t, plan.setup_ring) for t in self.transports}
        self.results.setup.extend(rows.values())
        for _ in range(plan.setups):
            for transport, pairs in self.pairs.items():
                rows[transport].samples.append(self.open(pairs[0], plan.setup_ring)[0])
                self.close(pairs[0])
        shown = ", ".join(f"{t} {r.median * 1e3:.2f}" for t, r in rows.items())
        self.progress(f"setup median ms: {shown}")

    def concurrent_setup(self) -> None:
        """``plan.concurrent`` channels set up at the same moment, one per pair: every
        server is asked at once, then every client.  A set-up that fails stops the run
        with its cause (there is no "error rate" to hide one in)."""
        plan = self.plan
        rows = []
        for transport, pairs in self.pairs.items():
            if transport in plan.pair_transports and len(pairs) >= plan.concurrent:
                rows.append((ConcurrentSetup(transport, plan.concurrent), pairs[: plan.concurrent]))
        self.results.concurrent.extend(row for row, _ in rows)
        for _ in range(plan.repeats):
            for row, pairs in rows:
                path = f"data/bench/{next(self.paths)}"
                for pair in pairs:
                    pair.server.post(f"open server {path} {plan.setup_ring}")
                servers = [float(pair.server.reply(_SLACK)[0]) for pair in pairs]
                for pair in pairs:
                    pair.client.post(f"open client {pair.client_path(path)}")
                clients = [float(pair.client.reply(_SLACK)[0]) for pair in pairs]
                row.samples += [a + b for a, b in zip(servers, clients, strict=True)]
                for pair in pairs:
                    self.close(pair)
        shown = ", ".join(
            f"{row.transport} {row.p50 * 1e3:.2f}/{row.p99 * 1e3:.2f}" for row, _ in rows
        )
        self.progress(f"{plan.concurrent} setups at once, p50/p99 ms: {shown}")

    def xenstore(self) -> None:
        plan = self.plan
        for clients in plan.xs_clients:
            for batch in (1, 32):
                row = XenstoreRate(clients, batch)
                self.results.xenstore.append(row)
                for _ in range(plan.repeats):
                    row.rates.append(xsrate.measure(self.rundir, clients, batch, plan.xs_seconds))
                self.progress(
                    f"xenstore reads, {clients} client(s), {batch} in flight each: "
                    f"{row.rate:,.0f}/s"
                )

    def rss(self) -> None:
        for transport, pairs in self.pairs.items():
            server = int(pairs[0].server.call("rss", _SLACK)[0])
            client = int(pairs[0].client.call("rss", _SLACK)[0])
            self.results.rss.append(Rss(transport, server, client))


def _rate(rate: float) -> str:
    return f"{rate / MiB:.0f}M" if rate >= MiB else f"{rate / KiB:.1f}K"


def machine_info() -> dict[str, object]:
    """What the figures depend on: CPU, cores, kernel, Python, and the load right now."""
    model = ""
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""
        )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": list(os.getloadavg()),
    }


@contextmanager
def _hub_for_run(rundir: Path | None, limits: HubLimits | None = None) -> Iterator[Path]:
    """A run directory with a hub held up for the run: ``rundir``'s (left running; a hub
    already serving it keeps its own limits) or a private one started with ``limits``,
    stopped and removed afterwards."""
    with ExitStack() as stack:
        path = rundir or stack.enter_context(private_hub(start=True, limits=limits)).path
        keepalive = ShmBackend(0, rundir=path).grants()
        stack.callback(keepalive.close)
        yield path


def _start_all(plan: Plan, rundir: Path, skipped: dict[str, str]) -> dict[str, list[Pair]]:
    program = None
    if "libxenvchan" in plan.transports:
        try:
            program = c_program()
        except BuildError as exc:
            skipped["libxenvchan"] = str(exc)
    pairs: dict[str, list[Pair]] = {}
    try:
        for transport in plan.transports:
            if transport in skipped:
                continue
            pairs[transport] = [
                start_pair(
                    transport,
                    i,
                    rundir=rundir,
                    spin=plan.spin,
                    placement=plan.placement,
                    program=program,
                )
                for i in range(_pair_count(plan, transport))
            ]
        for pair in itertools.chain.from_iterable(pairs.values()):
            pair.server.reply(START_DEADLINE)
            pair.client.reply(START_DEADLINE)
    except BaseException:
        _stop_all(pairs)
        raise
    return pairs


def _pair_count(plan: Plan, transport: str) -> int:
    """How many pairs of ``transport`` the plan's sections need."""
    wanted = max(plan.pairs) if "aggregate" in plan.sections else 1
    if transport not in plan.pair_transports:
        return max(1, min(wanted, FEW_PAIRS))
    if "concurrent" in plan.sections:
        wanted = max(wanted, plan.concurrent)
    return wanted


def _stop_all(pairs: dict[str, list[Pair]]) -> None:
    for pair in itertools.chain.from_iterable(pairs.values()):
        pair.stop()


def run(plan: Plan, *, rundir: Path | None = None, progress: Progress | None = None) -> Results:
    """Measure everything ``plan`` asks for; return the results."""
    plan.check()
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    results = Results(machine=machine_info(), plan=asdict(plan))
    with _hub_for_run(rundir) as path:
        pairs = _start_all(plan, path, results.skipped)
        for transport, reason in results.skipped.items():
            say(f"skipping {transport}: {reason}")
        run_state = _Run(plan, path, pairs, say, results)
        try:
            _measure(run_state)
        finally:
            _stop_all(pairs)
    if "footprint" in plan.sections:
        _footprint(plan, results, say)
    results.machine["load_after"] = list(os.getloadavg())
    return results


def _footprint(plan: Plan, results: Results, say: Progress) -> None:
    """The small-endpoint figures, on a hub of their own whose limits let one domain
    hold ``plan.footprint_channels`` channels (the raise is reported)."""
    limits, raised = footprint.limits_for(plan.footprint_channels)
    with _hub_for_run(None, limits) as path:
        row = footprint.measure(path, plan.footprint_channels, plan.repeats)
    row.raised[:0] = raised
    results.footprint = row
    if row.raised:
        say(
            f"footprint: raised for {plan.footprint_channels} channels in one domain: "
            + ", ".join(row.raised)
        )
    say(
        f"footprint: import {min(row.import_s) * 1e3:.1f} ms, first get_backend "
        f"{min(row.backend_s) * 1e3:.1f} ms, RSS {row.rss_above_bare / MiB:.2f} MiB above a "
        f"bare interpreter, {min(row.per_channel) / KiB:.1f} KiB per idle channel"
    )


def _measure(state: _Run) -> None:
    plan = state.plan
    if "setup" in plan.sections:
        state.setup()
    if "latency" in plan.sections:
        state.latency()
    if "throughput" in plan.sections:
        for mode in plan.modes:
            for ring in plan.rings:
                state.throughput_case(mode, ring, plan.sweep_message(mode, ring))
            for msg in plan.messages:
                ring = plan.message_ring
                if ring not in plan.rings or msg != plan.sweep_message(mode, ring):
                    state.throughput_case(mode, ring, msg)
    if "aggregate" in plan.sections:
        for count in plan.pairs:
            state.aggregate_case(count)
    if "concurrent" in plan.sections:
        state.concurrent_setup()
    if "xenstore" in plan.sections:
        state.xenstore()
    if "rss" in plan.sections:
        state.rss()
