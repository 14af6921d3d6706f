"""Show benchmark results: text tables with ratios and targets, JSON, and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from .results import BASELINES, SUBJECTS, Results, Throughput, median, size_label
from .runner import Plan

MiB = 1 << 20


def _table(title: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A titled text table, first column left-aligned, the others right-aligned."""
    body = [list(header), *(list(row) for row in rows if any(c != "—" for c in row[1:]))]
    if len(body) == 1:
        return []
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = [title]
    for row in body:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return [*lines, ""]


def rate_text(rate: float | None) -> str:
    """Bytes/s as MiB/s (with a decimal below 100), or an em dash for no figure."""
    if rate is None:
        return "—"
    mib = rate / MiB
    return f"{mib:.1f}" if mib < 100 else f"{mib:.0f}"


def _throughput_tables(results: Results, plan: Plan, transports: list[str]) -> list[str]:
    lines: list[str] = []
    for mode in plan.modes:

        def cell(row: Throughput | None) -> str:
            return rate_text(row.rate if row else None)

        by_ring = [
            [size_label(ring)]
            + [
                cell(results.find_throughput(t, mode, ring, plan.sweep_message(mode, ring)))
                for t in transports
            ]
            for ring in sorted(plan.rings)
        ]
        what = "messages" if mode == "packet" else "writes"
        cut = " (cut to the ring when larger)" if mode == "packet" else ""
        lines += _table(
            f"{mode} throughput, MiB/s, {size_label(plan.ring_message)} {what}{cut}, by ring size",
            ["ring", *transports],
            by_ring,
        )
        messages = sorted(
            {
                r.message
                for r in results.throughput
                if r.mode == mode and r.ring == plan.message_ring
            }
        )
        by_message = [
            [size_label(msg)]
            + [cell(results.find_throughput(t, mode, plan.message_ring, msg)) for t in transports]
            for msg in messages
        ]
        lines += _table(
            f"{mode} throughput, MiB/s, {size_label(plan.message_ring)} ring, by message size",
            ["message", *transports],
            by_message,
        )
    return lines


def _ring_sweep_diagnostics(results: Results, plan: Plan) -> list[str]:
    """Per ring of the stream sweep: events per MiB (how often an end slept) and CPUs
    kept busy (what spinning costs), for the transports that report them."""
    rows = {
        (r.transport, r.ring): r
        for r in results.throughput
        if r.mode == "stream" and r.message == plan.ring_message and r.rates
    }
    lines: list[str] = []
    figures: tuple[tuple[str, Callable[[Throughput], float]], ...] = (
        ("event-channel events per MiB moved, both ways", lambda r: r.events_per_mib),
        ("CPUs kept busy by the two endpoints", lambda r: r.cpu),
    )
    for title, figure in figures:
        shown = [
            t for t in results.transports if any(k[0] == t and figure(v) for k, v in rows.items())
        ]
        lines += _table(
            f"{title} (stream, {size_label(plan.ring_message)} writes)",
            ["ring", *shown],
            [
                [size_label(ring)]
                + [f"{figure(rows[(t, ring)]):.2f}" if (t, ring) in rows else "—" for t in shown]
                for ring in sorted(plan.rings)
            ],
        )
    return lines


def _other_tables(results: Results, plan: Plan, transports: list[str]) -> list[str]:
    lines = _table(
        f"1-byte round trip, µs ({plan.round_trips} per repeat)",
        ["transport", "p50", "p99"],
        [
            [r.transport, f"{r.p50 * 1e6:.1f}", f"{r.p99 * 1e6:.1f}"]
            for r in results.latency
            if r.p50s
        ],
    )
    ring = size_label(plan.setup_ring) if plan.setup_ring else "in-page"
    lines += _table(
        f"channel setup, server + client, ms ({ring} rings)",
        ["transport", "median", "p90"],
        [
            [s.transport, f"{s.median * 1e3:.2f}", f"{s.p90 * 1e3:.2f}"]
            for s in results.setup
            if s.samples
        ],
    )
    counts = sorted({a.pairs for a in results.aggregate})
    lines += _table(
        f"aggregate stream throughput of N pairs, MiB/s ({size_label(plan.ring_message)} "
        f"writes, {size_label(plan.aggregate_ring)} rings)",
        ["pairs", *transports],
        [
            [str(n)]
            + [
                rate_text(
                    next(
                        (
                            a.rate
                            for a in results.aggregate
                            if a.transport == t and a.pairs == n and a.rates
                        ),
                        None,
                    )
                )
                for t in transports
            ]
            for n in counts
        ],
    )
    lines += _aggregate_cpu_table(results, transports, counts)
    lines += _table(
        "channels set up at the same moment, server + client, ms",
        ["transport", "at once", "p50", "p99"],
        [
            [c.transport, str(c.count), f"{c.p50 * 1e3:.2f}", f"{c.p99 * 1e3:.2f}"]
            for c in results.concurrent
            if c.samples
        ],
    )
    lines += _table(
        "hub xenstored, simple reads per second",
        ["clients", "in flight each", "requests/s"],
        [[str(x.clients), str(x.batch), f"{x.rate:,.0f}"] for x in results.xenstore if x.rates],
    )
    lines += _footprint_lines(results)
    lines += _table(
        "peak RSS of an endpoint process, MiB",
        ["transport", "server", "client"],
        [[r.transport, f"{r.server / MiB:.1f}", f"{r.client / MiB:.1f}"] for r in results.rss],
    )
    return lines


def _aggregate_cpu_table(results: Results, transports: list[str], counts: list[int]) -> list[str]:
    """CPU seconds per GiB of the aggregate cases -- what each byte costs as pairs grow --
    and the events per MiB behind it (how often an end slept)."""
    cost = {(a.transport, a.pairs): f"{a.cpu_per_gib:.2f}" for a in results.aggregate if a.cpus}
    events = {
        (a.transport, a.pairs): f"{a.events_per_mib:.1f}" for a in results.aggregate if a.events
    }
    lines: list[str] = []
    for title, cells in (
        ("aggregate: CPU seconds of all endpoints per GiB moved", cost),
        ("aggregate: event-channel events per MiB moved, both ways", events),
    ):
        lines += _table(
            title,
            ["pairs", *transports],
            [[str(n)] + [cells.get((t, n), "—") for t in transports] for n in counts],
        )
    return lines


def _footprint_lines(results: Results) -> list[str]:
    fp = results.footprint
    if fp is None or not fp.import_s:
        return []
    lines = _table(
        "a small endpoint (import vchansim, one shm channel), fresh processes, bytecode cached",
        ["figure", "median", "min"],
        [
            ["import vchansim, ms", *(f"{f(fp.import_s) * 1e3:.1f}" for f in (median, min))],
            ["first get_backend, ms", *(f"{f(fp.backend_s) * 1e3:.1f}" for f in (median, min))],
            [
                "bare interpreter peak RSS, MiB",
                *(f"{f(fp.bare_rss) / MiB:.1f}" for f in (median, min)),
            ],
            ["endpoint peak RSS, MiB", *(f"{f(fp.endpoint_rss) / MiB:.1f}" for f in (median, min))],
            [
                f"per idle channel ({fp.channels} in one process), KiB",
                *(f"{f(fp.per_channel) / 1024:.1f}" for f in (median, min)),
            ],
        ],
    )
    if fp.raised:
        lines[-1:-1] = [f"  (limits raised for it: {', '.join(fp.raised)})"]
    return lines


def _ratio_table(results: Results) -> list[str]:
    ratios = results.ratios()
    pairs = [
        (s, b)
        for s in SUBJECTS
        for b in BASELINES
        if any(r.subject == s and r.baseline == b for r in ratios)
    ]
    metrics = list(dict.fromkeys(r.metric for r in ratios))
    value = {(r.metric, r.subject, r.baseline): r.value for r in ratios}
    rows = [
        [metric]
        + [f"{value[(metric, s, b)]:.2f}" if (metric, s, b) in value else "—" for s, b in pairs]
        for metric in metrics
    ]
    return _table(
        "ratios, subject / baseline (throughput: above 1 is better; times: below 1 is better)",
        ["metric", *(f"{s}/{b}" for s, b in pairs)],
        rows,
    )


def _target_lines(results: Results) -> list[str]:
    lines = ["targets"]
    for t in results.targets():
        sign = ">=" if t.at_least else "<="
        verdict = "met   " if t.met else "NOT met"
        lines.append(
            f"  {verdict} {t.name}: {t.subject} {t.measured:.2f}{t.unit} "
            f"(target {sign} {t.limit:g}{t.unit})"
        )
    return lines if len(lines) > 1 else []


def text_report(results: Results) -> str:
    """The whole report as text: machine, every table, ratios, targets."""
    plan = Plan.from_dict(results.plan)
    transports = results.transports
    m = results.machine
    load = m.get("load", [0, 0, 0])
    after = m.get("load_after", load)
    lines = [
        f"vchansim bench: {m.get('cpus')} CPUs ({m.get('cpu') or 'unknown CPU'}), Linux "
        f"{m.get('kernel')}, Python {m.get('python')}; load average {load[0]:.2f} before, "
        f"{after[0]:.2f} after; medians of {plan.repeats} repeat(s); pairs placed {plan.placement}",
        "",
    ]
    for transport, reason in results.skipped.items():
        lines += [f"skipped {transport}: {reason}", ""]
    lines += _throughput_tables(results, plan, transports)
    lines += _ring_sweep_diagnostics(results, plan)
    lines += _other_tables(results, plan, transports)
    lines += _ratio_table(results)
    lines += _target_lines(results)
    return "\n".join(lines).rstrip() + "\n"


def write_json(results: Results, out: IO[str]) -> None:
    json.dump(results.to_json(), out, indent=1)
    out.write("\n")


def read_json(path: Path) -> Results:
    """Results saved by ``--json``, for re-reporting or plotting without measuring."""
    try:
        return Results.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read benchmark results from {path}: {exc}") from exc


def plot(results: Results, path: Path) -> None:
    """Throughput against ring size, one line per transport, a panel per mode (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "plotting needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    plan = Plan.from_dict(results.plan)
    fig, axes = plt.subplots(1, len(plan.modes), figsize=(6 * len(plan.modes), 4.5), squeeze=False)
    rings = sorted(plan.rings)
    for ax, mode in zip(axes[0], plan.modes, strict=True):
        for transport in results.transports:
            points = [
                (ring, row.rate / MiB)
                for ring in rings
                if (
                    row := results.find_throughput(
                        transport, mode, ring, plan.sweep_message(mode, ring)
                    )
                )
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=transport)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(rings, [size_label(r) for r in rings])
        ax.set_xlabel("ring size (bytes)")
        ax.set_ylabel("MiB/s")
        cut = " (cut to the ring)" if mode == "packet" else ""
        ax.set_title(f"{mode}, {size_label(plan.ring_message)} messages{cut}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    load = results.machine.get("load", [0.0])[0]
    fig.suptitle(
        f"vchansim bench: {results.machine.get('cpus')} CPUs, load {load:.2f}, "
        f"placement {plan.placement}"
    )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
