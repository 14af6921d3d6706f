"""Judge a run: each expectation of the scenario becomes a verdict with the measured figure.

Verdicts rest on what the endpoints reported and on digests the runner recomputes from
the seed, never on how fast things went -- except where the expectation itself bounds
a time (``close_seen``, ``no_hang``), and then the verdict quotes the time measured.
Two checks are implicit in every run: the global deadline, and that no endpoint died
other than by an injected fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch
from typing import Any

from ..leaks import LeakKind
from .model import (
    Clean,
    CloseSeen,
    Delivered,
    Expectation,
    Integrity,
    NoHang,
    NoLeaks,
    RaisesError,
    Scenario,
)
from .runner import Instance, RunRecord
from .streams import digest


@dataclass(frozen=True)
class Verdict:
    """One expectation, judged."""

    expectation: str
    kind: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "kind": self.kind,
            "passed": self.passed,
            "detail": self.detail,
        }


def judge(record: RunRecord) -> list[Verdict]:
    """The verdicts of every expectation, then any implicit failure."""
    verdicts = [_judge(e, record) for e in record.scenario.expectations]
    return verdicts + _implicit(record)


def _verdict(expectation: Expectation, passed: bool, detail: str) -> Verdict:
    return Verdict(expectation.describe(), expectation.kind, passed, detail)


@singledispatch
def _judge(expectation: Expectation, record: RunRecord) -> Verdict:
    raise TypeError(f"no judge for {type(expectation).__name__}")


# -- streams --


@dataclass(frozen=True)
class Segment:
    """A stretch of one stream, as one endpoint instance sent or received it."""

    start: int
    count: int
    sha256: str

    @property
    def end(self) -> int:
        return self.start + self.count


class _Digests:
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


def _segments(instances: list[Instance], side: str, stream: str) -> tuple[list[Segment], list[str]]:
    """Segments of ``stream`` the instances reported on ``side``; and what is unknown."""
    found, unknown = [], []
    for inst in instances:
        report = (inst.result or {}).get(side)
        if report is not None and report["stream"] == stream:
            found.append(Segment(report["start"], report["count"], report["sha256"]))
        elif inst.result is None:
            unknown.append(f"{inst.name}#{inst.number} died before reporting what it {side}")
    return sorted(found, key=lambda s: s.start), unknown


def _coverage(segments: list[Segment]) -> tuple[int, str | None]:
    """End of the contiguous stretch from 0 the segments cover, and the first gap."""
    end = 0
    for seg in segments:
        if seg.start != end:
            return end, f"bytes {end}..{seg.start} unaccounted for"
        end = seg.end
    return end, None


def _sender_end(record: RunRecord, sender: str, stream: str) -> int | None:
    """How far ``sender`` got in ``stream``.  Offsets are absolute, so its last instance
    says it: from its report, or from the fault record of a byte-triggered kill (exact:
    the endpoint wrote that far, then killed itself); None if it died otherwise."""
    instances = record.of(sender)
    if not instances:
        return None
    last = instances[-1]
    report = (last.result or {}).get("sent")
    if report is not None and report["stream"] == stream:
        return int(report["start"] + report["count"])
    offsets = [f["sent"] for f in last.faults if "sent" in f and f["kind"] in ("kill", "restart")]
    return int(offsets[-1]) if last.result is None and offsets else None


def _directions(s: Scenario) -> list[tuple[str, str, str]]:
    """(sender, receiver, stream) for every hop that carries data."""
    hops = []
    for receiver in s.names:
        origin = s.origin(receiver)
        if origin is not None:
            hops.append((s.peer(receiver).name, receiver, origin))
    return hops


def _check_segments(
    digests: _Digests, stream: str, segments: list[Segment], who: str
) -> str | None:
    for seg in segments:
        if seg.sha256 != digests.of(stream, seg):
            return f"{who}: bytes {seg.start}..{seg.end} differ from {stream}'s stream (sha256)"
    return None


@_judge.register
def _delivered(expectation: Delivered, record: RunRecord) -> Verdict:
    digests = _Digests(record.scenario)
    details = []
    for sender, receiver, stream in _directions(record.scenario):
        got, unknown = _segments(record.of(receiver), "received", stream)
        if unknown or not got:
            why = "; ".join(unknown) or f"{receiver} never reported what it received"
            return _verdict(expectation, False, why)
        got_end, gap = _coverage(got)
        sent, _ = _segments(record.of(sender), "sent", stream)
        sent_end = _sender_end(record, sender, stream)
        problem = (
            (gap and f"{receiver}: {gap}")
            or _check_segments(digests, stream, got, receiver)
            or _check_segments(digests, stream, sent, sender)
        )
        if problem is None and sent_end is None:
            problem = f"{sender} died without a byte-exact record of what it sent"
        if problem is None and got_end != sent_end:
            problem = f"{sender} sent {sent_end} bytes, {receiver} received {got_end}"
        if problem:
            return _verdict(expectation, False, problem)
        details.append(f"{sender}→{receiver} {got_end} B")
    return _verdict(expectation, True, ", ".join(details) + " (sha256 equal)")


@_judge.register
def _integrity(expectation: Integrity, record: RunRecord) -> Verdict:
    digests = _Digests(record.scenario)
    checked = 0
    for _, receiver, stream in _directions(record.scenario):
        for inst in record.of(receiver):
            source = inst.result.get("received") if inst.result else inst.progress
            if not source:
                continue
            bad = source.get("mismatch_at")
            if bad is not None:
                return _verdict(
                    expectation, False, f"{receiver}#{inst.number}: wrong byte at offset {bad}"
                )
            if inst.result is not None:
                seg = Segment(source["start"], source["count"], source["sha256"])
                problem = _check_segments(digests, stream, [seg], f"{receiver}#{inst.number}")
                if problem:
                    return _verdict(expectation, False, problem)
                checked += seg.count
            else:  # killed: its last progress report says how far it had checked
                checked += int(source.get("received", 0))
    return _verdict(expectation, True, f"{checked} bytes read, each where the sender put it")


# -- closing and errors --


def _close_times(record: RunRecord, name: str) -> list[float]:
    """Moments ``name`` closed, died, or made its peer believe so (a corrupted live byte)."""
    times = []
    for inst in record.of(name):
        times += [inst.times[k] for k in ("closing", "killed") if k in inst.times]
        times += [
            float(f["t"])
            for f in inst.faults
            if f["kind"] in ("kill", "restart", "close")
            or (f["kind"] == "corrupt" and str(f.get("field", "")).endswith("_live"))
        ]
    return times


@_judge.register
def _close_seen(expectation: CloseSeen, record: RunRecord) -> Verdict:
    name = expectation.endpoint
    seen = [i.times["peer_closed"] for i in record.of(name) if "peer_closed" in i.times]
    if not seen:
        return _verdict(expectation, False, f"{name} never saw its peer close")
    observed = min(seen)
    peer = record.scenario.peer(name).name
    causes = [t for t in _close_times(record, peer) if t <= observed]
    if not causes:
        return _verdict(expectation, False, f"{name} saw a close that {peer} never made")
    delay_ms = (observed - max(causes)) * 1000
    return _verdict(
        expectation,
        delay_ms <= expectation.within_ms,
        f"seen after {delay_ms:.1f} ms (limit {expectation.within_ms:g} ms)",
    )


def _error_matches(expectation: RaisesError, error: dict[str, Any]) -> bool:
    return (
        expectation.error in error["mro"]
        and (expectation.errno is None or error["errno"] == expectation.errno)
        and (expectation.phase is None or error["phase"] == expectation.phase)
    )


def _describe_error(error: dict[str, Any]) -> str:
    code = f" [{error['errno']}]" if error["errno"] else ""
    return f"{error['type']}{code} in {error['phase']}: {error['message']}"


@_judge.register
def _raises(expectation: RaisesError, record: RunRecord) -> Verdict:
    errors = [
        i.result["error"] for i in record.of(expectation.endpoint) if i.result and i.result["error"]
    ]
    for error in errors:
        if _error_matches(expectation, error):
            return _verdict(expectation, True, _describe_error(error))
    got = "; ".join(_describe_error(e) for e in errors) or "no error"
    return _verdict(expectation, False, f"got {got}")


# -- time and resources --


@_judge.register
def _no_hang(expectation: NoHang, record: RunRecord) -> Verdict:
    limit = expectation.within or record.scenario.deadline
    hung = [f"{i.name}#{i.number}" for i in record.instances if i.killed == "deadline"]
    if hung:
        return _verdict(expectation, False, f"{', '.join(hung)} still running at the deadline")
    spans = [(i.ended or i.started) - i.started for i in record.instances if not i.killed_by_fault]
    longest = max(spans, default=0.0)
    return _verdict(
        expectation, longest <= limit, f"longest endpoint ran {longest:.2f} s (limit {limit:g} s)"
    )


@_judge.register
def _no_leaks(expectation: NoLeaks, record: RunRecord) -> Verdict:
    leaks = record.leaks
    if expectation.allow_xenstore:
        leaks = [leak for leak in leaks if leak.kind != LeakKind.XENSTORE]
    if leaks:
        return _verdict(expectation, False, "; ".join(map(str, leaks)))
    excused = len(record.leaks) - len(leaks)
    return _verdict(
        expectation,
        True,
        f"nothing left behind ({excused} XenStore nodes excused)"
        if excused
        else "nothing left behind",
    )


@_judge.register
def _clean(expectation: Clean, record: RunRecord) -> Verdict:
    problems = []
    for name in expectation.endpoints:
        for inst in record.of(name):
            if inst.killed_by_fault:
                continue
            if inst.result is None:
                problems.append(f"{name}#{inst.number} reported no result")
            elif inst.result["error"]:
                problems.append(f"{name}#{inst.number}: {_describe_error(inst.result['error'])}")
            elif inst.result["stopped"] and inst.result["stopped"].startswith("not started"):
                problems.append(f"{name}#{inst.number} {inst.result['stopped']}")
    return _verdict(expectation, not problems, "; ".join(problems) or "no errors")


# -- implicit checks --


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
        if inst.result is None and inst.killed != "deadline" and not inst.killed_by_fault:
            found.append(
                Verdict(
                    f"{inst.name}#{inst.number} runs to completion",
                    "crash",
                    False,
                    f"ended without a result (exit code {inst.exitcode})",
                )
            )
    return found
