"""Faults on a caller's own channels and processes (the pytest plugin's ``vchan_env.faults``).

A scenario's runner aims the fault kinds of ``faults/`` at its own endpoints.  Here the
same fault objects act on what a test opened itself: a process to kill or stop, a
:class:`~vchansim.channel.Vchan` whose control page to corrupt, the event handles of one
domain's channels to tamper with, the machine's limits to lower before it starts.  Each
method builds the fault a scenario file would name and lets it act through a small
target, so a fault behaves the same in a scenario and in a user's test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..channel import Vchan
from ..errors import ConfigError
from ..hub.limits import HubLimits
from .faults.base import Fault
from .faults.corrupt import CorruptFault
from .faults.exhaust import EXHAUST_RESOURCES, ExhaustFault
from .faults.kill import KillFault
from .faults.notify import NOTIFY_ACTIONS, NotifyFault, NotifyRule
from .faults.pause import PauseFault
from .page import PAGE_FIELDS
from .spec import Trigger
from .tap import EventTap


class HasPid(Protocol):
    """A process handle: ``subprocess.Popen``, ``multiprocessing.Process``..."""

    @property
    def pid(self) -> int | None: ...


Process = int | HasPid


def _pid(process: Process) -> int:
    pid = process if isinstance(process, int) else process.pid
    if pid is None or pid <= 0:
        raise ConfigError(f"{process!r} is not a running process")
    return pid


class _ProcessTarget:
    """A fault's runner target over one process of the caller's."""

    def __init__(self, pid: int, faults: Faults, fault: Fault) -> None:
        self.pid = pid
        self._faults = faults
        self._fault = fault

    def record(self, **detail: Any) -> None:
        self._faults.log.append((self._fault.describe(), {"pid": self.pid, **detail}))

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def signal(self, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        self._faults.later(delay, action)


class Faults:
    """Fault injection on one test's machine, through the fault kinds of scenarios.

    ``apply_limits`` (from the machine) makes it start with lower limits, or refuses
    once it is in use.  Everything still pending -- a stopped process waiting for its
    SIGCONT -- is settled by :meth:`close`.
    """

    def __init__(self, apply_limits: Callable[[HubLimits], None]) -> None:
        self._apply_limits = apply_limits
        self.limits = HubLimits()
        self._taps: dict[int, EventTap] = {}
        self._pending: list[tuple[threading.Timer, Callable[[], None], threading.Event]] = []
        #: What fired, in order: (the fault's description, its details).
        self.log: list[tuple[str, dict[str, Any]]] = []

    def tap(self, domid: int) -> EventTap:
        """The event tap every channel of domain ``domid`` goes through."""
        return self._taps.setdefault(domid, EventTap())

    # -- processes ---------------------------------------------------------------------------
    def kill(self, process: Process) -> None:
        """SIGKILL ``process`` (a pid, or anything with ``.pid``), as a domain's death:
        its grants and ports are released by the emulator, and its peers see the close."""
        fault = KillFault("process", Trigger(at=0.0))
        fault.act_from_runner(_ProcessTarget(_pid(process), self, fault))

    def stall(self, process: Process, seconds: float) -> None:
        """Freeze ``process`` (SIGSTOP) and let it go on (SIGCONT) ``seconds`` later: a
        peer that stops answering without closing, as a descheduled domain does."""
        fault = PauseFault("process", Trigger(at=0.0), duration=seconds)
        fault.act_from_runner(_ProcessTarget(_pid(process), self, fault))

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` in ``delay`` seconds, or at :meth:`close` if that comes first."""
        ran = threading.Event()

        def run() -> None:
            ran.set()
            action()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        self._pending.append((timer, action, ran))
        timer.start()

    # -- notifications -----------------------------------------------------------------------
    def notifications(
        self,
        domid: int,
        action: str,
        *,
        every: int = 1,
        probability: float = 1.0,
        count: int = 0,
        delay: float = 0.05,
        rate: float = 100.0,
        seed: int = 0,
    ) -> NotifyRule:
        """Tamper with the notifications domain ``domid``'s channels send, from now on:
        ``drop``, ``duplicate``, ``delay`` (by ``delay`` s) every ``every``-th one (with
        ``probability``, at most ``count`` of them, 0 = no limit), or send ``spurious``
        events at ``rate`` per second.  Returns the rule; its ``applied`` counts them."""
        if action not in NOTIFY_ACTIONS:
            raise ConfigError(f"notification action {action!r}: one of {', '.join(NOTIFY_ACTIONS)}")
        fault = NotifyFault(
            f"dom{domid}",
            Trigger(),
            action=action,
            every=every,
            probability=probability,
            count=count,
            delay=delay,
            rate=rate,
        )
        tap = self.tap(domid)
        rule = fault.event_rule(seed, fault.endpoint, len(tap.rules))
        tap.rules.append(rule)
        tap.activate(fault)
        self.log.append((fault.describe(), {}))
        return rule

    # -- the control page --------------------------------------------------------------------
    def corrupt(
        self, chan: Vchan, field: str, *, value: int | None = None, add: int | None = None
    ) -> dict[str, Any]:
        """Write ``field`` of ``chan``'s control page (``left.cons``, ``right.prod``,
        ``srv_live``... see docs/scenarios.md) through its own mapping, as a hostile or
        broken peer would: store ``value``, or ``add`` to it.  Returns old and new value."""
        if field not in PAGE_FIELDS:
            raise ConfigError(f"control page field {field!r}: one of {', '.join(PAGE_FIELDS)}")
        if (value is None) == (add is None):
            raise ConfigError("corrupt: give exactly one of value (store) or add (increment)")
        fault = CorruptFault("channel", Trigger(at=0.0), field=field, value=value, add=add)
        detail = fault.apply(chan)
        self.log.append((fault.describe(), detail))
        return detail

    # -- the machine's limits ----------------------------------------------------------------
    def exhaust(self, resource: str, leave: int = 0) -> None:
        """Give every domain only ``leave`` more ``grants``, ``ports`` or ``xenstore``
        nodes, so the real error (ENOSPC, E2BIG...) meets the code where a guest would.
        Only before the test's machine is first used (``vchan_env.domain``)."""
        if resource not in EXHAUST_RESOURCES:
            raise ConfigError(
                f"exhaust resource {resource!r}: one of {', '.join(EXHAUST_RESOURCES)}"
            )
        fault = ExhaustFault("machine", Trigger(), resource=resource, leave=leave)
        limits = fault.limits(self.limits)
        self._apply_limits(limits)
        self.limits = limits
        self.log.append((fault.describe(), {"limit": leave}))

    def close(self) -> None:
        """Run what is still pending now (a stopped process gets its SIGCONT)."""
        for timer, action, ran in self._pending:
            timer.cancel()
            if not ran.is_set():
                action()
        self._pending.clear()
