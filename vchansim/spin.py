"""Brief busy-polling of a shared index before sleeping on the event channel.

A blocked reader or writer normally sleeps on the event channel until the peer's kick
arrives: a cross-process wake-up costs tens of microseconds, and small rings fill and
empty so often that those wake-ups, not copying, bound their throughput.  Polling the
shared index for a few microseconds first usually sees the peer's progress without any
wake-up.  The notify bits are left exactly as the protocol sets them -- the request is
posted before polling starts -- so a peer (C or Python) still gets and sends every event
it would otherwise; a spin that succeeds merely leaves one event to be consumed later.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import ConfigError

#: The adaptive policy never spins longer than this (microseconds).
ADAPTIVE_MAX_US = 100.0
#: Weight of the newest observation in the adaptive policy's running average.
_EWMA_WEIGHT = 0.125


class SpinPolicy:
    """``"off"`` (the default, as libxenvchan), ``"adaptive"`` or a fixed budget in µs.

    The adaptive policy keeps a running average of how long blocking waits actually
    last, whether they ended in a spin or in a wake-up, and spins for twice that when it
    is short enough (under 100 µs): a peer that keeps pace is caught without sleeping, a
    slow or idle one costs nothing, and it notices when the peer speeds up again because
    it keeps measuring the waits it sleeps through.
    """

    __slots__ = ("_adaptive", "_average_us", "_budget_us")

    def __init__(self, setting: str | float = "off") -> None:
        self._average_us = ADAPTIVE_MAX_US / 4
        if setting == "off":
            self._adaptive, self._budget_us = False, 0.0
        elif setting == "adaptive":
            self._adaptive, self._budget_us = True, 0.0
            self._retune()
        elif isinstance(setting, int | float) and not isinstance(setting, bool) and setting >= 0:
            self._adaptive, self._budget_us = False, float(setting)
        else:
            raise ConfigError(
                f"spin must be 'off', 'adaptive' or a budget in microseconds >= 0, not {setting!r}"
            )

    @property
    def setting(self) -> str | float:
        if self._adaptive:
            return "adaptive"
        return self._budget_us if self._budget_us else "off"

    @property
    def budget_us(self) -> float:
        """The budget the next spin will use."""
        return self._budget_us

    def spin(self, ready: Callable[[], bool]) -> bool:
        """Poll ``ready`` for up to the budget; say whether it became true."""
        if not self._budget_us:
            return False
        clock = time.perf_counter
        start = clock()
        end = start + self._budget_us * 1e-6
        while True:
            if ready():
                self.observe((clock() - start) * 1e6)
                return True
            if clock() >= end:
                return False

    def observe(self, waited_us: float) -> None:
        """Record how long a blocking wait lasted in all (adaptive policy only)."""
        if self._adaptive:
            self._average_us += _EWMA_WEIGHT * (waited_us - self._average_us)
            self._retune()

    def _retune(self) -> None:
        wanted = 2 * self._average_us
        self._budget_us = wanted if wanted <= ADAPTIVE_MAX_US else 0.0
