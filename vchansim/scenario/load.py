"""Scenario files: TOML in, a checked, immutable :class:`~.spec.Scenario` out.

The format is documented key by key in docs/scenarios.md.  Everything a runner could
trip over later -- a typo'd key, a packet bigger than its ring, two endpoints each
waiting for the other to close -- is refused here (each key as it is read, then the
whole in ``checks.py``), with the file, the key and the bad value in the message,
because a scenario that fails for a reason of its own would look like a vchan bug.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import layout
from ..backends import available_backends
from ..errors import ConfigError
from ..xen import DOMID_MAX
from .checks import check_scenario
from .expectations import EXPECTATION_KINDS
from .expectations.base import Expectation
from .faults import FAULT_KINDS
from .faults.base import Fault
from .spec import (
    DEFAULT_DEADLINE,
    DEFAULT_PROGRAM,
    DEFAULT_SIZE,
    OPTIONS_FIELD,
    PROGRAM_FIELDS,
    EndpointSpec,
    Scenario,
    Workload,
)
from .tables import ScenarioError, Table, show

ENDPOINT_KINDS = ("python", "program")
SPIN_POLICIES = ("off", "adaptive")
#: Settings of a Python endpoint that a program (vchan-pipe's command line) cannot take.
PYTHON_ONLY = ("blocking", "timeout", "spin", "persist", "start_index")
PYTHON_ONLY_WORKLOAD = ("duration", "read_size", "read_pause", "write_pause", "echo")


def load_scenario(path: str | Path) -> Scenario:
    """Read and check one scenario file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read: {exc.strerror}", err=exc.errno) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{source}: not UTF-8 text ({exc.reason})") from None
    return parse_scenario(text, source=source, default_name=Path(path).stem)


def load_scenarios(paths: Iterable[str | Path]) -> list[Scenario]:
    """Load files, and every ``*.toml`` of directories (sorted), in the order given."""
    found: list[Scenario] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = sorted(path.glob("*.toml"))
            if not files:
                raise ScenarioError(f"{path}: no *.toml scenario files in this directory")
            found += [load_scenario(f) for f in files]
        else:
            found.append(load_scenario(path))
    return found


def on_backend(scenario: Scenario, backend: str) -> Scenario:
    """``scenario`` with both endpoints on ``backend`` (``vchansim run --backend``),
    checked again: what the file's backend allowed, another may not."""
    if backend not in available_backends():
        raise ScenarioError(
            f"{scenario.source}: no backend {backend!r} (known: {', '.join(available_backends())})"
        )
    moved = scenario.with_backend(backend)
    check_scenario(moved)
    return moved


def parse_scenario(
    text: str, *, source: str = "<scenario>", default_name: str = "scenario"
) -> Scenario:
    """Check the TOML ``text`` of a scenario; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    return scenario_from_dict(data, source=source, default_name=default_name)


def scenario_from_dict(
    data: dict[str, Any], *, source: str = "<scenario>", default_name: str = "scenario"
) -> Scenario:
    """Check a scenario given as the dict TOML would have produced."""
    top = Table(source, "", data)
    head = top.table("scenario")
    name = head.text("name", default_name)
    backend = head.text("backend", "shm", available_backends())
    seed = head.integer("seed", 0, 0, 2**63)
    deadline = head.number("deadline", DEFAULT_DEADLINE, 0.1, 3600.0)
    description = head.text("description", "")
    head.finish()
    server, client = _parse_endpoints(top.table("endpoints"), backend)
    names = (server.name, client.name)
    faults = tuple(_parse_fault(t, names) for t in top.array_of_tables("faults"))
    expectations = tuple(_parse_expectation(t, names) for t in top.array_of_tables("expect"))
    top.finish()
    scenario = Scenario(
        name=name,
        source=source,
        server=server,
        client=client,
        description=description,
        seed=seed,
        deadline=deadline,
        faults=faults,
        expectations=expectations,
    )
    check_scenario(scenario)
    return scenario


def _parse_fault(table: Table, names: tuple[str, ...]) -> Fault:
    fault = FAULT_KINDS[table.text("kind", None, FAULT_KINDS)].parse(table, names)
    table.finish()
    return fault


def _parse_expectation(table: Table, names: tuple[str, ...]) -> Expectation:
    expectation = EXPECTATION_KINDS[table.text("kind", None, EXPECTATION_KINDS)].parse(table, names)
    table.finish()
    return expectation


# -- endpoints ---------------------------------------------------------------------------------


def _parse_endpoints(table: Table, default_backend: str) -> tuple[EndpointSpec, EndpointSpec]:
    if len(table.data) != 2:
        table.fail_self(
            f"a scenario has exactly two endpoints (one server, one client), found "
            f"{len(table.data)}: {', '.join(table.data) or 'none'}"
        )
    specs = [_parse_endpoint(table.table(name), name, default_backend) for name in list(table.data)]
    roles = sorted(spec.role for spec in specs)
    if roles != ["client", "server"]:
        table.fail_self(f"needs one server and one client, found roles {roles}")
    table.finish()
    server = next(s for s in specs if s.is_server)
    client = next(s for s in specs if not s.is_server)
    return server, client


def _parse_endpoint(table: Table, name: str, default_backend: str) -> EndpointSpec:
    role = table.text("role", None, ("server", "client"))
    server = role == "server"
    kind = table.text("kind", "python", ENDPOINT_KINDS)
    if kind == "program":
        for key in PYTHON_ONLY:
            if table.has(key):
                table.fail(key, "is a setting of Python endpoints; a program endpoint takes none")
    elif table.has("program"):
        table.fail("program", 'only a program endpoint (kind = "program") runs a program')
    spec = EndpointSpec(
        name=name,
        role=role,
        domain=table.integer("domain", 1 if server else 0, 0, DOMID_MAX),
        kind=kind,
        program=_program(table) if kind == "program" else (),
        backend=table.text("backend", default_backend, available_backends()),
        read_min=table.integer("read_min", 0, 0, layout.MAX_RING_SIZE),
        write_min=table.integer("write_min", 0, 0, layout.MAX_RING_SIZE),
        blocking=table.boolean("blocking", True),
        timeout=_optional_number(table, "timeout"),
        spin=_spin(table),
        workload=_parse_workload(table.table("workload"), kind),
    )
    if server:
        path = table.text("path", EndpointSpec.path)
        try:
            layout.check_xs_path(path)
        except ConfigError as exc:
            table.fail("path", str(exc))
        spec = replace(
            spec,
            path=path,
            persist=table.boolean("persist", False),
            start_index=table.integer("start_index", 0, 0, layout.U32),
        )
    else:
        for key in ("path", "persist", "start_index", "read_min", "write_min"):
            if table.has(key):
                table.fail(key, "is a server setting (the server chooses the path and rings)")
    table.finish()
    return spec


def _program(table: Table) -> tuple[str, ...]:
    """A program endpoint's command: a non-empty list of strings whose ``{placeholders}``
    are known, ``{options}`` standing alone."""
    command = table.raw("program", list(DEFAULT_PROGRAM))
    if not isinstance(command, list) or not command:
        table.fail("program", f"must be a non-empty list of strings, not {show(command)}")
    for arg in command:
        if not isinstance(arg, str) or not arg:
            table.fail("program", f"arguments must be non-empty strings, not {show(arg)}")
        if arg == OPTIONS_FIELD:
            continue
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(arg) if name is not None}
        except ValueError as exc:
            table.fail("program", f"{arg!r}: {exc} (write a literal brace as {{{{ or }}}})")
        unknown = sorted(fields - PROGRAM_FIELDS)
        if unknown:
            known = ", ".join(f"{{{f}}}" for f in sorted(PROGRAM_FIELDS | {"options"}))
            table.fail(
                "program",
                f"{arg!r}: unknown placeholder {{{unknown[0]}}} (known: {known}; "
                f"{OPTIONS_FIELD} only as a whole argument)",
            )
    return tuple(command)


def _spin(table: Table) -> str | float | None:
    """``"off"``, ``"adaptive"``, or a spin budget in microseconds (see Vchan.spin)."""
    if not table.has("spin"):
        return None
    if isinstance(table.raw("spin"), str):
        return table.text("spin", None, SPIN_POLICIES)
    return table.number("spin", 0.0, 0.0, 1_000_000.0)


def _optional_number(table: Table, key: str) -> float | None:
    return table.number(key, 0.0, 0.001) if table.has(key) else None


def _parse_workload(table: Table, kind: str) -> Workload:
    if kind == "program":
        for key in PYTHON_ONLY_WORKLOAD:
            if table.has(key):
                table.fail(
                    key, "is not for a program endpoint: it sends its whole byte count at once"
                )
        if table.has("write_size") and table.raw("mode", "stream") != "packets":
            table.fail("write_size", "a program endpoint chooses its own writes in stream mode")
    work = Workload(
        mode=table.text("mode", "stream", ("stream", "packets")),
        send=table.integer("send", 0, 0, 1 << 40),
        duration=table.number("duration", 0.0, 0.0, 3600.0),
        write_size=table.size("write_size", DEFAULT_SIZE, layout.MAX_RING_SIZE),
        read_size=table.size("read_size", DEFAULT_SIZE, layout.MAX_RING_SIZE),
        read_pause=table.number("read_pause", 0.0, 0.0, 10.0),
        write_pause=table.number("write_pause", 0.0, 0.0, 10.0),
        echo=table.boolean("echo", False),
    )
    if work.send and work.duration:
        table.fail("duration", "give a byte count (send) or a duration, not both")
    if work.echo and work.sends_own:
        table.fail("echo", "an echoing endpoint sends back what it gets, not its own stream")
    if work.mode == "packets" and table.has("read_size"):
        table.fail("read_size", "packets are read whole, at the sender's packet sizes")
    table.finish()
    return work
