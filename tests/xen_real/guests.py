"""PV guests for the real-Xen tests, and dom0's side of their agent (:mod:`agent`).

:class:`Booting` creates guests from the image ``tools/xen-vm-test --domu`` built, all at
once, and waits until each guest's agent listens; a :class:`Guest` then starts peers in
it, kills them and collects their reports, all through vchansim's agent client and the
guest's XenStore directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vchansim.agent import AgentClient, AgentError, agent_root
from vchansim.backends.xen import XenBackend
from vchansim.errors import StoreError

KERNEL = os.environ.get("VCHANSIM_XEN_DOMU_KERNEL", "")
RAMDISK = os.environ.get("VCHANSIM_XEN_DOMU_RAMDISK", "")
#: Booting the guests and importing vchansim in them under an emulated CPU, from the
#: session's start, while dom0's own tests run: up to about 4½ minutes (by the guests'
#: own clocks) on two cores shared with other work.
BOOT_DEADLINE = 600.0
#: Memory of each guest: its initramfs (Python and vchansim) lives in it.
GUEST_MIB = 200
#: Each guest's scheduler weight (dom0 has Xen's default, 256): the guests boot while
#: dom0's own tests run, and must not starve them.
GUEST_WEIGHT = 32
#: The guests the cross-domain tests use, by short name: two PV ones (a, b) and a PVH one
#: (c), whose kernel maps grants through the hypervisor's second-stage page tables
#: (auto-translated) instead of PV page tables.
GUEST_TYPES = {"a": "pv", "b": "pv", "c": "pvh"}
#: How long an agent may take to answer a request (start a peer, signal it).
ANSWER_DEADLINE = 90.0

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
    """A running guest with an agent: ``start`` a peer, ``kill`` it, read its ``result``
    (through :class:`vchansim.agent.AgentClient`)."""

    def __init__(self, name: str, domid: int) -> None:
        self.name = name
        self.domid = domid
        self.home = f"/local/domain/{domid}"
        self.agent = AgentClient(XenBackend().store(), domid, ANSWER_DEADLINE)

    def start(self, impl: str, *argv: object) -> str:
        """Start a peer (``impl`` "python" or "c") with pypeer's arguments in the guest."""
        return self.agent.submit({"kind": impl, "argv": [str(a) for a in argv]})

    def start_command(self, argv: list[object], stdin: str = "") -> str:
        """Start ``python -m vchansim ARGV`` in the guest with ``stdin``."""
        return self.agent.submit({"kind": "cli", "argv": [str(a) for a in argv], "stdin": stdin})

    def result(self, job: str, timeout: float = 90.0) -> Report:
        """Job ``job``'s report (a peer's when it ended)."""
        try:
            return self.agent.result(job, timeout)
        except AgentError as exc:
            raise AssertionError(f"{exc}; guest console:\n{console_tail(self.name)}") from None

    def kill(self, job: str) -> None:
        """SIGKILL job ``job``'s peer inside the guest."""
        answer = self.result(self.agent.signal(job, signal.SIGKILL))
        assert answer["ok"], answer


def _config(directory: Path, name: str, kind: str) -> Path:
    config = directory / f"{name}.cfg"
    config.write_text(
        f'name = "{name}"\ntype = "{kind}"\nkernel = "{KERNEL}"\nramdisk = "{RAMDISK}"\n'
        f'extra = "console=hvc0 quiet"\nmemory = {GUEST_MIB}\nvcpus = 1\n'
        f'cpu_weight = {GUEST_WEIGHT}\non_poweroff = "destroy"\n'
    )
    return config


class Booting:
    """Guests being created, all at once and in the background: ``xl create`` of each is
    started without waiting, so the guests boot while dom0's own tests run.  ``ready()``
    waits for every agent; ``destroy()`` removes whatever was created."""

    def __init__(self, kinds: dict[str, str] = GUEST_TYPES) -> None:
        self.kinds = kinds
        self.started = time.monotonic()
        self._configs = Path(tempfile.mkdtemp(prefix="vchansim-guests-"))
        directory = self._configs
        self._creating = {
            name: subprocess.Popen(
                ["xl", "create", str(_config(directory, f"vchansim-{name}", kind))],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name, kind in kinds.items()
        }
        self._guests: dict[str, Guest] | None = None
        self._destroyed = False
        #: Each guest's uptime when its agent listened: its boot, in seconds.
        self.boot_seconds: dict[str, float] = {}

    def ready(self) -> dict[str, Guest]:
        """The guests by short name, once every agent listens (booting under an emulated
        CPU)."""
        if self._guests is not None:
            return self._guests
        deadline = self.started + BOOT_DEADLINE
        for name, creating in self._creating.items():
            out, _ = creating.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert creating.returncode == 0, f"xl create {name} failed: {out}"
        guests = {n: Guest(f"vchansim-{n}", int(xl("domid", f"vchansim-{n}"))) for n in self.kinds}
        for name, guest in guests.items():
            try:
                ready = wait_value(f"{agent_root(guest.domid)}/ready", deadline)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; console:\n{console_tail(guest.name)}") from None
            self.boot_seconds[name] = float(json.loads(ready)["uptime"])
        self._guests = guests
        return guests

    def destroy(self) -> None:
        """Destroy every guest (again: a no-op; each ``xl`` costs seconds under TCG)."""
        if self._destroyed:
            return
        self._destroyed = True
        for name, creating in self._creating.items():
            if creating.poll() is None:
                creating.kill()
                creating.communicate()
            subprocess.run(["xl", "destroy", f"vchansim-{name}"], capture_output=True, timeout=120)
        shutil.rmtree(self._configs, ignore_errors=True)
