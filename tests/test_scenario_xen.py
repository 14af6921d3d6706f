"""Scenarios on real Xen, the parts that need no hypervisor: which scenarios are not
applicable there and why, how a not-applicable result is reported (table, JSON, JUnit,
exit status: never a pass), and how time bounds scale for a slow machine.  Running them
in dom0 is tests/xen_real/test_real_scenarios.py (tools/xen-vm-test)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from vchansim.cli.run import exit_status
from vchansim.library import builtin_path
from vchansim.scenario import ScenarioResult, Verdict, load_scenario, run_scenario
from vchansim.scenario.load import on_backend
from vchansim.scenario.report import junit_xml, print_report, to_json
from vchansim.scenario.result import inapplicable
from vchansim.scenario.xen_executor import obstacles


def _on_xen(name: str):
    return on_backend(load_scenario(builtin_path(name)), "xen")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("c-client", "client is a program endpoint, which runs on the emulator's drop-in"),
        ("c-server-killed", "server is a program endpoint"),
        ("grant-exhaustion", "lowers the machine's limits, which on real Xen are the hyper"),
        ("xenstore-quota", "lowers the machine's limits"),
    ],
)
def test_what_needs_the_emulator_is_not_applicable_on_xen(name, reason):
    found = obstacles(_on_xen(name))
    assert found and any(reason in why for why in found), found


@pytest.mark.parametrize(
    "name", ["stream-both-ways", "kill-server", "hostile-indices", "notifications-lost"]
)
def test_what_real_xen_can_do_has_no_obstacle(name):
    assert obstacles(_on_xen(name)) == []


def test_on_the_emulator_nothing_is_an_obstacle():
    assert obstacles(load_scenario(builtin_path("c-client"))) == []


def test_a_not_applicable_result_is_reported_so_and_never_passed():
    scenario = _on_xen("grant-exhaustion")
    ran = run_scenario(builtin_path("ring-in-page"), backend="memory")
    na = inapplicable(scenario, obstacles(scenario))
    assert not na.passed and na.status == "not-applicable" and na.verdicts == []
    assert "NOT APPLICABLE: exhaust grants of server" in na.summary()

    console = Console(record=True, width=200)
    print_report([ran, na], console)
    text = console.export_text()
    assert "N/A" in text and "lowers the machine's limits" in text
    assert "2 scenarios, 1 passed, 1 not applicable: grant-exhaustion" in text

    report = json.loads(to_json([ran, na]))
    assert report["passed"] is False
    (entry,) = [s for s in report["scenarios"] if s["scenario"] == "grant-exhaustion"]
    assert entry["status"] == "not-applicable" and "limits" in entry["not_applicable"]

    suites = junit_xml([na]).getroot()
    (suite,) = suites.findall("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"
    skipped = suite.find("testcase/skipped")
    assert isinstance(skipped, ET.Element)
    assert skipped.get("message", "").startswith("not applicable: exhaust grants")

    assert exit_status([ran]) == 0
    assert exit_status([ran, na]) == 3
    failed = ScenarioResult(ran.scenario, ran.record, [Verdict("delivered", "x", False, "")])
    assert exit_status([ran, na, failed]) == 1


def test_scaling_stretches_every_time_bound_and_nothing_the_scenario_does():
    scenario = load_scenario(builtin_path("hostile-indices"))
    slow = scenario.scaled(10)
    assert slow.deadline == scenario.deadline * 10
    assert slow.server.timeout == 10.0 and slow.client.timeout == 50.0  # 1 s and 5 s
    (hang,) = [e for e in slow.expectations if e.kind == "no_hang"]
    assert hang.within == 100.0  # within = 10
    assert slow.faults == scenario.faults
    close = load_scenario(builtin_path("kill-server")).scaled(2.5)
    (seen,) = [e for e in close.expectations if e.kind == "close_seen"]
    assert seen.within_ms == 1500.0  # within_ms = 600
    assert [f.trigger for f in close.faults] == [
        f.trigger for f in load_scenario(builtin_path("kill-server")).faults
    ]
