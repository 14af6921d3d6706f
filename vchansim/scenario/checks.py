"""Whole-scenario checks: each refuses a scenario that could not do what it says.

The loader has read every key; these look at keys together (two endpoints in one
domain, a packet bigger than its ring, a program told what it cannot be told).  Each
fault checks itself (``Fault.check``), since only its kind knows its rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from ..errors import ConfigError
from .spec import IN_PROCESS_BACKENDS, XEN_BACKEND, EndpointSpec, Scenario
from .tables import ScenarioError


def check_scenario(scenario: Scenario) -> None:
    """Refuse ``scenario`` with one line naming the key, if it cannot run as written."""
    _Checker(scenario).check()


class _Checker:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario

    def fail(self, where: str, message: str) -> NoReturn:
        raise ScenarioError(f"{self.s.source}: {where}: {message}")

    def check(self) -> None:
        checks: list[Callable[[], None]] = [
            self._domains,
            self._backends,
            self._orders,
            self._traffic,
            self._packets,
            self._programs,
            self._faults,
            self._expectations,
        ]
        for check in checks:
            check()

    def _domains(self) -> None:
        if self.s.server.domain == self.s.client.domain:
            self.fail(
                f"endpoints.{self.s.client.name}.domain",
                f"both endpoints are in domain {self.s.client.domain}; a vchan joins two "
                "domains (Linux on Xen cannot map its own grants)",
            )

    def _backends(self) -> None:
        server, client = self.s.endpoints
        if (server.backend == XEN_BACKEND) != (client.backend == XEN_BACKEND):
            self.fail(
                f"endpoints.{client.name}.backend",
                f"{client.backend!r} cannot meet {server.backend!r}: on real Xen both "
                "endpoints are of the domain the runner runs in",
            )
        if (server.backend in IN_PROCESS_BACKENDS) != (client.backend in IN_PROCESS_BACKENDS):
            self.fail(
                f"endpoints.{client.name}.backend",
                f"{client.backend!r} cannot meet {server.backend!r}: the in-process "
                "backend only joins endpoints of one process",
            )

    def _orders(self) -> None:
        try:
            self.s.orders  # noqa: B018 - validates read_min/write_min together
        except ConfigError as exc:
            self.fail(f"endpoints.{self.s.server.name}", str(exc))

    def _traffic(self) -> None:
        s = self.s
        if not any(s.receives(name) for name in s.names):
            self.fail("endpoints", "no endpoint sends anything: give one a workload.send")
        for spec in s.endpoints:
            where = f"endpoints.{spec.name}.workload"
            if spec.workload.echo and not s.peer(spec.name).workload.sends_own:
                self.fail(f"{where}.echo", "echoes, but its peer sends nothing to echo")
            if s.rx_stop(spec.name) == "close" and spec.is_server and spec.persist:
                self.fail(
                    where,
                    "a persistent server never sees its client close, so the client must "
                    "send a byte count (workload.send), not a duration",
                )
        if all(s.rx_stop(name) == "close" for name in s.names):
            self.fail(
                "endpoints",
                "both endpoints receive and each would wait for the other to close: "
                "give at least one sender a byte count (workload.send)",
            )

    def _packets(self) -> None:
        for spec in self.s.endpoints:
            work = spec.workload
            if work.mode != "packets":
                continue
            peer = self.s.peer(spec.name)
            if peer.workload.mode != "packets" and self.s.receives(peer.name):
                self.fail(
                    f"endpoints.{peer.name}.workload.mode",
                    f"must be 'packets' too: {spec.name} sends packets",
                )
            if work.sends_own:
                self._fits(spec.name, spec.name)
            if work.echo:
                self._fits(spec.name, peer.name)

    def _fits(self, writer: str, origin: str) -> None:
        """``writer`` sends ``origin``'s packets: each must fit ``writer``'s ring."""
        biggest = self.s.endpoint(origin).workload.write_size.high
        ring = self.s.ring_size(writer)
        if biggest > ring:
            self.fail(
                f"endpoints.{origin}.workload.write_size",
                f"packets of up to {biggest} bytes cannot fit the {ring}-byte ring "
                f"{writer} writes into (send would raise MessageTooLarge)",
            )

    def _programs(self) -> None:
        """A program is told up front what it sends and receives, in a process of its own
        on the emulator: whatever it cannot be told is refused here."""
        for spec in self.s.endpoints:
            if spec.is_program:
                self._program(spec)

    def _program(self, spec: EndpointSpec) -> None:
        s, where = self.s, f"endpoints.{spec.name}"
        if spec.backend not in ("shm", XEN_BACKEND):  # on xen: not applicable when run
            self.fail(
                f"{where}.backend",
                f"a program endpoint runs on the shm emulator, not {spec.backend!r}",
            )
        origin = s.origin(spec.name)
        if origin is not None and s.receive_count(spec.name) is None:
            self.fail(
                f"endpoints.{origin}.workload",
                f"{spec.name} is a program, told how many bytes it receives: {origin} must "
                "send a byte count (workload.send), not a duration",
            )
        if spec.workload.mode == "packets":
            sizes = {s.endpoint(o).workload.write_size for o in s.streams_of(spec.name)}
            if len(sizes) != 1 or not next(iter(sizes)).fixed:
                shown = ", ".join(sorted(size.describe() for size in sizes))
                self.fail(
                    f"{where}.workload.write_size",
                    f"a program sends and receives packets of one fixed size; {spec.name}'s "
                    f"packets would be {shown}",
                )

    def _faults(self) -> None:
        for i, fault in enumerate(self.s.faults):
            fault.check(self.s, f"faults[{i}]")

    def _expectations(self) -> None:
        if not self.s.expectations:
            self.fail("expect", "a scenario needs at least one [[expect]] to give a verdict")
