"""``vchansim run``: the scenario library passes, and the exit status, the JSON, the JUnit
XML and the traces say what CI needs to know."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vchansim.cli import main
from vchansim.trace import read_trace

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"

PASSING = """# Proves: nothing; a quick scenario for the command's own tests.
[scenario]
name = "{name}"
backend = "memory"
[endpoints.srv]
role = "server"
[endpoints.srv.workload]
send = 50_000
[endpoints.cli]
role = "client"
[[expect]]
kind = "delivered"
[[expect]]
kind = "close_seen"
endpoint = "cli"
within_ms = {within}
"""


def vchansim_run(*argv: str) -> int:
    """The ``run`` subcommand exactly as the ``vchansim`` command dispatches it."""
    return main(["run", *argv])


def write(folder: Path, name: str, within: float = 5000) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(PASSING.format(name=name, within=within))
    return path


@pytest.mark.slow
def test_the_whole_scenario_library_passes(capsys):
    status = vchansim_run(str(LIBRARY), "--json")
    report = json.loads(capsys.readouterr().out)
    failed = {
        s["scenario"]: [v["detail"] for v in s["verdicts"] if not v["passed"]]
        for s in report["scenarios"]
        if not s["passed"]
    }
    assert failed == {} and status == 0
    assert len(report["scenarios"]) >= 12


def test_exit_status_is_one_when_any_expectation_fails(tmp_path, capsys):
    write(tmp_path, "good")
    write(tmp_path, "impatient", within=0)  # no close is seen in 0 ms
    assert vchansim_run(str(tmp_path), "--no-progress") == 1
    out = capsys.readouterr().out
    assert "impatient" in out and "FAIL" in out and "1 failed: impatient" in out


def test_json_and_junit_describe_every_verdict(tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    status = vchansim_run(
        str(write(tmp_path, "a")), str(write(tmp_path, "b", 0)), "--json", "--junit", str(junit)
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["passed"] is False
    assert [s["scenario"] for s in report["scenarios"]] == ["a", "b"]
    delivered = report["scenarios"][0]["verdicts"][0]
    assert delivered["passed"] and "50000 B" in delivered["detail"]
    assert {e["endpoint"] for e in report["scenarios"][0]["endpoints"]} == {"srv", "cli"}
    suites = ET.parse(junit).getroot()
    assert [s.get("name") for s in suites] == ["a", "b"]
    assert [s.get("failures") for s in suites] == ["0", "1"]
    (failure,) = suites.iter("failure")
    assert failure.get("type") == "close_seen" and "limit 0 ms" in failure.get("message")


def test_an_invalid_scenario_exits_two_naming_the_key(tmp_path, capsys):
    bad = write(tmp_path, "bad")
    bad.write_text(bad.read_text().replace("send = 50_000", "send = -1"))
    assert vchansim_run(str(bad)) == 2
    assert "bad.toml: endpoints.srv.workload.send: -1 is below the minimum 0" in (
        capsys.readouterr().err
    )


def test_traces_go_to_a_file_or_one_per_scenario_in_a_directory(tmp_path):
    one = tmp_path / "one.jsonl"
    assert vchansim_run(str(write(tmp_path, "a")), "--trace", str(one)) == 0
    assert read_trace(one).header["scenario"] == "a"
    folder = tmp_path / "traces"
    assert (
        vchansim_run(str(tmp_path / "a.toml"), str(write(tmp_path, "b")), "--trace", str(folder))
        == 0
    )
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl", "b.jsonl"]
    assert all(read_trace(p).complete for p in folder.iterdir())


def test_seed_override_changes_the_traffic(tmp_path, capsys):
    path = write(tmp_path, "a")
    digests = []
    for seed in ("1", "1", "2"):
        vchansim_run(str(path), "--json", "--seed", seed)
        report = json.loads(capsys.readouterr().out)["scenarios"][0]
        digests.append(next(e["sent"]["sha256"] for e in report["endpoints"] if e["sent"]))
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("argv", [[], ["--junit"]])
def test_usage_errors_are_argparse_errors(argv):
    with pytest.raises(SystemExit) as info:
        vchansim_run(*argv)
    assert info.value.code == 2


ON_SHM = PASSING.replace('backend = "memory"', 'backend = "shm"')


def test_an_unknown_backend_is_an_invalid_file_naming_the_known_ones(tmp_path, capsys):
    bad = tmp_path / "typo.toml"
    bad.write_text(PASSING.format(name="typo", within=5000).replace('"memory"', '"nope"'))
    assert vchansim_run(str(bad)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"vchansim run: {bad}: scenario.backend: 'nope' is not one of ")
    assert all(f"'{known}'" in line for known in ("memory", "shm", "xen"))


@pytest.mark.skipif(Path("/dev/xen").exists(), reason="this machine has Xen's devices")
def test_a_xen_scenario_without_xen_is_refused_not_replaced(tmp_path, capsys):
    text = ON_SHM.format(name="on-xen", within=5000).replace('backend = "shm"', 'backend = "xen"')
    path = tmp_path / "on-xen.toml"
    path.write_text(text)
    assert vchansim_run(str(path), "--json") == 1
    (result,) = json.loads(capsys.readouterr().out)["scenarios"]
    (verdict,) = result["verdicts"]
    assert verdict["expectation"] == "the scenario runs" and not verdict["passed"]
    assert "on-xen: backend 'xen' needs /dev/xen" in verdict["detail"]
    assert result["endpoints"] == []  # nothing started, on shm or anywhere


@pytest.mark.skipif(Path("/dev/xen").exists(), reason="this machine has Xen's devices")
def test_backend_xen_without_xen_is_refused_in_one_line(capsys):
    assert vchansim_run("--backend", "xen", "stream-both-ways") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("vchansim run: backend 'xen' needs /dev/xen")


def test_one_end_on_xen_and_one_on_the_emulator_is_an_invalid_file(tmp_path, capsys):
    text = ON_SHM.format(name="mixed", within=5000)
    path = tmp_path / "mixed.toml"
    path.write_text(text.replace('role = "client"', 'role = "client"\nbackend = "xen"'))
    assert vchansim_run(str(path)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "endpoints.cli.backend: 'xen' cannot meet 'shm'" in line


def test_backend_option_rechecks_each_scenario_for_its_new_backend(capsys):
    # kill-server kills a process: the in-process backend has none to kill.
    assert vchansim_run("--backend", "memory", "kill-server") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "needs the endpoint to be a process; backend 'memory'" in line


def test_backend_option_moves_both_ends(tmp_path, capsys):
    path = write(tmp_path, "moved")  # backend = "memory" in the file
    assert vchansim_run(str(path), "--backend", "shm", "--json") == 0
    (result,) = json.loads(capsys.readouterr().out)["scenarios"]
    assert all(e["pid"] for e in result["endpoints"])  # processes: shm, not threads


@pytest.mark.parametrize("factor", ["0.5", "fast", "1e9"])
def test_a_bad_deadline_factor_is_refused_in_one_line(tmp_path, capsys, factor):
    path = write(tmp_path, "any")
    assert vchansim_run(str(path), "--deadline-factor", factor) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"vchansim run: deadline factor {factor!r} (from --deadline-factor or "
        "$VCHANSIM_DEADLINE_FACTOR) must be a number from 1 to 1000"
    )


def test_the_deadline_factor_also_comes_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VCHANSIM_DEADLINE_FACTOR", "slow")
    assert vchansim_run(str(write(tmp_path, "any"))) == 2
    assert "deadline factor 'slow'" in capsys.readouterr().err


def test_rundir_puts_the_scenarios_hub_there_and_keeps_the_directory(tmp_path):
    rundir = tmp_path / "watch"
    path = tmp_path / "on-shm.toml"
    path.write_text(ON_SHM.format(name="on-shm", within=5000))
    assert vchansim_run(str(path), "--no-progress", "--rundir", str(rundir)) == 0
    log = (rundir / "hub.log").read_text()
    assert f"serving {rundir / 'hub'}" in log and "GNT_SHARE" in log
    assert not (rundir / "hub").exists()  # the hub was stopped


@pytest.mark.parametrize("chosen", [True, False], ids=["rundir", "private"])
def test_show_rundir_prints_where_the_hub_runs_and_how_to_inspect_it(tmp_path, capsys, chosen):
    rundir = tmp_path / "watch"
    path = tmp_path / "on-shm.toml"
    path.write_text(ON_SHM.format(name="on-shm", within=5000))
    where = ["--rundir", str(rundir)] if chosen else []
    assert vchansim_run(str(path), "--json", "--show-rundir", *where) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout stays JSON only
    (line,) = captured.err.splitlines()
    shown = line.split("vchansim inspect --rundir ", 1)[1].rstrip(")")
    assert line.startswith(f"on-shm: hub in {shown} ")
    if chosen:
        assert shown == str(rundir)
    else:
        assert Path(shown).name.startswith("vs-") and not Path(shown).exists()  # removed


def test_rundir_with_a_hub_of_its_own_or_for_an_in_process_run_is_refused(tmp_path, capsys):
    from vchansim.hub.launcher import ensure_hub, stop_hub

    busy = tmp_path / "busy"
    ensure_hub(busy)
    try:
        path = tmp_path / "on-shm.toml"
        path.write_text(ON_SHM.format(name="on-shm", within=5000))
        assert vchansim_run(str(path), "--json", "--rundir", str(busy)) == 1
        (verdict,) = json.loads(capsys.readouterr().out)["scenarios"][0]["verdicts"]
        assert f"a hub already serves {busy}" in verdict["detail"]
    finally:
        stop_hub(busy)
    assert vchansim_run(str(write(tmp_path, "mem")), "--json", "--rundir", str(busy)) == 1
    (verdict,) = json.loads(capsys.readouterr().out)["scenarios"][0]["verdicts"]
    assert "has no hub to put in a run directory" in verdict["detail"]
