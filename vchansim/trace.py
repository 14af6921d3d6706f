"""Traces of a scenario run: JSON Lines, written while the run goes, read back for replay.

A trace is enough to replay what the channel went through: the first line is a header
(what ran, the ring geometry), then timestamped records of the control page (both rings'
indices, live and notify bytes, event counts), of endpoint life (started, connected,
closing, killed...), of every injected fault, and of the verdicts.  docs/trace.md
describes each record.

The reader is strict because a replay built on a half-read file would show a channel
state that never existed: a truncated or corrupt file raises :class:`TraceError` naming
the line and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import VchanError
from .layout import U32, PageState
from .statspage import Blocked, Wait

FORMAT = "vchansim-trace"
VERSION = 1
#: Record types of version 1.  Readers keep records of other types (from newer writers)
#: but only check those they know.
RECORD_TYPES = ("ring", "endpoint", "fault", "verdict", "end")


class TraceError(VchanError):
    """A trace file is unreadable, truncated or not a trace; names the line."""


# -- writing ------------------------------------------------------------------------------


class TraceWriter:
    """Appends records to a trace file; safe to call from several threads.

    Each record is one line, flushed at once, so a run that is killed leaves a trace
    that is complete up to its last line.
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._failed: TraceError | None = None
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise TraceError(f"cannot write trace {self.path}: {exc.strerror}") from None
        self._put({"type": "header", "format": FORMAT, "version": VERSION, **header})

    def _put(self, record: dict[str, Any]) -> None:
        """Write one line; a write that fails (a full disk) closes the file and raises a
        TraceError saying so, as does every later call: no record is dropped unsaid."""
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._file is None:
                return
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                self._failed = TraceError(f"cannot write trace {self.path}: {exc.strerror}")
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
                raise self._failed from None

    def record(self, record_type: str, t: float, /, **fields: Any) -> None:
        """Append a record of ``record_type`` at time ``t`` (seconds since the run began)."""
        self._put({"type": record_type, "t": round(t, 6), **fields})

    def close(self, t: float, passed: bool | None) -> None:
        """Write the end record and close the file; ``passed`` None: nothing was judged
        (a recording of a live channel)."""
        self.record("end", t, passed=passed)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingSample(PageState):
    """The control page at one instant, decoded: a :class:`~vchansim.layout.PageState`
    with its time and the event counts seen with it."""

    t: float = 0.0
    #: Events sent server->client and client->server so far (None where unknown).
    events_srv_to_cli: int | None = None
    events_cli_to_srv: int | None = None
    #: What the server and the client sleep in, since when (trace time); None: unknown.
    waits: tuple[Wait | None, Wait | None] | None = None

    @property
    def left_fill(self) -> int:
        """Bytes in flight client -> server, as the indices say (unsanitised)."""
        return self.fill("left")

    @property
    def right_fill(self) -> int:
        """Bytes in flight server -> client, as the indices say (unsanitised)."""
        return self.fill("right")

    @classmethod
    def of(
        cls,
        t: float,
        state: PageState,
        events: tuple[int, int] | None,
        waits: tuple[Wait | None, Wait | None] | None,
    ) -> RingSample:
        """The sample of ``state`` read at ``t``, with the (server -> client, client ->
        server) event counts and the waits (on ``t``'s clock) seen with it."""
        srv_to_cli, cli_to_srv = events if events is not None else (None, None)
        return cls(
            **asdict(state),
            t=t,
            events_srv_to_cli=srv_to_cli,
            events_cli_to_srv=cli_to_srv,
            waits=waits,
        )


def ring_fields(sample: RingSample) -> dict[str, Any]:
    """The fields of the ``ring`` record of ``sample`` (all but its type and time): the
    one encoding every writer of ring records uses, the inverse of what the reader
    decodes.  A sleep is stored by its age at ``sample.t``, so its start reads back on
    whatever clock the trace's times are."""
    events = None
    if sample.events_srv_to_cli is not None and sample.events_cli_to_srv is not None:
        events = {"srv_to_cli": sample.events_srv_to_cli, "cli_to_srv": sample.events_cli_to_srv}
    waits = None
    if sample.waits is not None:
        waits = {
            end: None
            if w is None
            else {"in": w.blocked.name.lower(), "for": round(sample.t - w.since, 6)}
            for end, w in zip(("server", "client"), sample.waits, strict=True)
        }
    return {
        "left": {"cons": sample.left_cons, "prod": sample.left_prod},
        "right": {"cons": sample.right_cons, "prod": sample.right_prod},
        "orders": [sample.left_order, sample.right_order],
        "cli_live": sample.cli_live,
        "srv_live": sample.srv_live,
        "cli_notify": sample.cli_notify,
        "srv_notify": sample.srv_notify,
        "events": events,
        "waits": waits,
    }


@dataclass
class Trace:
    """A whole trace: header, records in file order, and whether it was finished."""

    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the run that wrote it got to write its end record."""
        return bool(self.records) and self.records[-1]["type"] == "end"

    def of_type(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r["type"] == kind)

    def samples(self) -> list[RingSample]:
        """The ring records, decoded, in time order."""
        return [_sample(r) for r in self.of_type("ring")]

    def timeline(self) -> list[dict[str, Any]]:
        """Every record sorted by time (file order breaks ties).  Records come from
        several processes, so file order may be a few milliseconds out of time order."""
        return sorted(self.records, key=lambda r: r["t"])


_BLOCKED = {b.name.lower(): b for b in Blocked if b is not Blocked.NONE}


def _wait(t: float, end: dict[str, Any] | None) -> Wait | None:
    return None if end is None else Wait(_BLOCKED[end["in"]], t - end["for"])


def _sample(r: dict[str, Any]) -> RingSample:
    events = r.get("events") or {}
    waits = r.get("waits")
    return RingSample(
        t=r["t"],
        left_cons=r["left"]["cons"],
        left_prod=r["left"]["prod"],
        right_cons=r["right"]["cons"],
        right_prod=r["right"]["prod"],
        left_order=r["orders"][0],
        right_order=r["orders"][1],
        cli_live=r["cli_live"],
        srv_live=r["srv_live"],
        cli_notify=r["cli_notify"],
        srv_notify=r["srv_notify"],
        events_srv_to_cli=events.get("srv_to_cli"),
        events_cli_to_srv=events.get("cli_to_srv"),
        waits=None
        if waits is None
        else (_wait(r["t"], waits["server"]), _wait(r["t"], waits["client"])),
    )


class _Line:
    """One line being checked; every complaint names the file and the line number."""

    def __init__(self, path: str, number: int, record: dict[str, Any]) -> None:
        self.where = f"{path}: line {number}"
        self.record = record

    def fail(self, message: str) -> TraceError:
        return TraceError(f"{self.where}: {message}")

    def need(self, key: str, types: type | tuple[type, ...], container: Any = None) -> Any:
        source = self.record if container is None else container
        value = source.get(key) if isinstance(source, dict) else None
        wanted = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            raise self.fail(f"field {key!r} is missing or not {_type_names(types)}: {value!r}")
        return value

    def need_int(self, key: str, hi: int, container: Any = None) -> int:
        value: int = self.need(key, int, container)
        if not 0 <= value <= hi:
            raise self.fail(f"field {key!r} = {value} is outside 0..{hi}")
        return value


def _type_names(types: type | tuple[type, ...]) -> str:
    names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
    return " or ".join(names)


def _check_ring(line: _Line) -> None:
    for ring in ("left", "right"):
        indices = line.need(ring, dict)
        for key in ("cons", "prod"):
            line.need_int(key, U32, indices)
    orders = line.need("orders", list)
    if len(orders) != 2 or not all(isinstance(o, int) and 0 <= o <= 0xFFFF for o in orders):
        raise line.fail(f"field 'orders' must be two u16 values, not {orders!r}")
    for key in ("cli_live", "srv_live", "cli_notify", "srv_notify"):
        line.need_int(key, 0xFF)
    events = line.record.get("events")
    if events is not None and not isinstance(events, dict):
        raise line.fail(f"field 'events' must be an object or null, not {events!r}")
    waits = line.record.get("waits")
    if waits is not None:
        _check_waits(line, waits)


def _check_waits(line: _Line, waits: Any) -> None:
    if not isinstance(waits, dict):
        raise line.fail(f"field 'waits' must be an object or null, not {waits!r}")
    for end in ("server", "client"):
        wait = waits.get(end)
        if wait is None:
            continue
        kind, age = line.need("in", str, wait), line.need("for", (int, float), wait)
        if kind not in _BLOCKED or age < 0:
            raise line.fail(
                f"waits.{end} = {wait!r}: 'in' is one of {sorted(_BLOCKED)}, 'for' >= 0"
            )


def _check_end(line: _Line) -> None:
    """``passed`` is the run's verdict, or null where nothing was judged (a recording)."""
    if "passed" not in line.record or line.record["passed"] is not None:
        line.need("passed", bool)


_CHECKS: dict[str, Callable[[_Line], object]] = {
    "ring": _check_ring,
    "endpoint": lambda line: (line.need("endpoint", str), line.need("event", str)),
    "fault": lambda line: (line.need("endpoint", str), line.need("kind", str)),
    "verdict": lambda line: (line.need("expectation", str), line.need("passed", bool)),
    "end": _check_end,
}


def _parse_line(path: str, number: int, text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"{path}: line {number}: not a JSON record ({exc.msg} at column {exc.colno}); "
            "the trace is truncated or corrupt"
        ) from None
    if not isinstance(record, dict):
        raise TraceError(f"{path}: line {number}: a record must be a JSON object")
    return record


def _check_header(path: str, record: dict[str, Any]) -> None:
    if record.get("type") != "header" or record.get("format") != FORMAT:
        raise TraceError(f"{path}: line 1: not a vchansim trace (no {FORMAT} header)")
    version = record.get("version")
    if version != VERSION:
        raise TraceError(
            f"{path}: line 1: trace format version {version!r}; this reader knows {VERSION}"
        )


def _check_record(line: _Line, last_end: bool) -> None:
    if last_end:
        raise line.fail("record after the end record")
    kind = line.need("type", str)
    t = line.need("t", (int, float))
    if t < 0:
        raise line.fail(f"time t = {t} is negative")
    check = _CHECKS.get(kind)
    if check is not None:
        check(line)


def iter_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the header, then each record, checking as it goes (for large traces)."""
    name = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise TraceError(f"{name}: cannot read trace: {exc.strerror}") from None
    with handle:
        number = 0
        ended = False
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                raise TraceError(f"{name}: line {number}: truncated (no end of line)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceError(f"{name}: line {number}: not UTF-8 text ({exc.reason})") from None
            record = _parse_line(name, number, text)
            if number == 1:
                _check_header(name, record)
            else:
                _check_record(_Line(name, number, record), ended)
                ended = record["type"] == "end"
            yield record
        if number == 0:
            raise TraceError(f"{name}: empty file, not a trace")


def read_trace(path: str | Path) -> Trace:
    """Read and check a whole trace."""
    records = iter_trace(path)
    trace = Trace(header=next(records))
    trace.records.extend(records)
    return trace
