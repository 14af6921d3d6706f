"""``no_hang``: every endpoint finished (returned or raised) in time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..records import RunRecord
from ..tables import Table
from .base import Expectation, Verdict


@dataclass(frozen=True)
class NoHang(Expectation):
    """Every endpoint finished (returned or raised) within ``within`` seconds."""

    within: float | None = None

    kind: ClassVar[str] = "no_hang"

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        within = table.raw("within")
        return cls(None if within is None else table.number("within", 0.0, 0.001))

    def scaled(self, factor: float) -> Expectation:
        return self if self.within is None else replace(self, within=self.within * factor)

    def describe(self) -> str:
        return "no call hangs" + (f" past {self.within:g} s" if self.within else "")

    def judge(self, record: RunRecord) -> Verdict:
        limit = self.within or record.scenario.deadline
        hung = [i.label for i in record.instances if i.killed == "deadline"]
        if hung:
            return self.verdict(False, f"{', '.join(hung)} still running at the deadline")
        spans = [
            (i.ended or i.started) - i.started
            for i in record.instances
            if not record.killed_by_fault(i)
        ]
        longest = max(spans, default=0.0)
        return self.verdict(
            longest <= limit, f"longest endpoint ran {longest:.2f} s (limit {limit:g} s)"
        )
