"""An endpoint's own faults, by what sets them off: set-up, a time, a byte offset."""

from __future__ import annotations

from .faults.base import Fault
from .spec import Scenario, Trigger


class Triggers:
    """The faults an endpoint instance commits itself, queued by trigger.

    One-shot faults act in the first instance of an endpoint only: a restarted client
    resumes past the offsets that triggered them.  Faults that act in every instance
    (``every_instance``) and have no trigger act from the start, not from here.
    """

    def __init__(self, scenario: Scenario, name: str, instance: int) -> None:
        faults = [
            f
            for f in scenario.faults_of(name)
            if not f.by_runner
            and (instance == 1 or f.every_instance)
            and f.trigger != Trigger()  # untriggered faults act from the start
        ]
        self.setup = [f for f in faults if f.trigger.setup]
        self.timed = sorted((f for f in faults if f.trigger.at is not None), key=_at)
        self.bytes: dict[str, list[tuple[int, Fault]]] = {"sent": [], "received": []}
        for fault in faults:
            offset = fault.trigger.byte_offset
            if offset is not None:
                self.bytes[offset[0]].append((offset[1], fault))
        for queue in self.bytes.values():
            queue.sort(key=lambda item: item[0])

    def room(self, kind: str, offset: int) -> int | None:
        """Bytes until the next ``kind`` trigger, so a chunk can stop exactly on it."""
        ahead = [at - offset for at, _ in self.bytes[kind] if at > offset]
        return min(ahead, default=None)

    def due_bytes(self, kind: str, offset: int) -> list[Fault]:
        queue = self.bytes[kind]
        due = [fault for at, fault in queue if at <= offset]
        del queue[: len(due)]
        return due

    def due_time(self, elapsed: float) -> list[Fault]:
        due = [f for f in self.timed if _at(f) <= elapsed]
        del self.timed[: len(due)]
        return due

    def next_time(self) -> float | None:
        return _at(self.timed[0]) if self.timed else None

    def unfired(self) -> list[Fault]:
        """Faults whose trigger was never reached (worth a note: the scenario may not
        test what it says)."""
        return self.timed + [fault for queue in self.bytes.values() for _, fault in queue]


def _at(fault: Fault) -> float:
    assert fault.trigger.at is not None
    return fault.trigger.at
