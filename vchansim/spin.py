"""Brief busy-polling of a shared index before sleeping on the event channel.

A blocked reader or writer normally sleeps on the event channel until the peer's kick
arrives: a cross-process wake-up costs several microseconds in C and more in Python, and
small rings fill and empty so often that those wake-ups, not copying, bound their
throughput.  Polling the shared index for a few microseconds first usually sees the
peer's progress without any wake-up.

The notify protocol stays whole: a spinning end asks for nothing while it polls (so a
peer that keeps pace sends no events at all), and when the spin runs out it arms its
notify bit, re-checks the ring and sleeps exactly as libxenvchan does.  The peer -- C or
Python -- still honours every request it sees, and is kicked for every one it made.

On a busy machine the peer may be waiting for the very CPU the spinner holds, so the
loop yields the CPU between polls (``sched_yield``): with nothing else to run that
returns at once, and with the peer queued on our CPU it lets the peer run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .errors import ConfigError

#: The adaptive policy never spins longer than this (microseconds).
ADAPTIVE_MAX_US = 100.0
#: Weight of the newest observation in the adaptive policy's running average.
_EWMA_WEIGHT = 0.125
#: Most waits the adaptive policy lets pass between two probing spins.
PROBE_INTERVAL_MAX = 1024


class SpinPolicy:
    """``"off"`` (the default, as libxenvchan), ``"adaptive"`` or a fixed budget in µs.

    The adaptive policy keeps a running average of how long blocking waits actually
    last, whether they ended in a spin or in a wake-up, and spins for twice that when it
    is short enough (under 100 µs): a peer that keeps pace is caught without sleeping, a
    slow or idle one costs nothing.  The waits it sleeps through overstate the peer's
    pace by the wake-up time -- tens of microseconds on a virtual machine whose idle CPU
    has halted -- which alone could keep spinning off for good.  So while its budget is
    0 it still probes now and then with a full 100 µs spin: a probe that catches the peer
    counts as a short wait, one that does not doubles the interval to the next probe (up
    to every :data:`PROBE_INTERVAL_MAX` waits, which costs nothing measurable).
    """

    __slots__ = ("_average_us", "_probe_every", "_probe_in", "adaptive", "budget_us")

    def __init__(self, setting: str | float = "off") -> None:
        self._average_us = ADAPTIVE_MAX_US / 4
        self._probe_every = self._probe_in = 1
        #: The budget the next spin will use, in microseconds (0: do not spin).
        self.budget_us = 0.0
        if setting == "off":
            self.adaptive = False
        elif setting == "adaptive":
            self.adaptive = True
            self._retune()
        elif isinstance(setting, int | float) and not isinstance(setting, bool) and setting >= 0:
            self.adaptive, self.budget_us = False, float(setting)
        else:
            raise ConfigError(
                f"spin must be 'off', 'adaptive' or a budget in microseconds >= 0, not {setting!r}"
            )

    @property
    def setting(self) -> str | float:
        if self.adaptive:
            return "adaptive"
        return self.budget_us if self.budget_us else "off"

    def spin(self, ready: Callable[[], object]) -> bool:
        """Poll ``ready`` for up to the budget (or a probe's); say whether it became true."""
        budget = self.budget_us or self._probe()
        if not budget:
            return False
        clock = time.perf_counter
        start = clock()
        end = start + budget * 1e-6
        while True:
            if ready():
                if self.adaptive:
                    self._probe_every = self._probe_in = 1
                    self.observe((clock() - start) * 1e6)
                return True
            if clock() >= end:
                if not self.budget_us:  # a probe that missed: wait longer for the next
                    self._probe_every = min(2 * self._probe_every, PROBE_INTERVAL_MAX)
                    self._probe_in = self._probe_every
                return False
            os.sched_yield()

    def _probe(self) -> float:
        """The budget of a probing spin if one is due now (adaptive, budget 0), else 0."""
        if not self.adaptive:
            return 0.0
        self._probe_in -= 1
        return ADAPTIVE_MAX_US if self._probe_in <= 0 else 0.0

    def observe(self, waited_us: float) -> None:
        """Record how long a blocking wait lasted in all (adaptive policy only)."""
        if self.adaptive:
            self._average_us += _EWMA_WEIGHT * (waited_us - self._average_us)
            self._retune()

    def _retune(self) -> None:
        wanted = 2 * self._average_us
        self.budget_us = wanted if wanted <= ADAPTIVE_MAX_US else 0.0
