"""Separate Python interpreters for tests, and waiting with deadlines.

Endpoints that must behave like different machines run in interpreters started with
``sys.executable -c`` -- never ``fork``, which would share the parent's descriptors and
mappings and hide exactly the bugs these tests look for.  A child talks to the test over
its stdin/stdout one line at a time; every wait has a deadline.

The ``rundir`` and ``spawn`` fixtures built on them are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from vchansim.hub.launcher import wait_exit as _wait_exit
from vchansim.rundir import RUNDIR_ENV, RunDir

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 10.0

#: Run at the top of every child: the imports and an unbuffered line printer.
PRELUDE = """\
import os, sys, time
from vchansim.backends.shm import ShmBackend
def say(*words):
    print(*words, flush=True)
def hear():
    return sys.stdin.readline().strip()
"""


def child_env(rundir: RunDir, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, the run directory, and this checkout importable."""
    env = dict(os.environ)
    env[RUNDIR_ENV] = str(rundir.path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _state(pid: int) -> str:
    """A process's state letter in /proc (``T``: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


class Child:
    """A separate interpreter running ``PRELUDE + code``, driven line by line."""

    def __init__(self, code: str, rundir: RunDir, env: dict[str, str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(rundir, env),
        )
        self.pid = self.proc.pid
        self._pending = b""

    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _readline(self, deadline: float) -> str | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise AssertionError(f"child {self.pid} said nothing in time:\n{self.stderr()}")
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def expect(self, word: str, timeout: float = DEADLINE) -> list[str]:
        """Wait for a line starting with ``word``; return the words after it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                self.proc.wait(timeout)
                raise AssertionError(
                    f"child {self.pid} exited ({self.proc.returncode}) before saying "
                    f"{word!r}:\n{self.stderr()}"
                )
            words = line.split()
            if words and words[0] == word:
                return words[1:]

    def send(self, line: str) -> None:
        """Give the child one line of input."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the child to exit; its exit status."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGSTOP the child and wait until it is stopped (the signal is delivered
        asynchronously): from then on it does nothing, as a descheduled domain."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + DEADLINE
        while _state(self.pid) != "T":
            if time.monotonic() > deadline:
                raise AssertionError(f"child {self.pid} was never stopped")

    def resume(self) -> None:
        """Let a stopped child go on (SIGCONT)."""
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(DEADLINE)

    def close(self) -> None:
        """Kill if still running, reap, and close the pipes."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


def reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, wait for it, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_exit(pid: int, timeout: float = DEADLINE) -> bool:
    """Wait (with a deadline) for any process, child or not, to exit."""
    return _wait_exit(pid, timeout)


def wait_for(condition: Callable[[], object], timeout: float = DEADLINE, what: str = "") -> object:
    """Poll ``condition`` until it returns something true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.005)
