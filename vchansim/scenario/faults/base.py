"""What every fault kind is: its parameters, its checks, its limits, its two ways to act.

A fault kind is one module of this package holding one :class:`Fault` subclass, listed
once in the registry (``faults/__init__.py``).  The class says everything about the kind:

* ``parse_params`` reads its own keys of a ``[[faults]]`` table;
* ``check`` refuses a scenario the fault could not act in (it calls the base checks);
* ``limits`` lowers the machine's limits before the run, if the fault is about them;
* ``act_in_endpoint`` commits it inside the endpoint's own process, at an exact point of
  its work, through an :class:`EndpointTarget`;
* ``act_from_runner`` commits it from outside, through a :class:`RunnerTarget`.

The targets are small protocols, so a fault object can act on something other than a
scenario's endpoint -- any open :class:`~vchansim.channel.Vchan` and process a caller
wraps in them -- and flags (``kills``, ``closes``...) tell the runner and the judges what
the fault does to the run's bookkeeping without naming kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol

from ...hub.limits import HubLimits
from ..spec import Scenario, Trigger
from ..tables import ScenarioError, Table

if TYPE_CHECKING:
    from ...channel import Vchan
    from ..tap import EventRule, EventTap

#: The keys that may trigger a fault (``at = "setup"`` is a form of ``at``).
TRIGGER_KEYS = ("at", "after_sent", "after_received")


class EndpointTarget(Protocol):
    """What a fault acting inside an endpoint may touch: its channel and event tap, its
    workload, its process, and the record it leaves for the runner."""

    @property
    def chan(self) -> Vchan:
        """The endpoint's open channel (the control page is reachable through it)."""

    @property
    def tap(self) -> EventTap:
        """The counting, tampering layer between the channel and its event handle."""

    def record(self, **detail: Any) -> None:
        """Tell the runner the fault fired now, with ``detail``; call it before acting
        (a kill leaves no later chance)."""

    def stall(self, duration: float) -> None:
        """Stop reading for ``duration`` seconds (writing goes on)."""

    def stop(self, why: str) -> None:
        """End the workload now; the endpoint closes its channel and reports ``why``."""

    def kill(self) -> NoReturn:
        """SIGKILL the endpoint's own process."""


class RunnerTarget(Protocol):
    """What a fault acting from outside an endpoint may do to it."""

    def record(self, **detail: Any) -> None:
        """Trace that the fault fired now, with ``detail``."""

    def kill(self) -> None:
        """SIGKILL the endpoint (a program endpoint: its program)."""

    def signal(self, signo: int) -> None:
        """Send ``signo`` to the endpoint's process (gone already: nothing happens)."""

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` seconds from now, while the run lasts."""


def parse_trigger(table: Table, allowed: frozenset[str], required: bool) -> Trigger:
    """The one trigger of a fault table (``at``, ``after_sent`` or ``after_received``)."""
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
    if key == "after_sent":
        return Trigger(after_sent=table.integer(key, 0))
    return Trigger(after_received=table.integer(key, 0))


def refuse(scenario: Scenario, where: str, message: str) -> NoReturn:
    """Refuse ``scenario``: ``where`` names the fault's table, ``message`` says why."""
    raise ScenarioError(f"{scenario.source}: {where}: {message}")


@dataclass(frozen=True)
class Fault:
    """Base of the fault kinds; ``endpoint`` is the one that suffers (or commits) it."""

    endpoint: str
    trigger: Trigger

    #: The ``kind`` key that names it in a scenario file.
    kind: ClassVar[str] = ""
    #: Trigger keys it accepts (and ``"setup"`` if ``at = "setup"`` is allowed).
    triggers: ClassVar[frozenset[str]] = frozenset(TRIGGER_KEYS)
    #: Whether a trigger must be given (else it acts from the start).
    trigger_required: ClassVar[bool] = True
    #: The endpoint's own stream ends when it fires (its planned byte count shrinks).
    ends_stream: ClassVar[bool] = False
    #: A new client instance reconnects after the one it struck.
    restarts: ClassVar[bool] = False
    #: It acts in every instance of a restarted endpoint, not only the first.
    every_instance: ClassVar[bool] = False

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Fault:
        """The fault a ``[[faults]]`` table describes (its ``kind`` already read)."""
        endpoint = table.endpoint(names)
        trigger = parse_trigger(table, cls.triggers, cls.trigger_required)
        return cls(endpoint, trigger, **cls.parse_params(table))

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
        """The kind's own keys, read from ``table``."""
        return {}

    def describe(self) -> str:
        return f"{self.kind} {self.endpoint} {self.trigger.describe()}"

    @property
    def kills(self) -> bool:
        """Whether the endpoint's process dies when it fires."""
        return False

    @property
    def needs_process(self) -> bool:
        """Whether this fault needs the endpoint to be a killable process."""
        return False

    @property
    def by_runner(self) -> bool:
        """Whether the runner commits it from outside the endpoint; the others act in
        the endpoint's own code, which a program endpoint does not run."""
        return False

    @property
    def on_program(self) -> bool:
        """Whether it can strike a program endpoint (by default: what the runner does)."""
        return self.by_runner

    @property
    def closes(self) -> bool:
        """Whether the peer should see the channel close when it fires."""
        return self.kills or self.ends_stream or self.restarts

    def check(self, scenario: Scenario, where: str) -> None:
        """Refuse a scenario this fault cannot act in; ``where`` names its table.

        Subclasses add their own rules and call this first."""
        spec = scenario.endpoint(self.endpoint)
        if spec.is_program and not self.on_program:
            refuse(
                scenario,
                where,
                f"{self.describe()}: a {self.kind} fault with this trigger acts inside a "
                f"Python endpoint, and {self.endpoint} is a program; what applies to a "
                "program is what the runner does from outside (kill at a time, exhaust)",
            )
        if self.needs_process and scenario.in_process:
            refuse(
                scenario,
                where,
                f"{self.describe()} needs the endpoint to be a process; backend "
                f"{spec.backend!r} runs endpoints as threads of the runner",
            )
        if self.trigger.after_sent is not None and not (
            spec.workload.sends_own or spec.workload.echo
        ):
            refuse(scenario, f"{where}.after_sent", f"{self.endpoint} sends nothing")
        if self.trigger.after_received is not None and not scenario.receives(self.endpoint):
            refuse(scenario, f"{where}.after_received", f"{self.endpoint} receives nothing")

    def limits(self, limits: HubLimits) -> HubLimits:
        """The machine's limits with this fault applied (most faults leave them)."""
        return limits

    @property
    def emulator_only(self) -> str | None:
        """Why only the emulator can commit this fault (None: real Xen can too).  A
        fault that lowers the machine's limits needs a machine made with them; on real
        Xen the limits are the hypervisor's."""
        if self.limits(HubLimits()) != HubLimits():
            return "it lowers the machine's limits, which on real Xen are the hypervisor's"
        return None

    def event_rule(self, seed: int, name: str, index: int) -> EventRule | None:
        """The rule this fault puts on the endpoint's event handle (``index``: its place
        among the endpoint's rules, which seeds its choices), if it tampers with events."""
        return None

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        """Commit the fault inside the endpoint; the default only records it."""
        target.record()

    def act_from_runner(self, target: RunnerTarget) -> None:
        """Commit the fault from outside the endpoint (for ``by_runner`` faults)."""
        raise NotImplementedError(f"a {self.kind} fault does not act from the runner")
