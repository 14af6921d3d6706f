"""The transports under test and how the runner starts a pair of endpoints for each.

Every endpoint is its own process, speaking the line protocol of
:mod:`vchansim.bench.worker`:

* ``vchansim`` / ``vchansim-spin`` -- the Python :class:`~vchansim.channel.Vchan` on the
  shm emulator, spin policy ``off`` (the library default) or the plan's (``adaptive``);
* ``pipe`` -- two ``os.pipe`` (one per direction) inherited by two Python processes;
* ``socketpair`` -- one ``socket.socketpair`` likewise;
* ``libxenvchan`` -- Debian's C libxenvchan on the emulator: ``csrc/programs/vchan-bench.c``,
  compiled on first use and run as two emulated domains with the environment
  ``vchansim exec`` gives a program (:func:`~vchansim.backends.shm.emulator_env`), started
  directly so that no wrapper interpreter shares the CPUs with it.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import cbuild
from ..backends.shm import ShmBackend, emulator_env
from ..errors import VchanError
from ..rundir import RUNDIR_ENV

TRANSPORTS = ("vchansim", "vchansim-spin", "pipe", "socketpair", "libxenvchan")
#: The baselines whose "ring" is a kernel buffer: any message size goes through them.
KERNEL_TRANSPORTS = ("pipe", "socketpair")
#: Most concurrent pairs of one transport (each pair is two emulated domains).
PAIRS_MAX = 64
#: How long an endpoint may take to start (interpreter, imports, hub, compiler cache).
START_DEADLINE = 60.0


class BenchError(VchanError):
    """A benchmark endpoint failed, hung or could not be started."""


class Worker:
    """One endpoint process and its command line on stdin/stdout."""

    def __init__(
        self, label: str, argv: Sequence[str], env: dict[str, str], pass_fds: Sequence[int] = ()
    ) -> None:
        self.label = label
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self._pending = b""
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            pass_fds=tuple(pass_fds),
        )

    def stderr_tail(self, lines: int = 8) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what: str) -> BenchError:
        tail = self.stderr_tail()
        return BenchError(f"{self.label}: {what}" + (f"\n{tail}" if tail else ""))

    def post(self, line: str) -> None:
        """Send one command without waiting for its reply."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._fail(f"the endpoint exited before {line.split()[0]!r}") from None

    def reply(self, timeout: float) -> list[str]:
        """The next reply's words after ``ok``; an ``error`` reply raises BenchError."""
        line = self._readline(time.monotonic() + timeout)
        words = line.split()
        if words[:1] == ["ok"] or words == ["ready"]:
            return words[1:]
        raise self._fail(line or "empty reply")

    def call(self, line: str, timeout: float) -> list[str]:
        self.post(line)
        return self.reply(timeout)

    def _readline(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise self._fail("no reply in time (hung?)")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise self._fail(f"the endpoint exited (status {self.proc.wait()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def stop(self) -> None:
        """Ask the process to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()


@dataclass
class Pair:
    """A server and a client endpoint of one transport; data flows client -> server."""

    transport: str
    server: Worker
    client: Worker
    server_domid: int

    def client_path(self, path: str) -> str:
        """The absolute XenStore path the client opens for the server's relative ``path``."""
        return f"/local/domain/{self.server_domid}/{path}"

    def stop(self) -> None:
        self.server.stop()
        self.client.stop()


def c_program() -> Path:
    """The C endpoint, compiled against Debian's libxenvchan (cached after the first time)."""
    return cbuild.build_program(cbuild.program_source("vchan-bench.c"))


def _python_worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "vchansim.bench.worker", *args]


def _domain_command(
    transport: str, me: int, peer: int, spin: str | float, program: Path | None, rundir: Path
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of an endpoint acting as domain ``me`` (vchans)."""
    if transport == "libxenvchan":
        if program is None:
            raise BenchError("the libxenvchan transport needs the compiled C endpoint")
        return [str(program), str(peer)], emulator_env(ShmBackend(me, rundir=rundir))
    policy = str(spin) if transport == "vchansim-spin" else "off"
    argv = _python_worker("vchansim", f"--domid={me}", f"--peer={peer}", f"--spin={policy}")
    return argv, _python_env(rundir)


def _python_env(rundir: Path) -> dict[str, str]:
    """Our environment, the run directory, and this copy of vchansim importable."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env[RUNDIR_ENV] = str(rundir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _inherited_ends(transport: str) -> dict[str, tuple[int, ...]]:
    """New kernel channels for a pipe or socketpair pair: each role's descriptors."""
    if transport == "pipe":
        to_server, to_client = os.pipe(), os.pipe()
        return {"server": (to_server[0], to_client[1]), "client": (to_client[0], to_server[1])}
    if transport == "socketpair":
        a, b = socket.socketpair()
        return {"server": (a.detach(),), "client": (b.detach(),)}
    raise BenchError(f"unknown transport {transport!r}; known: {', '.join(TRANSPORTS)}")


def pair_cpus(placement: str, index: int) -> tuple[int, int] | None:
    """The CPUs of pair ``index``'s server and client, or None to leave it to the kernel.

    ``split`` puts the two ends on different CPUs, ``same`` on one.  Pinning makes the
    figures repeatable: left alone, the scheduler keeps a pipe's two ends on one CPU
    (its wake-ups are "sync") but wakes an eventfd waiter on its own, possibly idle,
    CPU -- and on a virtual machine an idle CPU can take tens of microseconds to wake.
    """
    if placement == "any":
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "same":
        return cpus[index % len(cpus)], cpus[index % len(cpus)]
    return cpus[2 * index % len(cpus)], cpus[(2 * index + 1) % len(cpus)]


def start_pair(
    transport: str,
    index: int,
    *,
    rundir: Path,
    spin: str | float,
    placement: str = "split",
    program: Path | None = None,
) -> Pair:
    """Start pair ``index`` of ``transport``, placed on CPUs as :func:`pair_cpus` says.

    Every pair of every transport gets two domains of its own, because each domain's
    grant table holds 1024 pages and a channel with two 1 MiB rings needs 513 of them.
    """
    cpus = pair_cpus(placement, index)
    server = 1 + 2 * (TRANSPORTS.index(transport) * PAIRS_MAX + index)
    doms = {"server": (server, server + 1), "client": (server + 1, server)}
    vchan = transport not in KERNEL_TRANSPORTS
    ends = {} if vchan else _inherited_ends(transport)
    workers: dict[str, Worker] = {}
    try:
        for role, (me, peer) in doms.items():
            if vchan:
                fds: tuple[int, ...] = ()
                argv, env = _domain_command(transport, me, peer, spin, program, rundir)
            else:
                fds = ends[role]
                argv, env = _python_worker(transport, "--fds", *map(str, fds)), _python_env(rundir)
            workers[role] = Worker(f"{transport} pair {index} {role}", argv, env, fds)
            if cpus:
                os.sched_setaffinity(workers[role].proc.pid, {cpus[role == "client"]})
    except BaseException:
        for worker in workers.values():
            worker.stop()
        raise
    finally:
        for fds in ends.values():
            for fd in fds:
                os.close(fd)
    return Pair(transport, workers["server"], workers["client"], doms["server"][0])
