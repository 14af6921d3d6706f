"""The ``vchansim`` command: one subcommand per module in this package.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit status.  Errors
the library raises on purpose become one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from .. import __version__, core
from ..errors import VchanError

COMMANDS = ("bench", "exec", "hub", "inspect", "pipe", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vchansim",
        description="Xen vchan (libxenvchan) emulator and test harness — no hypervisor needed.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"vchansim {__version__} (ring core: {core.NAME})",
        help="print the version and the ring core in use (c or python), then exit",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VchanError as exc:
        print(f"vchansim {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
