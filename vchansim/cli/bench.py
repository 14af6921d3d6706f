"""vchansim bench: vchansim against os.pipe, socketpair and C libxenvchan, in one run.

Measures, between two processes: stream and packet throughput over ring sizes (1 KiB in
the control page up to 1 MiB) and message sizes (1 byte to 1 MiB), one-byte round trips
(p50, p99), channel setup, N pairs at once, and each endpoint's peak memory.  Every
transport runs the same cases interleaved, so the printed ratios hold even when the
machine's load drifts.  The default run takes a minute or two, --quick a few seconds.
Sizes take K and M suffixes (powers of two).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..bench import report
from ..bench.runner import PLACEMENTS, SECTIONS, Plan, run
from ..bench.transports import TRANSPORTS
from ..errors import ConfigError
from .common import Subcommands, size


def _listed(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(item(part) for part in text.split(",") if part.strip())

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(options)}")
        return text

    return parse


def _spin(text: str) -> str | float:
    if text in ("off", "adaptive"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not off, adaptive or a budget in microseconds"
        ) from None


#: option -> (Plan field, parser, help)
_PLAN_OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--transports": ("transports", _listed(_choice(TRANSPORTS)), f"of {', '.join(TRANSPORTS)}"),
    "--only": (
        "sections",
        _listed(_choice(SECTIONS)),
        f"measure only these: {', '.join(SECTIONS)}",
    ),
    "--rings": ("rings", _listed(size), "ring sizes of the ring sweeps, e.g. 1K,64K,1M"),
    "--ring-message": ("ring_message", size, "message size of the ring sweeps"),
    "--messages": ("messages", _listed(size), "message sizes of the message sweeps"),
    "--message-ring": ("message_ring", size, "ring size of the message sweeps"),
    "--modes": ("modes", _listed(_choice(("stream", "packet"))), "stream, packet or both"),
    "--pairs": ("pairs", _listed(int), "counts of concurrent pairs, e.g. 1,2,4"),
    "--aggregate-ring": ("aggregate_ring", size, "ring size of the concurrent pairs"),
    "--pair-transports": (
        "pair_transports",
        _listed(_choice(TRANSPORTS)),
        "the transports given more than 4 pairs (default vchansim,libxenvchan)",
    ),
    "--concurrent": ("concurrent", int, "channels set up at the same moment (one per pair)"),
    "--footprint-channels": (
        "footprint_channels",
        int,
        "idle channels one endpoint opens for the per-channel memory figure",
    ),
    "--xs-clients": ("xs_clients", _listed(int), "xenstore clients asking at once, e.g. 1,4"),
    "--xs-seconds": ("xs_seconds", float, "seconds of each xenstore rate figure"),
    "--round-trips": ("round_trips", int, "one-byte round trips per repeat"),
    "--setups": ("setups", int, "channels set up per transport"),
    "--repeats": ("repeats", int, "repeats of every figure (the median is shown)"),
    "--seconds": ("seconds", float, "target duration of one throughput repeat"),
    "--max-bytes": ("max_bytes", size, "most bytes one throughput repeat may move"),
    "--spin": ("spin", _spin, "spin policy of vchansim-spin: off, adaptive or microseconds"),
    "--placement": (
        "placement",
        _choice(PLACEMENTS),
        "CPUs of a pair's two ends: split (default), same or any (the kernel's choice)",
    ),
}


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark vchansim against os.pipe, socketpair and C libxenvchan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds, fewer cases")
    for option, (_, parse, text) in _PLAN_OPTIONS.items():
        parser.add_argument(option, type=parse, help=text)
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of tables"
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="also write the results as JSON to FILE (read again with --from-json)",
    )
    parser.add_argument("--plot", type=Path, metavar="PNG", help="plot throughput by ring size")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="report (and plot) results saved earlier instead of measuring",
    )
    parser.add_argument(
        "--rundir", type=Path, help="run directory of the hub to use (default: a private one)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=_bench)


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the options describe: the default or --quick one, with overrides."""
    plan = Plan.quick() if args.quick else Plan()
    overrides = {
        name: getattr(args, option[2:].replace("-", "_"))
        for option, (name, _, _) in _PLAN_OPTIONS.items()
    }
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None}).check()


def _bench(args: argparse.Namespace) -> int:
    """Measure (or read), save, report, and plot last: a plot that fails loses nothing."""
    if args.from_json:
        results = report.read_json(args.from_json)
    else:
        progress = None if not args.quiet else (lambda line: None)
        results = run(plan_from(args), rundir=args.rundir, progress=progress)
    if args.save:
        try:
            with open(args.save, "w", encoding="utf-8") as out:
                report.write_json(results, out)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.save}: {exc.strerror}") from exc
    if args.json:
        report.write_json(results, sys.stdout)
    else:
        sys.stdout.write(report.text_report(results))
    if args.plot:
        report.plot(results, args.plot)
    return 0
