"""vchansim inspect: watch a vchan's control page live, or replay a trace.

With no argument it lists the channels the hub of the run directory knows; choose one to
attach.  CHANNEL attaches at once (its XenStore path, or the end of it).  --replay
plays a trace written by vchansim run --trace.  The inspector maps control pages
read-only and never writes to them: watching a channel does not change it.  --record FILE
records what the live view samples into a trace --replay plays.  --list
prints the channels as text instead (for scripts, or a terminal too small for the TUI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from ..rundir import prepare_rundir
from .common import Subcommands


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="watch a vchan's rings, indices and notify bits live, or replay a trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "channel",
        nargs="?",
        metavar="CHANNEL",
        help="attach to this channel: its XenStore path, or a unique end of it",
    )
    parser.add_argument(
        "--rundir",
        metavar="DIR",
        help="run directory of the hub to inspect (default: $VCHANSIM_RUNDIR, ...)",
    )
    parser.add_argument(
        "--replay", metavar="TRACE", type=Path, help="replay this trace instead of a live hub"
    )
    parser.add_argument(
        "--paused", action="store_true", help="with --replay: start paused on the first record"
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        type=Path,
        help="record the channel viewed live into this trace (r stops and starts again)",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the live channels as text and exit"
    )
    parser.add_argument(
        "--json", action="store_true", help="with --list: one JSON array of the channels"
    )
    parser.set_defaults(func=_inspect)


def _check(args: argparse.Namespace) -> None:
    if args.replay is not None and (args.channel or args.list or args.rundir):
        raise ConfigError("--replay shows a trace: it takes no CHANNEL, --list or --rundir")
    if args.record is not None and (args.replay is not None or args.list):
        raise ConfigError("--record records a live channel: not with --replay or --list")
    if args.json and not args.list:
        raise ConfigError("--json only applies to --list")
    if args.paused and args.replay is None:
        raise ConfigError("--paused only applies to --replay")
    if not args.list and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfigError("the inspector needs a terminal; use --list for text output")


def _inspect(args: argparse.Namespace) -> int:
    _check(args)
    if args.list:
        return _print_channels(args)
    from ..tui.app import InspectorApp  # Textual loads only when the TUI is wanted

    if args.replay is not None:
        app = InspectorApp(trace=args.replay, autoplay=not args.paused)
    else:
        app = InspectorApp(
            rundir=prepare_rundir(args.rundir), attach=args.channel, record=args.record
        )
    status = app.run() or 0
    for line in app.recordings.done:  # the screen has gone: say what was recorded
        print(f"vchansim inspect: {line}", file=sys.stderr)
    return status


def _print_channels(args: argparse.Namespace) -> int:
    from ..tui.live import COLUMNS, HubLink, matches

    link = HubLink(prepare_rundir(args.rundir))
    try:
        channels = link.channels()
    finally:
        link.close()
    if args.channel:
        channels = [c for c in channels if matches(c.path, args.channel)]
    if args.json:
        print(json.dumps([info.as_json() for info in channels], indent=1))
        return 0
    rows = [COLUMNS, *(info.row() for info in channels)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for line in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0
