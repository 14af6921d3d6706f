"""pytest fixtures for testing code that speaks vchan (docs/pytest.md).

Installed with vchansim (entry point ``pytest11``, named like this module so that
``-p vchansim.pytest_plugin`` or ``pytest_plugins`` naming it again is a no-op).  Every
fixture that touches the emulator works in a private run directory of its own, with its
own hub, so tests are independent of each other and safe under ``pytest-xdist``; and
every such test is checked for leaks at teardown -- a vchan left open, a grant never
revoked, a XenStore key left behind fails the test that leaked it, not a later one.
A test that uses the machine has a deadline (a test that would hang fails instead) and
a fault API on it (``vchan_env.faults``) that acts on the channels and processes the
test's own code opens.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .backends import backend_class, get_backend
from .backends.base import Backend
from .backends.memory import MemoryBackend, MemoryHypervisor
from .backends.shm import ShmBackend
from .channel import Vchan
from .errors import ConfigError
from .hub.launcher import ensure_hub, private_hub, stop_hub
from .hub.limits import HubLimits
from .leaks import Leak, find_leaks, memory_leaks, own_descriptors
from .library import resolve
from .rundir import RUNDIR_ENV, RunDir
from .scenario import Scenario, ScenarioResult, load_scenario, scenario_from_dict
from .scenario import run_scenario as _run_scenario
from .scenario.inject import Faults
from .scenario.tap import TappedBackend
from .xenleaks import XenSnapshot
from .xenstore.store import Xenstored

#: Seconds the teardown leak check gives the hub to notice closed connections.
LEAK_GRACE = 2.0
DEFAULT_BACKEND = "shm"
SERVER_DOMID = 1
CLIENT_DOMID = 0
PAIR_PATH = "data/vchan/pytest"
#: Seconds a test that uses the machine may take, unless it says otherwise.
DEFAULT_TIMEOUT = 60.0
_PAIR_OPTIONS = frozenset({"backend", "read_min", "write_min", "blocking", "timeout"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vchansim", "vchan emulator fixtures")
    group.addoption(
        "--vchan-backend",
        metavar="NAME",
        default=None,
        help="backend of the vchan fixtures (default: the vchansim_backend ini, else shm)",
    )
    group.addoption(
        "--vchan-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="deadline of each test that uses the vchan fixtures, 0 for none "
        f"(default: the vchansim_timeout ini, else {DEFAULT_TIMEOUT:g})",
    )
    parser.addini(
        "vchansim_backend", f"backend of the vchan fixtures (default {DEFAULT_BACKEND})", default=""
    )
    parser.addini(
        "vchansim_timeout",
        "deadline in seconds of each test that uses the vchan fixtures (0: none)",
        default=str(DEFAULT_TIMEOUT),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vchan(backend=None, read_min=0, write_min=0, blocking=True, timeout=None): options "
        "of the vchan fixtures",
    )


class VchanPair(NamedTuple):
    """A connected channel: ``server`` in domain 1 and ``client`` in domain 0 (on real
    Xen both in the domain the test runs in)."""

    server: Vchan
    client: Vchan


class Environment:
    """One test's emulated machine: the backends of its domains, its fault API, and what
    they leave behind."""

    def __init__(self, backend: str, rundir: RunDir) -> None:
        self.backend = backend
        self.rundir = rundir
        self.hypervisor = MemoryHypervisor() if backend == "memory" else None
        self.faults = Faults(self._limit)
        self._used = False
        # What an earlier test left open is that test's leak, not this one's.
        self.open_before = own_descriptors()
        #: On a backend that is its process's domain (real Xen): that domain, and what
        #: it held and kept in its XenStore home before the test.
        self.own: Backend | None = None
        self.before: XenSnapshot | None = None
        if not backend_class(backend).plays_domains:
            self.own = get_backend(backend)
            with closing(self.own.store()) as store:
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
        """The backend through which this test plays domain ``domid``; its channels'
        notifications pass the fault API's rules for that domain."""
        self._used = True
        return TappedBackend(self._backend(domid), self.faults.tap(domid))

    def _backend(self, domid: int) -> Backend:
        if self.hypervisor is not None:
            return MemoryBackend(domid, hypervisor=self.hypervisor)
        cls = backend_class(self.backend)
        if "rundir" in inspect.signature(cls).parameters:  # shm, and any that takes one
            return cls(domid=domid, rundir=self.rundir)  # type: ignore[call-arg]
        return cls(domid=domid)

    def _limit(self, limits: HubLimits) -> None:
        """Make the machine start with ``limits`` (the fault API's exhaust)."""
        if self._used:
            raise ConfigError(
                "exhaust: the machine is in use already; lower its limits before the "
                "test's first vchan_env.domain()"
            )
        if self.hypervisor is not None:
            self.hypervisor = MemoryHypervisor(
                grant_limit=limits.grants,
                port_limit=limits.ports,
                xenstore=Xenstored(limits.xenstore),
            )
        elif self.backend == ShmBackend.name:
            stop_hub(self.rundir)  # one started for an earlier exhaust of this test
            ensure_hub(self.rundir, limits=limits)
        else:
            raise ConfigError(f"exhaust: the {self.backend!r} backend's limits are its own")

    def leaks(self) -> list[Leak]:
        if self.hypervisor is not None:
            return memory_leaks(self.hypervisor)
        if self.own is not None and self.before is not None:
            with closing(self.own.store()) as store:
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


def _timeout(request: pytest.FixtureRequest) -> float:
    """This test's deadline in seconds (0: none): marker or parameter, option, ini."""
    chosen = _options(request).get("timeout")
    if chosen is None:
        chosen = request.config.getoption("vchan_timeout")
    if chosen is None:
        chosen = request.config.getini("vchansim_timeout")
    return float(chosen or 0)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fail the test if it is still running after ``seconds``.

    SIGALRM interrupts whatever the test's main thread blocks in -- a vchan read, the
    user's own select() -- so a test that would hang fails with the reason instead.  Left
    out when another plugin already owns SIGALRM (pytest-timeout's signal method), or
    off the main thread, where a signal cannot be handled."""
    if (
        not seconds
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None)
    ):
        yield
        return

    def expired(signum: int, frame: object) -> None:
        # pytest's own outcome, not an OSError that a wait would wrap as its own failure
        pytest.fail(
            f"vchansim: the test ran past its deadline of {seconds:g} s (set it with "
            "@pytest.mark.vchan(timeout=...), --vchan-timeout or the vchansim_timeout ini)",
            pytrace=True,
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    """``$name`` is ``value`` meanwhile (for the processes the test starts)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _chosen_backend(request: pytest.FixtureRequest) -> str | None:
    """The backend this test chose (marker or parameter, option, ini), None if none."""
    chosen = (
        _options(request).get("backend")
        or request.config.getoption("vchan_backend")
        or request.config.getini("vchansim_backend")
    )
    return str(chosen) if chosen else None


def _backend_name(request: pytest.FixtureRequest) -> str:
    return _chosen_backend(request) or DEFAULT_BACKEND


@pytest.fixture
def vchan_rundir() -> Iterator[RunDir]:
    """A private run directory (short path, mode 0700) whose hub is stopped and which is
    removed after the test."""
    with private_hub() as rundir:
        yield rundir


@pytest.fixture
def vchan_env(request: pytest.FixtureRequest, vchan_rundir: RunDir) -> Iterator[Environment]:
    """This test's emulated machine; ``vchan_env.domain(domid)`` gives a backend and
    ``vchan_env.faults`` strikes it.  ``$VCHANSIM_RUNDIR`` names its run directory
    meanwhile, so processes the test starts join the same machine.

    The test fails if it outlives its deadline, and at teardown if anything is left
    behind."""
    env = Environment(_backend_name(request), vchan_rundir)
    try:
        with _environment_variable(RUNDIR_ENV, str(vchan_rundir.path)), _deadline(
            _timeout(request)
        ):
            yield env
    finally:
        env.faults.close()
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
    them, or a backend name): ``backend``, ``read_min``, ``write_min``, ``blocking``,
    ``timeout`` (which also bounds each blocking call of the pair: ``Vchan.timeout``)."""
    options = _options(request)
    blocking = options.get("blocking", True)
    timeout = _timeout(request) or None
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
    server.timeout = client.timeout = timeout
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
    return load_scenario(resolve(str(source)))  # a file, or a built-in scenario's name


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest) -> Callable[..., ScenarioResult]:
    """``run_scenario(source, *, seed=None, trace=None, check=True)`` runs a scenario
    (a file, a built-in scenario's name, a Scenario, or the dict its TOML would give)
    with a hub of its own, on the backend the test chose as for ``vchan_pair`` (marker,
    ``--vchan-backend``, ini), else on the scenario's own.  On ``xen`` it runs on real
    Xen in this domain (docs/scenarios.md, "On real Xen").

    With ``check`` (the default) a failed expectation fails the test, listing every
    verdict, and a scenario not applicable on its backend skips it with the reasons; a
    scenario that cannot run there at all (no Xen devices, a fault the backend cannot
    commit) fails it with one line.  The result is returned otherwise."""
    backend = _chosen_backend(request)

    def run(
        source: ScenarioSource,
        *,
        seed: int | None = None,
        trace: str | Path | None = None,
        check: bool = True,
    ) -> ScenarioResult:
        try:
            result = _run_scenario(_as_scenario(source), seed=seed, trace=trace, backend=backend)
        except ConfigError as exc:  # one line: not the runner's traceback under it
            raise pytest.fail.Exception(f"vchansim: {exc}", pytrace=False) from None
        if check and result.not_applicable:
            pytest.skip(f"{result.scenario.name} is not applicable: {result.not_applicable}")
        if check and not result.passed:
            pytest.fail(result.summary(), pytrace=False)
        return result

    return run
