"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from typing import TypeAlias

from ..backends import available_backends, chosen_backend, get_backend
from ..backends.base import Backend
from ..errors import ConfigError

#: The ``add_subparsers()`` object each subcommand module adds its parser to.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """A command line the subcommand cannot run: reported with the subcommand's usage and
    exit status 2, as argparse reports what it catches itself."""


def add_command(
    subparsers: Subcommands, name: str, summary: str, doc: str | None
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its module's docstring as written."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --domid and --rundir: which emulation, which domain this process plays,
    and (on the shm emulator) which hub."""
    parser.add_argument(
        "--backend",
        choices=available_backends(),
        help="backend (default: $VCHANSIM_BACKEND, else shm)",
    )
    parser.add_argument(
        "--domid",
        type=int,
        metavar="N",
        help="the domain this process plays (default: $VCHANSIM_DOMID, else 0)",
    )
    parser.add_argument(
        "--rundir",
        metavar="DIR",
        help="run directory of the emulator's hub (default: $VCHANSIM_RUNDIR, else "
        "$XDG_RUNTIME_DIR/vchansim, else /tmp/vchansim-UID)",
    )


def open_backend(args: argparse.Namespace) -> Backend:
    """The backend of the options; --rundir only where there is a hub (shm)."""
    if args.rundir is None:
        return get_backend(args.backend, domid=args.domid)
    name = chosen_backend(args.backend)
    if name != "shm":
        raise ConfigError(f"--rundir is the shm emulator's hub; the {name!r} backend has none")
    return get_backend(name, domid=args.domid, rundir=args.rundir)


def size(text: str) -> int:
    """A byte count with an optional K/M suffix (powers of two), e.g. ``64K``."""
    units = {"k": 1 << 10, "m": 1 << 20}
    text = text.strip()
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        return int(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 4096, 64K or 1M") from None


def seconds(text: str) -> float:
    """A duration in seconds: a number >= 0, ``inf`` for no bound (never ``nan``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value
