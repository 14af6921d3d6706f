"""Program endpoints: an unmodified program, by default C on Debian's libxenvchan, as one
end of a scenario's vchan.

A ``kind = "program"`` endpoint is a program run under the emulator's environment (what
``vchansim exec`` gives it: its domain, the run directory, the drop-in ``libxengnttab``
and ``libxenevtchn``), so a scenario can put C on one end and Python on the other.  The
runner's process for the endpoint does not touch the channel: it starts the program,
turns its output into the reports a Python endpoint makes, passes the runner's kill on,
and reports how the program ended.

The contract is vchan-pipe's (the header of csrc/programs/vchan-pipe.c, the default program):
its command line; its data, xorshift64 from ``--seed``; its output lines ``ready``,
``sent N SHA256 SECONDS``, ``received N SHA256 SECONDS`` and ``closed``; and its exit
status, 0 when done.  A server is started with ``--wait-go`` and given its line once
its client has connected, since a server that had sent all it had would otherwise
close before the client came.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ..backends.base import Backend
from ..backends.shm import ShmBackend, emulator_env
from ..cbuild import build_program, program_source
from ..errors import ConfigError
from .endpoint import (
    Aborted,
    EndpointBase,
    EndpointJob,
    Link,
    await_go,
    channel_keys,
    describe_error,
)
from .messages import (
    PROGRAM_ERROR,
    Closing,
    Command,
    Connected,
    ErrorReport,
    Listening,
    PeerClosed,
    ProgramReport,
    ProgramStarted,
    Progress,
    Result,
    Started,
)
from .spec import OPTIONS_FIELD, Scenario
from .streams import program_seed

#: Bytes of a program's standard error kept for the report.
STDERR_TAIL = 2000
#: What vchan-pipe's exit statuses mean.
EXIT_MEANINGS = {
    1: "usage error",
    2: "init failed",
    3: "the peer closed before all bytes moved",
    4: "I/O or event-channel error",
}
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
#: strerror text -> errno name, to find the cause in a program's last words.
_STRERRORS = {os.strerror(code): name for code, name in errno.errorcode.items()}


# -- the command -----------------------------------------------------------------------------


def pipe_program() -> Path:
    """vchan-pipe, built (once, then cached) against the system's libxenvchan."""
    return build_program(program_source("vchan-pipe.c"))


def _fields(scenario: Scenario, name: str, pipe: str) -> dict[str, str]:
    """What the placeholders of ``name``'s command stand for."""
    spec, server = scenario.endpoint(name), scenario.server
    work = spec.workload
    packet = work.write_size.low if work.mode == "packets" else 0
    if packet and not work.sends_own:  # it only receives: its peer's packets
        packet = scenario.peer(name).workload.write_size.low
    return {
        "pipe": pipe,
        "role": spec.role,
        "peer": str(scenario.peer(name).domain),
        "path": server.path if spec.is_server else scenario.client_path,
        "send": str(work.send),
        "recv": str(scenario.receive_count(name) or 0),
        "seed": str(program_seed(scenario.seed, name)),
        "packet": str(packet),
        "read_min": str(server.read_min if spec.is_server else 0),
        "write_min": str(server.write_min if spec.is_server else 0),
    }


def _options(fields: dict[str, str], is_server: bool) -> list[str]:
    """vchan-pipe's options for the endpoint: what ``{options}`` becomes."""
    options = ["--send", fields["send"], "--recv", fields["recv"], "--seed", fields["seed"]]
    if fields["packet"] != "0":
        options += ["--packet", fields["packet"]]
    if is_server:
        options += ["--read-min", fields["read_min"], "--write-min", fields["write_min"]]
        options += ["--wait-go"]
    return options


def program_command(scenario: Scenario, name: str) -> tuple[str, ...]:
    """The command that runs program endpoint ``name``, placeholders filled in (and
    vchan-pipe built, if the command names it)."""
    spec = scenario.endpoint(name)
    uses_pipe = any("{pipe}" in arg for arg in spec.program)
    fields = _fields(scenario, name, str(pipe_program()) if uses_pipe else "")
    command: list[str] = []
    for arg in spec.program:
        if arg == OPTIONS_FIELD:
            command += _options(fields, spec.is_server)
        else:
            command.append(arg.format_map(fields))
    return tuple(command)


def program_commands(scenario: Scenario) -> dict[str, tuple[str, ...]]:
    """The command of every program endpoint of ``scenario``, by endpoint name."""
    return {
        spec.name: program_command(scenario, spec.name)
        for spec in scenario.endpoints
        if spec.is_program
    }


# -- how it ended --------------------------------------------------------------------------


def errno_named_in(text: str) -> str | None:
    """The errno whose message ``text`` quotes (``strerror``, as ``perror`` prints it)."""
    found = [message for message in _STRERRORS if message in text]
    return _STRERRORS[max(found, key=len)] if found else None


def exit_error(command: tuple[str, ...], status: int, ready: bool, stderr: str) -> ErrorReport:
    """A failed program's error, in the form the verdicts read (see ``describe_error``)."""
    if status < 0:
        what = f"killed by {signal.Signals(-status).name}"
    else:
        meaning = EXIT_MEANINGS.get(status)
        what = f"exit status {status}" + (f" ({meaning})" if meaning else "")
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    return {
        "type": PROGRAM_ERROR,
        "mro": [PROGRAM_ERROR],
        "errno": errno_named_in(last),
        "message": f"{Path(command[0]).name}: {what}" + (f": {last}" if last else ""),
        "phase": "io" if ready else "setup",
        "where": "",
    }


def _die_with_parent() -> None:
    """In the program's process before exec: SIGKILL it when our process dies, so that
    a runner killing this endpoint (the deadline) leaves no program behind."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# -- the endpoint --------------------------------------------------------------------------


class ProgramEndpoint(EndpointBase):
    """One program endpoint instance: start, follow, report."""

    def __init__(self, job: EndpointJob, link: Link) -> None:
        super().__init__(job, link)
        self.proc: subprocess.Popen[bytes] | None = None
        self.reports: dict[str, tuple[int, str]] = {}  # "sent"/"received" -> count, sha256
        self.expected = {
            side
            for side, count in (
                ("sent", self.spec.workload.send),
                ("received", self.scenario.receive_count(job.name)),
            )
            if count
        }
        self.ready = False
        self.peer_closed = False
        self.closing = False
        self.killed = False

    def run(self) -> None:
        self.link.emit(Started(pid=os.getpid()))
        with tempfile.TemporaryFile() as stderr:
            error, stopped = self._attempt(stderr)
            status = self._reap()
            tail = _tail(stderr)
        if self.killed:
            stopped = "killed by a fault"
        elif error is None and status not in (None, 0):
            error = exit_error(self.job.program, status, self.ready, tail)
        program: ProgramReport = {
            "command": list(self.job.program),
            "pid": self.proc.pid if self.proc else None,
            "status": status,
            "stderr": tail,
        }
        self.link.emit(self._result(error, stopped, program))

    def _attempt(self, stderr: IO[bytes]) -> tuple[ErrorReport | None, str | None]:
        """Run the program to its end: (the error, if one stopped us; why it never
        started, if it did not)."""
        try:
            await_go(self.link, self.timeout, self.spec.is_server)
            backend = self.job.backends(self.spec.domain)
            self._start(backend, stderr)
            self._follow(backend)
        except Aborted as exc:
            return None, f"not started: {exc}"
        except BaseException as exc:  # a result to report, like a Python endpoint's
            return describe_error(exc, "io" if self.ready else "setup"), None
        return None, None

    def _start(self, backend: Backend, stderr: IO[bytes]) -> None:
        if not isinstance(backend, ShmBackend):
            raise ConfigError(f"a program endpoint needs the shm backend, not {backend.name!r}")
        try:
            self.proc = subprocess.Popen(
                self.job.program,
                stdin=subprocess.PIPE if self.spec.is_server else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=emulator_env(backend),
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot run {self.job.program[0]!r}: {exc.strerror}", err=exc.errno
            ) from None
        self.link.emit(ProgramStarted(pid=self.proc.pid, command=list(self.job.program)))

    def _follow(self, backend: Backend) -> None:
        """Read the program's output and the runner's commands until the program ends.

        A server still waiting for its client gives up after the endpoint's timeout, as a
        Python server's blocked write would."""
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        watched: list[Any] = [out, self.link]
        pending = b""
        give_up = time.monotonic() + self.timeout
        while True:
            timeout = give_up - time.monotonic() if self._waiting_for_client() else None
            if timeout is not None and timeout <= 0:
                raise TimeoutError(
                    errno.ETIMEDOUT, f"its client did not connect within {self.timeout:g} s"
                )
            readable, _, _ = select.select(watched, [], [], timeout)
            if self.link in readable and not self._command():
                watched.remove(self.link)  # the runner is gone; the program runs out
            if out in readable:
                chunk = os.read(out, 4096)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._line(line.decode(errors="replace").split(), backend)
        if not self.closing and not self.killed:  # it ended on its own, closing its end
            self.link.emit(Closing())

    def _waiting_for_client(self) -> bool:
        """A server whose go-line is not yet written (its stdin is closed after it)."""
        stdin = self.proc.stdin if self.proc is not None else None
        return stdin is not None and not stdin.closed

    def _command(self) -> bool:
        """Act on the runner's command; False once the runner has gone away."""
        assert self.proc is not None
        command = self.link.command(0)
        if command is None:
            self.proc.kill()
            return False
        if command == Command.PEER and self.proc.stdin is not None:  # its client is there: go
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"go\n")
                self.proc.stdin.flush()
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        elif command == Command.KILL:
            self.killed = True
            self.proc.kill()
        return True

    def _line(self, words: list[str], backend: Backend) -> None:
        """One line of vchan-pipe's output, as the reports a Python endpoint makes."""
        if words == ["ready"]:
            self.ready = True
            if self.spec.is_server:
                ring_ref, port = channel_keys(backend, self.spec.path)
                orders = list(self.scenario.orders)
                self.link.emit(Listening(ring_ref=ring_ref, port=port, orders=orders))
            self.link.emit(Connected(sent=0, received=0))
        elif words == ["closed"]:
            self.peer_closed = True
            self.link.emit(PeerClosed())
        elif len(words) >= 3 and words[0] in ("sent", "received") and words[1].isdigit():
            self.reports[words[0]] = (int(words[1]), words[2])
            sent, received = (self.reports.get(side, (0, ""))[0] for side in ("sent", "received"))
            self.link.emit(Progress(sent=sent, received=received, mismatch_at=None, events={}))
            if not self.closing and self.expected <= set(self.reports):
                self.closing = True  # all moved: it closes now (the best time we can know)
                self.link.emit(Closing())

    def _reap(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def _result(
        self, error: ErrorReport | None, stopped: str | None, program: ProgramReport
    ) -> Result:
        sent = self.reports.get("sent")
        received = self.reports.get("received")
        origin = self.scenario.origin(self.spec.name)
        return Result(
            sent=None
            if sent is None
            else {"stream": self.spec.name, "start": 0, "count": sent[0], "sha256": sent[1]},
            received=None
            if received is None or origin is None
            else {
                "stream": origin,
                "start": 0,
                "count": received[0],
                "sha256": received[1],
                "mismatch_at": None,
                "closed": self.peer_closed,
            },
            error=error,
            stopped=stopped,
            program=program,
        )


def _tail(stream: IO[bytes]) -> str:
    """The last STDERR_TAIL bytes written to ``stream``, as text."""
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - STDERR_TAIL))
    return stream.read().decode(errors="replace")
