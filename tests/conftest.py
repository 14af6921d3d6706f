"""Fixtures every test module may use, and the test tiers.

``rundir`` gives a test a machine of its own (the product's
:func:`vchansim.hub.launcher.private_hub`) and checks that nothing was left behind;
``hub_dir`` is one foreground hub shared by a module's C programs.  Helpers that are not
fixtures are in the ``helpers`` package.

Tiers: ``vm`` marks the test that boots Xen under QEMU, ``cbuild`` those that build C
programs, ``slow`` those and a few others (package builds, the whole scenario library);
``pytest -m "not slow"`` is the quick tier a developer runs while editing, and
``.ci/run`` runs everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.clibs import foreground_hub, xc_probe
from helpers.demo_trace import write_trace
from helpers.interop import Endpoint
from helpers.procs import Child, reap
from helpers.xs_peer import Peer, store_with_domains

from vchansim.hub.launcher import private_hub
from vchansim.leaks import assert_no_leaks, own_descriptors
from vchansim.rundir import RUNDIR_ENV, RunDir
from vchansim.scenario.program import pipe_program as build_pipe_program
from vchansim.xenstore.store import Xenstored

#: Markers that put a test in the slow tier.
_SLOW_TIERS = ("vm", "cbuild")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test of a slow tier (a VM, a C build) is ``slow`` too, so ``-m "not slow"``
    leaves them all out."""
    for item in items:
        if any(item.get_closest_marker(name) for name in _SLOW_TIERS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rundir(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[RunDir]:
    """A fresh run directory (short path under /tmp) whose hub is stopped afterwards.

    After the test, everything must have been released: no grants, ports, xenstore nodes,
    descriptors or processes left (tests that leave things on purpose are marked
    ``leaves_state``).  Descriptors some earlier test left open are that test's failure,
    not this one's.
    """
    open_before = own_descriptors()
    with private_hub() as checked:
        monkeypatch.setenv(RUNDIR_ENV, str(checked.path))
        yield checked
        if request.node.get_closest_marker("leaves_state") is None:
            assert_no_leaks(checked, open_before=open_before)


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Every core kept busy by a spinning interpreter while the test runs, so that the
    endpoints get a share of a CPU, as on a loaded CI machine.  (The spinners are not
    of the run directory: the leak check does not count them.)"""
    env = {k: v for k, v in os.environ.items() if k != RUNDIR_ENV}
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.fixture
def spawn(rundir: RunDir) -> Iterator[Callable[..., Child]]:
    """``spawn(code, **env)`` starts a child in the test's run directory; all are killed
    and reaped at teardown."""
    children: list[Child] = []

    def start(code: str, **env: str) -> Child:
        child = Child(code, rundir, env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


@pytest.fixture(scope="module")
def hub_dir() -> Iterator[Path]:
    """A private hub, in the foreground, shared by one module's C programs."""
    with foreground_hub() as (path, _):
        yield path


@pytest.fixture(scope="module")
def pipe_program() -> Path:
    """vchan-pipe, the C endpoint on Debian's libxenvchan, built once per module."""
    return build_pipe_program()


@pytest.fixture
def endpoints() -> Iterator[list[Endpoint]]:
    """Endpoints a test started; any still running at the end are killed and reaped."""
    started: list[Endpoint] = []
    yield started
    for peer in started:
        reap(peer.proc)


@pytest.fixture
def demo_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixed trace of ``helpers.demo_trace``, named relative to the cwd so that the
    inspector's screens quote the same name on every run."""
    monkeypatch.chdir(tmp_path)
    return write_trace(Path("demo.trace"))


@pytest.fixture(scope="module")
def xenctrl_probe() -> Path:
    """tests/c/xc-probe.c, built on the drop-in libxenctrl once per module."""
    return xc_probe()


@pytest.fixture
def store() -> Xenstored:
    """A xenstored model (no I/O) with homes for domains 0, 1 and 2."""
    return store_with_domains()


@pytest.fixture
def dom0(store: Xenstored) -> Peer:
    """Domain 0's connection to ``store``."""
    return Peer(store, 0)


@pytest.fixture
def dom1(store: Xenstored) -> Peer:
    """Domain 1's connection to ``store``."""
    return Peer(store, 1)


@pytest.fixture
def dom2(store: Xenstored) -> Peer:
    """Domain 2's connection to ``store``."""
    return Peer(store, 2)
