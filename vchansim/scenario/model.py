"""Scenario files: TOML in, a checked, immutable :class:`Scenario` out.

A scenario is one vchan (a server endpoint and a client endpoint), the traffic each end
drives, the faults to inject and the expectations that make the verdict.  The format is
documented key by key in docs/scenarios.md.  Everything a runner could trip over later
-- a typo'd key, a packet bigger than its ring, two endpoints each waiting for the other
to close -- is refused here, with the file, the key and the bad value in the message,
because a scenario that fails for a reason of its own would look like a vchan bug.
"""

from __future__ import annotations

import errno
import string
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from .. import errors, layout
from ..backends.base import DOMID_MAX
from ..errors import ConfigError
from .streams import ByteStream, SizeSpec, XorshiftStream, open_stream

U32_MAX = 0xFFFFFFFF
DEFAULT_DEADLINE = 30.0
DEFAULT_SIZE = SizeSpec(4096, 4096)
#: Backends whose endpoints live in one process as threads (they cannot be killed).
IN_PROCESS_BACKENDS = frozenset({"memory"})
ENDPOINT_KINDS = ("python", "program")
SPIN_POLICIES = ("off", "adaptive")
#: What a program endpoint's failure is called: it exited with an error status.
PROGRAM_ERROR = "ProgramError"
#: Exception names an ``error`` expectation may name: ours, what Python raises, and a
#: program endpoint's failure.
ERROR_NAMES = frozenset(
    name
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
) | {"OSError", "TimeoutError", "ValueError", PROGRAM_ERROR}
#: The command of a program endpoint unless it gives one: vchan-pipe (csrc/programs), with
#: the arguments that make it play the endpoint.  ``{options}`` stands for several.
DEFAULT_PROGRAM = ("{pipe}", "{role}", "{peer}", "{path}", "{options}")
#: What a program endpoint's command may say in braces (docs/scenarios.md).
PROGRAM_FIELDS = frozenset(
    {"pipe", "role", "peer", "path", "send", "recv", "seed", "packet", "read_min", "write_min"}
)
#: The placeholder that must be a whole argument: it becomes vchan-pipe's options.
OPTIONS_FIELD = "{options}"
#: Settings of a Python endpoint that a program (vchan-pipe's command line) cannot take.
PYTHON_ONLY = ("blocking", "timeout", "spin", "persist", "start_index")
PYTHON_ONLY_WORKLOAD = ("duration", "read_size", "read_pause", "write_pause", "echo")
ERRNO_NAMES = frozenset(errno.errorcode.values())


class ScenarioError(ConfigError):
    """A scenario is malformed; the message names the file, the key and the value."""


# -- reading TOML tables with errors that point at the key ------------------------------


class _Table:
    """One TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, source: str, where: str, data: Any) -> None:
        self.source = source
        self.where = where
        if not isinstance(data, dict):
            self.fail_self(f"must be a table, not {_show(data)}")
        self.data: dict[str, Any] = data
        self._used: set[str] = set()

    def key_name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ScenarioError(f"{self.source}: {self.key_name(key)}: {message}")

    def fail_self(self, message: str) -> NoReturn:
        raise ScenarioError(f"{self.source}: {self.where or 'top level'}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self._used.add(key)
        return self.data.get(key, default)

    def integer(self, key: str, default: int, lo: int = 0, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {_show(value)}")
        return self._in_range(key, value, lo, hi)

    def number(self, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, not {_show(value)}")
        return float(self._in_range(key, value, lo, hi))

    def _in_range(self, key: str, value: Any, lo: Any, hi: Any) -> Any:
        if value < lo:
            self.fail(key, f"{value} is below the minimum {lo}")
        if hi is not None and value > hi:
            self.fail(key, f"{value} is above the maximum {hi}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_show(value)}")
        return value

    def text(self, key: str, default: str | None, choices: Iterable[str] | None = None) -> str:
        value = self.raw(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_show(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value

    def size(self, key: str, default: SizeSpec, hi: int) -> SizeSpec:
        """A size: an integer, or ``[low, high]`` to draw from that range."""
        value = self.raw(key, None)
        if value is None:
            return default
        if isinstance(value, list) and len(value) == 2:
            low, high = value
        else:
            low = high = value
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                self.fail(key, f"must be an integer or [low, high], not {_show(value)}")
            self._in_range(key, bound, 1, hi)
        if low > high:
            self.fail(key, f"range [{low}, {high}] is empty (low > high)")
        return SizeSpec(low, high)

    def table(self, key: str) -> _Table:
        return _Table(self.source, self.key_name(key), self.raw(key, {}))

    def array_of_tables(self, key: str) -> list[_Table]:
        value = self.raw(key, [])
        if not isinstance(value, list):
            self.fail(key, f"must be an array of tables ([[{key}]]), not {_show(value)}")
        return [
            _Table(self.source, f"{self.key_name(key)}[{i}]", item) for i, item in enumerate(value)
        ]

    def finish(self) -> None:
        """Refuse keys nobody asked for: a typo must not silently become a default."""
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            allowed = ", ".join(sorted(self._used)) or "none"
            self.fail(unknown[0], f"unknown key (allowed here: {allowed})")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# -- endpoints and workloads ---------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What one endpoint does with the channel once it is up."""

    mode: str = "stream"  # stream | packets
    send: int = 0  # bytes to send (0: none, or see duration)
    duration: float = 0.0  # send for this long instead of a byte count
    write_size: SizeSpec = DEFAULT_SIZE  # bytes per write / per packet
    read_size: SizeSpec = DEFAULT_SIZE  # bytes per read (stream mode)
    read_pause: float = 0.0  # seconds to pause after every read: a slow consumer
    write_pause: float = 0.0  # seconds to pause after every write: a slow producer
    echo: bool = False  # send back everything received

    @property
    def sends_own(self) -> bool:
        return self.send > 0 or self.duration > 0


@dataclass(frozen=True)
class EndpointSpec:
    """One end of the scenario's vchan."""

    name: str
    role: str  # server | client
    domain: int  # this endpoint's own domain id
    kind: str = "python"  # python | program
    program: tuple[str, ...] = ()  # kind program: its command, with {placeholders}
    backend: str = "shm"
    path: str = "data/vchansim"  # the server's XenStore path (relative to its home)
    read_min: int = 0
    write_min: int = 0
    blocking: bool = True
    timeout: float | None = None  # bound on every blocking call, seconds
    spin: str | float | None = None  # the channel's spin policy (None: its default)
    persist: bool = False  # server_persist
    start_index: int = 0  # server: all four ring indices start here
    workload: Workload = field(default_factory=Workload)

    @property
    def is_server(self) -> bool:
        return self.role == "server"

    @property
    def is_program(self) -> bool:
        return self.kind == "program"


# -- faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """When a fault fires: at a time after the channel connected, when the endpoint's
    send or receive stream reaches a byte offset, or during set-up."""

    at: float | None = None
    after_sent: int | None = None
    after_received: int | None = None
    setup: bool = False

    @property
    def byte_offset(self) -> tuple[str, int] | None:
        """``("sent"|"received", offset)`` for a byte trigger, else None."""
        if self.after_sent is not None:
            return "sent", self.after_sent
        if self.after_received is not None:
            return "received", self.after_received
        return None

    def describe(self) -> str:
        if self.setup:
            return "at set-up"
        if self.at is not None:
            return f"at {self.at:g} s"
        offset = self.byte_offset
        return f"after {offset[1]} bytes {offset[0]}" if offset else "from the start"


TRIGGER_KEYS = ("at", "after_sent", "after_received")


def _parse_trigger(table: _Table, allowed: frozenset[str], required: bool) -> Trigger:
    present = [key for key in TRIGGER_KEYS if table.has(key)]
    if len(present) > 1:
        table.fail(present[1], f"give one trigger only (also has {present[0]!r})")
    if not present:
        if required:
            table.fail_self(f"needs a trigger: one of {', '.join(sorted(allowed))}")
        return Trigger()
    key = present[0]
    if key == "at" and table.raw("at") == "setup":
        if "setup" not in allowed:
            table.fail("at", '"setup" is not a valid time for this fault')
        return Trigger(setup=True)
    if key not in allowed:
        table.fail(key, f"this fault cannot be triggered by {key}")
    if key == "at":
        return Trigger(at=table.number("at", 0.0))
    return Trigger(**{key: table.integer(key, 0)})


@dataclass(frozen=True)
class Fault:
    """Base of the fault kinds; ``endpoint`` is the one that suffers (or commits) it."""

    endpoint: str
    trigger: Trigger

    kind: ClassVar[str] = ""
    triggers: ClassVar[frozenset[str]] = frozenset(TRIGGER_KEYS)
    trigger_required: ClassVar[bool] = True

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        """The kind's own keys, read from ``table``."""
        return {}

    def describe(self) -> str:
        return f"{self.kind} {self.endpoint} {self.trigger.describe()}"

    @property
    def needs_process(self) -> bool:
        """Whether this fault needs the endpoint to be a killable process."""
        return False

    @property
    def by_runner(self) -> bool:
        """Whether the runner commits it from outside the endpoint; the others act in
        the endpoint's own code, which a program endpoint does not run."""
        return False


@dataclass(frozen=True)
class KillFault(Fault):
    """SIGKILL the endpoint (by the runner at a time, by itself at a byte offset)."""

    kind: ClassVar[str] = "kill"

    @property
    def needs_process(self) -> bool:
        return True

    @property
    def by_runner(self) -> bool:
        return self.trigger.at is not None


#: Control-page fields a hostile endpoint may corrupt: name -> (offset, width in bytes).
PAGE_FIELDS = layout.FIELDS


@dataclass(frozen=True)
class CorruptFault(Fault):
    """The endpoint writes a field of the shared control page through its own mapping:
    ``value`` stores a number, ``add`` adds one (modulo the field's width)."""

    field: str = "left.cons"
    value: int | None = None
    add: int | None = None

    kind: ClassVar[str] = "corrupt"
    triggers: ClassVar[frozenset[str]] = frozenset({*TRIGGER_KEYS, "setup"})

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        name = table.text("field", None, PAGE_FIELDS)
        width = PAGE_FIELDS[name][1]
        limit = (1 << (8 * width)) - 1
        if table.has("value") == table.has("add"):
            table.fail_self("give exactly one of value (store) or add (increment)")
        if table.has("value"):
            return {"field": name, "value": table.integer("value", 0, 0, limit)}
        return {"field": name, "add": table.integer("add", 0, -limit, limit)}

    def describe(self) -> str:
        change = f"= {self.value}" if self.value is not None else f"+= {self.add}"
        return f"corrupt {self.field} {change} by {self.endpoint} {self.trigger.describe()}"


NOTIFY_ACTIONS = ("drop", "delay", "duplicate", "spurious")


@dataclass(frozen=True)
class NotifyFault(Fault):
    """Tamper with the event notifications the endpoint sends."""

    action: str = "drop"
    every: int = 1  # act on every Nth notification
    probability: float = 1.0  # ... and then with this probability (seeded)
    count: int = 0  # at most this many (0: no limit)
    delay: float = 0.05  # seconds, for delay
    rate: float = 100.0  # extra events per second, for spurious

    kind: ClassVar[str] = "notify"
    trigger_required: ClassVar[bool] = False

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        return {
            "action": table.text("action", None, NOTIFY_ACTIONS),
            "every": table.integer("every", 1, 1),
            "probability": table.number("probability", 1.0, 0.0, 1.0),
            "count": table.integer("count", 0),
            "delay": table.number("delay", 0.05, 0.0, 10.0),
            "rate": table.number("rate", 100.0, 0.1, 10000.0),
        }

    def describe(self) -> str:
        return f"{self.action} notifications of {self.endpoint} {self.trigger.describe()}"


@dataclass(frozen=True)
class StallFault(Fault):
    """The endpoint stops reading for ``duration`` seconds (it keeps writing)."""

    duration: float = 0.5

    kind: ClassVar[str] = "stall"

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        return {"duration": table.number("duration", 0.5, 0.001, 60.0)}


@dataclass(frozen=True)
class CloseFault(Fault):
    """The endpoint closes at once, whatever is still in flight or unsent."""

    kind: ClassVar[str] = "close"


@dataclass(frozen=True)
class RestartFault(Fault):
    """The client goes away (closes, or is killed) and a new client process reconnects
    to the same server, resuming each stream where the ring indices say it stands."""

    how: str = "close"

    kind: ClassVar[str] = "restart"

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        return {"how": table.text("how", "close", ("close", "kill"))}

    @property
    def needs_process(self) -> bool:
        return self.how == "kill"

    @property
    def by_runner(self) -> bool:
        return self.how == "kill" and self.trigger.at is not None


EXHAUST_RESOURCES = ("grants", "ports", "xenstore")


@dataclass(frozen=True)
class ExhaustFault(Fault):
    """The endpoint's domain has only ``leave`` of a per-domain resource to spend:
    grant-table entries, event-channel ports, or XenStore nodes (its node quota).  The
    runner sets the machine's limits so; the endpoint meets the real error."""

    resource: str = "grants"
    leave: int = 0

    kind: ClassVar[str] = "exhaust"
    triggers: ClassVar[frozenset[str]] = frozenset()
    trigger_required: ClassVar[bool] = False

    @classmethod
    def parse_params(cls, table: _Table) -> dict[str, Any]:
        return {
            "resource": table.text("resource", None, EXHAUST_RESOURCES),
            "leave": table.integer("leave", 0, 0, 4096),
        }

    def describe(self) -> str:
        return f"exhaust {self.resource} of {self.endpoint}'s domain (leave {self.leave})"

    @property
    def by_runner(self) -> bool:
        return True


FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (
        KillFault,
        CorruptFault,
        NotifyFault,
        StallFault,
        CloseFault,
        RestartFault,
        ExhaustFault,
    )
}


# -- expectations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """Base of the expectation kinds."""

    kind: ClassVar[str] = ""

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        return cls()

    def describe(self) -> str:
        return self.kind


def _endpoint_key(table: _Table, names: tuple[str, ...], key: str = "endpoint") -> str:
    return table.text(key, None, names)


@dataclass(frozen=True)
class Delivered(Expectation):
    """Every byte sent arrived, in order: counts and sha256 agree in each direction."""

    kind: ClassVar[str] = "delivered"

    def describe(self) -> str:
        return "every byte sent is delivered"


@dataclass(frozen=True)
class Integrity(Expectation):
    """Whatever each receiver read is exactly a stretch of what the sender wrote, from
    where it started reading (a prefix, for an endpoint that ran from the start)."""

    kind: ClassVar[str] = "integrity"

    def describe(self) -> str:
        return "what is read is what was written"


@dataclass(frozen=True)
class CloseSeen(Expectation):
    """``endpoint`` observed its peer's close (or death) within ``within_ms``."""

    endpoint: str = ""
    within_ms: float = 0.0

    kind: ClassVar[str] = "close_seen"

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        return cls(_endpoint_key(table, names), table.number("within_ms", 1000.0, 0.0))

    def describe(self) -> str:
        return f"{self.endpoint} sees the close within {self.within_ms:g} ms"


@dataclass(frozen=True)
class RaisesError(Expectation):
    """``endpoint`` raised ``error`` (that class or a subclass), optionally with ``errno``
    and in ``phase`` (setup, io or close)."""

    endpoint: str = ""
    error: str = ""
    errno: str | None = None
    phase: str | None = None

    kind: ClassVar[str] = "error"

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        endpoint = _endpoint_key(table, names)
        error = table.text("error", None)
        if error not in ERROR_NAMES:
            table.fail("error", f"{error!r} is not an exception vchansim raises")
        code = table.raw("errno")
        if code is not None and code not in ERRNO_NAMES:
            table.fail("errno", f"{code!r} is not an errno name such as 'ENOSPC'")
        phase = table.raw("phase")
        if phase is not None:
            phase = table.text("phase", None, ("setup", "io", "close"))
        return cls(endpoint, error, code, phase)

    def describe(self) -> str:
        detail = "".join(f" {x}" for x in (self.errno, self.phase and f"in {self.phase}") if x)
        return f"{self.endpoint} raises {self.error}{detail}"


@dataclass(frozen=True)
class NoHang(Expectation):
    """Every endpoint finished (returned or raised) within ``within`` seconds."""

    within: float | None = None

    kind: ClassVar[str] = "no_hang"

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        within = table.raw("within")
        return cls(None if within is None else table.number("within", 0.0, 0.001))

    def describe(self) -> str:
        return "no call hangs" + (f" past {self.within:g} s" if self.within else "")


@dataclass(frozen=True)
class NoLeaks(Expectation):
    """Nothing is left behind: grants, ports, XenStore nodes, connections, processes.

    ``allow_xenstore`` excuses XenStore nodes: a killed server cannot remove its keys,
    on Xen as here, so a scenario that kills one checks the rest.
    """

    allow_xenstore: bool = False

    kind: ClassVar[str] = "no_leaks"

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        return cls(table.boolean("allow_xenstore", False))

    def describe(self) -> str:
        return "nothing left behind" + (" but XenStore nodes" if self.allow_xenstore else "")


@dataclass(frozen=True)
class Clean(Expectation):
    """The named endpoints (default: both) finished without an error."""

    endpoints: tuple[str, ...] = ()

    kind: ClassVar[str] = "clean"

    @classmethod
    def parse(cls, table: _Table, names: tuple[str, ...]) -> Expectation:
        chosen = table.raw("endpoints", list(names))
        if not isinstance(chosen, list) or not chosen:
            table.fail("endpoints", f"must be a non-empty list of endpoint names, not {chosen!r}")
        for name in chosen:
            if name not in names:
                table.fail("endpoints", f"{name!r} is not an endpoint ({', '.join(names)})")
        return cls(tuple(chosen))

    def describe(self) -> str:
        return f"{', '.join(self.endpoints)} finish without error"


EXPECTATION_KINDS: dict[str, type[Expectation]] = {
    cls.kind: cls for cls in (Delivered, Integrity, CloseSeen, RaisesError, NoHang, NoLeaks, Clean)
}


# -- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A checked scenario.  Traffic questions (who sends what, who stops when) are
    answered here so that endpoints and the runner agree on them."""

    name: str
    source: str
    server: EndpointSpec
    client: EndpointSpec
    description: str = ""
    seed: int = 0
    deadline: float = DEFAULT_DEADLINE
    faults: tuple[Fault, ...] = ()
    expectations: tuple[Expectation, ...] = ()

    @property
    def endpoints(self) -> tuple[EndpointSpec, EndpointSpec]:
        return self.server, self.client

    @property
    def names(self) -> tuple[str, str]:
        return self.server.name, self.client.name

    def endpoint(self, name: str) -> EndpointSpec:
        return self.server if name == self.server.name else self.client

    def peer(self, name: str) -> EndpointSpec:
        return self.client if name == self.server.name else self.server

    def with_seed(self, seed: int) -> Scenario:
        return replace(self, seed=seed)

    @property
    def in_process(self) -> bool:
        """Endpoints run as threads of the runner (in-process backends)."""
        return self.server.backend in IN_PROCESS_BACKENDS

    @property
    def client_path(self) -> str:
        """The server's path as the client names it (absolute)."""
        path = self.server.path
        return path if path.startswith("/") else f"/local/domain/{self.server.domain}/{path}"

    @property
    def orders(self) -> tuple[int, int]:
        """(left, right) ring orders the server will choose."""
        return layout.choose_orders(self.server.read_min, self.server.write_min)

    def ring_size(self, writer: str) -> int:
        """Size of the ring endpoint ``writer`` writes into."""
        left, right = self.orders
        return layout.ring_size(right if writer == self.server.name else left)

    def faults_of(self, name: str, kind: type[Fault] | None = None) -> list[Fault]:
        return [
            f for f in self.faults if f.endpoint == name and (kind is None or isinstance(f, kind))
        ]

    # -- traffic --

    def origin(self, receiver: str) -> str | None:
        """Whose stream ``receiver`` reads: the peer's, its own (echoed back), or none."""
        peer = self.peer(receiver)
        if peer.workload.echo:
            return receiver
        return peer.name if peer.workload.sends_own else None

    def receives(self, name: str) -> bool:
        return self.origin(name) is not None

    def byte_stream(self, name: str) -> ByteStream | XorshiftStream:
        """The bytes ``name`` sends of its own (vchan-pipe's data for a program)."""
        return open_stream(self.seed, name, self.endpoint(name).kind)

    def streams_of(self, name: str) -> list[str]:
        """Whose streams ``name`` handles: its own if it sends, the one it receives."""
        own = [name] if self.endpoint(name).workload.sends_own else []
        origin = self.origin(name)
        return own + ([origin] if origin is not None and origin not in own else [])

    def receive_count(self, name: str) -> int | None:
        """Bytes ``name`` receives in all (0 if nothing), if known in advance."""
        origin = self.origin(name)
        return 0 if origin is None else self.planned_send(origin)

    def planned_send(self, name: str) -> int | None:
        """Bytes of its own stream ``name`` will send in all, if known in advance."""
        work = self.endpoint(name).workload
        if not work.sends_own or work.duration:
            return None
        total = work.send
        for fault in self.faults_of(name):
            if isinstance(fault, KillFault | CloseFault):
                if fault.trigger.after_sent is None:
                    return None
                total = min(total, fault.trigger.after_sent)
        return total

    def rx_stop(self, name: str) -> int | str | None:
        """When ``name`` stops reading: at a stream offset (int), ``"own"`` (once its own
        stream came back from an echo), ``"close"`` (when the peer closes), or None if it
        receives nothing.  Counts are needed where waiting for the close would deadlock:
        both ends receive, or a persistent server never sees its client close."""
        origin = self.origin(name)
        if origin is None:
            return None
        spec = self.endpoint(name)
        needs_count = self.receives(self.peer(name).name) or (spec.is_server and spec.persist)
        if not needs_count:
            return "close"
        if origin == name:
            return "own"
        total = self.planned_send(origin)
        return "close" if total is None else total


# -- loading ---------------------------------------------------------------------------------


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
    top = _Table(source, "", data)
    head = top.table("scenario")
    name = head.text("name", default_name)
    backend = head.text("backend", "shm")
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
    _Checker(scenario).check()
    return scenario


def _parse_endpoints(table: _Table, default_backend: str) -> tuple[EndpointSpec, EndpointSpec]:
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


def _parse_endpoint(table: _Table, name: str, default_backend: str) -> EndpointSpec:
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
        backend=table.text("backend", default_backend),
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
            start_index=table.integer("start_index", 0, 0, U32_MAX),
        )
    else:
        for key in ("path", "persist", "start_index", "read_min", "write_min"):
            if table.has(key):
                table.fail(key, "is a server setting (the server chooses the path and rings)")
    table.finish()
    return spec


def _program(table: _Table) -> tuple[str, ...]:
    """A program endpoint's command: a non-empty list of strings whose ``{placeholders}``
    are known, ``{options}`` standing alone."""
    command = table.raw("program", list(DEFAULT_PROGRAM))
    if not isinstance(command, list) or not command:
        table.fail("program", f"must be a non-empty list of strings, not {_show(command)}")
    for arg in command:
        if not isinstance(arg, str) or not arg:
            table.fail("program", f"arguments must be non-empty strings, not {_show(arg)}")
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


def _spin(table: _Table) -> str | float | None:
    """``"off"``, ``"adaptive"``, or a spin budget in microseconds (see Vchan.spin)."""
    if not table.has("spin"):
        return None
    if isinstance(table.raw("spin"), str):
        return table.text("spin", None, SPIN_POLICIES)
    return table.number("spin", 0.0, 0.0, 1_000_000.0)


def _optional_number(table: _Table, key: str) -> float | None:
    return table.number(key, 0.0, 0.001) if table.has(key) else None


def _parse_workload(table: _Table, kind: str) -> Workload:
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


def _parse_fault(table: _Table, names: tuple[str, ...]) -> Fault:
    kind = table.text("kind", None, FAULT_KINDS)
    cls = FAULT_KINDS[kind]
    endpoint = _endpoint_key(table, names)
    trigger = _parse_trigger(table, cls.triggers, cls.trigger_required)
    fault = cls(endpoint=endpoint, trigger=trigger, **cls.parse_params(table))
    table.finish()
    return fault


def _parse_expectation(table: _Table, names: tuple[str, ...]) -> Expectation:
    kind = table.text("kind", None, EXPECTATION_KINDS)
    expectation = EXPECTATION_KINDS[kind].parse(table, names)
    table.finish()
    return expectation


# -- whole-scenario checks ------------------------------------------------------------------


class _Checker:
    """Cross-key checks: each refuses a scenario that could not do what it says."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario

    def fail(self, where: str, message: str) -> NoReturn:
        raise ScenarioError(f"{self.s.source}: {where}: {message}")

    def check(self) -> None:
        checks: list[Callable[[], None]] = [
            self._domains,
            self._backends,
            self._orders,
            self._traffic,
            self._packets,
            self._programs,
            self._faults,
            self._expectations,
        ]
        for check in checks:
            check()

    def _domains(self) -> None:
        if self.s.server.domain == self.s.client.domain:
            self.fail(
                f"endpoints.{self.s.client.name}.domain",
                f"both endpoints are in domain {self.s.client.domain}; a vchan joins two "
                "domains (Linux on Xen cannot map its own grants)",
            )

    def _backends(self) -> None:
        server, client = self.s.endpoints
        if (server.backend in IN_PROCESS_BACKENDS) != (client.backend in IN_PROCESS_BACKENDS):
            self.fail(
                f"endpoints.{client.name}.backend",
                f"{client.backend!r} cannot meet {server.backend!r}: the in-process "
                "backend only joins endpoints of one process",
            )

    def _orders(self) -> None:
        try:
            self.s.orders  # noqa: B018 - validates read_min/write_min together
        except ConfigError as exc:
            self.fail(f"endpoints.{self.s.server.name}", str(exc))

    def _traffic(self) -> None:
        s = self.s
        if not any(s.receives(name) for name in s.names):
            self.fail("endpoints", "no endpoint sends anything: give one a workload.send")
        for spec in s.endpoints:
            where = f"endpoints.{spec.name}.workload"
            if spec.workload.echo and not s.peer(spec.name).workload.sends_own:
                self.fail(f"{where}.echo", "echoes, but its peer sends nothing to echo")
            if s.rx_stop(spec.name) == "close" and spec.is_server and spec.persist:
                self.fail(
                    where,
                    "a persistent server never sees its client close, so the client must "
                    "send a byte count (workload.send), not a duration",
                )
        both_wait = all(s.rx_stop(name) == "close" for name in s.names)
        if both_wait:
            self.fail(
                "endpoints",
                "both endpoints receive and each would wait for the other to close: "
                "give at least one sender a byte count (workload.send)",
            )

    def _packets(self) -> None:
        for spec in self.s.endpoints:
            work = spec.workload
            if work.mode != "packets":
                continue
            peer = self.s.peer(spec.name)
            if peer.workload.mode != "packets" and self.s.receives(peer.name):
                self.fail(
                    f"endpoints.{peer.name}.workload.mode",
                    f"must be 'packets' too: {spec.name} sends packets",
                )
            if work.sends_own:
                self._fits(spec.name, spec.name)
            if work.echo:
                self._fits(spec.name, peer.name)

    def _fits(self, writer: str, origin: str) -> None:
        """``writer`` sends ``origin``'s packets: each must fit ``writer``'s ring."""
        biggest = self.s.endpoint(origin).workload.write_size.high
        ring = self.s.ring_size(writer)
        if biggest > ring:
            self.fail(
                f"endpoints.{origin}.workload.write_size",
                f"packets of up to {biggest} bytes cannot fit the {ring}-byte ring "
                f"{writer} writes into (send would raise MessageTooLarge)",
            )

    def _programs(self) -> None:
        """A program is told up front what it sends and receives, in a process of its own
        on the emulator: whatever it cannot be told is refused here."""
        for spec in self.s.endpoints:
            if spec.is_program:
                self._program(spec)

    def _program(self, spec: EndpointSpec) -> None:
        s, where = self.s, f"endpoints.{spec.name}"
        if spec.backend != "shm":
            self.fail(
                f"{where}.backend",
                f"a program endpoint runs on the shm emulator, not {spec.backend!r}",
            )
        origin = s.origin(spec.name)
        if origin is not None and s.receive_count(spec.name) is None:
            self.fail(
                f"endpoints.{origin}.workload",
                f"{spec.name} is a program, told how many bytes it receives: {origin} must "
                "send a byte count (workload.send), not a duration",
            )
        if spec.workload.mode == "packets":
            sizes = {s.endpoint(o).workload.write_size for o in s.streams_of(spec.name)}
            if len(sizes) != 1 or not next(iter(sizes)).fixed:
                shown = ", ".join(sorted(size.describe() for size in sizes))
                self.fail(
                    f"{where}.workload.write_size",
                    f"a program sends and receives packets of one fixed size; {spec.name}'s "
                    f"packets would be {shown}",
                )
        if spec.is_server and s.faults_of(s.client.name, RestartFault):
            self.fail(
                f"{where}.kind",
                "a restarted client needs a persistent server, and a program server does "
                "not persist",
            )

    def _faults(self) -> None:
        for i, fault in enumerate(self.s.faults):
            self._fault(f"faults[{i}]", fault)

    def _fault(self, where: str, fault: Fault) -> None:
        s = self.s
        spec = s.endpoint(fault.endpoint)
        if spec.is_program and (not fault.by_runner or isinstance(fault, RestartFault)):
            self.fail(
                where,
                f"{fault.describe()}: a {fault.kind} fault with this trigger acts inside a "
                f"Python endpoint, and {fault.endpoint} is a program; what applies to a "
                "program is what the runner does from outside (kill at a time, exhaust)",
            )
        if fault.needs_process and s.in_process:
            self.fail(
                where,
                f"{fault.describe()} needs the endpoint to be a process; backend "
                f"{spec.backend!r} runs endpoints as threads of the runner",
            )
        if fault.trigger.after_sent is not None and not (
            spec.workload.sends_own or spec.workload.echo
        ):
            self.fail(f"{where}.after_sent", f"{fault.endpoint} sends nothing")
        if fault.trigger.after_received is not None and not s.receives(fault.endpoint):
            self.fail(f"{where}.after_received", f"{fault.endpoint} receives nothing")
        if isinstance(fault, RestartFault) and spec.is_server:
            self.fail(where, "only a client can be restarted (a new server is a new channel)")
        if isinstance(fault, ExhaustFault) and not spec.is_server:
            self.fail(
                where,
                "only the server spends grants and XenStore nodes on a vchan; exhaust "
                "the server's domain",
            )
        if isinstance(fault, ExhaustFault) and fault.resource == "ports" and s.in_process:
            self.fail(
                where,
                f"backend {spec.backend!r} has no limit on event ports: exhaust ports on shm",
            )
        if isinstance(fault, ExhaustFault) and fault.resource == "xenstore" and not spec.domain:
            self.fail(
                where,
                f"{fault.endpoint} is in domain 0, which XenStore exempts from quotas: "
                "give it another domain",
            )

    def _expectations(self) -> None:
        if not self.s.expectations:
            self.fail("expect", "a scenario needs at least one [[expect]] to give a verdict")


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
