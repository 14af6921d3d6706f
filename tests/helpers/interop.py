"""Peer programs of either language as emulated domains, read line by line with
deadlines: the Python endpoint (``tests/interop_peer.py``) and C programs on libxenvchan."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vchansim.backends.shm import ShmBackend, emulator_env

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = ROOT / "tests" / "interop_peer.py"
PYTHON_PEER = (sys.executable, str(PEER_SCRIPT))
#: Bound on one cell: 64 MiB each way takes 1-7 s here; a loaded CI machine gets slack.
CELL_DEADLINE = 90.0
#: Bound on start-up and exit.
SHORT_DEADLINE = 10.0
#: Bound on seeing a killed peer go: events make it milliseconds; the Python endpoint's
#: idle re-check of the peer's liveness (every 0.5 s) is the fallback.
KILL_BOUND = 2.0
#: An endpoint's reports: "sent"/"received" -> (count, SHA-256, seconds first to last byte).
Transfers = dict[str, tuple[int, str, float]]


@dataclass
class Endpoint:
    """One running peer program (either language), read line by line with deadlines."""

    name: str
    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    _pending: bytes = b""

    def next_line(self, timeout: float) -> list[str]:
        """The words of the next output line, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            ready = remaining > 0 and select.select([fd], [], [], remaining)[0]
            assert ready, f"{self.name} said nothing in {timeout:g} s after {self.lines}"
            chunk = os.read(fd, 4096)
            assert chunk, f"{self.name} exited after {self.lines}: {self.stderr()}"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        self.lines.append(line.decode())
        return self.lines[-1].split()

    def expect(self, word: str, timeout: float = SHORT_DEADLINE) -> list[str]:
        """The next line, which must start with ``word``; its other words."""
        words = self.next_line(timeout)
        assert words[:1] == [word], f"{self.name}: expected {word!r}, got {self.lines[-1]!r}"
        return words[1:]

    def transfers(self) -> Transfers:
        """The ``sent`` and ``received`` reports (count, SHA-256, seconds), either order."""
        found = {}
        for _ in range(2):
            word, count, digest, seconds = self.next_line(CELL_DEADLINE)
            found[word] = (int(count), digest, float(seconds))
        assert sorted(found) == ["received", "sent"], self.lines
        return found

    def release(self) -> None:
        """Close the endpoint's standard input (what ``--linger`` waits for)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def finish(self) -> int:
        return self.proc.wait(SHORT_DEADLINE)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


def start(command: Sequence[str], hub_dir: Path, domid: int, args: Sequence[str]) -> Endpoint:
    """Run an endpoint as emulated domain ``domid``, with what `vchansim exec` would give."""
    env = emulator_env(ShmBackend(domid, rundir=hub_dir))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [*command, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Endpoint(Path(command[-1]).name, proc)
