"""What endpoints and the runner say to each other, as types.

An endpoint reports as it goes rather than only at the end, because the point of many
scenarios is that it may die: whatever it said before it died is what the runner has.
Every report carries ``t``, when it was made on the system-wide monotonic clock, so the
runner can compare times across processes; :meth:`Message.fields` is what the trace
records of it.  The runner answers with a :class:`Command`.
"""

from __future__ import annotations

import dataclasses
import time
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, TypedDict


class Command(StrEnum):
    """The runner's word to an endpoint."""

    GO = "go"  # start: the backend is ready (server) or the server listens (client)
    ABORT = "abort"  # do not start: the server failed
    PEER = "peer"  # a program server's client has connected: move data
    KILL = "kill"  # a program endpoint: kill the program (a fault)


class StreamReport(TypedDict):
    """A stretch of one stream an endpoint sent: where it started, how much, its digest."""

    stream: str
    start: int
    count: int
    sha256: str


class ReceivedReport(StreamReport):
    """What an endpoint received, and how reading ended."""

    mismatch_at: int | None  # the first wrong byte's stream offset
    closed: bool  # reading ended at the peer's close


class ErrorReport(TypedDict):
    """An exception, as the runner records it (it cannot receive the object itself)."""

    type: str
    mro: list[str]
    errno: str | None
    message: str
    phase: str  # setup | io | close
    where: str  # the innermost frames of the traceback


class ProgramReport(TypedDict):
    """How a program endpoint's program ran."""

    command: list[str]
    pid: int | None
    status: int | None
    stderr: str


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of the endpoint's reports; ``ev`` names the kind in the trace."""

    ev: ClassVar[str] = ""
    t: float = field(default_factory=time.monotonic)

    def fields(self) -> dict[str, Any]:
        """The report's fields as the trace records them (without ``t``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "t"}


@dataclass(frozen=True, kw_only=True)
class Started(Message):
    """The endpoint's process (or thread) runs."""

    ev: ClassVar[str] = "started"
    pid: int


@dataclass(frozen=True, kw_only=True)
class ProgramStarted(Message):
    """A program endpoint started its program."""

    ev: ClassVar[str] = "program"
    pid: int
    command: list[str]


@dataclass(frozen=True, kw_only=True)
class Listening(Message):
    """The server offers the channel: its control page's grant and its event port."""

    ev: ClassVar[str] = "listening"
    ring_ref: int
    port: int
    orders: list[int]


@dataclass(frozen=True, kw_only=True)
class Connected(Message):
    """The channel is up; the endpoint's streams start at these offsets."""

    ev: ClassVar[str] = "connected"
    sent: int
    received: int


@dataclass(frozen=True, kw_only=True)
class Progress(Message):
    """Bytes moved so far (stream offsets), and the event counts."""

    ev: ClassVar[str] = "progress"
    sent: int
    received: int
    mismatch_at: int | None
    events: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class FaultFired(Message):
    """The endpoint committed (or suffered) scenario fault number ``index`` just now."""

    ev: ClassVar[str] = "fault"
    index: int
    fault: str  # its description
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    sent: int | None = None  # the stream offsets when it fired
    received: int | None = None

    def fields(self) -> dict[str, Any]:
        offsets = {"sent": self.sent, "received": self.received}
        found = {k: v for k, v in offsets.items() if v is not None}
        return {"fault": self.fault, "kind": self.kind, **self.detail, **found}


@dataclass(frozen=True, kw_only=True)
class PeerClosed(Message):
    """The endpoint first noticed its peer closed."""

    ev: ClassVar[str] = "peer_closed"


@dataclass(frozen=True, kw_only=True)
class Closing(Message):
    """The endpoint closes its channel now."""

    ev: ClassVar[str] = "closing"


@dataclass(frozen=True, kw_only=True)
class Result(Message):
    """The endpoint's last word: what it moved, how it ended."""

    ev: ClassVar[str] = "result"
    sent: StreamReport | None = None
    received: ReceivedReport | None = None
    error: ErrorReport | None = None
    stopped: str | None = None  # why it stopped early, or never started
    unfired: list[str] = field(default_factory=list)  # its faults that never fired
    events: dict[str, int] = field(default_factory=dict)
    program: ProgramReport | None = None  # a program endpoint's only

    def fields(self) -> dict[str, Any]:
        found = super().fields()
        if self.program is None:
            del found["program"]
        return found


#: The ``type`` of a program endpoint's error: its program exited with an error status.
PROGRAM_ERROR = "ProgramError"


def error_text(error: ErrorReport) -> str:
    """An error report in one line: its type, errno, phase and message."""
    code = f" [{error['errno']}]" if error["errno"] else ""
    return f"{error['type']}{code} in {error['phase']}: {error['message']}"


# -- reports from another domain (through an agent: vchansim.agent) ----------------------

#: Every report by its ``ev``: how one written as JSON by another domain is read back.
REPORTS: dict[str, type[Message]] = {
    kind.ev: kind
    for kind in (
        Started,
        ProgramStarted,
        Listening,
        Connected,
        Progress,
        FaultFired,
        PeerClosed,
        Closing,
        Result,
    )
}


def report_to_json(message: Message) -> dict[str, Any]:
    """``message`` as a JSON object: its ``ev``, ``t`` and fields."""
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return {"ev": message.ev, **fields}


def report_from_json(value: object) -> Message:
    """The report a JSON object written by :func:`report_to_json` stands for; ValueError
    naming the first thing wrong with it (another domain wrote it: it is checked field by
    field against the report's types)."""
    if not isinstance(value, dict):
        raise ValueError(f"a report is a JSON object, not {type(value).__name__}")
    fields = dict(value)
    kind = REPORTS.get(str(fields.pop("ev", None)))
    if kind is None:
        raise ValueError(f"no report is called {value.get('ev')!r}")
    hints = typing.get_type_hints(kind)
    unknown = set(fields) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        raise ValueError(f"a {kind.ev} report has no field {sorted(unknown)[0]!r}")
    for name, given in fields.items():
        if not _conforms(given, hints[name]):
            raise ValueError(f"a {kind.ev} report has {name} = {given!r}, of the wrong type")
    try:
        return kind(**fields)
    except TypeError as exc:  # a field missing
        raise ValueError(f"a {kind.ev} report is incomplete: {exc}") from None


def _conforms(value: object, hint: Any) -> bool:
    """Whether JSON ``value`` is of type ``hint`` (the types reports use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items()
        )
    if typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint)
        return (
            isinstance(value, dict)
            and set(value) == set(fields)
            and all(_conforms(value[k], fields[k]) for k in fields)
        )
    return False
