"""The trace's view of the control page: sampled whenever it changes.

An :class:`Observer` reads the page (and the event counters, where the backend keeps
them) read-only; the :class:`Sampler` turns its changes into ``ring`` trace records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..hub.observe import PageView, StatsView
from ..layout import PageState

#: How often the trace sampler looks at the control page (it records only changes).
SAMPLE_PERIOD = 0.001


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
