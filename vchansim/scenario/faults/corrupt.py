"""``corrupt``: the endpoint writes a field of the shared control page, as a hostile peer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...channel import Vchan
from ..page import PAGE_FIELDS, field_view
from ..tables import Table
from .base import TRIGGER_KEYS, EndpointTarget, Fault


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
    def parse_params(cls, table: Table) -> dict[str, Any]:
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

    @property
    def closes(self) -> bool:
        """Clearing a live byte makes the peer believe the channel closed."""
        return self.field.endswith("_live")

    def apply(self, chan: Vchan) -> dict[str, Any]:
        """Write the field through ``chan``'s mapping; the old and new value, for the record."""
        view = field_view(chan, self.field)
        try:
            old = view[0]
            mask = (1 << (8 * view.itemsize)) - 1
            new = self.value if self.value is not None else (old + (self.add or 0)) & mask
            view[0] = new
        finally:
            view.release()
        return {"field": self.field, "old": old, "new": new}

    def act_in_endpoint(self, target: EndpointTarget) -> None:
        target.record(**self.apply(target.chan))
