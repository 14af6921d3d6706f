"""How many simple XenStore requests the hub's xenstored answers per second.

``clients`` processes, each with its own connection as domain 0, read one small node
for ``seconds`` from a common start: each waits for its reply before the next request
(as libxenstore's callers do) or, with ``batch`` above 1, sends that many at once and
then reads the replies (the pipelining a toolstack may do).  The figure is the total
count over the duration, so it is what the hub managed while all of them asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..rundir import RUNDIR_ENV
from .transports import BenchError

#: One client: connect, say ready, wait for the go, read for the duration, print the count.
_CLIENT = """
import sys, time
from vchansim.backends.shm import ShmBackend
seconds, batch = float(sys.argv[1]), int(sys.argv[2])
xs = ShmBackend(0).store()
path = "/local/domain/0/bench-xs"
xs.write(path, b"v")
print("ready", flush=True)
sys.stdin.readline()
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    if batch == 1:
        for _ in range(50):
            xs.read(path)
        count += 50
    else:
        pipe = xs.pipeline()
        for _ in range(batch):
            pipe.read(path)
        pipe.execute()
        count += batch
print(count, flush=True)
"""


def measure(rundir: Path, clients: int, batch: int, seconds: float) -> float:
    """Requests per second the hub of ``rundir`` (running) served to ``clients`` at once."""
    env = dict(os.environ)
    env[RUNDIR_ENV] = os.fspath(rundir)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, str(seconds), str(batch)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise BenchError(f"a xenstore client failed to start: {_stderr(proc)}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total = 0
        for proc in procs:
            out, err = proc.communicate(timeout=seconds * 10 + 60)
            if proc.returncode != 0:
                raise BenchError(f"a xenstore client failed: {err.strip()[-400:]}")
            total += int(out.split()[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return total / seconds


def _stderr(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    _, err = proc.communicate()
    return err.strip()[-400:]
