"""PV guests for the real-Xen tests, and dom0's side of their agent (:mod:`agent`).

``boot(names)`` creates guests from the image ``tools/xen-vm-test --domu`` built and waits
until each guest's agent listens; a :class:`Guest` then starts peers in it, kills them and
collects their reports, all through the guest's XenStore directory.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vchansim.backends.xen import XenBackend
from vchansim.errors import StoreError

KERNEL = os.environ.get("VCHANSIM_XEN_DOMU_KERNEL", "")
RAMDISK = os.environ.get("VCHANSIM_XEN_DOMU_RAMDISK", "")
#: Booting a guest and importing vchansim in it under an emulated CPU.
BOOT_DEADLINE = 180.0
#: Memory of each guest: its initramfs (Python and vchansim) lives in it.
GUEST_MIB = 200

Report = dict[str, Any]


def xl(*args: str) -> str:
    done = subprocess.run(["xl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"xl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def wait_value(key: str, deadline: float) -> bytes:
    """The value at XenStore ``key``, waiting on a watch until it appears."""
    with XenBackend().store() as store:
        store.watch(key, "wait")
        while True:
            try:
                return store.read(key)
            except StoreError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"nothing was written to {key}") from None
                store.read_watch(left)


def console_tail(name: str) -> str:
    log = Path(os.environ.get("VCHANSIM_XEN_RESULTS", "/nonexistent"), "console")
    path = log / f"guest-{name}.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no console log)"


class Guest:
    """A running guest with an agent: ``start`` a peer, ``kill`` it, read its ``result``."""

    def __init__(self, name: str, domid: int) -> None:
        self.name = name
        self.domid = domid
        self.home = f"/local/domain/{domid}"
        self._numbers = itertools.count()

    def _request(self, request: dict[str, Any]) -> int:
        number = next(self._numbers)
        with XenBackend().store() as store:
            store.write(f"{self.home}/data/agent/{number}/request", json.dumps(request).encode())
        return number

    def start(self, impl: str, *argv: object) -> int:
        """Start a peer (``impl`` "python" or "c") with pypeer's arguments in the guest."""
        return self._request({"impl": impl, "argv": [str(a) for a in argv]})

    def start_command(self, argv: list[object], stdin: str = "") -> int:
        """Start ``python -m vchansim ARGV`` in the guest with ``stdin``."""
        return self._request({"impl": "cli", "argv": [str(a) for a in argv], "stdin": stdin})

    def result(self, number: int, timeout: float = 90.0) -> Report:
        """Request ``number``'s report (a peer's when it ended), with ``impl`` labelled."""
        key = f"{self.home}/data/agent/{number}/result"
        try:
            report: Report = json.loads(wait_value(key, time.monotonic() + timeout))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; guest console:\n{console_tail(self.name)}") from None
        return report

    def kill(self, number: int) -> None:
        """SIGKILL request ``number``'s peer inside the guest."""
        answer = self.result(self._request({"kill": number}))
        assert answer["ok"], answer


def _config(directory: Path, name: str, kind: str) -> Path:
    config = directory / f"{name}.cfg"
    config.write_text(
        f'name = "{name}"\ntype = "{kind}"\nkernel = "{KERNEL}"\nramdisk = "{RAMDISK}"\n'
        f'extra = "console=hvc0 quiet"\nmemory = {GUEST_MIB}\nvcpus = 1\n'
        'on_poweroff = "destroy"\n'
    )
    return config


@contextmanager
def boot(directory: Path, kinds: dict[str, str]) -> Iterator[list[Guest]]:
    """Create guests (name -> type, "pv" or "pvh"), wait for their agents, destroy them
    afterwards."""
    created: list[str] = []
    try:
        for name, kind in kinds.items():
            xl("create", str(_config(directory, name, kind)))
            created.append(name)
        guests = [Guest(name, int(xl("domid", name))) for name in kinds]
        deadline = time.monotonic() + BOOT_DEADLINE
        for guest in guests:
            try:
                wait_value(f"{guest.home}/data/agent/ready", deadline)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; console:\n{console_tail(guest.name)}") from None
        yield guests
    finally:
        for name in created:
            subprocess.run(["xl", "destroy", name], capture_output=True, timeout=120)
