"""``exhaust``: the server's domain has only so much of a per-domain resource to spend.

The fault acts before the run: the runner makes the machine (the private hub, or the
in-process hypervisor) with the lowered limit, so the endpoint meets the real error
where a guest would, and the runner records the limit when the run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ...hub.limits import HubLimits
from ..spec import Scenario
from ..tables import Table
from .base import Fault, RunnerTarget, refuse

EXHAUST_RESOURCES = ("grants", "ports", "xenstore")
#: XenStore nodes a domain owns before it writes anything: its home's ``data``.
HOME_NODES = 1


@dataclass(frozen=True)
class ExhaustFault(Fault):
    """The endpoint's domain has only ``leave`` of a per-domain resource to spend:
    grant-table entries, event-channel ports, or XenStore nodes (its node quota)."""

    resource: str = "grants"
    leave: int = 0

    kind: ClassVar[str] = "exhaust"
    triggers: ClassVar[frozenset[str]] = frozenset()
    trigger_required: ClassVar[bool] = False

    @classmethod
    def parse_params(cls, table: Table) -> dict[str, Any]:
        return {
            "resource": table.text("resource", None, EXHAUST_RESOURCES),
            "leave": table.integer("leave", 0, 0, 4096),
        }

    def describe(self) -> str:
        return f"exhaust {self.resource} of {self.endpoint}'s domain (leave {self.leave})"

    @property
    def by_runner(self) -> bool:
        return True

    def check(self, scenario: Scenario, where: str) -> None:
        super().check(scenario, where)
        spec = scenario.endpoint(self.endpoint)
        if not spec.is_server:
            refuse(
                scenario,
                where,
                "only the server spends grants and XenStore nodes on a vchan; exhaust "
                "the server's domain",
            )
        if self.resource == "xenstore" and not spec.domain:
            refuse(
                scenario,
                where,
                f"{self.endpoint} is in domain 0, which XenStore exempts from quotas: "
                "give it another domain",
            )

    def limits(self, limits: HubLimits) -> HubLimits:
        """A limit holds for every domain, but of a vchan's two ends only the server
        spends grants and XenStore nodes, and it binds its port first, so the server's
        domain is the one that feels it."""
        if self.resource == "grants":
            return replace(limits, grants=self.leave)
        if self.resource == "ports":
            return replace(limits, ports=self.leave)
        return replace(limits, xenstore=replace(limits.xenstore, nodes=HOME_NODES + self.leave))

    def act_from_runner(self, target: RunnerTarget) -> None:
        """At set-up: the machine already has the limit; the trace says which."""
        target.record(limit=self.leave)
