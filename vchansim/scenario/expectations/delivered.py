"""``delivered``: every byte sent arrived, in order, in each direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..records import RunRecord
from .base import Expectation, Verdict
from .segments import Digests, coverage, directions, segments, sender_end


@dataclass(frozen=True)
class Delivered(Expectation):
    """Every byte sent arrived, in order: counts and sha256 agree in each direction."""

    kind: ClassVar[str] = "delivered"

    def describe(self) -> str:
        return "every byte sent is delivered"

    def judge(self, record: RunRecord) -> Verdict:
        digests = Digests(record.scenario)
        details = []
        for sender, receiver, stream in directions(record.scenario):
            got, unknown = segments(record.of(receiver), "received", stream)
            if unknown or not got:
                why = "; ".join(unknown) or f"{receiver} never reported what it received"
                return self.verdict(False, why)
            got_end, gap = coverage(got)
            sent, _ = segments(record.of(sender), "sent", stream)
            sent_end = sender_end(record, sender, stream)
            problem = (
                (gap and f"{receiver}: {gap}")
                or digests.check(stream, got, receiver)
                or digests.check(stream, sent, sender)
            )
            if problem is None and sent_end is None:
                problem = f"{sender} died without a byte-exact record of what it sent"
            if problem is None and got_end != sent_end:
                problem = f"{sender} sent {sent_end} bytes, {receiver} received {got_end}"
            if problem:
                return self.verdict(False, problem)
            details.append(f"{sender}→{receiver} {got_end} B")
        return self.verdict(True, ", ".join(details) + " (sha256 equal)")
