"""The guest's agent in the real-Xen tests: vchansim's agent, with the tests' own jobs.

A PV guest here has no disk and no shared filesystem, so dom0 cannot start programs in
it directly.  The guest's init (``tools/xenvm/domu-init``) runs this: the product's
agent (:mod:`vchansim.agent`: requests and answers under ``data/vchansim-agent`` of the
guest's home; its ``endpoint`` jobs are scenario endpoints, so ``vchansim run
--client-domain``'s clients run here), with three more kinds of job for the tests,
each answered with the peer's JSON report as its result:

* ``{"kind": "python", "argv": [...]}`` runs :mod:`pypeer` with those arguments, forked
  from the agent, which has vchansim imported already;
* ``{"kind": "c", "argv": [...]}`` runs the static libxenvchan peer;
* ``{"kind": "cli", "argv": [...], "stdin": TEXT}`` runs ``python -m vchansim ARGV``
  with TEXT as its standard input; its report holds the exit status and both outputs.

The agent never exits by itself: dom0 destroys the guest.

    python3 agent.py [C_PEER_BINARY]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pypeer

from vchansim.agent import Agent, Job, JobKind, Out
from vchansim.backends.xen import XenBackend
from vchansim.scenario.agentjob import ENDPOINT_KIND, endpoint_kind

#: Characters of a command's stderr kept in its report.
REPORT_TEXT = 1000


class Peer(Job):
    """A peer process: its report comes through ``output`` (a pipe's read end) or, for a
    command, from the files its outputs went to."""

    def __init__(
        self,
        pid: int,
        output: int,
        proc: subprocess.Popen[bytes] | None = None,
        command_output: Path | None = None,
    ) -> None:
        super().__init__(pid)
        self.output = output
        self.proc = proc  # C peers and commands
        self.command_output = command_output

    def ended(self, status: int, out: Out) -> dict[str, Any]:
        if self.proc is not None:
            self.proc.returncode = os.waitstatus_to_exitcode(status)  # the agent reaped it
        return report_of(self, status)


def _argv(request: dict[str, Any]) -> list[str]:
    return [str(a) for a in request["argv"]]


def start_python(agent: Agent, request: dict[str, Any]) -> Job:
    """Fork a child that runs pypeer and writes its JSON report to a pipe."""
    argv = _argv(request)
    read_end, write_end = os.pipe()

    def child() -> None:  # report, whatever happens
        os.close(read_end)
        try:
            report = pypeer.run(argv)
        except BaseException as exc:
            report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(report).encode())

    pid = agent.fork(child)
    os.close(write_end)
    return Peer(pid, read_end)


def c_kind(binary: str) -> JobKind:
    def start_c(agent: Agent, request: dict[str, Any]) -> Job:
        proc = subprocess.Popen(
            [binary, *_argv(request)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        return Peer(proc.pid, proc.stdout.fileno(), proc)

    return start_c


def start_cli(agent: Agent, request: dict[str, Any]) -> Job:
    """``python -m vchansim ARGV`` with ``stdin``; its outputs go to files (a pipe nobody
    reads until the command ends could fill and stall it)."""
    argv, stdin = _argv(request), str(request.get("stdin", ""))
    base = Path(tempfile.mkdtemp(prefix="cli-"))
    (base / "stdin").write_text(stdin)
    command = [sys.executable, "-S", "-m", "vchansim", *argv]
    with (
        (base / "stdin").open("rb") as given,
        (base / "stdout").open("wb") as out,
        (base / "stderr").open("wb") as err,
    ):
        proc = subprocess.Popen(command, stdin=given, stdout=out, stderr=err)
    return Peer(proc.pid, -1, proc, base)


def command_report(job: Peer, status: int) -> dict[str, Any]:
    """Exit status, stdout's length and SHA-256, and stderr's end: a guest's XenStore
    values are at most a few KiB."""
    assert job.command_output is not None
    out = (job.command_output / "stdout").read_bytes()
    err = (job.command_output / "stderr").read_text(errors="replace")
    shutil.rmtree(job.command_output)
    code = os.waitstatus_to_exitcode(status)
    digest = hashlib.sha256(out).hexdigest()
    return {
        "ok": code == 0,
        "mode": "cli",
        "exit": code,
        "stdout_bytes": len(out),
        "stdout_sha256": digest,
        "stderr": err[-REPORT_TEXT:],
    }


def report_of(job: Peer, status: int) -> dict[str, Any]:
    """The peer's last JSON line, or why there is none (the signal that ended it)."""
    if job.command_output is not None:
        return command_report(job, status)
    chunks = []
    os.set_blocking(job.output, False)  # the peer has exited: what it wrote is there
    with contextlib.suppress(BlockingIOError):  # a child of the peer's holds the pipe
        while chunk := os.read(job.output, 65536):
            chunks.append(chunk)
    if job.proc is not None:
        job.proc.stdout.close()  # type: ignore[union-attr]
    else:
        os.close(job.output)
    lines = [ln for ln in b"".join(chunks).decode(errors="replace").splitlines() if ln[:1] == "{"]
    if lines:
        report: dict[str, Any] = json.loads(lines[-1])
    else:
        report = {"ok": False, "error": f"peer ended with wait status {status}, no report"}
    return report  # the agent adds the signal that ended it, if one did


def main() -> int:
    backend = XenBackend()
    c_peer = sys.argv[1] if len(sys.argv) > 1 else "/vchan-peer"
    kinds: dict[str, JobKind] = {
        ENDPOINT_KIND: endpoint_kind(XenBackend),
        "python": start_python,
        "c": c_kind(c_peer),
        "cli": start_cli,
    }
    with backend.store() as store:
        Agent(store, backend.domid, kinds).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
