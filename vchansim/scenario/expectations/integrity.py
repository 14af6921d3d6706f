"""``integrity``: whatever each receiver read is exactly what the sender wrote there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..records import Instance, RunRecord
from .base import Expectation, Verdict
from .segments import Digests, Segment, directions


@dataclass(frozen=True)
class Integrity(Expectation):
    """Whatever each receiver read is exactly a stretch of what the sender wrote, from
    where it started reading (a prefix, for an endpoint that ran from the start)."""

    kind: ClassVar[str] = "integrity"

    def describe(self) -> str:
        return "what is read is what was written"

    def judge(self, record: RunRecord) -> Verdict:
        digests = Digests(record.scenario)
        checked = 0
        for _, receiver, stream in directions(record.scenario):
            for inst in record.of(receiver):
                count, problem = _checked(inst, stream, digests)
                if problem:
                    return self.verdict(False, problem)
                checked += count
        return self.verdict(True, f"{checked} bytes read, each where the sender put it")


def _checked(inst: Instance, stream: str, digests: Digests) -> tuple[int, str | None]:
    """Bytes of ``stream`` that ``inst`` read and checked, and what was wrong, if anything."""
    if inst.result is None:  # killed: its last progress report says how far it had checked
        progress = inst.progress
        if progress is None:
            return 0, None
        if progress.mismatch_at is not None:
            return 0, f"{inst.label}: wrong byte at offset {progress.mismatch_at}"
        return progress.received, None
    report = inst.result.received
    if not report:
        return 0, None
    if report["mismatch_at"] is not None:
        return 0, f"{inst.label}: wrong byte at offset {report['mismatch_at']}"
    seg = Segment(report["start"], report["count"], report["sha256"])
    return seg.count, digests.check(stream, [seg], inst.label)
