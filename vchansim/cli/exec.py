"""vchansim exec --domid N -- PROGRAM [ARGS...]: run any program as emulated domain N.

The program gets the emulator's environment: VCHANSIM_DOMID and VCHANSIM_RUNDIR
(which Python endpoints and the drop-in C libraries read), XENSTORED_PATH (domain N's
xenstore socket, for libxenstore and the xenstore-* tools) and LD_LIBRARY_PATH led by
the drop-in libxengnttab/libxenevtchn (built on first use), so unmodified
libxenvchan programs run on the emulator.  The hub stays up while the program runs; the
exit status is the program's, and as a shell's when it cannot start: 127 when there is no
such program, 126 when it cannot be executed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from ..backends.shm import ShmBackend, emulator_env
from ..errors import ConfigError
from .common import Subcommands, UsageError, add_backend_options, add_command


def register(subparsers: Subcommands) -> None:
    parser = add_command(
        subparsers,
        "exec",
        "run a program (e.g. an unmodified libxenvchan binary) as emulated domain N",
        __doc__,
    )
    add_backend_options(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse loopback vchans (both ends in one domain), as Xen does",
    )
    parser.add_argument(
        "--no-c-libs",
        action="store_true",
        help="do not put the drop-in C libraries on LD_LIBRARY_PATH",
    )
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    parser.set_defaults(func=_exec)


#: A shell's exit statuses for a command it could not start.
NOT_FOUND, NOT_EXECUTABLE = 127, 126


def _exec(args: argparse.Namespace) -> int:
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        raise UsageError("exec needs a program to run: vchansim exec --domid N -- PROGRAM")
    if args.backend not in (None, "shm"):
        raise ConfigError(
            f"exec runs programs on the shm emulator, not the {args.backend!r} backend"
        )
    backend = ShmBackend(args.domid, rundir=args.rundir, strict=args.strict)
    env = emulator_env(backend, c_libs=not args.no_c_libs)
    keepalive = backend.grants()  # holds the hub up for the program's lifetime
    try:
        try:
            child = subprocess.Popen(command, env=env)
        except FileNotFoundError:
            print(f"vchansim exec: {command[0]}: no such program", file=sys.stderr)
            return NOT_FOUND
        except OSError as exc:  # not executable: permission, format, a directory
            print(f"vchansim exec: {command[0]}: cannot execute: {exc.strerror}", file=sys.stderr)
            return NOT_EXECUTABLE
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
        status = child.wait()
    finally:
        keepalive.close()
    if status < 0:
        print(f"vchansim exec: {command[0]} was killed by signal {-status}", file=sys.stderr)
        return 128 - status
    return status
