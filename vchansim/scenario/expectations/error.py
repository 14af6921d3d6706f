"""``error``: an endpoint raised a given exception (class or subclass, errno, phase)."""

from __future__ import annotations

import errno as errno_module
from dataclasses import dataclass
from typing import ClassVar

from ... import errors
from ..messages import PROGRAM_ERROR, ErrorReport, error_text
from ..records import RunRecord
from ..tables import Table
from .base import Expectation, Verdict

#: Exception names an ``error`` expectation may name: ours, what Python raises, and a
#: program endpoint's failure.
ERROR_NAMES = frozenset(
    name
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
) | {"OSError", "TimeoutError", "ValueError", PROGRAM_ERROR}
ERRNO_NAMES = frozenset(errno_module.errorcode.values())


@dataclass(frozen=True)
class RaisesError(Expectation):
    """``endpoint`` raised ``error`` (that class or a subclass), optionally with ``errno``
    and in ``phase`` (setup, io or close)."""

    endpoint: str = ""
    error: str = ""
    errno: str | None = None
    phase: str | None = None

    kind: ClassVar[str] = "error"

    @classmethod
    def parse(cls, table: Table, names: tuple[str, ...]) -> Expectation:
        endpoint = table.endpoint(names)
        error = table.text("error", None)
        if error not in ERROR_NAMES:
            table.fail("error", f"{error!r} is not an exception vchansim raises")
        code = table.raw("errno")
        if code is not None and code not in ERRNO_NAMES:
            table.fail("errno", f"{code!r} is not an errno name such as 'ENOSPC'")
        phase = table.raw("phase")
        if phase is not None:
            phase = table.text("phase", None, ("setup", "io", "close"))
        return cls(endpoint, error, code, phase)

    def describe(self) -> str:
        detail = "".join(f" {x}" for x in (self.errno, self.phase and f"in {self.phase}") if x)
        return f"{self.endpoint} raises {self.error}{detail}"

    def matches(self, error: ErrorReport) -> bool:
        return (
            self.error in error["mro"]
            and (self.errno is None or error["errno"] == self.errno)
            and (self.phase is None or error["phase"] == self.phase)
        )

    def judge(self, record: RunRecord) -> Verdict:
        found = [i.result.error for i in record.of(self.endpoint) if i.result and i.result.error]
        for error in found:
            if self.matches(error):
                return self.verdict(True, error_text(error))
        got = "; ".join(map(error_text, found)) or "no error"
        return self.verdict(False, f"got {got}")
