"""``python -m vchansim.hub [--rundir D] [--embedded] [--idle S] [--ready-fd N] [LIMITS]``.

Foreground (the default) serves until SIGTERM/SIGINT and logs to stderr.  ``--embedded``
is how backends start a hub on first use: it leaves its parent at once (so the process
that happened to start it never has to reap it), exits after ``--idle`` seconds with no
connection, and writes its pid to ``--ready-fd`` when its sockets are bound.

LIMITS (``--grant-limit``, ``--port-limit``, ``--xs-quota NAME=N``) shrink or grow the
per-domain resources of the emulated machine (see :mod:`.limits`); an embedded hub
started by a backend takes them from ``$VCHANSIM_HUB_OPTIONS``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from collections.abc import Sequence

from ..errors import VchanError
from ..rundir import prepare_rundir
from .limits import add_limit_arguments, limits_from
from .server import DEFAULT_IDLE, run_hub


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The hub's options, shared by ``python -m vchansim.hub`` and ``vchansim hub``."""
    parser.add_argument("--rundir", help="run directory (default: $VCHANSIM_RUNDIR, ...)")
    parser.add_argument(
        "--embedded", action="store_true", help="detach, and exit when idle (backends use this)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=DEFAULT_IDLE,
        metavar="S",
        help=f"embedded: seconds without connections before exiting (default {DEFAULT_IDLE:g})",
    )
    parser.add_argument(
        "--ready-fd", type=int, metavar="N", help="write the hub's pid here once it is ready"
    )
    add_limit_arguments(parser)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vchansim.hub",
        description="The vchansim hub: emulated grant tables, event channels and xenstored.",
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def _detach() -> None:
    """Fork and let the parent exit: the hub is then nobody's child to reap but init's."""
    if os.fork():
        os._exit(0)


def _hold_start_lock(path: str) -> int:
    """Foreground hubs serialise with launchers on ``hub.lock`` while they bind."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    return run(_parse(argv))


def run(args: argparse.Namespace) -> int:
    """Serve as ``args`` (from :func:`add_arguments`) say; returns the exit status."""
    if args.idle <= 0:
        print(f"vchansim hub: --idle must be positive, not {args.idle:g}", file=sys.stderr)
        return 2
    try:
        rundir = prepare_rundir(args.rundir)
    except VchanError as exc:
        print(f"vchansim hub: {exc}", file=sys.stderr)
        return 2
    limits = limits_from(args)
    if args.embedded:
        # The launcher holds hub.lock for us while we start.
        _detach()
        return run_hub(rundir, embedded=True, idle=args.idle, ready_fd=args.ready_fd, limits=limits)
    lock = _hold_start_lock(str(rundir.lock))
    return run_hub(rundir, ready_fd=args.ready_fd, on_ready=lambda: os.close(lock), limits=limits)


if __name__ == "__main__":
    sys.exit(main())
