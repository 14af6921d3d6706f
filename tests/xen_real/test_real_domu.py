"""dom0 <-> domU: vchansim's xen backend in dom0 against Xen's C libxenvchan in a PV guest.

This is the real cross-domain case: grants of one domain mapped by another, interdomain
event channels, XenStore permissions between two domains.  One guest (built by
``tools/xen-vm-test --domu``: Debian's kernel and an initramfs with a static libxenvchan
peer) runs a list of jobs given on its command line, one after the other; dom0 runs the
matching end of each.  The guest reports each result to its XenStore directory.  The last
jobs pair C with C as the reference figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from launch import PeerTimeout, c_peer_process, python_peer

from vchansim.backends.xen import XenBackend
from vchansim.errors import StoreError

KERNEL = os.environ.get("VCHANSIM_XEN_DOMU_KERNEL", "")
RAMDISK = os.environ.get("VCHANSIM_XEN_DOMU_RAMDISK", "")
pytestmark = [
    pytest.mark.skipif(
        not (KERNEL and RAMDISK), reason="no guest image: run tools/xen-vm-test --domu"
    ),
    pytest.mark.timeout(600),  # the first test also waits for the guest and all its jobs
]

GUEST = "vchansim-domu"
STREAM = 4 << 20
RING = 64 << 10
PINGS = 200
JOB_DEADLINE = 90.0


@dataclass(frozen=True)
class Job:
    """One channel: ``guest_serves`` says which side is the server."""

    name: str
    guest_serves: bool
    guest_args: tuple[object, ...]  # after ROLE DOMID PATH
    dom0_impl: str
    dom0_args: tuple[object, ...]

    def guest_argv(self, index: int) -> list[object]:
        if self.guest_serves:
            return ["-s", RING, "server", 0, f"data/vs/u{index}", *self.guest_args]
        return ["-w", 60, "client", 0, f"/local/domain/0/data/vs/u{index}", *self.guest_args]

    def dom0_argv(self, index: int, guest: int) -> list[object]:
        if self.guest_serves:
            path = f"/local/domain/{guest}/data/vs/u{index}"
            return ["-w", 60, "client", guest, path, *self.dom0_args]
        return ["-s", RING, "server", guest, f"/local/domain/0/data/vs/u{index}", *self.dom0_args]


JOBS = (
    Job("guest_to_python_stream", False, ("source", STREAM), "python", ("sink", STREAM)),
    Job("python_to_guest_stream", False, ("sink", STREAM), "python", ("source", STREAM)),
    Job("python_echo_for_guest_pings", False, ("ping", PINGS, 1), "python", ("echo",)),
    Job("python_client_roundtrip", True, ("echo",), "python", ("roundtrip", 1 << 20)),
    Job("python_client_pings_guest", True, ("echo",), "python", ("ping", PINGS, 1)),
    Job("c_reference_stream", False, ("source", STREAM), "c", ("sink", STREAM)),
    Job("c_reference_pings", False, ("ping", PINGS, 1), "c", ("echo",)),
)


def xl(*args: str) -> str:
    done = subprocess.run(["xl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"xl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def guest_config(directory: Path) -> Path:
    jobs = ";".join(",".join(map(str, job.guest_argv(i))) for i, job in enumerate(JOBS))
    config = directory / "domu.cfg"
    config.write_text(
        f'name = "{GUEST}"\ntype = "pv"\nkernel = "{KERNEL}"\nramdisk = "{RAMDISK}"\n'
        f'extra = "console=hvc0 quiet vchanpeer={jobs}"\n'
        'memory = 96\nvcpus = 1\non_poweroff = "destroy"\n'
    )
    return config


def guest_report(store: Any, key: str, deadline: float) -> dict[str, Any]:
    """The guest's JSON result at ``key``, waiting on a XenStore watch until it appears."""
    store.watch(key, "result")
    try:
        while True:
            try:
                return json.loads(store.read(key))
            except StoreError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the guest wrote no {key}") from None
                store.read_watch(left)
    finally:
        store.unwatch(key, "result")


def console_tail() -> str:
    log = Path(os.environ.get("VCHANSIM_XEN_RESULTS", "/nonexistent"), "console")
    files = sorted(log.glob("guest-*.log")) if log.is_dir() else []
    return files[-1].read_text(errors="replace")[-2000:] if files else "(no guest console log)"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, c_peer_binary) -> dict[str, tuple[dict, dict, float]]:
    """Boot the guest, run every job; name -> (dom0 report, guest report, create seconds)."""
    config = guest_config(tmp_path_factory.mktemp("domu"))
    started = time.monotonic()
    xl("create", "-p", str(config))
    created = time.monotonic() - started
    guest = int(xl("domid", GUEST))
    found: dict[str, tuple[dict, dict, float]] = {}
    backend = XenBackend()
    try:
        xl("unpause", GUEST)
        with backend.store() as store:
            for index, job in enumerate(JOBS):
                argv = job.dom0_argv(index, guest)
                if job.dom0_impl == "python":
                    local = python_peer(*argv)
                else:
                    local = c_peer_process(c_peer_binary, *argv)
                key = f"/local/domain/{guest}/data/vchanpeer/{index}"
                try:
                    mine = local.result(JOB_DEADLINE)
                    theirs = guest_report(store, key, time.monotonic() + JOB_DEADLINE)
                except (PeerTimeout, TimeoutError) as exc:
                    pytest.fail(f"job {job.name}: {exc}; guest console:\n{console_tail()}")
                found[job.name] = (mine, theirs, created)
    finally:
        subprocess.run(["xl", "destroy", GUEST], capture_output=True, timeout=120)
    return found


@pytest.mark.parametrize("job", JOBS, ids=[job.name for job in JOBS])
def test_job(outcomes, record, job: Job) -> None:
    mine, theirs, created = outcomes[job.name]
    record(mine, {**theirs, "impl": "c-domu", "guest_create_s": round(created, 2)})
    moved = [r["bytes"] for r in (mine, theirs) if r["mode"] in ("source", "sink")]
    assert all(count == STREAM for count in moved)
