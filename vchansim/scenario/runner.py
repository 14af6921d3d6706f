"""Run a scenario: start the endpoints, commit the runner's faults, collect, judge.

Endpoints report over a pipe as they go (``messages.py``); an instance has ended when
its pipe reaches end-of-file, however it ended, so results are collected even from
endpoints that were killed.  Where they run is the executor's business
(``executors.py``); what the run produced is a :class:`~.records.RunRecord`, which the
expectations judge (``verdicts.py``) into a :class:`~.result.ScenarioResult`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiprocess.connection import wait as wait_connections

from ..errors import ConfigError
from ..trace import TraceWriter
from .endpoint import EndpointJob
from .executors import Executor, make_executor
from .faults.base import Fault
from .load import load_scenario, on_backend
from .messages import Command, Connected, FaultFired, Listening, Message, Progress, Result
from .program import program_commands
from .records import Instance, RunRecord
from .result import ScenarioResult, inapplicable, trace_header
from .sampler import Sampler
from .spec import DEADLINE_FACTOR_ENV, Scenario
from .verdicts import judge
from .xen_executor import obstacles, on_xen, require_xen

ProgressFn = Callable[["RunProgress"], None]
Action = Callable[[], None]


@dataclass(frozen=True)
class RunProgress:
    """What a progress display needs: bytes moved so far, of how many, and time; and where
    the scenario's hub runs, for an inspector to attach to."""

    scenario: str
    done: int
    total: int | None
    elapsed: float
    deadline: float
    #: The run directory of the scenario's hub (None: in process, no hub).
    rundir: str | None = None


class _Hit:
    """The :class:`~.faults.base.RunnerTarget` of a fault the runner commits on ``inst``
    (None: at set-up, before any endpoint runs)."""

    def __init__(self, run: Run, fault: Fault, inst: Instance | None) -> None:
        self._run, self._fault, self._inst = run, fault, inst

    def record(self, **detail: Any) -> None:
        fields = {"skipped": False, **detail} if self._inst is not None else detail
        self._run.note_fault(self._fault, time.monotonic(), **fields)

    def _target(self) -> Instance:
        if self._inst is None:
            raise RuntimeError(f"{self._fault.describe()}: no endpoint runs at set-up")
        return self._inst

    def kill(self) -> None:
        inst = self._target()
        inst.killed = "fault"
        inst.times["killed"] = time.monotonic()
        self._run.kill(inst)

    def signal(self, signo: int) -> None:
        self._run.executor.signal(self._target().handle, signo)

    def later(self, delay: float, action: Action) -> None:
        self._run.pending.append((time.monotonic() + delay, None, action))


class Run:
    """One execution of one scenario."""

    def __init__(
        self,
        scenario: Scenario,
        executor: Executor,
        trace: TraceWriter | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.s = scenario
        self.executor = executor
        self.trace = trace
        self.progress = progress
        self.programs = program_commands(scenario)
        self.record = RunRecord(scenario, time.monotonic())
        self.deadline = self.record.t0 + scenario.deadline
        self.live: dict[Any, Instance] = {}
        #: (due time, fault to commit or None, what to do then)
        self.pending: list[tuple[float, Fault | None, Action]] = []
        self.restarts = 1 if scenario.restarts_client else 0
        self.ring_ref: int | None = None
        self.sampler: Sampler | None = None
        self.connected = False
        self.prepared = False
        self.closing = False  # no more restarts: the run is being torn down
        self._shown = 0.0

    # -- bookkeeping --

    def note(self, record_type: str, t: float, /, **fields: Any) -> None:
        """Write a trace record (``t`` on the monotonic clock)."""
        if self.trace is not None:
            self.trace.record(record_type, t - self.record.t0, **fields)

    def note_fault(self, fault: Fault, t: float, **fields: Any) -> None:
        """Trace a fault the runner committed."""
        self.note(
            "fault", t, endpoint=fault.endpoint, kind=fault.kind, fault=fault.describe(), **fields
        )

    def start(self, name: str, number: int) -> Instance:
        program = self.programs.get(name, ())
        job = EndpointJob(self.s, name, self.executor.backends, number, program)
        conn, handle, pid = self.executor.start(job)
        inst = Instance(name, number, conn, handle, time.monotonic(), pid=pid)
        self.record.instances.append(inst)
        self.live[conn] = inst
        self.release(inst)
        return inst

    def release(self, inst: Instance) -> None:
        """Tell a waiting endpoint to go once it can: the server once the backend is
        ready, the client once the server listens."""
        is_server = self.s.endpoint(inst.name).is_server
        if inst.waiting and (self.prepared if is_server else self.ring_ref is not None):
            self.send(inst, Command.GO)

    def send(self, inst: Instance, command: Command) -> None:
        inst.waiting = False
        with contextlib.suppress(OSError):
            inst.conn.send(command)

    # -- the loop --

    def run(self) -> RunRecord:
        try:
            self.start(self.s.server.name, 1)
            self.start(self.s.client.name, 1)
            self.executor.prepare()
            self.prepared = True
            self.act_at_setup()
            for inst in list(self.live.values()):
                self.release(inst)
            while self.live:
                now = time.monotonic()
                if now >= self.deadline:
                    self.expire()
                    break
                wake = min([self.deadline] + [due for due, _, _ in self.pending])
                for conn in wait_connections(list(self.live), max(0.0, wake - now)):
                    self.drain(conn)
                self.fire_due()
                self.show()
        finally:
            self.finish()
        return self.record

    def drain(self, conn: Any) -> None:
        inst = self.live[conn]
        try:
            while conn.poll():
                self.handle(inst, conn.recv())
        except (EOFError, OSError):
            self.ended(inst)

    def handle(self, inst: Instance, msg: Message) -> None:
        inst.times.setdefault(msg.ev, msg.t)
        where = {"endpoint": inst.name, "instance": inst.number}
        if isinstance(msg, FaultFired):
            inst.faults.append(msg)
            self.note("fault", msg.t, **where, **msg.fields())
            return
        if isinstance(msg, Progress):
            inst.progress = msg
        elif isinstance(msg, Result):
            inst.result = msg
            self.record.notes += [
                f"{fault}: never fired, {inst.name} ended first" for fault in msg.unfired
            ]
        elif isinstance(msg, Listening):
            self.listening(msg)
        elif isinstance(msg, Connected) and self.first_connect(inst):
            self.connected = True
            self.schedule(msg.t)
            self.let_program_server_go()
        self.note("endpoint", msg.t, **where, event=msg.ev, **msg.fields())

    def first_connect(self, inst: Instance) -> bool:
        """Whether ``inst`` is the first client to connect: the channel is up now."""
        return not self.connected and not self.s.endpoint(inst.name).is_server

    def listening(self, msg: Listening) -> None:
        self.ring_ref = msg.ring_ref
        for inst in self.live.values():
            self.release(inst)
        if self.trace is not None:
            observer = self.executor.observe(self.s.server.domain, msg.ring_ref, msg.port)
            self.sampler = Sampler(observer, self.note, self.event_counts)

    def event_counts(self) -> dict[str, int]:
        """Events each side has sent so far (its notifications, spurious ones included)."""

        def sent(name: str) -> int:
            return sum(
                e.get("delivered", 0) + e.get("spurious", 0)
                for e in (i.events for i in self.record.of(name))
            )

        return {"srv_to_cli": sent(self.s.server.name), "cli_to_srv": sent(self.s.client.name)}

    def let_program_server_go(self) -> None:
        """Its client has connected: a program server may now move data (see
        vchansim.scenario.program)."""
        if self.s.server.is_program:
            for inst in self.live.values():
                if inst.name == self.s.server.name:
                    self.send(inst, Command.PEER)

    # -- the runner's faults --

    def act_at_setup(self) -> None:
        """Runner faults without a time act now, before any endpoint starts (the machine
        was made with their limits)."""
        for fault in self.s.faults:
            if fault.by_runner and fault.trigger.at is None:
                fault.act_from_runner(_Hit(self, fault, None))

    def schedule(self, connected_at: float) -> None:
        """Runner faults at a time are timed from the moment the channel connected."""
        for fault in self.s.faults:
            if _timed_by_runner(fault):
                due = connected_at + (fault.trigger.at or 0.0)
                self.pending.append((due, fault, functools.partial(self.commit, fault)))

    def fire_due(self) -> None:
        now = time.monotonic()
        due = [action for when, _, action in self.pending if when <= now]
        self.pending = [item for item in self.pending if item[0] > now]
        for action in due:
            action()

    def commit(self, fault: Fault) -> None:
        """Commit a runner fault on its endpoint's live instance, if there is one."""
        target = next((i for i in self.live.values() if i.name == fault.endpoint), None)
        if target is None:
            self.note_fault(fault, time.monotonic(), skipped=True)
            self.record.notes.append(f"{fault.describe()}: the endpoint had already ended")
            return
        fault.act_from_runner(_Hit(self, fault, target))

    def kill(self, inst: Instance) -> None:
        """SIGKILL an endpoint as a fault.  A program endpoint's process kills its program
        (it alone can do so without racing the program's exit) and reports how it ended."""
        if self.s.endpoint(inst.name).is_program:
            self.send(inst, Command.KILL)
        else:
            self.executor.kill(inst.handle)

    # -- endings --

    def ended(self, inst: Instance) -> None:
        del self.live[inst.conn]
        inst.conn.close()
        inst.exitcode = self.executor.reap(inst.handle)
        inst.ended = time.monotonic()
        event = "killed" if inst.exitcode == -signal.SIGKILL else "exited"
        self.note(
            "endpoint",
            inst.ended,
            endpoint=inst.name,
            instance=inst.number,
            event=event,
            exitcode=inst.exitcode,
        )
        if self.s.endpoint(inst.name).is_server:
            for other in self.live.values():
                if other.waiting:
                    self.send(other, Command.ABORT)
        if self.restart_due(inst):
            self.restarts -= 1
            self.start(inst.name, inst.number + 1)

    def restart_due(self, inst: Instance) -> bool:
        if self.closing or not self.restarts or inst.name != self.s.client.name:
            return False
        restarted_by_fault = any(self.s.faults[f.index].restarts for f in inst.faults)
        return restarted_by_fault or inst.killed == "fault"

    def expire(self) -> None:
        """The global deadline passed: kill what is left and collect what it said."""
        self.record.deadline_hit = True
        self.closing = True
        for inst in list(self.live.values()):
            inst.killed = "deadline"
            with contextlib.suppress(RuntimeError):
                self.executor.kill(inst.handle)
        for conn in list(self.live):
            self.drain_all(conn)

    def drain_all(self, conn: Any) -> None:
        inst = self.live[conn]
        with contextlib.suppress(EOFError, OSError):
            while conn.poll(0.2):
                self.handle(inst, conn.recv())
        if inst.conn in self.live:
            self.ended(inst)

    def finish(self) -> None:
        self.closing = True
        unfired = (
            [f for _, f, _ in self.pending if f is not None]
            if self.connected
            else [f for f in self.s.faults if _timed_by_runner(f)]
        )
        why = "the run ended first" if self.connected else "the channel never connected"
        self.record.notes += [f"{f.describe()}: never fired, {why}" for f in unfired]
        for inst in list(self.live.values()):  # an exception got us here: leave nothing
            with contextlib.suppress(RuntimeError):
                self.executor.kill(inst.handle)
            self.ended(inst)
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        self.record.duration = time.monotonic() - self.record.t0

    def show(self) -> None:
        now = time.monotonic()
        if self.progress is None or now - self._shown < 0.1:
            return
        self._shown = now
        latest = {i.name: i for i in self.record.instances}  # offsets are absolute
        done = sum(i.progress.received for i in latest.values() if i.progress is not None)
        origins = [origin for origin in map(self.s.origin, self.s.names) if origin]
        totals = [self.s.planned_send(origin) for origin in origins]
        total = sum(t for t in totals if t is not None) if None not in totals else None
        self.progress(
            RunProgress(
                self.s.name,
                done,
                total,
                now - self.record.t0,
                self.s.deadline,
                self.executor.rundir,
            )
        )


def _timed_by_runner(fault: Fault) -> bool:
    """Faults the runner commits at a time after the channel connected."""
    return fault.by_runner and fault.trigger.at is not None


def execute(
    scenario: Scenario,
    *,
    trace: TraceWriter | None = None,
    progress: ProgressFn | None = None,
    rundir: str | Path | None = None,
    client_domain: int | None = None,
) -> RunRecord:
    """Run ``scenario`` once and return what happened (not yet judged)."""
    executor = make_executor(scenario, rundir, client_domain)
    try:
        record = Run(executor.placed(scenario), executor, trace, progress).run()
        record.leaks = executor.leaks()
    finally:
        executor.close()
    return record


def deadline_factor(value: str | float | None = None) -> float:
    """The factor every time bound is scaled by: ``value``, else ``$VCHANSIM_DEADLINE_FACTOR``,
    else 1; ConfigError naming it if it is not a number of at least 1."""
    given = os.environ.get(DEADLINE_FACTOR_ENV, "1") if value is None else value
    try:
        factor = float(given)
    except ValueError:
        factor = 0.0
    if not 1.0 <= factor <= 1000.0:
        raise ConfigError(
            f"deadline factor {given!r} (from --deadline-factor or ${DEADLINE_FACTOR_ENV}) "
            "must be a number from 1 to 1000"
        )
    return factor


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    seed: int | None = None,
    trace: str | Path | None = None,
    progress: ProgressFn | None = None,
    rundir: str | Path | None = None,
    backend: str | None = None,
    slower: float | None = None,
    client_domain: int | None = None,
) -> ScenarioResult:
    """Run one scenario (an object or a file) and judge it.

    ``seed`` overrides the scenario's; ``backend`` puts both endpoints on that backend
    (``shm``, ``memory`` or ``xen``: real Xen, in this domain); ``slower`` scales every
    time bound (default: :func:`deadline_factor`); ``trace`` writes a trace file
    (docs/trace.md); ``rundir`` puts the scenario's hub there (for an inspector to attach
    to) instead of in a private directory; ``client_domain`` runs the client in that
    domain through its agent (``vchansim agent``; see ``remote.py``), the server here.
    A scenario that cannot run on its backend as
    written is refused (ConfigError naming why) before anything starts; one that needs
    the emulator is, on real Xen, a result that is not applicable, with the reasons.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if seed is not None:
        scenario = scenario.with_seed(seed)
    if backend is not None:
        scenario = on_backend(scenario, backend)
    factor = deadline_factor(slower)
    if factor != 1.0:
        scenario = scenario.scaled(factor)
    if on_xen(scenario):
        require_xen(scenario.name)
        if trace is not None:
            raise ConfigError(
                f"{scenario.name}: a trace samples the ring through the emulator's hub, "
                "not on xen"
            )
    reasons = obstacles(scenario, remote=client_domain is not None)
    if reasons:
        return inapplicable(scenario, reasons)
    writer = TraceWriter(trace, trace_header(scenario)) if trace is not None else None
    started = time.monotonic()
    try:
        record = execute(
            scenario, trace=writer, progress=progress, rundir=rundir, client_domain=client_domain
        )
        verdicts = judge(record)
    except BaseException:
        if writer is not None:
            writer.close(time.monotonic() - started, passed=False)
        raise
    result = ScenarioResult(record.scenario, record, verdicts)
    if writer is not None:
        end = time.monotonic() - record.t0
        for verdict in verdicts:
            writer.record("verdict", end, **verdict.as_dict())
        writer.close(end, passed=result.passed)
    return result
