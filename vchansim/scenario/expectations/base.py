"""What every expectation kind is: how it reads its table, says itself, and judges a run.

An expectation kind is one module of this package holding one :class:`Expectation`
subclass, its judge beside it, listed once in the registry (``expectations/__init__.py``).
Judges rest on what the endpoints reported and on digests recomputed from the seed,
never on how fast things went -- except where the expectation itself bounds a time, and
then the verdict quotes the time measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..records import RunRecord
from ..tables import Table


@dataclass(frozen=True)
class Verdict:
    """One expectation, judged."""

    expectation: str
    kind: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "kind": self.kind,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Expectation:
    """Base of the expectation kinds."""

    #: The ``kind`` key that names it in a scenario file.
    kind: ClassVar[str] = ""

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        """The expectation an ``[[expect]]`` table describes (its ``kind`` already read);
        ``names`` are the scenario's endpoints."""
        return cls()

    def describe(self) -> str:
        return self.kind

    def scaled(self, factor: float) -> Expectation:
        """This expectation with every time bound it sets ``factor`` times as long (a
        slower machine, see :meth:`~vchansim.scenario.spec.Scenario.scaled`)."""
        return self

    def judge(self, record: RunRecord) -> Verdict:
        """The verdict on ``record``."""
        raise NotImplementedError

    def verdict(self, passed: bool, detail: str) -> Verdict:
        return Verdict(self.describe(), self.kind, passed, detail)
