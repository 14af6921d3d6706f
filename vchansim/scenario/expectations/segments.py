"""Streams as the judges see them: the stretches each instance reported, and their digests
recomputed from the seed."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import Instance, RunRecord
from ..spec import Scenario
from ..streams import digest


@dataclass(frozen=True)
class Segment:
    """A stretch of one stream, as one endpoint instance sent or received it."""

    start: int
    count: int
    sha256: str

    @property
    def end(self) -> int:
        return self.start + self.count


class Digests:
    """Digests of stream ranges, recomputed from the seed (cached per range)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._cache: dict[tuple[str, int, int], str] = {}

    def of(self, stream: str, seg: Segment) -> str:
        key = (stream, seg.start, seg.count)
        if key not in self._cache:
            kind = self.scenario.endpoint(stream).kind
            self._cache[key] = digest(self.scenario.seed, stream, seg.start, seg.count, kind)
        return self._cache[key]

    def check(self, stream: str, segments: list[Segment], who: str) -> str | None:
        """What is wrong with ``who``'s segments of ``stream``, if anything."""
        for seg in segments:
            if seg.sha256 != self.of(stream, seg):
                return f"{who}: bytes {seg.start}..{seg.end} differ from {stream}'s stream (sha256)"
        return None


def segments(instances: list[Instance], side: str, stream: str) -> tuple[list[Segment], list[str]]:
    """Segments of ``stream`` the instances reported on ``side`` (``sent`` or
    ``received``); and what is unknown."""
    found, unknown = [], []
    for inst in instances:
        result = inst.result
        report = None if result is None else (result.sent if side == "sent" else result.received)
        if report is not None and report["stream"] == stream:
            found.append(Segment(report["start"], report["count"], report["sha256"]))
        elif result is None:
            unknown.append(f"{inst.label} died before reporting what it {side}")
    return sorted(found, key=lambda s: s.start), unknown


def coverage(found: list[Segment]) -> tuple[int, str | None]:
    """End of the contiguous stretch from 0 the segments cover, and the first gap."""
    end = 0
    for seg in found:
        if seg.start != end:
            return end, f"bytes {end}..{seg.start} unaccounted for"
        end = seg.end
    return end, None


def sender_end(record: RunRecord, sender: str, stream: str) -> int | None:
    """How far ``sender`` got in ``stream``.  Offsets are absolute, so its last instance
    says it: from its report, or from the fault record of a byte-triggered kill (exact:
    the endpoint wrote that far, then killed itself); None if it died otherwise."""
    instances = record.of(sender)
    if not instances:
        return None
    last = instances[-1]
    report = last.result.sent if last.result is not None else None
    if report is not None and report["stream"] == stream:
        return report["start"] + report["count"]
    offsets = [f.sent for f in record.killing_faults(last) if f.sent is not None]
    return offsets[-1] if last.result is None and offsets else None


def directions(s: Scenario) -> list[tuple[str, str, str]]:
    """(sender, receiver, stream) for every hop that carries data."""
    hops = []
    for receiver in s.names:
        origin = s.origin(receiver)
        if origin is not None:
            hops.append((s.peer(receiver).name, receiver, origin))
    return hops
