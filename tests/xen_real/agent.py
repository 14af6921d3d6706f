"""The guest's agent for the real-Xen tests: runs vchan peers when dom0 asks, over XenStore.

A PV guest here has no disk and no shared filesystem, so dom0 cannot start programs in
it directly.  This agent (started by the guest's init, ``tools/xenvm/domu-init``) watches
``data/agent`` under its domain's home.  dom0 writes requests there, one numbered node
each, and reads the answers beside them:

* ``data/agent/N/request = {"impl": "python" | "c", "argv": [...]}`` starts a peer with
  :mod:`pypeer`'s (or the C peer's) arguments -- Python ones forked from the agent, which
  has vchansim imported already; the agent writes ``N/pid`` at once and ``N/result``
  (the peer's JSON report) when the peer ends;
* ``{"impl": "cli", "argv": [...], "stdin": TEXT}`` runs ``python -m vchansim ARGV`` with
  TEXT as its standard input; its report holds the exit status and both outputs;
* ``data/agent/N/request = {"kill": M}`` sends SIGKILL to request M's peer and answers
  ``N/result = {"ok": true}``; M's result then says which signal ended it.

``data/agent/ready`` appears once the agent listens, holding the guest's uptime then (its
boot to a listening agent, in seconds).  The agent never exits by itself: dom0
destroys the guest.

    python3 agent.py [C_PEER_BINARY]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pypeer

from vchansim.backends.xen import XenBackend
from vchansim.errors import StoreError
from vchansim.xenstore.client import XenstoreError, XsClient

ROOT = "data/agent"
#: How often finished peers are looked for while no request arrives.
REAP_INTERVAL = 0.2
#: Characters of a command's stderr kept in its report.
REPORT_TEXT = 1000


@dataclass
class Job:
    """One peer the agent started: its process and where its report comes from."""

    pid: int
    output: int  # read end of the pipe the peer reports through
    proc: subprocess.Popen[bytes] | None = None  # C peers and commands
    command_output: Path | None = None  # commands: where stdout and stderr went


def start_python(argv: list[str]) -> Job:
    """Fork a child that runs pypeer and writes its JSON report to a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, whatever happens, then leave without cleanup
        os.close(read_end)
        try:
            report = pypeer.run(argv)
        except BaseException as exc:
            report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    return Job(pid, read_end)


def start_c(binary: str, argv: list[str]) -> Job:
    proc = subprocess.Popen([binary, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return Job(proc.pid, proc.stdout.fileno(), proc)


def start_cli(number: int, argv: list[str], stdin: str) -> Job:
    """``python -m vchansim ARGV`` with ``stdin``; its outputs go to files (a pipe nobody
    reads until the command ends could fill and stall it)."""
    base = Path(tempfile.mkdtemp(prefix=f"cli{number}-"))
    (base / "stdin").write_text(stdin)
    command = [sys.executable, "-S", "-m", "vchansim", *argv]
    with (
        (base / "stdin").open("rb") as given,
        (base / "stdout").open("wb") as out,
        (base / "stderr").open("wb") as err,
    ):
        proc = subprocess.Popen(command, stdin=given, stdout=out, stderr=err)
    return Job(proc.pid, -1, proc, base)


def command_report(job: Job, status: int) -> dict[str, Any]:
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


def report_of(job: Job, status: int) -> dict[str, Any]:
    """The peer's last JSON line, or why there is none (the signal that ended it)."""
    if job.command_output is not None:
        return command_report(job, status)
    chunks = []
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
    if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
    return report


class Agent:
    def __init__(self, store: XsClient, c_peer: str) -> None:
        self.store = store
        self.c_peer = c_peer
        self.seen: set[int] = set()
        self.jobs: dict[int, Job] = {}

    def answer(self, number: int, key: str, value: object) -> None:
        """Write an answer; one XenStore refuses (too large, say) is answered with why."""
        path = f"{ROOT}/{number}/{key}"
        try:
            self.store.write(path, json.dumps(value).encode())
        except XenstoreError as exc:
            failed = {"ok": False, "error": f"writing the answer failed: {exc}"}
            self.store.write(path, json.dumps(failed).encode())

    def handle(self, number: int, request: dict[str, Any]) -> None:
        if "kill" in request:
            victim = self.jobs.get(int(request["kill"]))
            if victim is None:
                self.answer(number, "result", {"ok": False, "error": "no such running peer"})
                return
            os.kill(victim.pid, signal.SIGKILL)
            self.answer(number, "result", {"ok": True, "killed": victim.pid})
            return
        argv = [str(a) for a in request["argv"]]
        if request["impl"] == "cli":
            job = start_cli(number, argv, request.get("stdin", ""))
        elif request["impl"] == "python":
            job = start_python(argv)
        else:
            job = start_c(self.c_peer, argv)
        self.jobs[number] = job
        self.answer(number, "pid", job.pid)

    def poll_requests(self) -> None:
        for name in self.store.directory(ROOT):
            if not name.isdigit() or int(name) in self.seen:
                continue
            try:
                raw = self.store.read(f"{ROOT}/{name}/request")
            except StoreError:
                continue  # the node exists before its request is written
            self.seen.add(int(name))
            try:
                self.handle(int(name), json.loads(raw))
            except Exception as exc:  # report it: dom0 would only see a timeout
                self.answer(int(name), "result", {"ok": False, "error": repr(exc)})

    def reap(self) -> None:
        for number, job in list(self.jobs.items()):
            pid, status = os.waitpid(job.pid, os.WNOHANG)
            if pid == 0:
                continue
            del self.jobs[number]
            self.answer(number, "result", report_of(job, status))

    def serve(self) -> None:
        self.store.watch(ROOT, "agent")
        uptime = Path("/proc/uptime").read_text().split()[0]
        self.store.write(f"{ROOT}/ready", uptime.encode())
        while True:
            self.poll_requests()
            self.reap()
            while self.store.read_watch(REAP_INTERVAL) is not None:
                pass  # drain: one scan serves every event so far


def main() -> int:
    backend = XenBackend()
    c_peer = sys.argv[1] if len(sys.argv) > 1 else "/vchan-peer"
    with backend.store() as store:
        Agent(store, c_peer).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
