"""``close``: the endpoint closes at once, whatever is still in flight or unsent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import EndpointTarget, Fault


@dataclass(frozen=True)
class CloseFault(Fault):
    """The endpoint closes at once, whatever is still in flight or unsent."""

    kind: ClassVar[str] = "close"
    ends_stream: ClassVar[bool] = True

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record()
        target.stop(f"closed by fault: {self.describe()}")
