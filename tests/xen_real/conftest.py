"""Tests that need a real Xen hypervisor: run them in a Xen domain, e.g. with
``tools/xen-vm-test`` (which boots one under QEMU and runs ``pytest tests/xen_real``).

A plain ``pytest`` run deselects this directory (it cannot pass without Xen, and the VM
round trip is covered by ``tests/test_xen_vm.py``); naming the directory runs it, and
without ``/dev/xen/evtchn`` every test is skipped with the reason.

Peers are started by :mod:`launch`.  Every measurement is appended to
``$VCHANSIM_XEN_RESULTS/results.jsonl``; each test's start is a line of the VM's
``progress`` file, which the harness shows when its timeout strikes (naming the test that
hung).  The guests of the cross-domain tests start booting when the session starts and
their tests run after dom0's own, so that the boot overlaps collection and dom0's own
tests; the scenario library runs last.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from guests import KERNEL, RAMDISK, Booting
from launch import Peer, c_peer_process, python_peer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ON_XEN = os.path.exists("/dev/xen/evtchn")
PEER_SOURCE = REPO / "tests" / "c" / "xen" / "vchan_peer.c"
RESULTS = os.environ.get("VCHANSIM_XEN_RESULTS")
#: The modules whose tests need the guests.
GUEST_TESTS = frozenset({"test_real_domu.py", "test_real_cross_domain.py"})
#: The scenario library's run: last, with the guests gone (``without_guests``).  While
#: three guests booted under the emulated CPU, dom0 ran several times slower and the
#: library, the longest stretch of dom0 work, outlasted its own timeout.
LIBRARY_TESTS = "test_real_scenarios.py"


def _names_this_directory(arg: str) -> bool:
    target = Path(arg.split("::")[0]).resolve()
    return target == HERE or HERE in target.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in item.path.parents]
    if not mine:
        return
    if not any(_names_this_directory(arg) for arg in config.args):
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
        return
    if not ON_XEN:
        skip = pytest.mark.skip(
            reason="needs a Xen domain (/dev/xen/evtchn is missing): run tools/xen-vm-test"
        )
        for item in mine:
            item.add_marker(skip)
    order = {**dict.fromkeys(GUEST_TESTS, 1), LIBRARY_TESTS: 2}  # dom0's, guests', library
    items.sort(key=lambda item: order.get(item.path.name, 0))  # stable


def progress(text: str) -> None:
    """A line in the VM's progress file, stamped with dom0's uptime."""
    if RESULTS:
        uptime = Path("/proc/uptime").read_text().split()[0]
        with Path(RESULTS, "progress").open("a") as out:
            out.write(f"{uptime} {text}\n")


def pytest_runtest_logstart(nodeid: str) -> None:
    progress(f"test started: {nodeid}")


_BOOTING = pytest.StashKey[Booting]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """With a guest image on a hypervisor, start creating the guests now: they boot while
    pytest collects and dom0's own tests run (at a lower scheduler weight than dom0)."""
    if ON_XEN and KERNEL and RAMDISK:
        booting = Booting()
        session.stash[_BOOTING] = booting
        progress("guests: creating " + ", ".join(f"{n} ({k})" for n, k in booting.kinds.items()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Destroy the guests; each one's boot time, and why any was created again, go to
    ``$VCHANSIM_XEN_RESULTS/guests.json``."""
    booting = session.stash.get(_BOOTING, None)
    if booting is None:
        return
    booting.destroy()
    if RESULTS and booting.boot_seconds:
        Path(RESULTS, "guests.json").write_text(
            json.dumps(
                {
                    "ready_uptime_s": booting.boot_seconds,
                    "types": booting.kinds,
                    "restarts": booting.restarts,
                }
            )
            + "\n"
        )


@pytest.fixture(scope="session")
def guest_boot(request: pytest.FixtureRequest) -> Booting | None:
    """The guests being created since the session started (None without a guest image)."""
    return request.session.stash.get(_BOOTING, None)


@pytest.fixture
def without_guests(guest_boot: Booting | None) -> None:
    """No guest runs any more (they are destroyed now, booted or not): the scenario
    library's run in dom0 then meets the machine it meets without ``--domu``, not one
    shared with booting guests and their xl processes, which are of the test process's
    own group and so in its leak check."""
    if guest_boot is not None:
        guest_boot.destroy()


@pytest.fixture(scope="session")
def c_peer_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C peer: prebuilt by tools/xen-vm-test ($VCHANSIM_XEN_PEER), else built here."""
    prebuilt = os.environ.get("VCHANSIM_XEN_PEER")
    if prebuilt and Path(prebuilt).is_file():
        return Path(prebuilt)
    if shutil.which("gcc") is None or not Path("/usr/include/libxenvchan.h").exists():
        pytest.fail("building the C peer needs gcc and libxen-dev")
    binary = tmp_path_factory.mktemp("cpeer") / "vchan-peer"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", binary, PEER_SOURCE, "-lxenvchan", "-lxenstore"], check=True
    )
    return binary


@pytest.fixture
def start(c_peer_binary: Path) -> Iterator[Callable[..., Peer]]:
    """start(impl, *args): a peer of implementation "python" or "c" with those arguments.
    Peers still running when the test ends are killed."""
    started: list[Peer] = []

    def launch(impl: str, *args: object) -> Peer:
        peer = python_peer(*args) if impl == "python" else c_peer_process(c_peer_binary, *args)
        started.append(peer)
        return peer

    yield launch
    for peer in started:
        peer.kill()


@pytest.fixture(scope="session")
def results_file() -> Path | None:
    return Path(RESULTS) / "results.jsonl" if RESULTS else None


@pytest.fixture
def record(request: pytest.FixtureRequest, results_file: Path | None) -> Callable[..., None]:
    """Check both ends succeeded and append their reports, labelled with the test id."""

    def check_and_record(*reports: dict[str, Any]) -> None:
        failed = [r for r in reports if not r.get("ok")]
        assert not failed, f"peer failures: {failed}"
        for report in reports:
            line = {"test": request.node.name, **report}
            if report.get("bytes") and report.get("seconds"):
                line["mib_s"] = round(report["bytes"] / report["seconds"] / 2**20, 2)
            if results_file is not None:
                with results_file.open("a") as out:
                    out.write(json.dumps(line) + "\n")

    return check_and_record


_channel_numbers = itertools.count()


@pytest.fixture
def xs_path() -> str:
    """A fresh XenStore path for this test's channel, under dom0's data directory (short:
    libxenvchan cuts key paths at 63 bytes)."""
    return f"/local/domain/0/data/vs/t{next(_channel_numbers)}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the measurements next to the verdicts (they land in the harness's output)."""
    path = Path(RESULTS, "results.jsonl") if RESULTS else None
    if path is None or not path.exists():
        return
    terminalreporter.section("measurements (emulated CPU: for comparison, not performance)")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["mode"] == "ping":
            figure = f"{r['rtt_us']:9.1f} us RTT"
        elif r.get("mib_s"):
            figure = f"{r['mib_s']:9.2f} MiB/s"
        else:
            continue  # an echo that answered pings: the figure is on the pinging side
        terminalreporter.write_line(
            f"{r['test'][:58]:58} {r['impl']:7} {r['role']:6} {r['mode']:9} {figure}"
        )
