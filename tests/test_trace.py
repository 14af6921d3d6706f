"""Traces: what the writer produces reads back exactly, and every way a file can be
damaged -- cut short, corrupted, not a trace at all -- is a TraceError naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vchansim.scenario import parse_scenario, run_scenario
from vchansim.trace import TraceError, TraceWriter, iter_trace, read_trace

RING = {
    "left": {"cons": 10, "prod": 30},
    "right": {"cons": 4294967290, "prod": 5},
    "orders": [10, 11],
    "cli_live": 1,
    "srv_live": 1,
    "cli_notify": 1,
    "srv_notify": 2,
    "events": {"srv_to_cli": 3, "cli_to_srv": 4},
}


def write_sample_trace(path: Path, *, close: bool = True) -> Path:
    writer = TraceWriter(path, {"scenario": "demo", "seed": 3})
    writer.record("endpoint", 0.0, endpoint="server", event="listening", port=1)
    writer.record("ring", 0.25, **RING)
    writer.record("fault", 0.2, endpoint="client", kind="corrupt", field="left.prod")
    writer.record("verdict", 0.5, expectation="delivered", kind="delivered", passed=True)
    if close:
        writer.close(0.5, passed=True)
    return path


def test_written_records_read_back_with_header_and_decoded_samples(tmp_path):
    trace = read_trace(write_sample_trace(tmp_path / "t.jsonl"))
    assert trace.header["scenario"] == "demo" and trace.header["seed"] == 3
    assert [r["type"] for r in trace.records] == ["endpoint", "ring", "fault", "verdict", "end"]
    assert trace.complete
    (sample,) = trace.samples()
    assert (sample.left_cons, sample.left_prod, sample.left_order) == (10, 30, 10)
    assert sample.right_fill == 11  # prod wrapped past 2**32: fill is still mod 2**32
    assert (sample.events_srv_to_cli, sample.events_cli_to_srv) == (3, 4)


def test_timeline_orders_records_from_different_processes_by_time(tmp_path):
    trace = read_trace(write_sample_trace(tmp_path / "t.jsonl"))
    assert [r["t"] for r in trace.timeline()] == [0.0, 0.2, 0.25, 0.5, 0.5]


def test_a_trace_without_end_record_is_readable_but_incomplete(tmp_path):
    trace = read_trace(write_sample_trace(tmp_path / "t.jsonl", close=False))
    assert not trace.complete and len(trace.records) == 4


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _damage(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ls: [*ls[:3], ls[3][: len(ls[3]) // 2]], r"line 4: truncated"),
        (lambda ls: [*ls[:2], '{"type": "ring", "t": 0.1\n', *ls[2:]], r"line 3: not a JSON"),
        (lambda ls: [*ls[:2], "[1, 2]\n", *ls[2:]], r"line 3: a record must be a JSON object"),
        (lambda ls: ls[1:], r"line 1: not a vchansim trace"),
        (lambda ls: [], r"empty file"),
        (
            lambda ls: [ls[0].replace('"version":1', '"version":99'), *ls[1:]],
            r"line 1: .*version 99",
        ),
        (lambda ls: ls + ls[1:2], r"line 7: record after the end record"),
        (
            lambda ls: [*ls[:1], '{"type":"fault","t":-1,"endpoint":"a","kind":"x"}\n'],
            r"line 2: .*negative",
        ),
        (lambda ls: [*ls[:1], '{"t":1}\n'], r"line 2: field 'type' is missing"),
    ],
    ids=[
        "cut-mid-line",
        "bad-json",
        "not-an-object",
        "no-header",
        "empty",
        "future-version",
        "after-end",
        "negative-time",
        "no-type",
    ],
)
def test_damaged_traces_raise_trace_error_naming_the_line(tmp_path, damage, message):
    path = write_sample_trace(tmp_path / "t.jsonl")
    _damage(path, damage(_lines(path)))
    with pytest.raises(TraceError, match=message) as info:
        read_trace(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("left", {"cons": 1}, r"field 'prod' is missing"),
        ("right", {"cons": 1, "prod": 2**32}, r"'prod' = 4294967296 is outside 0..4294967295"),
        ("orders", [10], r"'orders' must be two u16"),
        ("cli_live", 300, r"'cli_live' = 300 is outside 0..255"),
        ("srv_notify", True, r"'srv_notify' is missing or not int"),
        ("events", [1, 2], r"'events' must be an object or null"),
    ],
)
def test_bad_ring_fields_are_named(tmp_path, field, value, message):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, {"scenario": "demo"})
    writer.record("ring", 0.1, **{**RING, field: value})
    writer.close(0.2, passed=False)
    with pytest.raises(TraceError, match=rf"line 2: .*{message}"):
        read_trace(path)


def test_unknown_record_types_from_newer_writers_are_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, {"scenario": "demo"})
    writer.record("telemetry", 0.1, anything=[1, 2])
    writer.close(0.2, passed=True)
    assert [r["type"] for r in read_trace(path).records] == ["telemetry", "end"]


def test_binary_garbage_is_a_trace_error_not_a_crash(tmp_path):
    path = write_sample_trace(tmp_path / "t.jsonl")
    path.write_bytes(path.read_bytes() + b"\xff\xfe\x00garbage\n")
    with pytest.raises(TraceError, match=r"line 7"):
        read_trace(path)


def test_unreadable_and_unwritable_paths_are_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")
    with pytest.raises(TraceError, match="cannot write"):
        TraceWriter(tmp_path / "no" / "such" / "dir.jsonl", {})


def test_iter_trace_checks_lazily_up_to_the_damage(tmp_path):
    path = write_sample_trace(tmp_path / "t.jsonl")
    lines = _lines(path)
    _damage(path, [*lines[:3], "{oops\n", *lines[3:]])
    seen = []
    with pytest.raises(TraceError, match="line 4"):
        for record in iter_trace(path):
            seen.append(record["type"])
    assert seen == ["header", "endpoint", "ring"]


SCENARIO = """
[scenario]
name = "traced"
seed = 5
[endpoints.srv]
role = "server"
backend = "memory"
write_min = 4096
[endpoints.srv.workload]
send = 200_000
write_size = [1, 5000]
[endpoints.cli]
role = "client"
backend = "memory"
[endpoints.cli.workload]
read_pause = 0.0002
[[faults]]
kind = "corrupt"
endpoint = "cli"
field = "cli_notify"
value = 3
after_received = 50_000
[[expect]]
kind = "delivered"
"""


def test_a_real_run_records_ring_states_faults_life_events_and_verdicts(tmp_path):
    path = tmp_path / "run.jsonl"
    result = run_scenario(parse_scenario(SCENARIO), trace=path)
    trace = read_trace(path)
    assert trace.complete and trace.records[-1]["passed"] == result.passed
    assert trace.header["channel"]["right_order"] == 12
    samples = trace.samples()
    assert len(samples) >= 2
    assert [s.t for s in samples] == sorted(s.t for s in samples)
    # Replaying the samples shows the whole stream going through the right ring.
    assert samples[-1].right_prod - samples[0].right_prod > 0
    assert max(s.right_prod for s in samples) == 200_000
    assert all(0 <= s.right_fill <= 4096 for s in samples)
    (fault,) = list(trace.of_type("fault"))
    assert fault["endpoint"] == "cli" and fault["new"] == 3 and fault["received"] == 50_000
    events = {(r["endpoint"], r["event"]) for r in trace.of_type("endpoint")}
    assert {("srv", "listening"), ("cli", "connected"), ("srv", "closing")} <= events
    assert [v["kind"] for v in trace.of_type("verdict")] == ["delivered"]
    assert json.loads(path.read_text().splitlines()[0])["format"] == "vchansim-trace"
