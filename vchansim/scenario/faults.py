"""Faults that act inside an endpoint: its event handle, its view of the page, its domain.

The runner does what can be done from outside (SIGKILL at a time); everything else
happens here, in the endpoint's own process, so that it lands at an exact point of the
endpoint's work -- a byte offset of its stream -- and a rerun with the same seed repeats
it.  :class:`EventTap` stands between the channel and its event handle; the hogs take a
domain's grants or XenStore quota the way a greedy neighbour process would.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, Events, Grants, Store
from ..channel import Vchan
from ..statspage import Blocked
from .model import PAGE_FIELDS, CorruptFault, NotifyFault, Trigger

# -- the control page ---------------------------------------------------------------------


def control_page(chan: Vchan) -> memoryview:
    """The endpoint's own mapping of the shared control page.

    A hostile peer writes exactly this memory.  ``Vchan`` keeps it private; reading it
    here, in one place, keeps the rest of the harness on the public API.
    """
    return chan._page


def _field_view(page: memoryview, name: str) -> memoryview:
    offset, width = PAGE_FIELDS[name]
    return page[offset : offset + width].cast({1: "B", 2: "H", 4: "I"}[width])


def corrupt(chan: Vchan, fault: CorruptFault) -> dict[str, Any]:
    """Apply ``fault`` to the page; returns the old and new value for the record."""
    view = _field_view(control_page(chan), fault.field)
    try:
        old = view[0]
        mask = (1 << (8 * view.itemsize)) - 1
        new = fault.value if fault.value is not None else (old + (fault.add or 0)) & mask
        view[0] = new
    finally:
        view.release()
    return {"field": fault.field, "old": old, "new": new}


def set_indices(chan: Vchan, index: int) -> None:
    """Start all four ring indices at ``index``, as a long-lived channel would have them.

    Only meaningful on a server before its client connects: both rings stay empty.
    """
    for name in ("left.cons", "left.prod", "right.cons", "right.prod"):
        view = _field_view(control_page(chan), name)
        view[0] = index
        view.release()


# -- event notifications --------------------------------------------------------------------


@dataclass
class EventCounts:
    """What went through one endpoint's event handle."""

    notifies: int = 0  # notifications the channel asked to send
    delivered: int = 0  # ... that actually went to the peer (after faults)
    wakeups: int = 0  # events the channel received
    timeouts: int = 0  # waits that ended with no event (a wake-up that never came?)
    tampered: int = 0  # notifications a fault dropped, delayed, or duplicated
    spurious: int = 0  # extra events a fault sent


@dataclass
class _Rule:
    """One notify fault and its bookkeeping."""

    fault: NotifyFault
    rng: random.Random
    active: bool = False
    seen: int = 0
    applied: int = 0

    def claims(self) -> bool:
        """Whether this notification is one the fault acts on (deterministic per seed).

        Every active rule sees every notification, so ``every`` counts all of them."""
        if not self.active or self.fault.action == "spurious":
            return False
        self.seen += 1
        if self.seen % self.fault.every:
            return False
        if self.fault.count and self.applied >= self.fault.count:
            return False
        return self.rng.random() < self.fault.probability


class EventTap:
    """Counts an endpoint's events and applies its notify faults.

    Rules with no trigger are active from the first notification (the client's connect
    kick included); triggered ones wait for :meth:`activate`.
    """

    def __init__(self, faults: Sequence[NotifyFault], seed: int, name: str) -> None:
        self.counts = EventCounts()
        self.rules = [
            _Rule(f, random.Random(f"{seed}/{name}/notify/{i}"), active=f.trigger == Trigger())
            for i, f in enumerate(faults)
        ]
        self.handles: list[TappedEvents] = []

    def activate(self, fault: NotifyFault) -> None:
        for rule in self.rules:
            if rule.fault is fault:
                rule.active = True
        for handle in self.handles:
            handle.start_spurious()

    def wrap(self, inner: Events) -> TappedEvents:
        handle = TappedEvents(inner, self)
        self.handles.append(handle)
        return handle

    def action(self) -> str | None:
        """The fault action for the next notification, if any: the first rule (in the
        scenario's order) that claims it decides."""
        claiming = [rule for rule in self.rules if rule.claims()]
        if not claiming:
            return None
        claiming[0].applied += 1
        return claiming[0].fault.action

    def spurious_rate(self) -> float:
        rates = [r.fault.rate for r in self.rules if r.active and r.fault.action == "spurious"]
        return max(rates, default=0.0)

    def delay(self) -> float:
        return max((r.fault.delay for r in self.rules if r.fault.action == "delay"), default=0.0)


class _Timers:
    """One thread running callbacks at given times (for delayed notifications)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="vchansim-delay", daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, fn))
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


class TappedEvents:
    """An :class:`~vchansim.backends.base.Events` handle with counting and notify faults."""

    def __init__(self, inner: Events, tap: EventTap) -> None:
        self._inner = inner
        self._tap = tap
        self._port = 0
        self._timers: _Timers | None = None
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
        action = self._tap.action()
        if action is None:
            self._send(port)
            return
        counts.tampered += 1
        if action == "duplicate":
            self._send(port)
            self._send(port)
        elif action == "delay":
            if self._timers is None:
                self._timers = _Timers()
            self._timers.call_at(time.monotonic() + self._tap.delay(), lambda: self._send(port))

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
        port = self._inner.pending(timeout)
        if port is not None:
            self._tap.counts.wakeups += 1
        elif timeout:
            self._tap.counts.timeouts += 1
        return port

    def unmask(self, port: int) -> None:
        self._inner.unmask(port)

    def waiting(self, port: int, blocked: Blocked) -> None:
        """Pass the channel's wait announcements on, where the handle keeps them."""
        say = getattr(self._inner, "waiting", None)
        if say is not None:
            say(port, blocked)

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
