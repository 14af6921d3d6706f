"""What a benchmark run measured, the ratios between transports, and the targets.

Absolute numbers drift with the machine and its load; ratios between transports measured
in the same run, interleaved, drift much less, so the report leads with them and the
performance targets are stated as ratios.  Every figure keeps its raw samples (medians
are taken here), and :meth:`Results.to_json` / :meth:`Results.from_json` round-trip it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

#: The Python vchan transports, compared against the baselines.
SUBJECTS = ("vchansim", "vchansim-spin")
#: What users would pick instead, measured in the same run.
BASELINES = ("libxenvchan", "pipe", "socketpair")
JSON_VERSION = 1
MiB = 1 << 20


GiB = 1 << 30


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def percentile(values: Iterable[float], pct: int) -> float:
    """The ``pct``-th percentile, nearest rank below (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * pct // 100)]


@dataclass
class Throughput:
    """One transport moving data one way: ``mode`` stream or packet, ``message`` bytes per
    call, ``ring`` bytes asked for (``ring_bytes`` granted), ``rates`` in bytes/s."""

    transport: str
    mode: str
    ring: int
    message: int
    ring_bytes: int = 0
    total: int = 0
    rates: list[float] = field(default_factory=list)
    #: events sent both ways per repeat (vchan transports; 0 for the others)
    events: list[int] = field(default_factory=list)
    #: CPUs the two endpoints kept busy per repeat (CPU seconds per second; 2.0 = both
    #: cores all the time, as two spinning ends do)
    cpus: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def cpu(self) -> float:
        """CPUs kept busy (median), 0.0 when not measured."""
        return median(self.cpus) if self.cpus else 0.0

    @property
    def events_per_mib(self) -> float:
        """Wake-up events per MiB moved: how often an end had to sleep."""
        return median(self.events) * (1 << 20) / self.total if self.events and self.total else 0.0


@dataclass
class Latency:
    """One-byte round trips: per-repeat p50 and p99 in seconds."""

    transport: str
    count: int
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return median(self.p50s)

    @property
    def p99(self) -> float:
        return median(self.p99s)


@dataclass
class Setup:
    """Channel set-up: server plus client seconds, one sample per channel."""

    transport: str
    ring: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)


@dataclass
class Aggregate:
    """``pairs`` channels streaming at once: total bytes/s over all of them, and the
    CPUs all their endpoints kept busy (CPU seconds per second) in each repeat."""

    transport: str
    pairs: int
    ring: int
    message: int
    rates: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    #: bytes all pairs moved together in one repeat
    total: int = 0
    #: events sent both ways over all pairs, per repeat (vchan transports only)
    events: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def events_per_mib(self) -> float:
        """Wake-up events per MiB moved over all pairs: how often an end had to sleep,
        which is what grows a sleeping transport's CPU per GiB as pairs share the CPUs."""
        return median(self.events) * (1 << 20) / self.total if self.events and self.total else 0.0

    @property
    def cpu_per_gib(self) -> float:
        """CPU seconds the endpoints spent per GiB moved (median; 0.0 if not measured)."""
        if not self.cpus:
            return 0.0
        return median(cpu / rate * GiB for cpu, rate in zip(self.cpus, self.rates, strict=True))


@dataclass
class ConcurrentSetup:
    """``count`` channels set up at the same moment: each one's server plus client
    seconds, over every repeat."""

    transport: str
    count: int
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


@dataclass
class Footprint:
    """A small endpoint's cost, one sample per fresh process (see :mod:`.footprint`):
    seconds of ``import vchansim`` and of the first ``get_backend("shm")``, peak RSS of
    a bare interpreter and of one with one channel, and the resident bytes each of
    ``channels`` further idle channels added.  ``raised`` names the limits lifted for it."""

    channels: int = 0
    import_s: list[float] = field(default_factory=list)
    backend_s: list[float] = field(default_factory=list)
    bare_rss: list[int] = field(default_factory=list)
    endpoint_rss: list[int] = field(default_factory=list)
    per_channel: list[float] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)

    @property
    def rss_above_bare(self) -> float:
        return median(e - b for e, b in zip(self.endpoint_rss, self.bare_rss, strict=True))


@dataclass
class XenstoreRate:
    """Simple requests per second the hub's xenstored served, ``clients`` asking at
    once, ``batch`` requests in flight per client (1: each waits for its reply)."""

    clients: int
    batch: int
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return median(self.rates)


@dataclass
class Rss:
    """Peak resident set of each endpoint process, in bytes, at the end of the run."""

    transport: str
    server: int
    client: int

    @property
    def peak(self) -> int:
        return max(self.server, self.client)


@dataclass
class Ratio:
    """``subject``'s figure divided by ``baseline``'s for one metric.  ``higher_better``
    says which way is good (throughput) or bad (latency, set-up time)."""

    metric: str
    subject: str
    baseline: str
    value: float
    higher_better: bool


@dataclass
class Target:
    """A performance target of the project, checked against this run."""

    name: str
    subject: str
    measured: float
    limit: float
    unit: str
    at_least: bool

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    setup: list[Setup] = field(default_factory=list)
    aggregate: list[Aggregate] = field(default_factory=list)
    rss: list[Rss] = field(default_factory=list)
    concurrent: list[ConcurrentSetup] = field(default_factory=list)
    footprint: Footprint | None = None
    xenstore: list[XenstoreRate] = field(default_factory=list)
    #: transport -> why it was not measured (e.g. no C compiler for libxenvchan)
    skipped: dict[str, str] = field(default_factory=dict)

    # -- lookups --------------------------------------------------------------------
    @property
    def transports(self) -> list[str]:
        """Transports with any figure, in the plan's order."""
        records: list[Throughput | Latency | Setup] = [*self.throughput, *self.latency, *self.setup]
        seen = {r.transport for r in records}
        return [t for t in self.plan.get("transports", sorted(seen)) if t in seen]

    def find_throughput(
        self, transport: str, mode: str, ring: int, message: int
    ) -> Throughput | None:
        for row in self.throughput:
            key = (row.transport, row.mode, row.ring, row.message)
            if key == (transport, mode, ring, message) and row.rates:
                return row
        return None

    def find_latency(self, transport: str) -> Latency | None:
        return next((r for r in self.latency if r.transport == transport and r.p50s), None)

    def find_setup(self, transport: str) -> Setup | None:
        return next((r for r in self.setup if r.transport == transport and r.samples), None)

    # -- ratios -----------------------------------------------------------------------
    def _metrics(self) -> Iterator[tuple[str, dict[str, float], bool]]:
        """(metric name, transport -> figure, higher is better) for every comparable metric."""
        cases: dict[tuple[str, int, int], dict[str, float]] = {}
        for row in self.throughput:
            if row.rates:
                cases.setdefault((row.mode, row.ring, row.message), {})[row.transport] = row.rate
        for (mode, ring, message), figures in cases.items():
            yield f"{mode} {size_label(message)} msgs, {size_label(ring)} ring", figures, True
        groups: dict[int, dict[str, float]] = {}
        for agg in self.aggregate:
            if agg.rates:
                groups.setdefault(agg.pairs, {})[agg.transport] = agg.rate
        for pairs, figures in sorted(groups.items()):
            yield f"aggregate of {pairs} pair(s)", figures, True
        yield "round trip p50", {r.transport: r.p50 for r in self.latency if r.p50s}, False
        yield "setup median", {s.transport: s.median for s in self.setup if s.samples}, False

    def ratios(self) -> list[Ratio]:
        """Every subject against every baseline, for every metric both have."""
        out = []
        for metric, figures, higher_better in self._metrics():
            for subject in SUBJECTS:
                for baseline in BASELINES:
                    if subject in figures and figures.get(baseline):
                        value = figures[subject] / figures[baseline]
                        out.append(Ratio(metric, subject, baseline, value, higher_better))
        return out

    # -- targets ----------------------------------------------------------------------
    def targets(self) -> list[Target]:
        """The issue's targets that this run has the figures for."""
        out = []
        message = self.plan.get("ring_message", 64 * 1024)
        for ring, factor in ((1 << 20, 1.0), (64 * 1024, 2.0)):
            ours = self._best_subject_rate("stream", ring, message)
            theirs = self.find_throughput("libxenvchan", "stream", ring, message)
            if ours and theirs:
                subject, rate = ours
                out.append(
                    Target(
                        f"stream {size_label(message)} writes, {size_label(ring)} ring, "
                        "vs libxenvchan",
                        subject,
                        rate / theirs.rate,
                        factor,
                        "x",
                        at_least=True,
                    )
                )
        pipe = self.find_latency("pipe")
        for subject, factor, what in (
            ("vchansim-spin", 0.5, "with polling"),
            ("vchansim", 1.1, "without polling"),
        ):
            ours_rtt = self.find_latency(subject)
            if pipe and ours_rtt:
                out.append(
                    Target(
                        f"1-byte round trip {what}, vs pipe",
                        subject,
                        ours_rtt.p50 / pipe.p50,
                        factor,
                        "x",
                        at_least=False,
                    )
                )
        setup = self.find_setup("vchansim")
        if setup:
            out.append(Target("setup median", "vchansim", setup.median * 1e3, 2.0, "ms", False))
        c_setup = self.find_setup("libxenvchan")
        if setup and c_setup:
            out.append(
                Target(
                    "setup median, vs libxenvchan",
                    "vchansim",
                    setup.median / c_setup.median,
                    1.0,
                    "x",
                    at_least=False,
                )
            )
        return out + self._growth_targets(setup)

    def _growth_targets(self, setup: Setup | None) -> list[Target]:
        """The targets of work that grows: many pairs, small endpoints, setups at once,
        the hub's xenstored."""
        out = []
        theirs = {a.pairs: a for a in self.aggregate if a.transport == "libxenvchan" and a.rates}
        for ours in self.aggregate:
            c = theirs.get(ours.pairs)
            if ours.transport != "vchansim" or ours.pairs < 16 or not (c and ours.rates):
                continue
            what = f"aggregate of {ours.pairs} pairs"
            out.append(
                Target(f"{what}, vs libxenvchan", "vchansim", ours.rate / c.rate, 0.9, "x", True)
            )
            if ours.cpus and c.cpus:
                ratio = ours.cpu_per_gib / c.cpu_per_gib
                out.append(
                    Target(
                        f"{what}, CPU per GiB vs libxenvchan", "vchansim", ratio, 1.2, "x", False
                    )
                )
        fp = self.footprint
        if fp and fp.import_s:
            out += [
                Target("import vchansim", "vchansim", median(fp.import_s) * 1e3, 30.0, "ms", False),
                Target(
                    "first get_backend", "vchansim", median(fp.backend_s) * 1e3, 5.0, "ms", False
                ),
                Target(
                    "endpoint RSS above a bare interpreter",
                    "vchansim",
                    fp.rss_above_bare / MiB,
                    3.0,
                    "MiB",
                    False,
                ),
                Target(
                    "memory per idle channel",
                    "vchansim",
                    median(fp.per_channel) / 1024,
                    16.0,
                    "KiB",
                    False,
                ),
            ]
        for many in self.concurrent:
            if many.transport == "vchansim" and many.samples and setup:
                out.append(
                    Target(
                        f"p99 of {many.count} setups at once, vs one setup's median",
                        "vchansim",
                        many.p99 / setup.median,
                        3.0,
                        "x",
                        at_least=False,
                    )
                )
        if self.xenstore:
            best = max(self.xenstore, key=lambda x: x.rate if x.batch == 1 else 0.0)
            name = f"xenstore simple requests/s ({best.clients} client(s), one in flight each)"
            out.append(Target(name, "hub", best.rate, 20000.0, "/s", True))
        return out

    def _best_subject_rate(self, mode: str, ring: int, message: int) -> tuple[str, float] | None:
        found = [
            (row.rate, subject)
            for subject in SUBJECTS
            if (row := self.find_throughput(subject, mode, ring, message))
        ]
        if not found:
            return None
        rate, subject = max(found)
        return subject, rate

    # -- JSON -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything measured, plus the derived ratios and targets (for readers)."""
        data = asdict(self)
        data["version"] = JSON_VERSION
        data["ratios"] = [asdict(r) for r in self.ratios()]
        data["targets"] = [{**asdict(t), "met": t.met} for t in self.targets()]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """Read back what :meth:`to_json` wrote (derived fields are recomputed)."""
        if data.get("version") != JSON_VERSION:
            raise ValueError(
                f"benchmark results version {data.get('version')!r} is not {JSON_VERSION}"
            )
        return cls(
            machine=data["machine"],
            plan=data["plan"],
            throughput=[Throughput(**row) for row in data["throughput"]],
            latency=[Latency(**row) for row in data["latency"]],
            setup=[Setup(**row) for row in data["setup"]],
            aggregate=[Aggregate(**row) for row in data["aggregate"]],
            rss=[Rss(**row) for row in data["rss"]],
            concurrent=[ConcurrentSetup(**row) for row in data.get("concurrent", [])],
            footprint=Footprint(**data["footprint"]) if data.get("footprint") else None,
            xenstore=[XenstoreRate(**row) for row in data.get("xenstore", [])],
            skipped=data["skipped"],
        )


def size_label(n: int) -> str:
    """A byte count the short way: 1K, 64K, 1M, or plain bytes."""
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)
