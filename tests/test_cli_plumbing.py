"""What every subcommand shares: the version line, the one-line errors and their exit
codes, each subcommand's own usage on a bad option, and plain help texts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vchansim import __version__
from vchansim import core as cores

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
