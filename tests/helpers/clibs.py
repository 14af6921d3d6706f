"""What the tests of C programs share: where the C sources are, the xenctrl probe, a hub
of their own in the foreground, and waiting for the hub to see every process go."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vchansim import cbuild
from vchansim.backends.shm import ShmBackend, emulator_env
from vchansim.hub.protocol import HubConnection, Op

C_DIR = Path(__file__).resolve().parents[1] / "c"
DEADLINE = 20.0

#: Programs on libxenvchan need a C compiler and Xen's headers (tools/install).
NEEDS_CLIBS = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None
    or not Path("/usr/include/libxenvchan.h").exists(),
    reason="needs a C compiler and Xen's headers (tools/install)",
)
#: The xenctrl probe needs a C compiler and Xen's headers, both installed by tools/install.
NEEDS_XENCTRL_BUILD = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None
    or not Path("/usr/include/xenctrl.h").exists(),
    reason="needs a C compiler and Xen's headers (tools/install)",
)
#: libxenvchan's ring placements: name, read_min, write_min, a packet size that fits.
RINGS = [
    ("in-page", 0, 0, 1000),
    ("one-page", 4096, 4096, 3001),
    ("multi-page", 65536, 16384, 12345),
    ("1MiB", 1 << 20, 1 << 20, 65536),
]


def xc_probe() -> Path:
    """The xenctrl probe program, built on the drop-in libraries."""
    return cbuild.build_program(C_DIR / "xc-probe.c", libs=("xenctrl", "xengnttab"))


def run_probe(probe: Path, hub_dir: Path, domid: int, *args: str) -> list[str]:
    """The probe's output lines, run as emulated domain ``domid``; it must exit 0."""
    result = subprocess.run(
        [probe, *args],
        env=emulator_env(ShmBackend(domid, rundir=hub_dir)),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def wait_readable(fd: int, deadline: float) -> bool:
    """Whether ``fd`` became readable before ``deadline`` (a monotonic time)."""
    remaining = deadline - time.monotonic()
    return remaining > 0 and bool(select.select([fd], [], [], remaining)[0])


@contextlib.contextmanager
def foreground_hub() -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A fresh private run directory and a foreground hub serving it."""
    path = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))  # short: AF_UNIX names are short
    log = (path / "hub.log").open("w")
    ready_r, ready_w = os.pipe()
    hub = subprocess.Popen(
        [sys.executable, "-m", "vchansim.hub", "--rundir", str(path), "--ready-fd", str(ready_w)],
        pass_fds=(ready_w,),
        stdout=log,
        stderr=log,
    )
    os.close(ready_w)
    try:
        ok = wait_readable(ready_r, time.monotonic() + DEADLINE) and os.read(ready_r, 64)
        assert ok, f"hub did not start:\n{(path / 'hub.log').read_text()}"
        yield path, hub
    finally:
        os.close(ready_r)
        hub.terminate()
        hub.wait(DEADLINE)
        log.close()
        shutil.rmtree(path, ignore_errors=True)


def hub_state(rundir: Path) -> dict[str, object]:
    with HubConnection.connect(rundir / "hub", domid=0) as conn:
        return json.loads(conn.call(Op.STATE).text)


def wait_released(rundir: Path) -> dict[str, object]:
    """Wait until the hub holds no grants and no ports (every process has gone)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        state = hub_state(rundir)
        if (not state["grants"] and not state["ports"]) or time.monotonic() > deadline:
            return state
        time.sleep(0.02)  # polling the hub's state, bounded by the deadline
