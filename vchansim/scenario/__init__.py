"""Scenarios: declarative vchan tests with real endpoint processes, faults and verdicts.

``run_scenario("scenarios/stream-both-ways.toml")`` loads, runs and judges one;
docs/scenarios.md describes the file format, docs/architecture.md the modules.
"""

from .expectations.base import Verdict
from .load import load_scenario, load_scenarios, parse_scenario, scenario_from_dict
from .result import ScenarioResult
from .runner import run_scenario
from .spec import Scenario
from .tables import ScenarioError

__all__ = [
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "Verdict",
    "load_scenario",
    "load_scenarios",
    "parse_scenario",
    "run_scenario",
    "scenario_from_dict",
]
