"""The built-in scenario library: listed, run by name, and a wrong name refused with one
line naming the known ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import procs

from vchansim.library import LIBRARY, builtin_names
from vchansim.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def vchansim(*args: str, rundir: RunDir, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vchansim", *args],
        env=procs.child_env(rundir),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=procs.DEADLINE * 4,
    )


def test_the_checkouts_scenarios_directory_is_the_packaged_library() -> None:
    assert LIBRARY.resolve() == (ROOT / "scenarios").resolve()
    assert builtin_names() == sorted(p.stem for p in (ROOT / "scenarios").glob("*.toml"))


def test_list_names_every_builtin_with_its_description(rundir: RunDir, tmp_path: Path) -> None:
    done = vchansim("scenarios", "list", "--json", rundir=rundir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [entry["name"] for entry in listed] == builtin_names()
    assert all(entry["description"] for entry in listed)


def test_a_builtin_runs_by_name_from_anywhere(rundir: RunDir, tmp_path: Path) -> None:
    done = vchansim("run", "--json", "index-wrap", rundir=rundir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["scenarios"]
    assert result["scenario"] == "index-wrap" and result["passed"]


def test_builtin_wins_over_a_file_of_the_same_name(rundir: RunDir, tmp_path: Path) -> None:
    (tmp_path / "index-wrap").write_text("not a scenario\n")
    done = vchansim("run", "--json", "--builtin", "index-wrap", rundir=rundir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_one_line_naming_the_builtins(rundir: RunDir, tmp_path: Path) -> None:
    done = vchansim("run", "no-such-scenario", rundir=rundir, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("vchansim run: 'no-such-scenario' is not a built-in scenario")
    assert "kill-client" in line
    missing = vchansim("run", "mine.toml", rundir=rundir, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "vchansim run: mine.toml: no such scenario file or directory"
