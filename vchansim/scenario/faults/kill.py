"""``kill``: SIGKILL the endpoint -- by the runner at a time, by itself at a byte offset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import EndpointTarget, Fault, RunnerTarget


@dataclass(frozen=True)
class KillFault(Fault):
    """SIGKILL the endpoint (by the runner at a time, by itself at a byte offset)."""

    kind: ClassVar[str] = "kill"
    ends_stream: ClassVar[bool] = True

    @property
    def kills(self) -> bool:
        return True

    @property
    def needs_process(self) -> bool:
        return True

    @property
    def by_runner(self) -> bool:
        return self.trigger.at is not None

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record()
        target.kill()

    def act_from_runner(self, target: RunnerTarget) -> None:
        target.record()
        target.kill()
