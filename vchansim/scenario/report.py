"""Reports of judged runs: a table for people, JSON for scripts, JUnit XML for CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .result import ScenarioResult


def _mark(passed: bool) -> Text:
    return Text("PASS", style="bold green") if passed else Text("FAIL", style="bold red")


def table(results: Sequence[ScenarioResult]) -> Table:
    """One row per verdict, grouped by scenario."""
    grid = Table(title="vchansim scenarios", show_lines=False, expand=False)
    grid.add_column("scenario", style="bold", no_wrap=True)
    grid.add_column("expectation")
    grid.add_column("verdict", justify="center", no_wrap=True)
    grid.add_column("measured / why", overflow="fold")
    for result in results:
        title = f"{result.scenario.name}\n[dim]{result.record.duration:.2f} s[/dim]"
        if result.not_applicable:
            na = Text("N/A", style="bold yellow")
            grid.add_row(title, "applies here", na, result.not_applicable, end_section=True)
        for i, verdict in enumerate(result.verdicts):
            grid.add_row(
                title if i == 0 else "",
                verdict.expectation,
                _mark(verdict.passed),
                verdict.detail,
                end_section=i == len(result.verdicts) - 1,
            )
    return grid


def summary(results: Sequence[ScenarioResult]) -> Text:
    failed = [r.scenario.name for r in results if r.status == "failed"]
    na = [r.scenario.name for r in results if r.not_applicable]
    seconds = sum(r.record.duration for r in results)
    line = Text(f"{len(results)} scenarios, {len(results) - len(failed) - len(na)} passed")
    if na:
        line.append(f", {len(na)} not applicable: {', '.join(na)}", style="bold yellow")
    if failed:
        line.append(f", {len(failed)} failed: {', '.join(failed)}", style="bold red")
    line.append(f"  ({seconds:.1f} s)")
    return line


def print_report(results: Sequence[ScenarioResult], console: Console) -> None:
    console.print(table(results))
    console.print(summary(results))
    for result in results:
        for note in result.record.notes:
            console.print(f"[yellow]note[/yellow] {result.scenario.name}: {note}")


def to_json(results: Sequence[ScenarioResult]) -> str:
    return json.dumps(
        {
            "passed": all(r.passed for r in results),
            "scenarios": [r.as_dict() for r in results],
        },
        indent=2,
    )


def junit_xml(results: Sequence[ScenarioResult]) -> ET.ElementTree:
    """A ``testsuite`` per scenario, a ``testcase`` per expectation."""
    suites = ET.Element("testsuites", name="vchansim")
    for result in results:
        failures = len(result.failures)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=result.scenario.name,
            tests=str(len(result.verdicts) or 1),
            failures=str(failures),
            errors="0",
            skipped="1" if result.not_applicable else "0",
            time=f"{result.record.duration:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for key, value in (("source", result.scenario.source), ("seed", result.scenario.seed)):
            ET.SubElement(props, "property", name=key, value=str(value))
        if result.not_applicable:
            case = ET.SubElement(
                suite, "testcase", classname=f"vchansim.{result.scenario.name}", name="applies"
            )
            ET.SubElement(case, "skipped", message=f"not applicable: {result.not_applicable}")
        for verdict in result.verdicts:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"vchansim.{result.scenario.name}",
                name=verdict.expectation,
                time="0",
            )
            if not verdict.passed:
                failure = ET.SubElement(case, "failure", message=verdict.detail, type=verdict.kind)
                failure.text = result.summary()
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(results: Sequence[ScenarioResult], path: str | Path) -> None:
    junit_xml(results).write(path, encoding="utf-8", xml_declaration=True)
