"""``pause``: the endpoint's process is frozen (SIGSTOP) for a while, then resumed.

This is what ``xl pause`` does to a guest, or a host that stops scheduling one: the
endpoint neither reads, writes nor sends events, yet it is alive -- its peer must wait
for it, neither calling the channel closed nor giving up before its own timeout.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, ClassVar

from ..spec import Scenario
from ..tables import Table
from .base import Fault, RunnerTarget, refuse


@dataclass(frozen=True)
class PauseFault(Fault):
    """SIGSTOP the endpoint at a time, SIGCONT it ``duration`` seconds later."""

    duration: float = 0.5

    kind: ClassVar[str] = "pause"
    triggers: ClassVar[frozenset[str]] = frozenset({"at"})

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
        return {"duration": table.number("duration", 0.5, 0.001, 60.0)}

    def describe(self) -> str:
        return f"pause {self.endpoint} {self.trigger.describe()} for {self.duration:g} s"

    @property
    def needs_process(self) -> bool:
        return True

    @property
    def by_runner(self) -> bool:
        return True

    @property
    def on_program(self) -> bool:
        """The runner's process for a program endpoint is not the program: refused."""
        return False

    def check(self, scenario: Scenario, where: str) -> None:
        super().check(scenario, where)
        timeout = scenario.endpoint(self.endpoint).timeout or scenario.deadline / 2
        if self.duration >= timeout:
            refuse(
                scenario,
                f"{where}.duration",
                f"{self.duration:g} s is not shorter than {self.endpoint}'s timeout "
                f"({timeout:g} s): it would give up on its own channel when resumed",
            )

    def act_from_runner(self, target: RunnerTarget) -> None:
        target.record()
        target.signal(signal.SIGSTOP)
        target.later(self.duration, lambda: target.signal(signal.SIGCONT))
