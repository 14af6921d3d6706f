"""Program endpoints: an unmodified C program (vchan-pipe on Debian's libxenvchan) as one
end of a scenario, its reports judged like a Python endpoint's, its faults refused or
committed from outside."""

from __future__ import annotations

import json
import signal
import struct
from pathlib import Path
from typing import Any

import pytest

from vchansim.scenario import ScenarioError, load_scenario, run_scenario, scenario_from_dict
from vchansim.scenario.expectations.delivered import Delivered
from vchansim.scenario.messages import Result
from vchansim.scenario.program import errno_named_in, pipe_program
from vchansim.scenario.records import Instance, RunRecord
from vchansim.scenario.streams import XorshiftStream, digest, program_seed
from vchansim.scenario.verdicts import judge

pytestmark = pytest.mark.cbuild  # program endpoints are C programs, built on first use

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"


def scenario(
    server: dict[str, Any] | None = None,
    client: dict[str, Any] | None = None,
    *,
    faults: list[dict[str, Any]] | None = None,
    expect: list[dict[str, Any]] | None = None,
    **head: Any,
):
    """A scenario with a program client and a Python server unless told otherwise."""
    srv: dict[str, Any] = {"role": "server", "workload": {"send": 50_000}}
    cli: dict[str, Any] = {"role": "client", "kind": "program", "workload": {"send": 40_000}}
    srv.update(server or {})
    cli.update(client or {})
    return scenario_from_dict(
        {
            "scenario": {"name": "p", "deadline": 20, **head},
            "endpoints": {"srv": srv, "cli": cli},
            "faults": faults or [],
            "expect": expect or [{"kind": "delivered"}, {"kind": "clean"}, {"kind": "no_leaks"}],
        },
        source="t.toml",
    )


def verdict(result, kind: str):
    return next(v for v in result.verdicts if v.kind == kind)


# -- the library scenarios, looked at closely -------------------------------------------------


def test_c_client_streams_both_ways_with_the_runners_digests():
    s = load_scenario(LIBRARY / "c-client.toml")
    result = run_scenario(s)
    assert result.passed, result.summary()
    (client,) = result.record.of("client")
    program = client.result.program
    assert program["status"] == 0 and program["command"][0] == str(pipe_program())
    assert program["command"][1:4] == ["client", "1", "/local/domain/1/data/vchansim"]
    # What vchan-pipe hashed is what the runner computes for each stream, from the seed.
    sent, received = client.result.sent, client.result.received
    assert sent["sha256"] == digest(s.seed, "client", 0, 786_432, kind="program")
    assert received["sha256"] == digest(s.seed, "server", 0, 1_048_576)
    report = result.as_dict()["endpoints"]
    assert [e["program"] is not None for e in report] == [False, True]


def test_c_server_killed_mid_stream_is_seen_by_the_python_client(tmp_path: Path):
    trace = tmp_path / "killed.jsonl"
    result = run_scenario(LIBRARY / "c-server-killed.toml", trace=trace)
    assert result.passed, result.summary()
    (server,) = result.record.of("server")
    (client,) = result.record.of("client")
    assert server.killed == "fault" and server.result.program["status"] == -signal.SIGKILL
    assert server.result.error is None and server.result.sent is None  # never finished
    assert client.result.received["closed"] and client.result.received["count"] > 100_000
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    server_events = [
        r["event"] for r in records if r["type"] == "endpoint" and r["endpoint"] == "server"
    ]
    assert server_events[:4] == ["started", "program", "listening", "connected"]
    # Killed, it never closed: only the kill can date the close the client saw.
    assert "closing" not in server_events


def test_c_to_c_packets_both_ways():
    packets = {"mode": "packets", "write_size": 3001}
    s = scenario(
        {
            "kind": "program",
            "read_min": 8192,
            "write_min": 16384,
            "workload": {"send": 90_000, **packets},
        },
        {"workload": {"send": 60_000, **packets}},
    )
    result = run_scenario(s)
    assert result.passed, result.summary()
    (server,) = result.record.of("srv")
    command = server.result.program["command"]
    assert command[-3:] == ["--write-min", "16384", "--wait-go"] and "--packet" in command
    assert verdict(result, "delivered").detail.startswith("cli→srv 60000 B, srv→cli 90000 B")


# -- how a program's end is reported ---------------------------------------------------------


def test_a_c_server_short_of_grants_fails_with_the_errno_it_printed():
    s = scenario(
        {"kind": "program", "write_min": 16384, "workload": {"send": 4096}},
        {"kind": "python", "workload": {}},
        faults=[{"kind": "exhaust", "endpoint": "srv", "resource": "grants", "leave": 1}],
        expect=[
            {
                "kind": "error",
                "endpoint": "srv",
                "error": "ProgramError",
                "errno": "ENOSPC",
                "phase": "setup",
            },
            {"kind": "no_leaks"},
        ],
    )
    result = run_scenario(s)
    assert result.passed, result.summary()
    (server,) = result.record.of("srv")
    assert "exit status 2 (init failed)" in server.result.error["message"]
    assert "grant table of domain 1 is full" in server.result.program["stderr"]
    assert result.record.of("cli")[0].result.stopped.startswith("not started")


#: A Python server that gives up soon on a client that never connects.
IMPATIENT = {"timeout": 0.5}


def test_any_command_may_stand_in_with_the_placeholders_filled():
    s = scenario(
        IMPATIENT,
        {
            "program": [
                "sh",
                "-c",
                'echo "peer $1 seed $2: Permission denied" >&2; exit 5',
                "sh",
                "{peer}",
                "{seed}",
            ],
        },
        expect=[
            {
                "kind": "error",
                "endpoint": "cli",
                "error": "ProgramError",
                "errno": "EACCES",
                "phase": "setup",
            }
        ],
    )
    result = run_scenario(s)
    assert result.passed, result.summary()
    (client,) = result.record.of("cli")
    seed = program_seed(s.seed, "cli")
    assert client.result.program["command"][-2:] == ["1", str(seed)]
    assert f"peer 1 seed {seed}" in client.result.error["message"]
    assert client.result.error["message"].startswith("sh: exit status 5")


def test_a_program_that_cannot_run_is_a_setup_error():
    s = scenario(IMPATIENT, {"program": ["/nonexistent/vchan-program"]}, expect=[{"kind": "clean"}])
    result = run_scenario(s)
    assert not result.passed
    error = result.record.of("cli")[0].result.error
    assert (error["type"], error["phase"]) == ("ConfigError", "setup")
    assert "cannot run '/nonexistent/vchan-program': No such file or directory" in error["message"]


def test_a_program_server_gives_up_on_a_client_that_never_comes():
    s = scenario(
        {"kind": "program", "workload": {"send": 4096}},
        {"program": ["sleep", "30"], "workload": {}},
        deadline=4,
        expect=[
            {"kind": "error", "endpoint": "srv", "error": "TimeoutError", "phase": "io"},
            # The server's program is killed when it gives up, and leaves its keys.
            {"kind": "no_leaks", "allow_xenstore": True},
        ],
    )
    result = run_scenario(s)
    # The client never said ready and was killed at the deadline; its program went with
    # it (no process is left: no_leaks), and the server gave up at half the deadline.
    assert [v.kind for v in result.verdicts if not v.passed] == ["deadline"]
    assert "did not connect within 2 s" in result.record.of("srv")[0].result.error["message"]


# -- verdicts read a program's reports -------------------------------------------------------


def test_a_program_digest_that_is_not_vchan_pipes_data_fails_delivered():
    s = scenario({"workload": {}}, expect=[{"kind": "delivered"}])
    pipe_data = digest(s.seed, "cli", 0, 40_000, kind="program")
    python_data = digest(s.seed, "cli", 0, 40_000)  # what a Python endpoint would send
    received = {"stream": "cli", "start": 0, "count": 40_000, "sha256": pipe_data}
    received.update(mismatch_at=None, closed=False)
    sent = {"stream": "cli", "start": 0, "count": 40_000, "sha256": python_data}
    record = RunRecord(
        s,
        t0=0.0,
        instances=[
            Instance("cli", 1, None, None, 0.0, ended=1.0, result=Result(sent=sent)),
            Instance("srv", 1, None, None, 0.0, ended=1.0, result=Result(received=received)),
        ],
    )
    assert isinstance(s.expectations[0], Delivered)
    (judged,) = judge(record)
    assert not judged.passed and "cli: bytes 0..40000 differ from cli's stream" in judged.detail


def test_xorshift_stream_is_vchan_pipes_documented_data():
    seed, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    words, x = [], seed
    for _ in range(20_000):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        words.append(x)
    expected = struct.pack(f"<{len(words)}Q", *words)
    assert bytes(XorshiftStream(seed).read(0, len(expected))) == expected
    assert bytes(XorshiftStream(seed).read(100_001, 30_000)) == expected[100_001:130_001]


def test_errno_is_found_in_perror_style_words():
    assert errno_named_in("vchan-pipe: server init failed: No space left on device") == "ENOSPC"
    assert errno_named_in("open: Permission denied") == "EACCES"
    assert errno_named_in("it went wrong") is None


# -- what the model refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"kind": "corrupt", "field": "left.cons", "add": 1, "at": "setup"}, "corrupt left.cons"),
        ({"kind": "notify", "action": "drop"}, "drop notifications of cli"),
        ({"kind": "kill", "after_sent": 100}, "kill cli after 100 bytes sent"),
        ({"kind": "stall", "at": 0.1}, "stall cli at 0.1 s"),
        ({"kind": "close", "at": 0.1}, "close cli at 0.1 s"),
        ({"kind": "restart", "how": "kill", "at": 0.1}, "restart cli at 0.1 s"),
    ],
)
def test_faults_inside_an_endpoint_are_refused_for_a_program(fault, words):
    with pytest.raises(ScenarioError) as refused:
        scenario(faults=[{"endpoint": "cli", **fault}])
    message = str(refused.value)
    assert message.startswith("t.toml: faults[0]: ") and words in message
    assert "acts inside a Python endpoint, and cli is a program" in message


def test_a_kill_at_a_time_and_the_peers_own_faults_are_accepted():
    s = scenario(
        faults=[
            {"kind": "kill", "endpoint": "cli", "at": 0.2},
            {"kind": "notify", "endpoint": "srv", "action": "duplicate"},
        ],
        expect=[{"kind": "integrity"}],
    )
    assert [f.by_runner for f in s.faults] == [True, False]


@pytest.mark.parametrize(
    ("server", "client", "where", "words"),
    [
        ({}, {"spin": "off"}, "endpoints.cli.spin", "a setting of Python endpoints"),
        ({}, {"blocking": False}, "endpoints.cli.blocking", "a setting of Python endpoints"),
        (
            {},
            {"workload": {"duration": 1.0}},
            "endpoints.cli.workload.duration",
            "not for a program",
        ),
        (
            {},
            {"workload": {"send": 10, "write_size": 100}},
            "endpoints.cli.workload.write_size",
            "chooses its own writes",
        ),
        (
            {"workload": {"duration": 0.5}},
            {"workload": {}},
            "endpoints.srv.workload",
            "must send a byte count",
        ),
        ({"backend": "memory"}, {"backend": "memory"}, "endpoints.cli.backend", "shm emulator"),
        ({}, {"program": ["{pipe}", "{colour}"]}, "endpoints.cli.program", "unknown placeholder"),
        ({}, {"program": ["--x={options}"]}, "endpoints.cli.program", "only as a whole argument"),
        ({}, {"program": []}, "endpoints.cli.program", "non-empty list"),
        ({"program": ["x"]}, {}, "endpoints.srv.program", "only a program endpoint"),
        (
            {"workload": {"mode": "packets", "send": 10, "write_size": [1, 100]}},
            {"workload": {"mode": "packets"}},
            "endpoints.cli.workload.write_size",
            "one fixed size",
        ),
    ],
)
def test_what_a_program_cannot_be_told_is_refused(server, client, where, words):
    with pytest.raises(ScenarioError) as refused:
        scenario(server, client)
    assert f"t.toml: {where}: " in str(refused.value) and words in str(refused.value)


def test_a_program_server_cannot_serve_a_restarted_client():
    restart = {"kind": "restart", "endpoint": "cli", "after_received": 100}
    with pytest.raises(ScenarioError, match="a program server does not persist"):
        scenario({"kind": "program"}, {"kind": "python", "workload": {}}, faults=[restart])
