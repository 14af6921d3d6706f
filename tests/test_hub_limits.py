"""The hub's per-domain limits: options of the hub, ``$VCHANSIM_HUB_OPTIONS`` for the hubs
backends start, and the scenario runner making its hub with the scenario's limits."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import procs
from hypothesis import given, settings
from hypothesis import strategies as st

from vchansim.backends.shm import ShmBackend
from vchansim.errors import BackendError, ConfigError, GrantError, StoreError
from vchansim.hub import Op, ensure_hub, hub_running, open_hub
from vchansim.hub.launcher import OPTIONS_ENV, stop_hub
from vchansim.hub.limits import XS_QUOTAS, HubLimits, limit_options, parse_limits
from vchansim.rundir import RunDir
from vchansim.scenario import run_scenario, scenario_from_dict
from vchansim.scenario.executors import hub_limits
from vchansim.xenstore.store import Quotas


def exhausted(resource: str, leave: int, backend: str = "shm"):
    """A server in domain 3 whose domain has ``leave`` of ``resource`` to spend."""
    return scenario_from_dict(
        {
            "scenario": {"name": "exhausted", "backend": backend, "deadline": 20},
            "endpoints": {
                "srv": {
                    "role": "server",
                    "domain": 3,
                    "write_min": 16384,
                    "workload": {"send": 4096},
                },
                "cli": {"role": "client"},
            },
            "faults": [
                {"kind": "exhaust", "endpoint": "srv", "resource": resource, "leave": leave}
            ],
            "expect": [{"kind": "clean"}, {"kind": "no_leaks"}],
        }
    )


def state(rundir: RunDir) -> dict:
    with open_hub(rundir, 0) as conn:
        return json.loads(conn.call(Op.STATE).text)


def fill_store(domid: int, limit: int) -> int:
    """Create nodes in ``domid``'s home until the quota says no (ENOSPC); how many went."""
    store = ShmBackend(domid).store()
    made = 0
    try:
        while made <= limit:
            try:
                store.write(f"data/n{made}", b"x")
            except StoreError as exc:
                assert exc.errno == errno.ENOSPC
                return made
            made += 1
        raise AssertionError(f"domain {domid} created more than {limit} nodes")
    finally:
        for i in range(made):
            store.rm(f"data/n{i}")
        store.close()


# -- the hub's options ---------------------------------------------------------------------


@pytest.fixture
def foreground_hub(rundir: RunDir) -> Iterator[subprocess.Popen]:
    """``vchansim hub`` in the foreground with small limits, stopped after the test."""
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vchansim",
            "hub",
            "--rundir",
            str(rundir.path),
            "--grant-limit",
            "3",
            "--port-limit",
            "2",
            "--xs-quota",
            "nodes=4",
            "--xs-quota",
            "watches=7",
        ],
        stderr=subprocess.PIPE,
        env=procs.child_env(rundir),
    )
    try:
        procs.wait_for(lambda: hub_running(rundir) or hub.poll() is not None, what="the hub")
        assert hub.poll() is None, hub.communicate()[1].decode()
        yield hub
    finally:
        stop_hub(rundir)
        hub.wait(procs.DEADLINE)


def test_hub_options_set_the_limits_each_domain_meets(
    rundir: RunDir, foreground_hub: subprocess.Popen
) -> None:
    grants = ShmBackend(1).grants()
    events = ShmBackend(1).events()
    try:
        grants.share(0, 3)
        with pytest.raises(GrantError) as full:
            grants.share(0, 1)
        assert full.value.errno == errno.ENOSPC and "3 of 3 grants" in str(full.value)
        ports = [events.bind_unbound(0) for _ in range(2)]
        assert ports == [1, 2]
        with pytest.raises(BackendError) as no_port:
            events.bind_unbound(0)
        assert no_port.value.errno == errno.ENOSPC and "2 of 2 bound" in str(no_port.value)
        assert fill_store(2, 4) == 3  # the quota counts the home's own data node
        limits = state(rundir)["hub"]["limits"]
        assert (limits["grants"], limits["ports"]) == (3, 2)
        assert (limits["xenstore"]["nodes"], limits["xenstore"]["watches"]) == (4, 7)
        assert limits["xenstore"]["transactions"] == Quotas().transactions  # untouched
    finally:
        events.close()
        grants.close()
    stop_hub(rundir)
    assert foreground_hub.wait(procs.DEADLINE) == 0
    log = foreground_hub.stderr.read().decode()
    assert "limits grants=3, ports=2, xenstore.nodes=4, xenstore.watches=7" in log


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        (["--grant-limit", "-1"], "outside 0..4294967295"),
        (["--port-limit", "many"], "'many' is not a whole number"),
        (["--xs-quota", "nodez=3"], "'nodez=3' is not NAME=N with NAME one of nodes,"),
        (["--xs-quota", "nodes"], "is not NAME=N"),
    ],
)
def test_bad_limit_options_are_refused_naming_the_option(
    rundir: RunDir, option: list[str], complaint: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "vchansim.hub", "--rundir", str(rundir.path), *option],
        capture_output=True,
        text=True,
        timeout=procs.DEADLINE,
        env=procs.child_env(rundir),
    )
    assert run.returncode == 2
    assert f"argument {option[0]}" in run.stderr and complaint in run.stderr
    assert not hub_running(rundir)


@settings(max_examples=40, deadline=None)
@given(
    grants=st.integers(0, 5000),
    ports=st.integers(0, 5000),
    quotas=st.dictionaries(st.sampled_from(XS_QUOTAS), st.integers(0, 1 << 20)),
)
def test_limits_survive_the_trip_through_hub_options(grants, ports, quotas):
    limits = HubLimits(grants, ports, Quotas(**quotas))
    options = limit_options(limits)
    assert parse_limits(options, "test") == limits
    assert len(options) == 2 * len(limits.changes())  # defaults are left out


# -- $VCHANSIM_HUB_OPTIONS: the hubs backends start ------------------------------------------


def test_an_embedded_hub_takes_its_limits_from_the_environment(
    rundir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, "--grant-limit 2 --xs-quota 'transactions=1'")
    grants = ShmBackend(1).grants()  # starts the hub
    try:
        with pytest.raises(GrantError) as full:
            grants.share(0, 3)
        assert full.value.errno == errno.ENOSPC
        limits = state(rundir)["hub"]["limits"]
        assert limits["grants"] == 2 and limits["xenstore"]["transactions"] == 1
    finally:
        grants.close()
    assert "limits grants=2, xenstore.transactions=1" in rundir.log.read_text()


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("--idle 3", "unrecognized arguments: --idle 3"),
        ("--grant-limit", "expected one argument"),
        ("--xs-quota watchez=1", "'watchez=1' is not NAME=N"),
        ("--port-limit 'unclosed", "No closing quotation"),
    ],
)
def test_bad_environment_options_are_refused_before_a_hub_starts(
    rundir: RunDir, monkeypatch: pytest.MonkeyPatch, value: str, complaint: str
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, value)
    with pytest.raises(ConfigError) as bad:
        ShmBackend(1).grants()
    assert str(bad.value).startswith(OPTIONS_ENV) and complaint in str(bad.value)
    assert not hub_running(rundir)


def test_explicit_limits_win_over_the_environment(
    rundir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPTIONS_ENV, "--grant-limit 2")
    ensure_hub(rundir, limits=HubLimits(grants=5))
    assert state(rundir)["hub"]["limits"]["grants"] == 5


# -- the scenario runner: limits instead of hogging --------------------------------------------


def test_exhaust_faults_become_the_limits_of_the_scenarios_machine():
    assert hub_limits(exhausted("grants", 1)) == HubLimits(grants=1)
    assert hub_limits(exhausted("ports", 0)) == HubLimits(ports=0)
    assert hub_limits(exhausted("xenstore", 2)).xenstore == Quotas(nodes=3)


@pytest.mark.parametrize("leave", [0, 2, 5])
def test_a_xenstore_limit_leaves_exactly_what_the_fault_says(rundir: RunDir, leave: int) -> None:
    limits = hub_limits(exhausted("xenstore", leave))
    ensure_hub(rundir, limits=limits)
    assert fill_store(3, leave) == leave


@pytest.mark.parametrize("backend", ["shm", "memory"])
def test_an_exhausted_grant_table_is_the_machines_limit_not_a_neighbours_hog(
    backend: str,
) -> None:
    result = run_scenario(exhausted("grants", 1, backend))
    error = result.record.of("srv")[0].result.error
    assert (error["type"], error["errno"], error["phase"]) == ("GrantError", "ENOSPC", "setup")
    # The control page took the one grant there was, and nothing else held any; both
    # backends word it alike, as both apply the same model.
    assert "1 of 1 grants in use" in error["message"]
    assert next(v for v in result.verdicts if v.kind == "no_leaks").passed


@pytest.mark.parametrize("backend", ["shm", "memory"])
def test_an_exhausted_port_table_fails_the_servers_bind(tmp_path, backend):
    trace = tmp_path / "ports.jsonl"
    result = run_scenario(exhausted("ports", 0, backend), trace=trace)
    error = result.record.of("srv")[0].result.error
    assert (error["errno"], error["phase"]) == ("ENOSPC", "setup")
    assert "0 of 0 bound" in error["message"]
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    (fault,) = [r for r in records if r["type"] == "fault"]
    assert (fault["kind"], fault["limit"]) == ("exhaust", 0)
    assert run_scenario(exhausted("ports", 1, backend)).passed  # the one port it binds
