"""The checked, immutable description of a scenario: endpoints, workloads, the whole.

A scenario is one vchan (a server endpoint and a client endpoint), the traffic each end
drives, the faults to inject and the expectations that make the verdict.  These types
are what the loader (``load.py``) produces and what the endpoints, the runner and the
judges read; traffic questions (who sends what, who stops when) are answered here once
so that all of them agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .. import layout
from .streams import ByteStream, SizeSpec, XorshiftStream, open_stream

if TYPE_CHECKING:
    from .expectations.base import Expectation
    from .faults.base import Fault

DEFAULT_DEADLINE = 30.0
DEFAULT_SIZE = SizeSpec(4096, 4096)
#: Backends whose endpoints live in one process as threads (they cannot be killed).
IN_PROCESS_BACKENDS = frozenset({"memory"})
#: The backend whose endpoints are processes of the runner's own domain on real Xen.
XEN_BACKEND = "xen"
#: Multiplies every time bound of a scenario (``Scenario.scaled``): for a slow machine,
#: such as Xen under QEMU's software CPU.
DEADLINE_FACTOR_ENV = "VCHANSIM_DEADLINE_FACTOR"
#: The command of a program endpoint unless it gives one: vchan-pipe (csrc/programs), with
#: the arguments that make it play the endpoint.  ``{options}`` stands for several.
DEFAULT_PROGRAM = ("{pipe}", "{role}", "{peer}", "{path}", "{options}")
#: What a program endpoint's command may say in braces (docs/scenarios.md).
PROGRAM_FIELDS = frozenset(
    {"pipe", "role", "peer", "path", "send", "recv", "seed", "packet", "read_min", "write_min"}
)
#: The placeholder that must be a whole argument: it becomes vchan-pipe's options.
OPTIONS_FIELD = "{options}"


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


@dataclass(frozen=True)
class Scenario:
    """A checked scenario."""

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

    def with_backend(self, backend: str) -> Scenario:
        """Both endpoints on ``backend`` (not checked again: see load.check_scenario)."""
        return replace(
            self,
            server=replace(self.server, backend=backend),
            client=replace(self.client, backend=backend),
        )

    def in_domain(self, domid: int) -> Scenario:
        """Both endpoints in domain ``domid``: where a backend is the domain it runs in
        (real Xen), every endpoint of one machine is in that one domain."""
        return replace(
            self,
            server=replace(self.server, domain=domid),
            client=replace(self.client, domain=domid),
        )

    def scaled(self, factor: float) -> Scenario:
        """Every time bound ``factor`` times as long: the deadline, the endpoints' call
        timeouts and the expectations' bounds.  What the scenario does -- its fault
        times, pauses and stalls -- stays as written."""

        def slower(spec: EndpointSpec) -> EndpointSpec:
            timeout = None if spec.timeout is None else spec.timeout * factor
            return replace(spec, timeout=timeout)

        return replace(
            self,
            deadline=self.deadline * factor,
            server=slower(self.server),
            client=slower(self.client),
            expectations=tuple(e.scaled(factor) for e in self.expectations),
        )

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

    def faults_of(self, name: str) -> list[Fault]:
        return [f for f in self.faults if f.endpoint == name]

    def fault_index(self, fault: Fault) -> int:
        """Where ``fault`` (this very object) stands in :attr:`faults`."""
        return next(i for i, f in enumerate(self.faults) if f is fault)

    @property
    def restarts_client(self) -> bool:
        """Whether a fault makes a new client instance reconnect."""
        return any(f.restarts for f in self.faults_of(self.client.name))

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
            if fault.ends_stream:
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
