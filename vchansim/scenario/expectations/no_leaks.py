"""``no_leaks``: nothing is left behind -- grants, ports, XenStore nodes, processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...leaks import LeakKind
from ..records import RunRecord
from ..tables import Table
from .base import Expectation, Verdict


@dataclass(frozen=True)
class NoLeaks(Expectation):
    """Nothing is left behind: grants, ports, XenStore nodes, connections, processes.

    ``allow_xenstore`` excuses XenStore nodes: a killed server cannot remove its keys,
    on Xen as here, so a scenario that kills one checks the rest.
    """

    allow_xenstore: bool = False

    kind: ClassVar[str] = "no_leaks"

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        return cls(table.boolean("allow_xenstore", False))

    def describe(self) -> str:
        return "nothing left behind" + (" but XenStore nodes" if self.allow_xenstore else "")

    def judge(self, record: RunRecord) -> Verdict:
        leaks = record.leaks
        if self.allow_xenstore:
            leaks = [leak for leak in leaks if leak.kind != LeakKind.XENSTORE]
        if leaks:
            return self.verdict(False, "; ".join(map(str, leaks)))
        excused = len(record.leaks) - len(leaks)
        return self.verdict(
            True,
            f"nothing left behind ({excused} XenStore nodes excused)"
            if excused
            else "nothing left behind",
        )
