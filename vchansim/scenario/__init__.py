"""Scenarios: declarative vchan tests with real endpoint processes, faults and verdicts.

``run_scenario("scenarios/stream-both-ways.toml")`` loads, runs and judges one;
docs/scenarios.md describes the file format.
"""

from .model import Scenario, ScenarioError, load_scenario, load_scenarios, parse_scenario
from .outcome import ScenarioResult, run_scenario
from .verdicts import Verdict

__all__ = [
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "Verdict",
    "load_scenario",
    "load_scenarios",
    "parse_scenario",
    "run_scenario",
]
