"""A judged run: its verdicts, and how the reports and the trace present it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .expectations.base import Verdict
from .records import Instance, RunRecord
from .spec import Scenario


@dataclass
class ScenarioResult:
    """A judged run."""

    scenario: Scenario
    record: RunRecord
    verdicts: list[Verdict]
    #: Why the scenario was not run on its machine (empty: it ran).  A scenario that
    #: needs what only the emulator can do is not applicable on real Xen: never passed.
    not_applicable: str = ""

    @property
    def passed(self) -> bool:
        return not self.not_applicable and all(v.passed for v in self.verdicts)

    @property
    def status(self) -> str:
        """``passed``, ``failed`` or ``not-applicable``."""
        if self.not_applicable:
            return "not-applicable"
        return "passed" if self.passed else "failed"

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    def summary(self) -> str:
        """One line per verdict, for assertion messages and logs."""
        status = {"failed": "FAILED", "not-applicable": "NOT APPLICABLE"}
        lines = [
            f"scenario {self.scenario.name} (seed {self.scenario.seed}): "
            + status.get(self.status, self.status)
            + (f": {self.not_applicable}" if self.not_applicable else "")
        ]
        lines += [
            f"  [{'ok' if v.passed else 'FAIL'}] {v.expectation}: {v.detail}" for v in self.verdicts
        ]
        lines += [f"  note: {note}" for note in self.record.notes]
        return "\n".join(lines)

    def assert_passed(self) -> None:
        if not self.passed:
            raise AssertionError(self.summary())

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "source": self.scenario.source,
            "seed": self.scenario.seed,
            "passed": self.passed,
            "status": self.status,
            "not_applicable": self.not_applicable or None,
            "duration": round(self.record.duration, 3),
            "verdicts": [v.as_dict() for v in self.verdicts],
            "endpoints": [_instance_dict(i) for i in self.record.instances],
            "notes": self.record.notes,
        }


def _instance_dict(inst: Instance) -> dict[str, Any]:
    result = inst.result
    return {
        "endpoint": inst.name,
        "instance": inst.number,
        "pid": inst.pid,
        "exitcode": inst.exitcode,
        "killed": inst.killed,
        "runtime": round((inst.ended or inst.started) - inst.started, 3),
        "sent": result.sent if result else None,
        "received": result.received if result else None,
        "error": result.error if result else None,
        "stopped": result.stopped if result else None,
        "events": inst.events,
        "program": result.program if result else None,
    }


def trace_header(scenario: Scenario) -> dict[str, Any]:
    """What a trace reader needs before the first record: what ran, and the rings."""
    left, right = scenario.orders
    return {
        "scenario": scenario.name,
        "source": scenario.source,
        "description": scenario.description,
        "seed": scenario.seed,
        "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "channel": {
            "server": scenario.server.name,
            "client": scenario.client.name,
            "server_domain": scenario.server.domain,
            "client_domain": scenario.client.domain,
            "path": scenario.client_path,
            "left_order": left,
            "right_order": right,
            "start_index": scenario.server.start_index,
        },
        "endpoints": [
            {
                "name": e.name,
                "role": e.role,
                "domain": e.domain,
                "backend": e.backend,
                "kind": e.kind,
            }
            for e in scenario.endpoints
        ],
        "faults": [f.describe() for f in scenario.faults],
        "expectations": [e.describe() for e in scenario.expectations],
    }


def unrunnable(scenario: Scenario, exc: BaseException) -> ScenarioResult:
    """The result of a scenario that could not even start (no hub, an unwritable trace):
    one failed verdict saying why, so a batch of scenarios still reports on the others."""
    record = RunRecord(scenario, time.monotonic())
    verdict = Verdict("the scenario runs", "run", False, f"{type(exc).__name__}: {exc}")
    return ScenarioResult(scenario, record, [verdict])


def inapplicable(scenario: Scenario, reasons: list[str]) -> ScenarioResult:
    """The result of a scenario its machine cannot run as written (see
    ``xen_executor.obstacles``): no verdicts, the reasons, never passed."""
    return ScenarioResult(scenario, RunRecord(scenario, time.monotonic()), [], "; ".join(reasons))
