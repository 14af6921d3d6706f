"""Where a scenario's endpoints run: spawned processes on a private hub, threads on a
private in-process hypervisor, or processes of this domain on real Xen.

Over the ``shm`` backend every run gets a private run directory and hub, torn down at
the end.  The in-process ``memory`` backend runs the same endpoint code as threads of
this process: much faster to start, for property tests, but nothing can be killed there.
Over ``xen`` both endpoints are processes of the domain the runner runs in, on its
devices (``xen_executor.py``).

The emulated machine's limits (grants, ports, XenStore nodes per domain) are those of
Xen unless a fault lowers one (``Fault.limits``): the private hub, or the in-process
hypervisor, is made with the scenario's limits, so the endpoint meets the real error
where a guest would.  On real Xen the limits are the hypervisor's: such a scenario is
not applicable there (``xen_executor.obstacles``).  A scenario naming another backend
(a third party's) is refused with the reason, never quietly run on ``shm``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import multiprocess
from multiprocess import resource_tracker

from ..backends.base import Backend, Store
from ..backends.memory import MemoryBackend, MemoryHypervisor
from ..backends.shm import ShmBackend
from ..errors import ConfigError
from ..hub.launcher import ensure_hub, hub_running, open_hub, private_hub
from ..hub.limits import HubLimits
from ..hub.observe import map_grant, map_stats
from ..layout import PAGE_SIZE
from ..leaks import LASTING_KINDS, Leak, LeakKind, find_leaks, memory_leaks
from ..rundir import prepare_rundir
from ..xenstore.store import Xenstored
from .endpoint import EndpointJob
from .remote import AgentExecutor
from .sampler import HubObserver, MemoryObserver, Observer
from .spawned import Spawned, endpoint_main
from .spec import XEN_BACKEND, Scenario
from .xen_executor import XenExecutor

#: Seconds the leak check waits for the hub to notice processes that just exited.
LEAK_GRACE = 2.0
#: What the leak check looks for: not descriptors of this process, which are not the
#: endpoints' (they ran elsewhere) and may belong to whoever called the runner.
LEAK_KINDS = frozenset(LeakKind) - {LeakKind.FD}
#: Seconds between two looks at a shared hub's state while it catches up.
LEAK_POLL = 0.01


def hub_limits(scenario: Scenario) -> HubLimits:
    """Xen's limits, except what the scenario's faults change (see ``Fault.limits``)."""
    limits = HubLimits()
    for fault in scenario.faults:
        limits = fault.limits(limits)
    return limits


#: The backend whose endpoints run as processes on a hub of the runner's.
HUB_BACKEND = "shm"


def make_executor(
    scenario: Scenario, rundir: str | Path | None = None, client_domain: int | None = None
) -> Executor:
    """Threads for in-process backends, processes over a hub of our own (in ``rundir``,
    else a private directory) for ``shm``, processes of this domain for ``xen``;
    ConfigError naming why for any other.  With ``client_domain``, the client runs in
    that domain through its agent (``remote.py``)."""
    if client_domain is not None:
        return _through_agent(scenario, rundir, client_domain)
    backends = {scenario.server.backend, scenario.client.backend}
    limits = hub_limits(scenario)
    if scenario.in_process or backends == {XEN_BACKEND}:
        if rundir is not None:
            raise ConfigError(
                f"{scenario.name}: runs on the {scenario.server.backend} backend, which has "
                "no hub to put in a run directory"
            )
        return ThreadExecutor(limits) if scenario.in_process else XenExecutor(scenario)
    if backends == {HUB_BACKEND}:
        return ProcessExecutor(limits, rundir)
    other = min(backends - {HUB_BACKEND})
    raise ConfigError(
        f"{scenario.name}: scenarios run on the emulator ('shm', or 'memory' in process) "
        f"or on real Xen ('xen'), not on {other!r}: the runner sets the machine's limits, "
        "watches the ring and checks for leaks through the machine it knows"
    )


def _through_agent(scenario: Scenario, rundir: str | Path | None, domid: int) -> Executor:
    """The client through domain ``domid``'s agent; the server in a process of ours, on
    the agent's hub (shm) or on this domain's devices (xen).  Waits on the agent are
    bounded by half the scenario's deadline."""
    backends = {scenario.server.backend, scenario.client.backend}
    local: Executor
    store_of: Callable[[], Store]
    if backends == {XEN_BACKEND}:
        if rundir is not None:
            raise ConfigError(f"{scenario.name}: on xen there is no hub to put in {rundir}")
        xen = XenExecutor(scenario)
        local, store_of = xen, functools.partial(xen.backends(xen.domid).store)
    elif backends == {HUB_BACKEND}:
        shared = SharedHubExecutor(rundir)
        local, store_of = shared, functools.partial(ShmBackend(0, rundir=shared.rundir).store)
    else:
        raise ConfigError(
            f"{scenario.name}: an endpoint in another domain runs through that domain's "
            f"agent, on the shm emulator or on xen, not on {scenario.server.backend!r}"
        )
    try:
        return AgentExecutor(local, store_of, domid, scenario.deadline / 2)
    except BaseException:
        local.close()
        raise


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


class Executor(Protocol):
    """Where endpoint instances run."""

    @property
    def rundir(self) -> str | None:
        """The run directory of the hub the endpoints use (None: no hub, in process)."""

    @property
    def backends(self) -> Callable[[int], Backend]:
        """``domid -> backend``, handed to every endpoint (picklable)."""

    def placed(self, scenario: Scenario) -> Scenario:
        """``scenario`` with its endpoints where this machine puts them."""

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]: ...

    def prepare(self) -> None:
        """Make the backend ready; endpoints are told to go only after this."""

    def kill(self, handle: Any) -> None:
        """SIGKILL the endpoint ``handle`` runs."""

    def signal(self, handle: Any, signo: int) -> None:
        """Send ``signo`` to the endpoint's process (gone already: nothing happens)."""

    def reap(self, handle: Any) -> int | None: ...

    def observe(self, domid: int, ref: int, port: int) -> Observer: ...

    def leaks(self) -> list[Leak]: ...

    def close(self) -> None: ...


class ProcessExecutor(Spawned):
    """Endpoints as spawned processes on a hub of our own: in ``rundir`` (kept after the
    run, for an inspector to find) or in a private, short-named directory (removed)."""

    def __init__(self, limits: HubLimits, rundir: str | Path | None = None) -> None:
        if rundir is not None and hub_running(given := prepare_rundir(rundir)):
            raise ConfigError(
                f"a hub already serves {given.path}: a scenario starts its own, with its "
                "limits, and checks it for leaks"
            )
        super().__init__()
        self._hub = contextlib.ExitStack()
        self.rundir = str(self._hub.enter_context(private_hub(rundir)).path)
        self.limits = limits
        self.backends = ShmBackends(self.rundir)

    def placed(self, scenario: Scenario) -> Scenario:
        """The hub plays every domain: endpoints are in the domains the scenario names."""
        return scenario

    def prepare(self) -> None:
        """Start the hub (with the scenario's limits) while the endpoint interpreters are
        still starting up."""
        ensure_hub(self.rundir, limits=self.limits)

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
        """Stop the hub; a private run directory goes with it."""
        self._hub.close()


class SharedHubExecutor(ProcessExecutor):
    """Endpoints as spawned processes on the hub that already serves ``rundir`` -- the
    one another domain's agent is on (``remote.py``).  The hub is not ours: it is not
    started, limited or stopped here, and the leak check blames only what appeared in it
    since the run was placed, in every domain."""

    def __init__(self, rundir: str | Path | None) -> None:
        checked = prepare_rundir(rundir)
        if not hub_running(checked):
            raise ConfigError(
                f"no hub serves {checked.path}: an endpoint in another domain runs on the "
                f"hub of that domain's agent (vchansim agent --rundir {checked.path})"
            )
        Spawned.__init__(self)
        self._hub = contextlib.ExitStack()
        self.rundir = str(checked.path)
        self.limits = HubLimits()
        self.backends = ShmBackends(self.rundir)
        self._before: frozenset[str] = frozenset()

    def placed(self, scenario: Scenario) -> Scenario:
        """As the scenario says; what the hub holds now is the leak check's baseline.  The
        process start method's resource tracker (a helper of this process for as long
        as it lives, with its environment) is started first, to be in the baseline."""
        resource_tracker.ensure_running()
        self._before = frozenset(map(str, find_leaks(self.rundir, kinds=LEAK_KINDS)))
        return scenario

    def prepare(self) -> None:
        """The hub runs already."""

    def leaks(self) -> list[Leak]:
        """What the hub holds that it did not at the start, once it has caught up with
        the endpoints' exits (or LEAK_GRACE passed)."""
        deadline = time.monotonic() + LEAK_GRACE
        while True:
            found = [
                leak
                for leak in find_leaks(self.rundir, kinds=LEAK_KINDS)
                if str(leak) not in self._before
            ]
            if all(leak.kind in LASTING_KINDS for leak in found) or time.monotonic() > deadline:
                return found
            time.sleep(LEAK_POLL)


def _thread_main(job: EndpointJob, conn: Any) -> None:
    try:
        endpoint_main(job, conn)
    finally:
        conn.close()  # the runner's end-of-file, as a process exiting would give


class ThreadExecutor:
    """Endpoints as threads over a private in-process hypervisor (``memory`` backend),
    made with the scenario's limits."""

    #: No hub, so no run directory for an inspector to look at.
    rundir: str | None = None

    def __init__(self, limits: HubLimits) -> None:
        self.hypervisor = MemoryHypervisor(
            grant_limit=limits.grants, port_limit=limits.ports, xenstore=Xenstored(limits.xenstore)
        )
        self.backends = MemoryBackends(self.hypervisor)

    def placed(self, scenario: Scenario) -> Scenario:
        """The hypervisor plays every domain: endpoints are in the scenario's domains."""
        return scenario

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

    def signal(self, handle: Any, signo: int) -> None:
        raise RuntimeError("threads cannot be signalled; the scenario checker refuses this")

    def reap(self, handle: Any) -> int | None:
        handle.join(5.0)
        return None if handle.is_alive() else 0

    def observe(self, domid: int, ref: int, port: int) -> Observer:
        """The page straight from the hypervisor; event counts come from the endpoints."""
        with self.hypervisor.lock:
            grant = self.hypervisor.grants.lookup(domid, ref)
        view = memoryview(grant.pages)[grant.page * PAGE_SIZE : (grant.page + 1) * PAGE_SIZE]
        return MemoryObserver(view.toreadonly())

    def leaks(self) -> list[Leak]:
        return memory_leaks(self.hypervisor)

    def close(self) -> None:
        """Nothing outlives the hypervisor object."""
