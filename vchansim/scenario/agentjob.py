"""An endpoint as an agent's job: the request that carries it, and its run in the agent.

The runner places an endpoint in another domain by asking that domain's agent
(:mod:`vchansim.agent`) for a job of kind ``endpoint``: ``{"kind": "endpoint", "job":
TEXT}``, TEXT being the :class:`~.endpoint.EndpointJob` pickled, compressed and in
base64 (a scenario as built -- seeded, scaled, placed -- about a kilobyte).  The agent
reads it with an unpickler that builds vchansim's own types and a few plain ones, nothing
else; checks that the endpoint is in the agent's domain; and forks the endpoint with the
agent's own backend, so that it runs on that domain's devices.  The endpoint's reports
go out as JSON (``messages.report_to_json``), one ``out`` value each -- progress at most
every :data:`PROGRESS_RELAY` seconds, the latest always before any other report -- and
the runner's commands come in as ``{"command": WORD}``.  The job's result is ``{"ok":
true, "exit": CODE}``, CODE as ``multiprocessing`` gives it (-N for signal N).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import pickle
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import multiprocess

from ..agent import Agent, AgentError, Job, JobKind, Out
from ..backends.base import Backend
from .endpoint import EndpointJob
from .messages import Command, Progress, report_to_json
from .spawned import endpoint_main

#: The agent's kind of job that runs an endpoint.
ENDPOINT_KIND = "endpoint"
#: Seconds between two progress reports relayed (XenStore writes cost, in a guest).
PROGRESS_RELAY = 0.25
#: What a job's pickle may build besides vchansim's own types.
_PLAIN = {
    ("builtins", name)
    for name in ("frozenset", "set", "tuple", "list", "dict", "int", "float", "str", "bytes")
} | {("copyreg", "_reconstructor"), ("builtins", "object")}


def encode_job(job: EndpointJob) -> str:
    """``job`` as the text of an ``endpoint`` request."""
    return base64.b64encode(zlib.compress(pickle.dumps(job))).decode()


class _JobUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "vchansim" or (module, name) in _PLAIN:
            return super().find_class(module, name)
        raise AgentError(f"the job names {module}.{name}, which is not vchansim's")


def decode_job(text: object) -> EndpointJob:
    """The job in an ``endpoint`` request; AgentError naming what is wrong with it."""
    if not isinstance(text, str):
        raise AgentError("an endpoint request's job is text (encode_job's)")
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
        job = _JobUnpickler(io.BytesIO(raw)).load()
    except AgentError:
        raise
    except (binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise AgentError(f"the job cannot be read: {exc}") from None
    if not isinstance(job, EndpointJob):
        raise AgentError(f"the job is a {type(job).__name__}, not an endpoint job")
    return job


def endpoint_kind(backends: Callable[[int], Backend]) -> JobKind:
    """The ``endpoint`` job kind of an agent whose endpoints use ``backends`` (its own
    backend: domain id -> backend)."""

    def start(agent: Agent, request: dict[str, Any]) -> Job:
        job = decode_job(request.get("job"))
        spec = job.scenario.endpoint(job.name)
        if spec.domain != agent.domid:
            raise AgentError(
                f"endpoint {job.name} is in domain {spec.domain}; this agent runs domain "
                f"{agent.domid}'s"
            )
        if spec.is_program:
            raise AgentError(f"endpoint {job.name} is a program endpoint: not through an agent")
        job = replace(job, backends=backends)
        ours, theirs = multiprocess.Pipe()

        def child() -> None:
            ours.close()
            endpoint_main(job, theirs)

        pid = agent.fork(child)
        theirs.close()  # only the child holds its end: its exit is our end-of-file
        return EndpointRun(pid, ours)

    return start


class EndpointRun(Job):
    """An endpoint process of the agent's: its reports relayed out, commands in."""

    def __init__(self, pid: int, conn: Any) -> None:
        super().__init__(pid)
        self.conn = conn
        self.open = True
        self.progress: Progress | None = None  # the latest, not relayed yet
        self.relayed = 0.0

    def fds(self) -> list[int]:
        return [self.conn.fileno()] if self.open else []

    def readable(self, fd: int, out: Out) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if not isinstance(message, Progress):
                    self._flush(out)
                    out(report_to_json(message))
                    continue
                self.progress = message
                if time.monotonic() - self.relayed >= PROGRESS_RELAY:
                    self._flush(out)
        except (EOFError, OSError):
            self.open = False
            self._flush(out)

    def _flush(self, out: Out) -> None:
        if self.progress is not None:
            out(report_to_json(self.progress))
            self.progress = None
            self.relayed = time.monotonic()

    def given(self, value: Any) -> None:
        if not isinstance(value, dict) or "command" not in value:
            raise AgentError(f"an endpoint's input is {{'command': WORD}}, not {value!r}")
        try:
            command = Command(value["command"])
        except ValueError:
            raise AgentError(f"no command {value['command']!r}") from None
        if self.open:
            self.conn.send(command)

    def ended(self, status: int, out: Out) -> dict[str, Any]:
        if self.open:
            self.readable(self.conn.fileno(), out)
        self.conn.close()
        return {"ok": True, "exit": os.waitstatus_to_exitcode(status)}
