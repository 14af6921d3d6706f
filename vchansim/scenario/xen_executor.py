"""Scenarios on real Xen: both endpoints as processes of the domain the runner runs in.

On Xen a backend is the domain it runs in (``XenBackend`` refuses any other id), so a
scenario's two endpoints are both in this domain -- dom0 offering a channel to itself,
which Linux's gntalloc and gntdev allow -- whatever domain ids the file gives them for
the emulator.  They run as spawned processes (``spawned.py``) on the real devices.

What only the emulator can do makes a scenario *not applicable* here, with the reason
(``obstacles``): a program endpoint (it runs on the emulator's drop-in libraries) and a
fault that lowers the machine's limits (on Xen they are the hypervisor's).  Such a
scenario is reported so, never run and never passed.

The leak check (``xenleaks.GroupSnapshot``): before the endpoints start, what every
process of the runner's process group holds of ``/dev/xen`` and what XenStore keeps
under the channel's path; after the run, anything new there, and any endpoint process
still alive.  A process that exited holds nothing, so what is left on Xen is a live
holder or a key.  The keys a run left (a killed server's) are removed afterwards, as a
fresh hub would start without them on the emulator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.xen import XenBackend
from ..errors import ConfigError, StoreError
from ..leaks import Leak, LeakKind
from ..xenleaks import GroupSnapshot
from .endpoint import EndpointJob
from .sampler import Observer
from .spawned import Spawned
from .spec import XEN_BACKEND, Scenario

#: Where the xen backend's devices are.
XEN_DEVICES = Path("/dev/xen")


def require_xen(scenario: str = "") -> None:
    """Refuse, with one line (naming ``scenario`` if given), to run on real Xen where
    there is none."""
    if not XEN_DEVICES.is_dir():
        where = f"{scenario}: " if scenario else ""
        raise ConfigError(
            f"{where}backend 'xen' needs {XEN_DEVICES} (a Xen domain's devices), absent "
            "here; scenarios are never run on the emulator instead"
        )


def on_xen(scenario: Scenario) -> bool:
    return XEN_BACKEND in {scenario.server.backend, scenario.client.backend}


def obstacles(scenario: Scenario, *, remote: bool = False) -> list[str]:
    """Why ``scenario`` cannot mean on real Xen -- or, ``remote``, with its client in
    another domain through an agent -- what it means on the emulator's own machine
    (empty: it can, or it runs there)."""
    if not (remote or on_xen(scenario)):
        return []
    found = [
        f"{spec.name} is a program endpoint, which runs on the emulator's drop-in libraries"
        for spec in scenario.endpoints
        if spec.is_program
    ]
    for fault in scenario.faults:
        why = fault.emulator_only
        if why is not None and not on_xen(scenario):
            why = "it lowers the machine's limits, and the agent's hub runs with its own"
        if why is not None:
            found.append(f"{fault.describe()}: {why}")
    return found


@dataclass(frozen=True)
class XenBackends:
    """Picklable ``domid -> backend`` for endpoint processes on real Xen."""

    def __call__(self, domid: int) -> Backend:
        return XenBackend(domid)


class XenExecutor(Spawned):
    """Endpoints as spawned processes of this domain, on its Xen devices."""

    #: No hub, so no run directory for an inspector to look at.
    rundir: str | None = None

    def __init__(self, scenario: Scenario) -> None:
        require_xen(scenario.name)
        super().__init__()
        # A domain of a slow machine (Xen under an emulated CPU, whose time bounds the
        # deadline factor stretched) may take seconds to tear a process down.
        self.reap_wait = max(self.reap_wait, scenario.deadline / 10)
        self.backends = XenBackends()
        own = XenBackend()
        self.domid = own.domid
        self._store = own.store()
        self._procs: list[Any] = []
        self._before: GroupSnapshot | None = None

    def placed(self, scenario: Scenario) -> Scenario:
        """Both endpoints in this domain; the leak check's snapshot is taken now, before
        either starts."""
        placed = scenario.in_domain(self.domid)
        self._before = GroupSnapshot.take(self._store, placed.client_path)
        return placed

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]:
        conn, proc, pid = super().start(job)
        self._procs.append(proc)
        return conn, proc, pid

    def prepare(self) -> None:
        """The hypervisor is there already."""

    def observe(self, domid: int, ref: int, port: int) -> Observer:
        raise ConfigError("a trace samples the ring through the emulator's hub; not on xen")

    def leaks(self) -> list[Leak]:
        """Endpoint processes still alive, Xen devices a process of our group holds that
        it did not before, and XenStore values written under the channel's path."""
        found = [
            Leak(LeakKind.PROCESS, f"endpoint process {proc.pid} ({proc.name}) still runs")
            for proc in self._procs
            if proc.is_alive()
        ]
        if self._before is not None:
            found += self._before.leaks(self._store)
        return found

    def close(self) -> None:
        """Remove what the run left under the channel's path, then disconnect."""
        try:
            if self._before is not None:
                for path in self._before.written_since(self._store):
                    self._remove(path)
        finally:
            self._store.close()

    def _remove(self, path: str) -> None:
        with contextlib.suppress(StoreError):  # gone meanwhile
            self._store.rm(path)
