"""The ``vchansim`` command: one subcommand per module in this package.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit status.  Errors
the library raises on purpose become one line on stderr, never a traceback.

Only the module of the subcommand being run is imported (all of them for the top-level
help): a command imports what it needs and nothing of the others, so ``connect
--backend xen`` in a minimal guest needs neither the emulator's hub nor ``posix_ipc``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from importlib import import_module

from .. import __version__, core
from ..errors import VchanError
from .common import UsageError

#: Each subcommand and the module (in this package) whose ``register`` adds it.
COMMANDS = {
    "agent": "agent",
    "bench": "bench",
    "connect": "pipe",
    "domain": "domain",
    "exec": "exec",
    "hub": "hub",
    "inspect": "inspect",
    "run": "run",
    "scenarios": "scenarios",
    "serve": "pipe",
}


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    """The command modules to import: the subcommand's when ``argv`` starts with one,
    else (top-level options, help, a mistake, None) every module."""
    if argv and argv[0] in COMMANDS:
        return [COMMANDS[argv[0]]]
    return sorted(set(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: its subcommand alone, or all of them (``argv`` None)."""
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
    for module in _modules_for(argv):
        import_module(f"{__name__}.{module}").register(subparsers)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, whose usage a mistake in its arguments shows."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    command = _subcommand(parser, args.command)
    if unknown:  # argparse would show the top-level usage; the subcommand's is the help
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone away is seen here, not at interpreter exit
        return status
    except BrokenPipeError:
        return _reader_gone()
    except UsageError as exc:
        command.error(str(exc))
    except VchanError as exc:
        print(f"vchansim {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """Our output's reader closed it (``vchansim scenarios list | head``): stop quietly
    with the status a shell gives a program that SIGPIPE ended, as a C tool would."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
