"""What every subcommand shares: the version line, the one-line errors and their exit
codes, each subcommand's own usage on a bad option, and plain help texts."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import pytest

from vchansim import __version__
from vchansim import core as cores
from vchansim.cli import COMMANDS, build_parser

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


@pytest.mark.parametrize("argv", [["scenarios", "list"], ["scenarios", "list", "--json"]])
def test_a_reader_that_goes_away_ends_the_output_quietly(argv: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # as `vchansim scenarios list | head -1` once head has its line
    try:
        done = subprocess.run([sys.executable, "-m", "vchansim", *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=DEADLINE)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")


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


def test_the_commands_table_names_every_subcommand_and_its_module() -> None:
    everything = {name for name, _ in _parsers() if name.count(" ") == 1}
    assert everything == {f"vchansim {name}" for name in COMMANDS}
    for name in COMMANDS:
        alone = {sub for sub, _ in _parsers_of(build_parser([name, "--help"]))}
        assert f"vchansim {name}" in alone


def _parsers_of(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    return [
        (f"vchansim {sub}", p)
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub, p in action.choices.items()
    ]


#: Runs the CLI with the emulator's hub, shm backend and posix_ipc made unimportable, as
#: on a minimal guest that has only what the xen backend needs.
_WITHOUT_EMULATOR = """
import runpy, sys
BLOCKED = ("posix_ipc", "vchansim.hub", "vchansim.backends.shm")
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv[0] = "vchansim"
runpy.run_module("vchansim", run_name="__main__")
"""


def run_without_emulator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMULATOR, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.skipif(os.path.exists("/dev/xen/evtchn"), reason="this machine is a Xen domain")
@pytest.mark.parametrize("command", ["connect", "serve"])
def test_the_xen_path_needs_nothing_of_the_emulator(command: str) -> None:
    done = run_without_emulator(command, "--backend", "xen", "0", "data/vchan/x")
    assert done.returncode == 1, done.stderr
    # The one line of a machine without Xen, not an import error from the emulator.
    assert "blocked for this test" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"vchansim {command}: the xen backend needs /dev/xen/")


def test_the_blocker_does_block_what_needs_the_emulator() -> None:
    done = run_without_emulator("exec", "--backend", "shm", "true")
    assert done.returncode != 0
    assert "blocked for this test: vchansim" in done.stderr
