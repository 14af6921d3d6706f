"""``restart``: the client goes away and a new client process reconnects to the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..spec import Scenario
from ..tables import Table
from .base import EndpointTarget, Fault, RunnerTarget, refuse


@dataclass(frozen=True)
class RestartFault(Fault):
    """The client goes away (closes, or is killed) and a new client process reconnects
    to the same server, resuming each stream where the ring indices say it stands."""

    how: str = "close"

    kind: ClassVar[str] = "restart"
    restarts: ClassVar[bool] = True

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
        return {"how": table.text("how", "close", ("close", "kill"))}

    @property
    def kills(self) -> bool:
        return self.how == "kill"

    @property
    def needs_process(self) -> bool:
        return self.kills

    @property
    def by_runner(self) -> bool:
        return self.kills and self.trigger.at is not None

    @property
    def on_program(self) -> bool:
        """A program cannot resume mid-stream: never."""
        return False

    def check(self, scenario: Scenario, where: str) -> None:
        super().check(scenario, where)
        if scenario.endpoint(self.endpoint).is_server:
            refuse(
                scenario, where, "only a client can be restarted (a new server is a new channel)"
            )
        if scenario.server.is_program:
            refuse(
                scenario,
                f"endpoints.{scenario.server.name}.kind",
                "a restarted client needs a persistent server, and a program server does "
                "not persist",
            )

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record()
        if self.kills:
            target.kill()
        target.stop(f"closed by fault: {self.describe()}")

    def act_from_runner(self, target: RunnerTarget) -> None:
        target.record()
        target.kill()
