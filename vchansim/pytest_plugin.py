"""pytest fixtures for testing code that speaks vchan (docs/pytest.md).

Installed with vchansim (entry point ``pytest11``), or enabled with
``-p vchansim.pytest_plugin``.  Every fixture that touches the emulator works in a
private run directory of its own, with its own hub, so tests are independent of each
other and safe under ``pytest-xdist``; and every such test is checked for leaks at
teardown -- a vchan left open, a grant never revoked, a XenStore key left behind fails
the test that leaked it, not a later one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .backends import backend_class, get_backend
from .backends.base import Backend
from .backends.memory import MemoryBackend, MemoryHypervisor
from .channel import Vchan
from .hub.launcher import private_hub
from .leaks import Leak, find_leaks, memory_leaks, own_descriptors
from .rundir import RunDir
from .scenario import Scenario, ScenarioResult, load_scenario, scenario_from_dict
from .scenario import run_scenario as _run_scenario
from .xenleaks import XenSnapshot

#: Seconds the teardown leak check gives the hub to notice closed connections.
LEAK_GRACE = 2.0
DEFAULT_BACKEND = "shm"
SERVER_DOMID = 1
CLIENT_DOMID = 0
PAIR_PATH = "data/vchan/pytest"
_PAIR_OPTIONS = frozenset({"backend", "read_min", "write_min", "blocking"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vchansim", "vchan emulator fixtures")
    group.addoption(
        "--vchan-backend",
        metavar="NAME",
        default=None,
        help="backend of the vchan fixtures (default: the vchansim_backend ini, else shm)",
    )
    parser.addini("vchansim_backend", "backend of the vchan fixtures", default=DEFAULT_BACKEND)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vchan(backend=None, read_min=0, write_min=0, blocking=True): options of the "
        "vchan_pair fixture",
    )


class VchanPair(NamedTuple):
    """A connected channel: ``server`` in domain 1 and ``client`` in domain 0 (on real
    Xen both in the domain the test runs in)."""

    server: Vchan
    client: Vchan


class Environment:
    """One test's emulated machine: the backends of its domains and what they leave."""

    def __init__(self, backend: str, rundir: RunDir) -> None:
        self.backend = backend
        self.rundir = rundir
        self.hypervisor = MemoryHypervisor() if backend == "memory" else None
        # What an earlier test left open is that test's leak, not this one's.
        self.open_before = own_descriptors()
        #: On a backend that is its process's domain (real Xen): that domain, and what
        #: it held and kept in its XenStore home before the test.
        self.own: Backend | None = None
        self.before: XenSnapshot | None = None
        if not backend_class(backend).plays_domains:
            self.own = get_backend(backend)
            with self.own.store() as store:
                self.before = XenSnapshot.take(store, self.home)

    @property
    def home(self) -> str:
        """The server's XenStore home, where the pair's keys go."""
        return f"/local/domain/{self.pair_domains()[0]}"

    def pair_domains(self) -> tuple[int, int]:
        """(server, client) domains of ``vchan_pair``: 1 and 0 where the backend plays
        domains; the test's own domain twice where it is that domain."""
        if self.own is not None:
            return self.own.domid, self.own.domid
        return SERVER_DOMID, CLIENT_DOMID

    def domain(self, domid: int) -> Backend:
        """The backend through which this test plays domain ``domid``."""
        if self.hypervisor is not None:
            return MemoryBackend(domid, hypervisor=self.hypervisor)
        if self.backend == "shm":
            return get_backend("shm", domid=domid, rundir=self.rundir)
        return get_backend(self.backend, domid=domid)

    def leaks(self) -> list[Leak]:
        if self.hypervisor is not None:
            return memory_leaks(self.hypervisor)
        if self.own is not None and self.before is not None:
            with self.own.store() as store:
                return self.before.leaks(store)
        return find_leaks(self.rundir, timeout=LEAK_GRACE, open_before=self.open_before)


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Pair options of this test: its ``vchan`` marker, overridden by an indirect
    parameter of ``vchan_pair``.  Read from the test item, so that every fixture of the
    test (``vchan_env`` included) agrees on them."""
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker("vchan")
    if marker is not None:
        options.update(marker.kwargs)
    callspec = getattr(request.node, "callspec", None)
    param = callspec.params.get("vchan_pair") if callspec is not None else None
    if isinstance(param, dict):
        options.update(param)
    elif isinstance(param, str):
        options["backend"] = param
    unknown = set(options) - _PAIR_OPTIONS
    if unknown:
        raise pytest.UsageError(
            f"unknown vchan option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_PAIR_OPTIONS))}"
        )
    return options


def _backend_name(request: pytest.FixtureRequest) -> str:
    chosen = _options(request).get("backend")
    return str(
        chosen
        or request.config.getoption("vchan_backend")
        or request.config.getini("vchansim_backend")
    )


@pytest.fixture
def vchan_rundir() -> Iterator[RunDir]:
    """A private run directory (short path, mode 0700) whose hub is stopped and which is
    removed after the test."""
    with private_hub() as rundir:
        yield rundir


@pytest.fixture
def vchan_env(request: pytest.FixtureRequest, vchan_rundir: RunDir) -> Iterator[Environment]:
    """This test's emulated machine; ``vchan_env.domain(domid)`` gives a backend.

    Fails the test at teardown if anything is left behind."""
    env = Environment(_backend_name(request), vchan_rundir)
    yield env
    found = env.leaks()
    if found:
        pytest.fail(
            f"vchansim resources left behind by this test ({env.backend} backend):\n  "
            + "\n  ".join(map(str, found)),
            pytrace=False,
        )


@pytest.fixture
def vchan_pair(request: pytest.FixtureRequest, vchan_env: Environment) -> Iterator[VchanPair]:
    """A connected (server, client) pair, closed after the test.

    Options come from ``@pytest.mark.vchan(...)`` or an indirect parameter (a dict of
    them, or a backend name): ``backend``, ``read_min``, ``write_min``, ``blocking``."""
    options = _options(request)
    blocking = options.get("blocking", True)
    server_domid, client_domid = vchan_env.pair_domains()
    server = Vchan.server(
        vchan_env.domain(server_domid),
        client_domid,
        PAIR_PATH,
        options.get("read_min", 0),
        options.get("write_min", 0),
        blocking=blocking,
    )
    try:
        client = Vchan.client(
            vchan_env.domain(client_domid),
            server_domid,
            f"{vchan_env.home}/{PAIR_PATH}",
            blocking=blocking,
        )
    except BaseException:
        server.close()
        raise
    try:
        yield VchanPair(server, client)
    finally:
        client.close()
        server.close()


ScenarioSource = Scenario | str | Path | dict[str, Any]


def _as_scenario(source: ScenarioSource) -> Scenario:
    if isinstance(source, Scenario):
        return source
    if isinstance(source, dict):
        return scenario_from_dict(source, source="<dict>")
    return load_scenario(source)


@pytest.fixture
def run_scenario() -> Callable[..., ScenarioResult]:
    """``run_scenario(source, *, seed=None, trace=None, check=True)`` runs a scenario
    (a file, a Scenario, or the dict its TOML would give) in a run directory of its own.

    With ``check`` (the default) a failed expectation fails the test, listing every
    verdict; the result is returned either way."""

    def run(
        source: ScenarioSource,
        *,
        seed: int | None = None,
        trace: str | Path | None = None,
        check: bool = True,
    ) -> ScenarioResult:
        result = _run_scenario(_as_scenario(source), seed=seed, trace=trace)
        if check and not result.passed:
            pytest.fail(result.summary(), pytrace=False)
        return result

    return run
