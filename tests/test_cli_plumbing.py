"""What every subcommand shares: the version line, the one-line errors and their exit
codes, each subcommand's own usage on a bad option, and plain help texts."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from vchansim import __version__
from vchansim import core as cores
from vchansim.cli import build_parser

DEADLINE = 60.0


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vchansim", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


@pytest.mark.parametrize(("pure", "core"), [("1", "python"), ("0", None)])
def test_version_names_the_ring_core_in_use(pure: str, core: str | None) -> None:
    done = run_cli("--version", **{cores.PURE_ENV: pure})
    assert done.returncode == 0, done.stderr
    name, version, rest = done.stdout.split(maxsplit=2)
    assert (name, version) == ("vchansim", __version__)
    if core is None:  # the accelerator when it was built here, else the Python core
        core = cores.available()[0]
    assert rest.strip() == f"(ring core: {core})"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["run", "--bogus", "x.toml"], "usage: vchansim run "),
        (["run"], "usage: vchansim run "),
        (["scenarios", "list", "--bogus"], "usage: vchansim scenarios "),
        (["bench", "--no-such-option"], "usage: vchansim bench "),
    ],
)
def test_a_subcommand_mistake_shows_that_subcommands_usage(argv: list[str], usage: str) -> None:
    done = run_cli(*argv)
    assert done.returncode == 2
    assert done.stderr.startswith(usage), done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"vchansim {argv[0]}: error: ")


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """The top-level parser and every subcommand's, with their names."""
    found = []
    pending = [("vchansim", build_parser())]
    while pending:
        name, parser = pending.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def test_help_texts_are_plain_text() -> None:
    parsers = _parsers()
    assert {"vchansim run", "vchansim exec", "vchansim scenarios list"} <= dict(parsers).keys()
    for name, parser in parsers:
        text = parser.format_help()
        assert "`" not in text, f"{name} --help shows markup:\n{text}"


def test_every_subcommand_that_uses_a_hub_takes_rundir() -> None:
    parsers = dict(_parsers())
    for name in ("run", "exec", "serve", "connect", "hub", "inspect", "bench"):
        options = {o for a in parsers[f"vchansim {name}"]._actions for o in a.option_strings}
        assert "--rundir" in options, name


def test_json_is_a_flag_for_json_on_stdout_everywhere() -> None:
    for name, parser in _parsers():
        for action in parser._actions:
            if "--json" in action.option_strings:
                assert action.nargs == 0, f"{name} --json takes a value"
