"""The endpoint's event handle, counted and open to tampering: the harness's backend.

:class:`TappedBackend` wraps the backend an endpoint uses so that every event handle it
opens goes through an :class:`EventTap`, which counts notifications and wake-ups and
lets fault rules (:class:`EventRule`) drop, delay, duplicate or add events.  Everything
else the backend and its handles do is passed through untouched.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..backends.base import Backend, DirectWait, Events, Grants, Store
from ..statspage import Blocked

if TYPE_CHECKING:
    from .faults.base import Fault

Send = Callable[[], None]
Later = Callable[[float, Send], None]


class EventRule(Protocol):
    """One fault's say over the notifications an endpoint sends."""

    active: bool

    @property
    def fault(self) -> Fault:
        """The fault that put it there."""

    def claims(self) -> bool:
        """Whether it acts on this notification (every active rule sees every one)."""

    def tamper(self, send: Send, later: Later) -> None:
        """Act on a notification it claimed: ``send()`` delivers it now, ``later(delay,
        send)`` then; not calling either drops it."""

    @property
    def spurious_rate(self) -> float:
        """Extra events per second it sends while active (0: none)."""


@dataclass
class EventCounts:
    """What went through one endpoint's event handle."""

    notifies: int = 0  # notifications the channel asked to send
    delivered: int = 0  # ... that actually went to the peer (after faults)
    wakeups: int = 0  # events the channel received
    timeouts: int = 0  # waits that ended with no event (a wake-up that never came?)
    tampered: int = 0  # notifications a fault dropped, delayed, or duplicated
    spurious: int = 0  # extra events a fault sent


class EventTap:
    """Counts an endpoint's events and applies its event rules.

    A rule active from the start acts on the first notification (the client's connect
    kick included); others wait for :meth:`activate`.
    """

    def __init__(self, rules: Sequence[EventRule] = ()) -> None:
        self.counts = EventCounts()
        self.rules = list(rules)
        self.handles: list[TappedEvents] = []

    def activate(self, fault: Fault) -> None:
        for rule in self.rules:
            if rule.fault is fault:
                rule.active = True
        for handle in self.handles:
            handle.start_spurious()

    def wrap(self, inner: Events) -> TappedEvents:
        handle = TappedEvents(inner, self)
        self.handles.append(handle)
        return handle

    def claimant(self) -> EventRule | None:
        """The rule that acts on the next notification, if any: the first (in the
        scenario's order) of those that claim it."""
        claiming = [rule for rule in self.rules if rule.claims()]
        return claiming[0] if claiming else None

    def spurious_rate(self) -> float:
        return max((r.spurious_rate for r in self.rules if r.active), default=0.0)


class Timers:
    """One thread running callbacks at given times (for delayed notifications)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Send]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="vchansim-delay", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Send) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, fn))
            self._cond.notify()

    def _loop(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, fn = self._heap[0]
                left = when - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                with contextlib.suppress(OSError):
                    fn()

    def stop(self) -> None:
        """Stop; callbacks not yet due are dropped (as events to a closed port would be)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()


class TappedEvents(Events):
    """An event handle with counting and event rules, otherwise the inner handle.

    It overrides every method of :class:`Events`, the optional abilities included, so
    that an endpoint wakes exactly as it would on the bare handle (through ``consume``).
    """

    def __init__(self, inner: Events, tap: EventTap) -> None:
        self._inner = inner
        self._tap = tap
        self._port = 0
        self._timers: Timers | None = None
        self._spurious: threading.Thread | None = None
        self._stop = threading.Event()

    def bind_unbound(self, remote: int) -> int:
        self._port = self._inner.bind_unbound(remote)
        self.start_spurious()
        return self._port

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        self._port = self._inner.bind_interdomain(remote, remote_port)
        self.start_spurious()
        return self._port

    def notify(self, port: int) -> None:
        counts = self._tap.counts
        counts.notifies += 1
        rule = self._tap.claimant()
        if rule is None:
            self._send(port)
            return
        counts.tampered += 1
        rule.tamper(lambda: self._send(port), self._later)

    def _later(self, delay: float, send: Send) -> None:
        if self._timers is None:
            self._timers = Timers()
        self._timers.call_later(delay, send)

    def _send(self, port: int) -> None:
        self._inner.notify(port)
        self._tap.counts.delivered += 1

    def start_spurious(self) -> None:
        """Start the spurious-event thread once a port exists and a rule asks for it."""
        rate = self._tap.spurious_rate()
        if not rate or not self._port or self._spurious is not None:
            return
        self._spurious = threading.Thread(
            target=self._spurious_loop, args=(1.0 / rate,), name="vchansim-spurious", daemon=True
        )
        self._spurious.start()

    def _spurious_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self._inner.notify(self._port)
            except OSError:
                return
            self._tap.counts.spurious += 1

    def pending(self, timeout: float | None = None) -> int | None:
        return self._woke(self._inner.pending(timeout), timeout)

    def consume(self, timeout: float | None = None) -> int | None:
        return self._woke(self._inner.consume(timeout), timeout)

    def _woke(self, port: int | None, timeout: float | None) -> int | None:
        """Count a wait's outcome: an event, or a timeout that ended a wait."""
        if port is not None:
            self._tap.counts.wakeups += 1
        elif timeout:
            self._tap.counts.timeouts += 1
        return port

    def unmask(self, port: int) -> None:
        self._inner.unmask(port)

    def waiting(self, port: int, blocked: Blocked) -> None:
        self._inner.waiting(port, blocked)

    def direct_wait(self, port: int) -> DirectWait | None:
        """Asked of the inner handle like every ability, but never passed on: an end that
        kicked and slept in the core would bypass the tap's counts and tampering."""
        self._inner.direct_wait(port)
        return None

    def unbind(self, port: int) -> None:
        self._inner.unbind(port)

    def fileno(self) -> int:
        return self._inner.fileno()

    def close(self) -> None:
        self._stop.set()
        if self._spurious is not None:
            self._spurious.join()
        if self._timers is not None:
            self._timers.stop()
        self._inner.close()


class TappedBackend(Backend):
    """A backend whose event handles go through an :class:`EventTap`."""

    name = "tapped"

    def __init__(self, inner: Backend, tap: EventTap) -> None:
        super().__init__(inner.domid)
        self.inner = inner
        self.tap = tap
        self.supports_loopback = inner.supports_loopback  # type: ignore[misc]

    def grants(self) -> Grants:
        return self.inner.grants()

    def events(self) -> Events:
        return self.tap.wrap(self.inner.events())

    def store(self) -> Store:
        return self.inner.store()

    def close(self) -> None:
        self.inner.close()
