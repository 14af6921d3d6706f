"""``notify``: tamper with the event notifications the endpoint sends.

The fault puts a rule on the endpoint's event handle (see ``tap.py``); the rule is
active from the first notification when the fault has no trigger, else from the moment
the trigger fires.  Its choices are drawn from the scenario's seed, so a rerun tampers
with the same notifications.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from ..spec import Trigger
from ..tables import Table
from ..tap import Later, Send
from .base import EndpointTarget, Fault

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
    every_instance: ClassVar[bool] = True

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
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

    def event_rule(self, seed: int, name: str, index: int) -> NotifyRule:
        rng = random.Random(f"{seed}/{name}/notify/{index}")
        return NotifyRule(self, rng, active=self.trigger == Trigger())

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record()
        target.tap.activate(self)


@dataclass
class NotifyRule:
    """One notify fault on an event handle, and its bookkeeping."""

    fault: NotifyFault
    rng: random.Random
    active: bool = False
    seen: int = 0
    applied: int = 0

    def claims(self) -> bool:
        """Whether this notification is one the fault acts on (deterministic per seed).

        Every active rule sees every notification, so ``every`` counts all of them."""
        if not self.active or self.fault.action == "spurious":
            return False
        self.seen += 1
        if self.seen % self.fault.every:
            return False
        if self.fault.count and self.applied >= self.fault.count:
            return False
        return self.rng.random() < self.fault.probability

    def tamper(self, send: Send, later: Later) -> None:
        self.applied += 1
        if self.fault.action == "duplicate":
            send()
            send()
        elif self.fault.action == "delay":
            later(self.fault.delay, send)

    @property
    def spurious_rate(self) -> float:
        return self.fault.rate if self.fault.action == "spurious" else 0.0
