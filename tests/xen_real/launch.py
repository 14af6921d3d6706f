"""Starting vchan peers for the real-Xen tests, and collecting their JSON reports.

Python peers are forked from the test process (an emulated CPU takes seconds to start an
interpreter and import vchansim over 9p); fork them before the test process opens a
channel of its own, so they inherit none of it.  C peers are ``tests/c/xen/vchan_peer.c``.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pypeer

PEER_TIMEOUT = 90.0

Report = dict[str, Any]


class PeerTimeout(AssertionError):
    """A peer did not report in time (it has been killed)."""


class Peer:
    """A running vchan end; :meth:`result` waits for its JSON report."""

    def __init__(self, label: str, wait: Callable[[float], Report], kill: Callable[[], None]):
        self.label = label
        self._wait = wait
        self.kill = kill

    def result(self, timeout: float = PEER_TIMEOUT) -> Report:
        try:
            outcome = self._wait(timeout)
        except TimeoutError:
            self.kill()
            raise PeerTimeout(f"{self.label} did not finish within {timeout:.0f} s") from None
        outcome["impl"] = self.label.split()[0]
        return outcome


def _run_python_peer(conn: Connection, args: tuple[str, ...]) -> None:
    try:
        conn.send(pypeer.run(args))
    except BaseException as exc:  # report it: a dead child would only say "no result"
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def python_peer(*args: object) -> Peer:
    """Fork a child running :func:`pypeer.run` with ``args``."""
    argv = tuple(str(a) for a in args)
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_python_peer, args=(sender, argv), daemon=True)
    proc.start()
    sender.close()

    def wait(timeout: float) -> Report:
        if not receiver.poll(timeout):
            raise TimeoutError
        try:
            result = receiver.recv()
        except EOFError:
            result = {"ok": False, "error": f"python peer died (exit {proc.exitcode})"}
        proc.join(10)
        return result

    def kill() -> None:
        if proc.is_alive():
            proc.kill()
            proc.join(10)

    return Peer(f"python {' '.join(argv)}", wait, kill)


def c_peer_process(binary: Path, *args: object) -> Peer:
    """Run the C peer ``binary`` with ``args``."""
    argv = [str(binary), *map(str, args)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(timeout: float) -> Report:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError from None
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            return {"ok": False, "error": f"C peer exit {proc.returncode}: {err.strip()}"}
        return json.loads(lines[-1])

    def kill() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    return Peer(f"c {' '.join(argv[1:])}", wait, kill)
