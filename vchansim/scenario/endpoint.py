"""The endpoint process: open one end of the vchan, drive its workload, commit or suffer
its faults, and tell the runner everything as it happens.

An endpoint is a process of its own (or, on the in-process backend, a thread), joined to
the runner by a pipe: typed reports out (``messages.py``), commands in.  The I/O loop is
``engine.py``; a program endpoint (``program.py``) shares the set-up and the reports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from .. import layout
from ..backends.base import Backend
from ..channel import Vchan
from .engine import Engine
from .faults.base import Fault
from .messages import (
    Closing,
    Command,
    ErrorReport,
    FaultFired,
    Listening,
    Message,
    PeerClosed,
    Result,
    Started,
)
from .page import set_indices
from .spec import Scenario
from .tap import EventRule, EventTap, TappedBackend
from .triggers import Triggers


@dataclass(frozen=True)
class EndpointJob:
    """Everything an endpoint process needs; pickled to it when it is spawned."""

    scenario: Scenario
    name: str
    backends: Callable[[int], Backend]  # domid -> backend
    instance: int = 1
    program: tuple[str, ...] = ()  # a program endpoint's command, ready to run


class Link:
    """The endpoint's line to the runner: reports out, commands in."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def emit(self, message: Message) -> None:
        with contextlib.suppress(OSError, EOFError):  # the runner is gone: nobody to tell
            self._conn.send(message)

    def command(self, timeout: float) -> Command | None:
        """The runner's next command, or None after ``timeout`` or once it is gone."""
        try:
            if self._conn.poll(max(0.0, timeout)):
                return Command(self._conn.recv())
        except (OSError, EOFError):
            pass
        return None

    def fileno(self) -> int:
        """Readable when a command (or the runner's end-of-file) is waiting."""
        return int(self._conn.fileno())


def describe_error(exc: BaseException, phase: str) -> ErrorReport:
    """An exception as the runner records it (it cannot receive the object itself)."""
    code = getattr(exc, "errno", None)
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "errno": errno.errorcode.get(code) if isinstance(code, int) else None,
        "message": str(exc),
        "phase": phase,
        "where": "".join(traceback.format_tb(exc.__traceback__, limit=-3)).rstrip(),
    }


class Aborted(Exception):
    """The endpoint is not to start (its server failed); the message says why."""


def await_go(link: Link, timeout: float, is_server: bool) -> None:
    """Wait for the runner: a client starts only once its server listens."""
    command = link.command(timeout)
    if command == Command.ABORT:
        raise Aborted("its server failed" if not is_server else "aborted")
    if command != Command.GO:
        raise Aborted(f"no word from the runner in {timeout:g} s")


def channel_keys(backend: Backend, path: str) -> tuple[int, int]:
    """The grant reference of the control page and the event port, as the server
    published them under ``path``."""
    store = backend.store()
    try:
        ring_ref, port = (
            int(store.read(layout.key_path(path, key)))
            for key in (layout.RING_REF_KEY, layout.EVENT_CHANNEL_KEY)
        )
    finally:
        store.close()
    return ring_ref, port


class EndpointBase:
    """What every endpoint instance has: its job, its line to the runner, its settings,
    and the bound on its waits (its ``timeout``, else half the deadline)."""

    def __init__(self, job: EndpointJob, link: Link) -> None:
        self.job = job
        self.link = link
        self.scenario = job.scenario
        self.spec = job.scenario.endpoint(job.name)
        self.timeout = self.spec.timeout or self.scenario.deadline / 2


def event_rules(scenario: Scenario, name: str) -> list[EventRule]:
    """The rules ``name``'s faults put on its event handle, in the scenario's order."""
    rules: list[EventRule] = []
    for fault in scenario.faults_of(name):
        rule = fault.event_rule(scenario.seed, name, len(rules))
        if rule is not None:
            rules.append(rule)
    return rules


class Endpoint(EndpointBase):
    """One Python endpoint instance: set-up, workload, faults, close, report.

    It is the :class:`~.faults.base.EndpointTarget` its faults act on."""

    def __init__(self, job: EndpointJob, link: Link) -> None:
        super().__init__(job, link)
        self.tap = EventTap(event_rules(job.scenario, job.name))
        self.triggers = Triggers(job.scenario, job.name, job.instance)
        self._chan: Vchan | None = None
        self.engine: Engine | None = None
        self.connected_at = 0.0
        self.saw_close = False
        self.stopped: str | None = None
        self._firing: Fault | None = None

    @property
    def chan(self) -> Vchan:
        assert self._chan is not None, "the channel is not open yet"
        return self._chan

    # -- the life of an endpoint --

    def run(self) -> None:
        self.link.emit(Started(pid=os.getpid()))
        error: ErrorReport | None = None
        phase = "setup"
        try:
            await_go(self.link, self.timeout, self.spec.is_server)
            backend = TappedBackend(self.job.backends(self.spec.domain), self.tap)
            self._chan = self._open(backend)
            phase = "io"
            self.engine = Engine(self)
            self.engine.run()
        except Aborted as exc:
            self.stopped = f"not started: {exc}"
        except BaseException as exc:  # every failure is a result to report, not a crash
            error = describe_error(exc, phase)
        error = self._close(error)
        self.link.emit(self._result(error))

    def _open(self, backend: Backend) -> Vchan:
        spec, s = self.spec, self.scenario
        if spec.is_server:
            chan = Vchan.server(
                backend,
                s.client.domain,
                spec.path,
                spec.read_min,
                spec.write_min,
                blocking=spec.blocking,
            )
            chan.server_persist = spec.persist
            if spec.start_index:
                set_indices(chan, spec.start_index)
        else:
            chan = Vchan.client(backend, s.server.domain, s.client_path, blocking=spec.blocking)
        self._chan = chan
        chan.timeout = self.timeout
        if spec.spin is not None:
            chan.spin = spec.spin
        for fault in self.triggers.setup:
            self.fire(fault)
        if spec.is_server:
            ring_ref, port = channel_keys(backend, spec.path)
            self.link.emit(Listening(ring_ref=ring_ref, port=port, orders=list(s.orders)))
        self.connected_at = time.monotonic()
        return chan

    def _close(self, error: ErrorReport | None) -> ErrorReport | None:
        if self._chan is not None:
            self.link.emit(Closing())
            try:
                self._chan.close()
            except BaseException as exc:
                error = error or describe_error(exc, "close")
        return error

    def _result(self, error: ErrorReport | None) -> Result:
        engine = self.engine
        return Result(
            sent=engine.sent_report() if engine else None,
            received=engine.received_report() if engine else None,
            error=error,
            stopped=self.stopped,
            unfired=[fault.describe() for fault in self.triggers.unfired()],
            events=asdict(self.tap.counts),
        )

    # -- faults: the EndpointTarget --

    def fire(self, fault: Fault) -> None:
        """Commit ``fault`` now."""
        self._firing = fault
        try:
            fault.act_in_endpoint(self)
        finally:
            self._firing = None

    def record(self, **detail: Any) -> None:
        fault = self._firing
        assert fault is not None, "record() is for a fault acting now"
        engine = self.engine
        self.link.emit(
            FaultFired(
                index=self.scenario.fault_index(fault),
                fault=fault.describe(),
                kind=fault.kind,
                detail=detail,
                sent=engine.out.offset if engine and engine.out else None,
                received=engine.inbox.offset if engine and engine.inbox else None,
            )
        )

    def stall(self, duration: float) -> None:
        assert self.engine is not None, "a stall acts on a running workload"
        self.engine.stall(duration)

    def stop(self, why: str) -> None:
        self.stopped = why

    def kill(self) -> NoReturn:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL")

    def saw_peer_close(self) -> None:
        """Tell the runner, once, when this endpoint first noticed its peer closed."""
        if not self.saw_close:
            self.saw_close = True
            self.link.emit(PeerClosed())
