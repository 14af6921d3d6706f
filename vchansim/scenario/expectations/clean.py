"""``clean``: the named endpoints finished without an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..messages import error_text
from ..records import RunRecord
from ..tables import Table
from .base import Expectation, Verdict


@dataclass(frozen=True)
class Clean(Expectation):
    """The named endpoints (default: both) finished without an error."""

    endpoints: tuple[str, ...] = ()

    kind: ClassVar[str] = "clean"

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        chosen = table.raw("endpoints", list(names))
        if not isinstance(chosen, list) or not chosen:
            table.fail("endpoints", f"must be a non-empty list of endpoint names, not {chosen!r}")
        for name in chosen:
            if name not in names:
                table.fail("endpoints", f"{name!r} is not an endpoint ({', '.join(names)})")
        return cls(tuple(chosen))

    def describe(self) -> str:
        return f"{', '.join(self.endpoints)} finish without error"

    def judge(self, record: RunRecord) -> Verdict:
        problems = []
        for name in self.endpoints:
            for inst in record.of(name):
                if record.killed_by_fault(inst):
                    continue
                result = inst.result
                if result is None:
                    problems.append(f"{inst.label} reported no result")
                elif result.error:
                    problems.append(f"{inst.label}: {error_text(result.error)}")
                elif result.stopped and result.stopped.startswith("not started"):
                    problems.append(f"{inst.label} {result.stopped}")
        return self.verdict(not problems, "; ".join(problems) or "no errors")
