"""vchansim run: run scenarios and report the verdicts.

A scenario is a file, a directory of *.toml files, or the name of a built-in scenario
("vchansim scenarios list" shows them; "all" is the whole library).  Each scenario starts
its endpoints as separate processes, injects its faults and judges its expectations
(docs/scenarios.md).

--backend xen runs them on real Xen: both endpoints as processes of the domain this runs
in (dom0), on its devices; a scenario that needs the emulator (a program endpoint, a
fault that lowers the machine's limits) is reported NOT APPLICABLE with the reason.
--client-domain N runs each scenario's client in domain N through the agent there
(vchansim agent) and its server here: on Xen, the server in dom0 and the client in a
guest; on the emulator, on the hub the agent uses (--rundir).  What the agent cannot
place (a program endpoint; on the emulator, a fault lowering the hub's limits) is NOT
APPLICABLE.  --deadline-factor (or $VCHANSIM_DEADLINE_FACTOR) multiplies every time bound of every
scenario, for a slow machine such as Xen under QEMU's software CPU.

The exit status is 0 only if every scenario ran and every expectation held, 1 if any
failed, 2 if a scenario file or an option is invalid (or --backend xen without /dev/xen),
3 if none failed but some were not applicable.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..errors import ConfigError
from ..library import builtin_path, resolve
from ..scenario import Scenario, ScenarioError, ScenarioResult, load_scenarios, run_scenario
from ..scenario.load import on_backend
from ..scenario.report import print_report, to_json, write_junit
from ..scenario.result import unrunnable
from ..scenario.runner import RunProgress, deadline_factor
from ..scenario.spec import DEADLINE_FACTOR_ENV, XEN_BACKEND
from ..scenario.xen_executor import require_xen
from .common import Subcommands, UsageError


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run scenarios and report their verdicts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="SCENARIO",
        help="a scenario file, a directory of them, or a built-in scenario's name",
    )
    parser.add_argument(
        "--builtin",
        action="append",
        default=[],
        metavar="NAME",
        help="run the built-in scenario NAME (repeatable), even if a file of that name exists",
    )
    parser.add_argument("--seed", type=int, help="override every scenario's seed")
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help="run both endpoints of every scenario on NAME (shm, memory, or xen: real Xen, "
        "in this domain), whatever the files say",
    )
    parser.add_argument(
        "--client-domain",
        type=int,
        metavar="N",
        help="run each scenario's client in domain N, through the agent running there "
        "(vchansim agent), and its server here",
    )
    parser.add_argument(
        "--deadline-factor",
        metavar="F",
        help=f"multiply every time bound by F, from 1 (default: ${DEADLINE_FACTOR_ENV}, else 1)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    parser.add_argument(
        "--trace",
        metavar="PATH",
        help="write a trace (docs/trace.md): to PATH for one scenario, "
        "to PATH/<scenario>.jsonl for several",
    )
    parser.add_argument(
        "--rundir",
        metavar="DIR",
        help="run each scenario's hub in DIR (for vchansim inspect --rundir DIR) instead of "
        "a private directory; DIR is kept",
    )
    parser.add_argument(
        "--show-rundir",
        action="store_true",
        help="print each scenario's run directory on stderr once its hub runs, with the "
        "command that inspects it live",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress display, even on a terminal"
    )
    parser.set_defaults(func=run)


def trace_paths(target: str | None, scenarios: list[Scenario]) -> list[Path | None]:
    """Where each scenario's trace goes (None: no trace)."""
    if target is None:
        return [None] * len(scenarios)
    if len(scenarios) == 1 and not Path(target).is_dir():
        return [Path(target)]
    folder = Path(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScenarioError(f"--trace {target}: cannot create directory: {exc.strerror}") from None
    paths: list[Path | None] = []
    seen: set[str] = set()
    for scenario in scenarios:
        name, n = scenario.name, 1
        while name in seen:
            n += 1
            name = f"{scenario.name}-{n}"
        seen.add(name)
        paths.append(folder / f"{name}.jsonl")
    return paths


class _Display:
    """A progress bar per scenario on a terminal; nothing otherwise.  With
    ``show_rundir``, each scenario's run directory as soon as its hub runs (a private
    one is known only then), terminal or not."""

    def __init__(self, console: Console, enabled: bool, *, show_rundir: bool = False) -> None:
        self.console = console
        self.show_rundir = show_rundir
        self._told: str | None = None
        self.bars = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[what]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if enabled and console.is_terminal
            else None
        )
        self._task: TaskID | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.bars is None:
            yield
            return
        with self.bars:
            yield

    def begin(self, scenario: Scenario) -> None:
        self._told = None
        if self.bars is not None:
            self._task = self.bars.add_task(scenario.name, total=None, what="starting")

    def update(self, progress: RunProgress) -> None:
        if self.show_rundir and progress.rundir is not None and self._told is None:
            self._told = progress.rundir
            self.console.print(
                f"{progress.scenario}: hub in {progress.rundir} "
                f"(vchansim inspect --rundir {progress.rundir})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if self.bars is None or self._task is None:
            return
        if progress.total:
            self.bars.update(
                self._task,
                total=progress.total,
                completed=progress.done,
                what=f"{progress.done >> 10} of {progress.total >> 10} KiB",
            )
        else:
            self.bars.update(
                self._task,
                total=progress.deadline,
                completed=progress.elapsed,
                what=f"{progress.done >> 10} KiB",
            )

    def end(self) -> None:
        if self.bars is not None and self._task is not None:
            self.bars.remove_task(self._task)
            self._task = None


def _run_one(
    scenario: Scenario, args: argparse.Namespace, trace: Path | None, display: _Display
) -> ScenarioResult:
    display.begin(scenario)
    try:
        return run_scenario(
            scenario,
            seed=args.seed,
            trace=trace,
            progress=display.update,
            rundir=args.rundir,
            slower=args.slower,
            client_domain=args.client_domain,
        )
    except OSError as exc:  # the run itself could not happen (no hub, bad trace path...)
        return unrunnable(scenario, exc)
    finally:
        display.end()


def run(args: argparse.Namespace) -> int:
    try:
        if not args.paths and not args.builtin:
            raise UsageError("no scenario given: name files, directories or --builtin NAME")
        paths = [resolve(entry) for entry in args.paths]
        scenarios = load_scenarios([*paths, *map(builtin_path, args.builtin)])
        if args.backend is not None:
            scenarios = [on_backend(scenario, args.backend) for scenario in scenarios]
        if args.backend == XEN_BACKEND:
            require_xen()
        args.slower = deadline_factor(args.deadline_factor)
        traces = trace_paths(args.trace, scenarios)
    except (ScenarioError, ConfigError) as exc:
        print(f"vchansim run: {exc}", file=sys.stderr)
        return 2
    display = _Display(
        Console(stderr=True),
        enabled=not args.no_progress and not args.json,
        show_rundir=args.show_rundir,
    )
    with display.active():
        results = [
            _run_one(scenario, args, trace, display)
            for scenario, trace in zip(scenarios, traces, strict=True)
        ]
    if args.json:
        print(to_json(results))
    else:
        print_report(results, Console())
    if args.junit:
        write_junit(results, args.junit)
    return exit_status(results)


def exit_status(results: list[ScenarioResult]) -> int:
    """0: all passed; 1: any failed; 3: none failed, some not applicable (never 0)."""
    if any(r.status == "failed" for r in results):
        return 1
    return 3 if any(r.not_applicable for r in results) else 0
