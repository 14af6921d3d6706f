"""Scenario files: the library loads, and every kind of mistake is refused with the file,
the key and the bad value named -- never a traceback, never a silent default."""

from __future__ import annotations

from pathlib import Path

import pytest

from vchansim import layout
from vchansim.scenario import ScenarioError, load_scenario, load_scenarios, parse_scenario
from vchansim.scenario.expectations.error import RaisesError
from vchansim.scenario.expectations.no_leaks import NoLeaks
from vchansim.scenario.faults.corrupt import CorruptFault
from vchansim.scenario.faults.kill import KillFault
from vchansim.scenario.spec import Trigger

LIBRARY = Path(__file__).resolve().parents[1] / "scenarios"

BASE = """
[scenario]
name = "t"
{scenario}
[endpoints.srv]
role = "server"
{srv}
[endpoints.srv.workload]
{srv_work}
[endpoints.cli]
role = "client"
{cli}
[endpoints.cli.workload]
{cli_work}
{rest}
[[expect]]
kind = "delivered"
"""


def scenario_text(**parts: str) -> str:
    fields = {"scenario": "", "srv": "", "srv_work": "send = 1000", "cli": "", "cli_work": ""}
    fields["rest"] = ""
    fields.update(parts)
    return BASE.format(**fields)


def parse(**parts: str):
    return parse_scenario(scenario_text(**parts), source="t.toml")


def test_the_library_has_at_least_twelve_scenarios_each_saying_what_it_proves():
    files = sorted(LIBRARY.glob("*.toml"))
    assert len(files) >= 12
    for path in files:
        assert path.read_text().startswith("# Proves: "), path.name
        scenario = load_scenario(path)
        assert scenario.expectations, path.name
        assert scenario.name == path.stem


def test_the_library_covers_every_ring_order_class():
    orders = {load_scenario(p).orders for p in LIBRARY.glob("*.toml")}
    sizes = {layout.ring_size(o) for pair in orders for o in pair}
    assert {1024, 2048, 4096, layout.MAX_RING_SIZE} <= sizes
    assert any(size > 4096 for size in sizes if size < layout.MAX_RING_SIZE)  # multi-page


def test_defaults_and_derived_values():
    s = parse(srv="read_min = 5000", cli_work="send = 2000")
    assert (s.server.domain, s.client.domain) == (1, 0)
    assert s.client_path == "/local/domain/1/data/vchansim"
    assert s.orders == (13, 11)
    assert s.ring_size("srv") == 2048 and s.ring_size("cli") == 8192
    assert s.deadline == 30.0 and s.server.backend == "shm" and s.server.blocking


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"srv": "read_mim = 4096"}, r"endpoints\.srv\.read_mim: unknown key"),
        ({"srv": 'read_min = "4096"'}, r"endpoints\.srv\.read_min: must be an integer, not str"),
        ({"srv": "read_min = true"}, r"endpoints\.srv\.read_min: must be an integer, not bool"),
        ({"srv": "read_min = 2097152"}, r"read_min: 2097152 is above the maximum 1048576"),
        ({"srv": "domain = -1"}, r"endpoints\.srv\.domain: -1 is below the minimum 0"),
        ({"srv": "blocking = 1"}, r"blocking: must be true or false, not int 1"),
        ({"srv": 'spin = "fast"'}, r"endpoints\.srv\.spin: 'fast' is not one of 'off'"),
        ({"srv": "spin = -1"}, r"endpoints\.srv\.spin: -1 is below the minimum 0"),
        ({"srv": 'path = "' + "x" * 70 + '"'}, r"endpoints\.srv\.path: xenstore path"),
        ({"cli": "read_min = 10"}, r"endpoints\.cli\.read_min: is a server setting"),
        ({"srv": "domain = 0"}, r"endpoints\.cli\.domain: both endpoints are in domain 0"),
        ({"srv_work": 'mode = "datagram"'}, r"workload\.mode: 'datagram' is not one of"),
        ({"srv_work": "write_size = [10, 5]"}, r"write_size: range \[10, 5\] is empty"),
        ({"srv_work": "write_size = [0, 5]"}, r"write_size: 0 is below the minimum 1"),
        ({"srv_work": "send = 10\nduration = 1.0"}, r"give a byte count \(send\) or a duration"),
        ({"srv_work": "send = 0"}, r"no endpoint sends anything"),
        ({"cli_work": "echo = true\nsend = 5"}, r"an echoing endpoint sends back"),
        ({"srv_work": "echo = true"}, r"workload\.echo: echoes, but its peer sends nothing"),
        ({"scenario": "deadline = 0"}, r"scenario\.deadline: 0 is below the minimum 0\.1"),
        ({"scenario": 'colour = "red"'}, r"scenario\.colour: unknown key"),
    ],
)
def test_bad_values_name_the_file_the_key_and_the_value(parts, message):
    with pytest.raises(ScenarioError, match=rf"^t\.toml: .*{message}"):
        parse(**parts)


@pytest.mark.parametrize(
    ("rest", "parts", "message"),
    [
        ('[[faults]]\nkind = "explode"\nendpoint = "srv"', {}, r"faults\[0\]\.kind: 'explode'"),
        ('[[faults]]\nkind = "kill"\nendpoint = "nobody"', {}, r"faults\[0\]\.endpoint: 'nobody'"),
        ('[[faults]]\nkind = "kill"\nendpoint = "srv"', {}, r"faults\[0\]: needs a trigger"),
        (
            '[[faults]]\nkind = "kill"\nendpoint = "srv"\nat = 1\nafter_sent = 5',
            {},
            r"faults\[0\]\.after_sent: give one trigger only",
        ),
        (
            '[[faults]]\nkind = "kill"\nendpoint = "srv"\nat = "setup"',
            {},
            r'faults\[0\]\.at: "setup" is not a valid time',
        ),
        (
            '[[faults]]\nkind = "kill"\nendpoint = "cli"\nafter_sent = 5',
            {},
            r"faults\[0\]\.after_sent: cli sends nothing",
        ),
        (
            '[[faults]]\nkind = "stall"\nendpoint = "srv"\nafter_received = 5',
            {},
            r"faults\[0\]\.after_received: srv receives nothing",
        ),
        (
            '[[faults]]\nkind = "corrupt"\nendpoint = "cli"\nfield = "left.cons"\nat = 0.1',
            {},
            r"give exactly one of value",
        ),
        (
            '[[faults]]\nkind = "corrupt"\nendpoint = "cli"\nfield = "cli_live"\nvalue = 256\n'
            "at = 0.1",
            {},
            r"faults\[0\]\.value: 256 is above the maximum 255",
        ),
        (
            '[[faults]]\nkind = "corrupt"\nendpoint = "cli"\nfield = "middle"\nvalue = 1\nat = 1',
            {},
            r"faults\[0\]\.field: 'middle' is not one of",
        ),
        (
            '[[faults]]\nkind = "restart"\nendpoint = "srv"\nafter_sent = 10',
            {},
            r"faults\[0\]: only a client can be restarted",
        ),
        (
            '[[faults]]\nkind = "exhaust"\nendpoint = "cli"\nresource = "grants"',
            {},
            r"faults\[0\]: only the server spends grants",
        ),
        (
            '[[faults]]\nkind = "exhaust"\nendpoint = "srv"\nresource = "xenstore"',
            {"srv": "domain = 0", "cli": "domain = 4"},
            r"faults\[0\]: srv is in domain 0, which XenStore exempts from quotas",
        ),
        (
            '[[faults]]\nkind = "exhaust"\nendpoint = "srv"\nresource = "grants"\nat = 1',
            {},
            r"faults\[0\]\.at: this fault cannot be triggered by at",
        ),
        (
            '[[faults]]\nkind = "kill"\nendpoint = "srv"\nat = 0.5',
            {"scenario": 'backend = "memory"'},
            r"faults\[0\]: kill srv at 0\.5 s needs the endpoint to be a process",
        ),
        (
            '[[expect]]\nkind = "error"\nendpoint = "srv"\nerror = "Oops"',
            {},
            r"expect\[0\]\.error: 'Oops' is not an exception",
        ),
        (
            '[[expect]]\nkind = "error"\nendpoint = "srv"\nerror = "StoreError"\nerrno = "ENOPE"',
            {},
            r"expect\[0\]\.errno: 'ENOPE' is not an errno name",
        ),
        (
            '[[expect]]\nkind = "close_seen"\nendpoint = "cli"\nwithin_ms = "soon"',
            {},
            r"expect\[0\]\.within_ms: must be a number",
        ),
        ("[faults]\nkind = 1", {}, r"faults: must be an array of tables"),
    ],
)
def test_bad_faults_and_expectations_are_refused_by_key(rest, parts, message):
    with pytest.raises(ScenarioError, match=rf"^t\.toml: .*{message}"):
        parse(rest=rest, **parts)


def test_whole_scenario_problems_are_refused_with_the_reason():
    with pytest.raises(ScenarioError, match=r"exactly two endpoints .* found 1: srv"):
        parse_scenario('[endpoints.srv]\nrole = "server"\n[[expect]]\nkind = "delivered"')
    with pytest.raises(ScenarioError, match=r"one server and one client, found roles"):
        parse_scenario(scenario_text().replace('role = "client"', 'role = "server"'))
    with pytest.raises(ScenarioError, match=r"needs at least one \[\[expect\]\]"):
        parse_scenario(scenario_text().replace('[[expect]]\nkind = "delivered"', ""))
    with pytest.raises(ScenarioError, match=r"each would wait for the other to close"):
        parse(srv_work="duration = 0.5", cli_work="duration = 0.5")
    with pytest.raises(ScenarioError, match=r"a persistent server never sees its client close"):
        parse(srv="persist = true", srv_work="", cli_work="duration = 1.0")
    with pytest.raises(ScenarioError, match=r"packets of up to 4096 bytes cannot fit the 2048"):
        parse(
            srv_work='mode = "packets"\nsend = 100\nwrite_size = 4096', cli_work='mode = "packets"'
        )
    with pytest.raises(ScenarioError, match=r"workload\.mode: must be 'packets' too"):
        parse(srv_work='mode = "packets"\nsend = 100\nwrite_size = 64')
    with pytest.raises(ScenarioError, match=r"'memory' cannot meet 'shm'"):
        parse(cli='backend = "memory"')


def test_syntax_errors_and_unreadable_files_are_scenario_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario\nname = 1")
    with pytest.raises(ScenarioError, match=rf"^{bad}: not valid TOML: .*line 1"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match=r"cannot read: No such file"):
        load_scenario(tmp_path / "missing.toml")
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match=r"not UTF-8"):
        load_scenario(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match=r"no \*\.toml scenario files"):
        load_scenarios([empty])


def test_a_directory_loads_in_name_order_and_files_keep_their_stem_as_default_name(tmp_path):
    for name in ("b", "a"):
        (tmp_path / f"{name}.toml").write_text(scenario_text().replace('name = "t"', ""))
    assert [s.name for s in load_scenarios([tmp_path])] == ["a", "b"]


def test_faults_and_expectations_parse_to_typed_objects():
    s = parse(
        rest='[[faults]]\nkind = "kill"\nendpoint = "srv"\nafter_sent = 500\n'
        '[[faults]]\nkind = "corrupt"\nendpoint = "cli"\nfield = "right.cons"\nadd = -5\n'
        'at = "setup"\n'
        '[[expect]]\nkind = "error"\nendpoint = "cli"\nerror = "ChannelClosed"\nphase = "io"\n'
        '[[expect]]\nkind = "no_leaks"\nallow_xenstore = true',
    )
    kill, corrupt = s.faults
    assert isinstance(kill, KillFault) and kill.trigger == Trigger(after_sent=500)
    assert isinstance(corrupt, CorruptFault) and corrupt.trigger.setup and corrupt.add == -5
    assert RaisesError("cli", "ChannelClosed", None, "io") in s.expectations
    assert NoLeaks(allow_xenstore=True) in s.expectations
    assert s.planned_send("srv") == 500  # the kill cuts the stream short


@pytest.mark.parametrize(
    ("srv_work", "cli_work", "srv", "stops"),
    [
        ("send = 1000", "", "", {"srv": None, "cli": "close"}),  # a reader waits for the close
        ("send = 1000", "send = 300", "", {"srv": 300, "cli": 1000}),  # both ways: counts
        ("duration = 1.0", "send = 300", "", {"srv": 300, "cli": "close"}),
        ("echo = true", "send = 300", "", {"srv": 300, "cli": "own"}),
        ("echo = true", "duration = 1.0", "", {"srv": "close", "cli": "own"}),
        ("", "send = 300", "persist = true", {"srv": 300, "cli": None}),  # never sees a close
    ],
)
def test_who_stops_reading_when(srv_work, cli_work, srv, stops):
    s = parse(srv_work=srv_work, cli_work=cli_work, srv=srv)
    assert {name: s.rx_stop(name) for name in s.names} == stops
