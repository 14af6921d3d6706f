"""Run a scenario: start the endpoints, commit the runner's faults, collect, judge.

Each endpoint instance is a process of its own, started with the *spawn* method so that
it inherits no hub connection from us (a forked child would hold our handles, and its
death would then not look like a death to the hub).  Over the ``shm`` backend every run
gets a private run directory and hub, torn down at the end.  Endpoints report over a
pipe as they go; an instance has ended when its pipe reaches end-of-file, however it
ended, so results are collected even from endpoints that were killed.

The in-process ``memory`` backend runs the same endpoint code as threads of this
process: much faster to start, for property tests, but nothing can be killed there.

The machine's limits (grants, ports, XenStore nodes per domain) are those of Xen unless
an ``exhaust`` fault lowers one: the private hub, or the in-process hypervisor, is made
with the scenario's limits, so the endpoint meets the real error where a guest would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import multiprocess
from multiprocess.connection import wait as wait_connections

from ..backends.base import Backend
from ..backends.memory import MemoryBackend, MemoryHypervisor
from ..backends.shm import ShmBackend
from ..hub.launcher import ensure_hub, open_hub
from ..hub.limits import HubLimits
from ..hub.observe import PageView, StatsView, map_grant, map_stats
from ..layout import PAGE_SIZE, PageState
from ..leaks import Leak, LeakKind, find_leaks, memory_leaks, stop_hub
from ..trace import TraceWriter
from ..xenstore.store import Store as XsStore
from .model import ExhaustFault, Fault, RestartFault, Scenario
from .program import ProgramEndpoint, program_commands
from .workload import Endpoint, EndpointJob, Link

#: How often the trace sampler looks at the control page (it records only changes).
SAMPLE_PERIOD = 0.001
#: Seconds the leak check waits for the hub to notice processes that just exited.
LEAK_GRACE = 2.0
#: What the leak check looks for: not descriptors of this process, which are not the
#: endpoints' (they ran elsewhere) and may belong to whoever called the runner.
LEAK_KINDS = frozenset(LeakKind) - {LeakKind.FD}
#: XenStore nodes a domain owns before it writes anything: its home's ``data``.
HOME_NODES = 1

ProgressFn = Callable[["Progress"], None]


@dataclass(frozen=True)
class Progress:
    """What a progress display needs: bytes moved so far, of how many, and time."""

    scenario: str
    done: int
    total: int | None
    elapsed: float
    deadline: float


# -- one endpoint instance ----------------------------------------------------------------------


@dataclass
class Instance:
    """One run of one endpoint (a restarted client has several), as the runner saw it."""

    name: str
    number: int
    conn: Any
    handle: Any
    started: float
    pid: int | None = None
    ended: float | None = None
    exitcode: int | None = None
    killed: str | None = None  # "fault" or "deadline" when the runner killed it
    result: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # event -> first time seen
    waiting: bool = True  # not yet told to "go" (nor to "abort")

    @property
    def killed_by_fault(self) -> bool:
        """Killed as a fault said: by the runner, or by itself (its last word then was the
        fault record)."""
        killed_itself = any(f["kind"] in ("kill", "restart") for f in self.faults)
        return self.killed == "fault" or (self.result is None and killed_itself)

    @property
    def events(self) -> dict[str, int]:
        source = self.result or self.progress
        return dict(source.get("events") or {})


def endpoint_main(job: EndpointJob, conn: Any) -> None:
    """Entry point of an endpoint process or thread."""
    kind = ProgramEndpoint if job.program else Endpoint
    kind(job, Link(conn)).run()


def hub_limits(scenario: Scenario) -> HubLimits:
    """Xen's limits, except what the scenario's exhaust faults leave of a resource.

    A limit holds for every domain, but of a vchan's two ends only the server spends
    grants and XenStore nodes, and it binds its port first, so the server's domain is
    the one that feels it.
    """
    limits = HubLimits()
    for fault in scenario.faults:
        if not isinstance(fault, ExhaustFault):
            continue
        if fault.resource == "grants":
            limits = replace(limits, grants=fault.leave)
        elif fault.resource == "ports":
            limits = replace(limits, ports=fault.leave)
        else:
            quotas = replace(limits.xenstore, nodes=HOME_NODES + fault.leave)
            limits = replace(limits, xenstore=quotas)
    return limits


def _timed_by_runner(fault: Fault) -> bool:
    """Faults the runner commits at a time after the channel connected (a SIGKILL)."""
    return fault.by_runner and fault.trigger.at is not None


# -- where endpoints run ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShmBackends:
    """Picklable ``domid -> backend`` for endpoint processes of one run directory."""

    rundir: str

    def __call__(self, domid: int) -> Backend:
        return ShmBackend(domid, rundir=self.rundir)


@dataclass(frozen=True)
class MemoryBackends:
    """``domid -> backend`` on one private in-process hypervisor."""

    hypervisor: MemoryHypervisor

    def __call__(self, domid: int) -> Backend:
        return MemoryBackend(domid, hypervisor=self.hypervisor)


class Observer(Protocol):
    """What the trace sampler watches, read-only: the control page, and the channel's
    event counters where the backend keeps them."""

    def state(self) -> PageState: ...

    def events(self) -> dict[str, int] | None:
        """Events sent so far by each side, or None if only the endpoints know."""

    def close(self) -> None: ...


class HubObserver:
    """The control page and the event statistics page, mapped read-only from the hub."""

    def __init__(self, page: PageView, stats: StatsView) -> None:
        self._page = page
        self._stats = stats

    def state(self) -> PageState:
        return self._page.snapshot()

    def events(self) -> dict[str, int]:
        server, client = self._stats.counts()
        return {"srv_to_cli": server, "cli_to_srv": client}

    def close(self) -> None:
        self._page.close()
        self._stats.close()


class MemoryObserver:
    """The control page straight from the in-process hypervisor."""

    def __init__(self, page: memoryview) -> None:
        self._page = page

    def state(self) -> PageState:
        return PageState.decode(self._page)

    def events(self) -> None:
        """The hypervisor keeps no counts: the endpoints' reports say."""

    def close(self) -> None:
        self._page.release()


class Executor(Protocol):
    """Where endpoint instances run."""

    #: ``domid -> backend``, handed to every endpoint.
    backends: Callable[[int], Backend]

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]: ...

    def prepare(self) -> None:
        """Make the backend ready; endpoints are told to go only after this."""

    def kill(self, handle: Any) -> None: ...

    def reap(self, handle: Any) -> int | None: ...

    def observe(self, domid: int, ref: int, port: int) -> Observer: ...

    def leaks(self) -> list[Leak]: ...

    def close(self) -> None: ...


class ProcessExecutor:
    """Endpoints as spawned processes on the hub of a private, short-named run directory."""

    def __init__(self, limits: HubLimits) -> None:
        self.rundir = tempfile.mkdtemp(prefix="vs-")
        self.limits = limits
        self._ctx = multiprocess.get_context("spawn")
        self.backends = ShmBackends(self.rundir)

    def prepare(self) -> None:
        """Start the hub (with the scenario's limits) while the endpoint interpreters are
        still starting up."""
        ensure_hub(self.rundir, limits=self.limits)

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=endpoint_main, args=(job, theirs), name=f"vchansim-{job.name}", daemon=True
        )
        proc.start()
        theirs.close()  # only the child holds its end now: its exit is our end-of-file
        return ours, proc, proc.pid

    def kill(self, handle: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGKILL)

    def reap(self, handle: Any) -> int | None:
        handle.join(5.0)
        return handle.exitcode

    def observe(self, domid: int, ref: int, port: int) -> Observer:
        """Map the control page (INSPECT) and the event counters (EVT_STATS) read-only."""
        with open_hub(self.rundir, 0) as conn:
            page = map_grant(conn, domid, ref)
            try:
                return HubObserver(page, map_stats(conn, domid, port))
            except BaseException:
                page.close()
                raise

    def leaks(self) -> list[Leak]:
        """What the endpoints left in the hub or as processes, once the hub has caught
        up with their exits (see LEAK_KINDS)."""
        return find_leaks(self.rundir, timeout=LEAK_GRACE, kinds=LEAK_KINDS)

    def close(self) -> None:
        try:
            stop_hub(self.rundir)
        finally:
            shutil.rmtree(self.rundir, ignore_errors=True)


def _thread_main(job: EndpointJob, conn: Any) -> None:
    try:
        endpoint_main(job, conn)
    finally:
        conn.close()  # the runner's end-of-file, as a process exiting would give


class ThreadExecutor:
    """Endpoints as threads over a private in-process hypervisor (``memory`` backend),
    made with the scenario's grant and XenStore limits (it has no port limit)."""

    def __init__(self, limits: HubLimits) -> None:
        self.hypervisor = MemoryHypervisor(
            grant_limit=limits.grants, xenstore=XsStore(limits.xenstore)
        )
        self.backends = MemoryBackends(self.hypervisor)

    def prepare(self) -> None:
        """The hypervisor object is ready as soon as it exists."""

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]:
        ours, theirs = multiprocess.Pipe()
        thread = threading.Thread(
            target=_thread_main, args=(job, theirs), name=f"vchansim-{job.name}", daemon=True
        )
        thread.start()
        return ours, thread, None

    def kill(self, handle: Any) -> None:
        raise RuntimeError("threads cannot be killed; the scenario checker refuses this")

    def reap(self, handle: Any) -> int | None:
        handle.join(5.0)
        return None if handle.is_alive() else 0

    def observe(self, domid: int, ref: int, port: int) -> Observer:
        """The page straight from the hypervisor; event counts come from the endpoints."""
        with self.hypervisor.lock:
            grant = self.hypervisor.grants[(domid, ref)]
        view = memoryview(grant.pages)[grant.page * PAGE_SIZE : (grant.page + 1) * PAGE_SIZE]
        return MemoryObserver(view.toreadonly())

    def leaks(self) -> list[Leak]:
        return memory_leaks(self.hypervisor)

    def close(self) -> None:
        """Nothing outlives the hypervisor object."""


# -- sampling the control page -------------------------------------------------------------------


class Sampler:
    """Records the control page whenever it changes, at up to 1/SAMPLE_PERIOD per second.

    Event counts come from the observer when the backend keeps them, else from
    ``fallback`` (what the endpoints last reported)."""

    def __init__(
        self,
        observer: Observer,
        record: Callable[..., None],
        fallback: Callable[[], dict[str, int]],
    ) -> None:
        self._observer = observer
        self._record = record
        self._fallback = fallback
        self._last: tuple[PageState, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vchansim-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            self.sample()

    def sample(self) -> None:
        state = self._observer.state()
        events = self._observer.events() or self._fallback()
        if (state, events) == self._last:
            return
        self._last = (state, events)
        self._record(
            "ring",
            left={"cons": state.left_cons, "prod": state.left_prod},
            right={"cons": state.right_cons, "prod": state.right_prod},
            orders=[state.left_order, state.right_order],
            cli_live=state.cli_live,
            srv_live=state.srv_live,
            cli_notify=state.cli_notify,
            srv_notify=state.srv_notify,
            events=events,
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self._observer.close()


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """Everything a run produced, for the verdicts and the reports."""

    scenario: Scenario
    t0: float
    instances: list[Instance] = field(default_factory=list)
    duration: float = 0.0
    deadline_hit: bool = False
    leaks: list[Leak] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, name: str) -> list[Instance]:
        return [i for i in self.instances if i.name == name]


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
        self.pending: list[tuple[float, Any]] = []  # (due time, runner-side fault)
        self.restarts = 1 if scenario.faults_of(scenario.client.name, RestartFault) else 0
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
            self.send(inst, "go")

    def send(self, inst: Instance, command: str) -> None:
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
            self.note_limits()
            for inst in list(self.live.values()):
                self.release(inst)
            while self.live:
                now = time.monotonic()
                if now >= self.deadline:
                    self.expire()
                    break
                wake = min([self.deadline] + [due for due, _ in self.pending])
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

    def handle(self, inst: Instance, msg: dict[str, Any]) -> None:
        ev, t = msg.pop("ev"), msg["t"]
        inst.times.setdefault(ev, t)
        if ev == "progress":
            inst.progress = msg
        elif ev == "result":
            inst.result = msg
            self.record.notes += [
                f"{fault}: never fired, {inst.name} ended first" for fault in msg["unfired"]
            ]
        elif ev == "fault":
            inst.faults.append(msg)
            self.note("fault", t, endpoint=inst.name, instance=inst.number, **_without_t(msg))
            return
        elif ev == "listening":
            self.listening(msg)
        elif ev == "connected" and not self.connected and not self.s.endpoint(inst.name).is_server:
            self.connected = True
            self.schedule(t)
            self.let_program_server_go()
        self.note(
            "endpoint", t, endpoint=inst.name, instance=inst.number, event=ev, **_without_t(msg)
        )

    def listening(self, msg: dict[str, Any]) -> None:
        self.ring_ref = msg["ring_ref"]
        for inst in self.live.values():
            self.release(inst)
        if self.trace is not None:
            observer = self.executor.observe(self.s.server.domain, msg["ring_ref"], msg["port"])
            self.sampler = Sampler(
                observer,
                lambda kind, **f: self.note(kind, time.monotonic(), **f),
                self.event_counts,
            )

    def event_counts(self) -> dict[str, int]:
        """Events each side has sent so far (its notifications, spurious ones included)."""

        def sent(name: str) -> int:
            return sum(
                e.get("delivered", 0) + e.get("spurious", 0)
                for e in (i.events for i in self.record.of(name))
            )

        return {"srv_to_cli": sent(self.s.server.name), "cli_to_srv": sent(self.s.client.name)}

    def note_fault(self, fault: Fault, t: float, **fields: Any) -> None:
        """Trace a fault the runner committed."""
        self.note(
            "fault", t, endpoint=fault.endpoint, kind=fault.kind, fault=fault.describe(), **fields
        )

    def note_limits(self) -> None:
        """Record the exhaust faults: the machine was made with their limits."""
        now = time.monotonic()
        for fault in self.s.faults:
            if isinstance(fault, ExhaustFault):
                self.note_fault(fault, now, limit=fault.leave)

    def let_program_server_go(self) -> None:
        """Its client has connected: a program server may now move data (see
        vchansim.scenario.program)."""
        if self.s.server.is_program:
            for inst in self.live.values():
                if inst.name == self.s.server.name:
                    self.send(inst, "peer")

    def schedule(self, connected_at: float) -> None:
        """Runner-side faults are timed from the moment the channel connected."""
        for fault in self.s.faults:
            if _timed_by_runner(fault):
                self.pending.append((connected_at + (fault.trigger.at or 0.0), fault))

    def fire_due(self) -> None:
        now = time.monotonic()
        due = [f for when, f in self.pending if when <= now]
        self.pending = [(when, f) for when, f in self.pending if when > now]
        for fault in due:
            target = next((i for i in self.live.values() if i.name == fault.endpoint), None)
            self.note_fault(fault, now, skipped=target is None)
            if target is None:
                self.record.notes.append(f"{fault.describe()}: the endpoint had already ended")
                continue
            target.killed = "fault"
            target.times["killed"] = now
            self.kill(target)

    def kill(self, inst: Instance) -> None:
        """SIGKILL an endpoint as a fault.  A program endpoint's process kills its program
        (it alone can do so without racing the program's exit) and reports how it ended."""
        if self.s.endpoint(inst.name).is_program:
            self.send(inst, "kill")
        else:
            self.executor.kill(inst.handle)

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
                    self.send(other, "abort")
        if self.restart_due(inst):
            self.restarts -= 1
            self.start(inst.name, inst.number + 1)

    def restart_due(self, inst: Instance) -> bool:
        if self.closing or not self.restarts or inst.name != self.s.client.name:
            return False
        restarted_by_fault = any(f["kind"] == "restart" for f in inst.faults)
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
            [f for _, f in self.pending]
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
        done = sum(int(i.progress.get("received", 0)) for i in latest.values())
        origins = [origin for origin in map(self.s.origin, self.s.names) if origin]
        totals = [self.s.planned_send(origin) for origin in origins]
        total = sum(t for t in totals if t is not None) if None not in totals else None
        self.progress(Progress(self.s.name, done, total, now - self.record.t0, self.s.deadline))


def _without_t(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != "t"}


def make_executor(scenario: Scenario) -> ProcessExecutor | ThreadExecutor:
    """Threads for in-process backends, processes (over a private hub) otherwise."""
    limits = hub_limits(scenario)
    return ThreadExecutor(limits) if scenario.in_process else ProcessExecutor(limits)


def execute(
    scenario: Scenario,
    *,
    trace: TraceWriter | None = None,
    progress: ProgressFn | None = None,
) -> RunRecord:
    """Run ``scenario`` once and return what happened (not yet judged)."""
    executor = make_executor(scenario)
    try:
        record = Run(scenario, executor, trace, progress).run()
        record.leaks = executor.leaks()
    finally:
        executor.close()
    return record
