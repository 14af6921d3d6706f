"""Compare two ``vchansim bench --json`` files figure by figure: new / old.

    python benchmarks/compare.py before.json after.json [--transport vchansim-spin]

For a hot-path change: run the bench before and after (same machine, as quiet as it
gets) and read the ratios here.  The baselines (pipe, socketpair, libxenvchan) did not
change, so their ratios show how much the machine itself drifted between the runs --
discount the vchansim ratios by that much.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vchansim.bench.report import read_json
from vchansim.bench.results import Results, size_label


def figures(results: Results, transport: str) -> dict[str, float]:
    """Every figure of ``transport``: name -> value (throughputs in bytes/s, times in s)."""
    out = {}
    for row in results.throughput:
        if row.transport == transport and row.rates:
            out[f"{row.mode} {size_label(row.message)} msgs, {size_label(row.ring)} ring"] = (
                row.rate
            )
    for agg in results.aggregate:
        if agg.transport == transport and agg.rates:
            out[f"aggregate of {agg.pairs} pair(s)"] = agg.rate
            if agg.cpus:
                out[f"aggregate of {agg.pairs} pair(s), CPU per GiB (time)"] = agg.cpu_per_gib
    for many in results.concurrent:
        if many.transport == transport and many.samples:
            out[f"{many.count} setups at once, p99 (time)"] = many.p99
    latency = results.find_latency(transport)
    if latency:
        out["round trip p50 (time)"] = latency.p50
        out["round trip p99 (time)"] = latency.p99
    setup = results.find_setup(transport)
    if setup:
        out["setup median (time)"] = setup.median
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--transport", help="only this transport (default: all)")
    args = parser.parse_args()
    old, new = read_json(args.before), read_json(args.after)
    transports = [args.transport] if args.transport else new.transports
    for transport in transports:
        before, after = figures(old, transport), figures(new, transport)
        print(f"{transport}: after / before (times: below 1 is faster)")
        for name in after:
            if before.get(name):
                print(f"  {name:40} {after[name] / before[name]:6.2f}")


if __name__ == "__main__":
    main()
