"""``stall``: the endpoint stops reading for a while; it keeps writing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..tables import Table
from .base import EndpointTarget, Fault


@dataclass(frozen=True)
class StallFault(Fault):
    """The endpoint stops reading for ``duration`` seconds (it keeps writing)."""

    duration: float = 0.5

    kind: ClassVar[str] = "stall"

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
        return {"duration": table.number("duration", 0.5, 0.001, 60.0)}

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record()
        target.stall(self.duration)
