"""What a run produced: one record per endpoint instance and one for the whole run,
read by the verdicts and the reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..leaks import Leak
from .messages import FaultFired, Progress, Result
from .spec import Scenario


@dataclass
class Instance:
    """One run of one endpoint (a restarted client has several), as the runner saw it."""

    name: str
    number: int
    conn: Any  # the runner's end of its pipe
    handle: Any  # what the executor runs it as (a process or a thread)
    started: float
    pid: int | None = None
    ended: float | None = None
    exitcode: int | None = None
    killed: str | None = None  # "fault" or "deadline" when the runner killed it
    result: Result | None = None
    progress: Progress | None = None
    faults: list[FaultFired] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # report kind -> first time seen
    waiting: bool = True  # not yet told to go (nor to abort)

    @property
    def label(self) -> str:
        return f"{self.name}#{self.number}"

    @property
    def events(self) -> dict[str, int]:
        source = self.result or self.progress
        return dict(source.events) if source is not None else {}


@dataclass
class RunRecord:
    """Everything a run produced, for the verdicts and the reports."""

    scenario: Scenario
    t0: float
    instances: list[Instance] = field(default_factory=list)
    duration: float = 0.0
    deadline_hit: bool = False
    leaks: list[Leak] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, name: str) -> list[Instance]:
        return [i for i in self.instances if i.name == name]

    def killing_faults(self, inst: Instance) -> list[FaultFired]:
        """The fault records after which ``inst`` killed itself."""
        return [f for f in inst.faults if self.scenario.faults[f.index].kills]

    def killed_by_fault(self, inst: Instance) -> bool:
        """Killed as a fault said: by the runner, or by itself (its last word then was the
        fault record)."""
        return inst.killed == "fault" or (inst.result is None and bool(self.killing_faults(inst)))
