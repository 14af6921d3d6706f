"""The trace's view of the control page: sampled whenever it changes.

An :class:`Observer` reads the page (and the event counters and wait words, where the
backend keeps them) read-only; the :class:`Sampler` turns its changes into ``ring`` trace
records.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..hub.observe import PageView, StatsView
from ..layout import PageState
from ..statspage import Wait
from ..trace import RingSample, ring_fields

#: How often the trace sampler looks at the control page (it records only changes).
SAMPLE_PERIOD = 0.001
#: Seconds between ring records while an end sleeps and nothing else changes, so that a
#: replay sees the sleep grow old.
ASLEEP_PERIOD = 0.05


class Observer(Protocol):
    """What the trace sampler watches, read-only: the control page, and the channel's
    event counters where the backend keeps them."""

    def state(self) -> PageState: ...

    def events(self) -> dict[str, int] | None:
        """Events sent so far by each side, or None if only the endpoints know."""

    def waits(self) -> tuple[Wait | None, Wait | None] | None:
        """What the server and the client sleep in, or None if the backend cannot say."""

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

    def waits(self) -> tuple[Wait | None, Wait | None]:
        return self._stats.waits()

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

    def waits(self) -> None:
        """Nor wait words."""

    def close(self) -> None:
        self._page.release()


class Sampler:
    """Records the control page whenever it changes, at up to 1/SAMPLE_PERIOD per second,
    and every ASLEEP_PERIOD while an end sleeps.

    Event counts come from the observer when the backend keeps them, else from
    ``fallback`` (what the endpoints last reported).  ``record`` gets the time the page
    was read (``time.monotonic()``) with each record: a sleep's age is measured at that
    same instant, so a replay gets the sleep's start back exactly however late the
    record is written (a thread waiting for the GIL under load is milliseconds late,
    and a start that moves looks like a new sleep)."""

    def __init__(
        self,
        observer: Observer,
        record: Callable[..., None],
        fallback: Callable[[], dict[str, int]],
    ) -> None:
        self._observer = observer
        self._record = record
        self._fallback = fallback
        self._last: tuple[PageState, Any, Any] | None = None
        self._recorded = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vchansim-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            self.sample()

    def sample(self) -> None:
        state = self._observer.state()
        events = self._observer.events() or self._fallback()
        waits = self._observer.waits()
        now = time.monotonic()
        asleep = waits is not None and waits != (None, None)
        if (state, events, waits) == self._last and not (
            asleep and now - self._recorded >= ASLEEP_PERIOD
        ):
            return
        self._last = (state, events, waits)
        self._recorded = now
        counts = (events["srv_to_cli"], events["cli_to_srv"])
        self._record("ring", now, **ring_fields(RingSample.of(now, state, counts, waits)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self._observer.close()
