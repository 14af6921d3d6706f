"""Judge a run: each expectation of the scenario becomes a verdict with the measured figure.

The expectations judge themselves (``expectations/``).  Two checks are implicit in every
run: the global deadline, and that no endpoint died other than by an injected fault.
"""

from __future__ import annotations

from .expectations.base import Verdict
from .records import RunRecord

__all__ = ["Verdict", "judge"]


def judge(record: RunRecord) -> list[Verdict]:
    """The verdicts of every expectation, then any implicit failure."""
    verdicts = [e.judge(record) for e in record.scenario.expectations]
    return verdicts + _implicit(record)


def _implicit(record: RunRecord) -> list[Verdict]:
    found = []
    if record.deadline_hit:
        found.append(
            Verdict(
                f"finishes within the {record.scenario.deadline:g} s deadline",
                "deadline",
                False,
                "killed what was still running at the deadline",
            )
        )
    for inst in record.instances:
        crashed = inst.result is None and inst.killed != "deadline"
        if crashed and not record.killed_by_fault(inst):
            found.append(
                Verdict(
                    f"{inst.label} runs to completion",
                    "crash",
                    False,
                    f"ended without a result (exit code {inst.exitcode})",
                )
            )
    return found
