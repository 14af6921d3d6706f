"""The agent on the emulator: a ``vchansim agent`` process as domain 3 of a hub runs the
scenario's client, dom0 (this test, the runner) its server, through XenStore only.

The same code runs in a Xen guest (tests/xen_real/test_real_cross_domain.py); here it is
proven on every run: library scenarios pass with the client in the agent's domain, the
runner's faults (a kill, a pause, a restart) reach it through the agent, an agent that is
absent or never answers is one line within the bound, and garbled requests and reports
are each refused with one line while the agent goes on.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vchansim.agent import AgentClient, AgentError, agent_root
from vchansim.backends.base import Store
from vchansim.backends.shm import ShmBackend
from vchansim.cli import main
from vchansim.errors import StoreError
from vchansim.hub.launcher import private_hub
from vchansim.leaks import assert_no_leaks
from vchansim.library import builtin_path
from vchansim.rundir import RunDir
from vchansim.scenario import ScenarioResult, parse_scenario, run_scenario
from vchansim.scenario.agentjob import encode_job
from vchansim.scenario.endpoint import EndpointJob
from vchansim.scenario.executors import ShmBackends
from vchansim.scenario.messages import (
    REPORTS,
    Connected,
    FaultFired,
    Listening,
    Progress,
    Result,
    Started,
    report_from_json,
    report_to_json,
)

GUEST = 3
#: Liveness bound on the agent's start and each answer (generous: a loaded CI machine).
BOUND = 60.0

SHORT = """
[scenario]
name = "short"
deadline = 6

[endpoints.server]
role = "server"

[endpoints.server.workload]
send = 65536

[endpoints.client]
role = "client"

[[expect]]
kind = "delivered"
"""


def wait_for(store: Store, path: str, timeout: float = BOUND) -> bytes:
    """The value at ``path`` once written, waiting on a watch."""
    store.watch(path, "test")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return store.read(path)
            except StoreError:
                left = deadline - time.monotonic()
                assert left > 0, f"nothing was written to {path}"
                store.read_watch(left)
    finally:
        store.unwatch(path, "test")


@pytest.fixture
def rundir() -> Iterator[RunDir]:
    """A private hub that the agent and the runner share, named to both by ``--rundir``
    and not through the environment (which every helper process of the runner's, such
    as the spawn method's resource tracker, would inherit and be blamed for).  After the
    test (the agent stopped), nothing may be left in it."""
    with private_hub() as checked:
        yield checked
        assert_no_leaks(checked)


@pytest.fixture
def dom0(rundir: RunDir) -> Iterator[Store]:
    store = ShmBackend(0, rundir=str(rundir.path)).store()
    yield store
    store.close()


@pytest.fixture
def agent(rundir: RunDir, dom0: Store) -> Iterator[subprocess.Popen[bytes]]:
    """``vchansim agent`` as domain 3 of the test's hub, listening; stopped (SIGTERM) and
    reaped afterwards -- the run directory's leak check then proves it left nothing."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vchansim",
            "agent",
            "--domid",
            str(GUEST),
            "--rundir",
            str(rundir.path),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        ready = json.loads(wait_for(dom0, f"{agent_root(GUEST)}/ready"))
        assert ready["pid"] == proc.pid
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(BOUND)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize(
    "name", ["stream-both-ways", "kill-client", "pause-client", "reconnect-after-kill"]
)
def test_library_scenarios_pass_with_the_client_in_the_agents_domain(
    rundir: RunDir, agent: subprocess.Popen[bytes], name: str
) -> None:
    result = run_scenario(builtin_path(name), rundir=rundir.path, client_domain=GUEST)
    assert result.passed, result.verdicts
    assert result.scenario.client.domain == GUEST
    assert result.scenario.server.domain != GUEST
    verdicts = {v.kind for v in result.verdicts}
    assert "no_leaks" in verdicts
    clients = result.record.of(result.scenario.client.name)
    assert len(clients) == (2 if name == "reconnect-after-kill" else 1)  # a restart: a new job
    if name == "kill-client":  # the runner's SIGKILL went through the agent
        assert clients[0].exitcode == -signal.SIGKILL


def test_what_the_agent_cannot_place_is_not_applicable(
    rundir: RunDir, agent: subprocess.Popen[bytes]
) -> None:
    results = {
        name: run_scenario(builtin_path(name), rundir=rundir.path, client_domain=GUEST)
        for name in ("c-client", "grant-exhaustion")
    }
    assert "program endpoint" in str(results["c-client"].not_applicable)
    assert "agent's hub runs with its own" in str(results["grant-exhaustion"].not_applicable)
    assert not any(r.passed for r in results.values())


def test_a_domain_without_an_agent_is_one_line(
    rundir: RunDir, agent: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "run",
            "--rundir",
            str(rundir.path),
            "--client-domain",
            "4",
            "--json",
            "stream-both-ways",
        ]
    )
    assert status == 1
    (verdict,) = json.loads(capsys.readouterr().out)["scenarios"][0]["verdicts"]
    assert "domain 4 runs no vchansim agent" in verdict["detail"], verdict


def test_an_agent_that_never_answers_is_one_line_within_the_bound(
    rundir: RunDir,
    agent: subprocess.Popen[bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent.send_signal(signal.SIGSTOP)
    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    status = main(
        ["run", "--rundir", str(rundir.path), "--client-domain", str(GUEST), "--json", str(path)]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    (verdict,) = report["scenarios"][0]["verdicts"]
    assert "did not answer" in verdict["detail"] and f"domain {GUEST}" in verdict["detail"]
    assert "\n" not in verdict["detail"]


def _job_for(domid: int, rundir: RunDir) -> EndpointJob:
    scenario = parse_scenario(SHORT)
    placed = scenario.in_domain(domid)
    return EndpointJob(placed, placed.client.name, ShmBackends(str(rundir.path)))


def _evil_job() -> str:
    """A pickle that would call a function outside vchansim if it were loaded."""

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    return base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()


def test_garbled_requests_are_each_refused_with_one_line(
    rundir: RunDir, agent: subprocess.Popen[bytes], dom0: Store
) -> None:
    client = AgentClient(dom0, GUEST, BOUND)
    root = agent_root(GUEST)
    raw = {"not-json": b"{kind", "a-list": b"[1, 2]", "binary": b"\xff\xfe"}
    for name, value in raw.items():
        dom0.write(f"{root}/{name}/request", value)
    refusals = {
        "unknown kind": {"kind": "format-disk"},
        "is text": {"kind": "endpoint", "job": 7},
        "cannot be read": {"kind": "endpoint", "job": "!!not base64!!"},
        "not vchansim's": {"kind": "endpoint", "job": _evil_job()},
        "is in domain 5": {"kind": "endpoint", "job": encode_job(_job_for(5, rundir))},
        "no job": {"kind": "signal", "job": "nobody", "signo": 9},
    }
    names = {why: client.submit(request) for why, request in refusals.items()}
    for name in raw:
        answer = client.result(name)
        assert answer["ok"] is False and "JSON" in answer["error"], answer
    for why, name in names.items():
        answer = client.result(name)
        assert answer["ok"] is False and why in answer["error"], (why, answer)
        assert "\n" not in answer["error"]
        with pytest.raises(AgentError, match=why):
            client.started(name)
    for name in [*raw, *names.values()]:
        client.remove(name)
    # The agent goes on: a scenario still runs through it.
    assert run_scenario(
        builtin_path("stream-both-ways"), rundir=rundir.path, client_domain=GUEST
    ).passed


def test_a_stopped_agent_leaves_no_endpoint_running(
    rundir: RunDir, agent: subprocess.Popen[bytes], dom0: Store
) -> None:
    client = AgentClient(dom0, GUEST, BOUND)
    name = client.submit({"kind": "endpoint", "job": encode_job(_job_for(GUEST, rundir))})
    pid = client.started(name)  # the endpoint waits for its word to go, which never comes
    agent.terminate()
    assert agent.wait(BOUND) == 130
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped by the agent
    client.remove(name)
    with pytest.raises(StoreError):
        dom0.read(f"{agent_root(GUEST)}/ready")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=st.binary(max_size=200))
def test_any_bytes_as_a_request_get_an_answer(
    rundir: RunDir, agent: subprocess.Popen[bytes], dom0: Store, request: bytes
) -> None:
    client = AgentClient(dom0, GUEST, BOUND)
    name = client.submit({"kind": "x"})  # a fresh name, then the bytes in its place
    client.result(name)
    dom0.write(f"{agent_root(GUEST)}/{name}-b/request", request)
    answer = client.result(f"{name}-b")
    assert answer["ok"] is False and isinstance(answer["error"], str)
    client.remove(name)
    client.remove(f"{name}-b")


def test_a_report_that_does_not_read_is_the_remote_endpoints_one_error_line(
    rundir: RunDir, dom0: Store
) -> None:
    """Domain 5's "agent" is this test: it starts the job and reports nonsense."""
    root = agent_root(5)
    dom0.write(f"{root}/ready", b'{"pid": 1}')
    outcome: list[object] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            run_scenario(parse_scenario(SHORT), rundir=rundir.path, client_domain=5)
        )
    )
    runner.start()
    dom0.watch(root, "fake")
    deadline = time.monotonic() + BOUND
    while not (jobs := [n for n in dom0.directory(root) if n != "ready"]):
        assert dom0.read_watch(deadline - time.monotonic()) is not None, "no request came"
    (job,) = jobs
    wait_for(dom0, f"{root}/{job}/request")
    dom0.write(f"{root}/{job}/pid", b"4242")
    dom0.write(f"{root}/{job}/out/0", json.dumps({"ev": "started", "pid": "x"}).encode())
    runner.join(BOUND)
    dom0.rm(root)
    (result,) = outcome
    assert isinstance(result, ScenarioResult) and not result.passed
    (client,) = result.record.of(result.scenario.client.name)
    assert client.result is not None and client.result.error is not None
    message = client.result.error["message"]
    assert "started report has pid = 'x'" in message and "domain 5" in message, message
    assert "\n" not in message


SAMPLES = [
    Started(pid=12),
    Listening(ring_ref=8, port=3, orders=[10, 11]),
    Connected(sent=0, received=4),
    Progress(sent=1, received=2, mismatch_at=None, events={"delivered": 3}),
    FaultFired(index=0, fault="kill client", kind="kill", detail={"at": 1.5}, sent=4),
    Result(
        sent={"stream": "server", "start": 0, "count": 3, "sha256": "ab"},
        error={
            "type": "E",
            "mro": ["E"],
            "errno": None,
            "message": "m",
            "phase": "io",
            "where": "",
        },
        unfired=["x"],
    ),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.ev)
def test_reports_survive_json(message: object) -> None:
    wire = json.loads(json.dumps(report_to_json(message)))  # type: ignore[arg-type]
    assert report_from_json(wire) == message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    ev=st.sampled_from(sorted(REPORTS)) | st.text(max_size=6),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "t",
                "pid",
                "sent",
                "received",
                "error",
                "events",
                "mismatch_at",
                "ring_ref",
                "port",
                "orders",
                "index",
                "fault",
                "kind",
                "detail",
            ]
        ),
        JSON,
        max_size=6,
    ),
)
def test_a_hostile_report_is_a_report_or_one_value_error(
    ev: str, fields: dict[str, object]
) -> None:
    try:
        message = report_from_json({"ev": ev, **fields})
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert message.ev == ev
    assert report_from_json(json.loads(json.dumps(report_to_json(message)))) == message
