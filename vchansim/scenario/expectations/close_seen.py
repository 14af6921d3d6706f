"""``close_seen``: an endpoint noticed its peer's close, or death, in time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..records import RunRecord
from ..tables import Table
from .base import Expectation, Verdict


@dataclass(frozen=True)
class CloseSeen(Expectation):
    """``endpoint`` observed its peer's close (or death) within ``within_ms``."""

    endpoint: str = ""
    within_ms: float = 0.0

    kind: ClassVar[str] = "close_seen"

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        return cls(table.endpoint(names), table.number("within_ms", 1000.0, 0.0))

    def scaled(self, factor: float) -> Expectation:
        return replace(self, within_ms=self.within_ms * factor)

    def describe(self) -> str:
        return f"{self.endpoint} sees the close within {self.within_ms:g} ms"

    def judge(self, record: RunRecord) -> Verdict:
        name = self.endpoint
        seen = [i.times["peer_closed"] for i in record.of(name) if "peer_closed" in i.times]
        if not seen:
            return self.verdict(False, f"{name} never saw its peer close")
        observed = min(seen)
        peer = record.scenario.peer(name).name
        causes = [t for t in close_times(record, peer) if t <= observed]
        if not causes:
            return self.verdict(False, f"{name} saw a close that {peer} never made")
        delay_ms = (observed - max(causes)) * 1000
        return self.verdict(
            delay_ms <= self.within_ms,
            f"seen after {delay_ms:.1f} ms (limit {self.within_ms:g} ms)",
        )


def close_times(record: RunRecord, name: str) -> list[float]:
    """Moments ``name`` closed, died, or made its peer believe so (a fault that closes)."""
    times = []
    for inst in record.of(name):
        times += [inst.times[k] for k in ("closing", "killed") if k in inst.times]
        times += [f.t for f in inst.faults if record.scenario.faults[f.index].closes]
    return times
