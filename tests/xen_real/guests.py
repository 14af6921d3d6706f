"""PV guests for the real-Xen tests, and dom0's side of their agent (:mod:`agent`).

:class:`Booting` creates guests from the image ``tools/xen-vm-test --domu`` built, all at
once, and waits until each guest's agent listens; a :class:`Guest` then starts peers in
it, kills them and collects their reports, all through vchansim's agent client and the
guest's XenStore directory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from vchansim.agent import AgentClient, AgentError, agent_root
from vchansim.backends.base import retry_while_watched
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


class GuestGone(Exception):
    """The domain a wait was for is no more: destroyed, or shut down by its own crash or
    reboot (the guests' configurations destroy it then, rather than have xl create it
    again under another domain id, where no waiter would look)."""


def wait_value(key: str, deadline: float, domid: int | None = None) -> bytes:
    """The value at XenStore ``key``, read again on each event of a watch on it (the
    product's one watch-driven retry).  With ``domid``, the wait also watches
    ``@releaseDomain`` and raises GuestGone once xenstored no longer knows that domain:
    nothing will write a key of a domain that is gone.  A TimeoutError lists each event
    and each failed read, by seconds since the wait began."""
    began = time.monotonic()
    seen: list[str] = []

    def note(what: str) -> None:
        seen.append(f"{time.monotonic() - began:.1f} s {what}")

    with XenBackend().store() as store:
        store.watch(key, "wait")
        if domid is not None:
            store.watch("@releaseDomain", "gone")

        def attempt() -> bytes:
            try:
                return store.read(key)
            except StoreError as exc:
                note(f"read: {errno.errorcode.get(exc.errno or 0, exc.errno)}")
                if domid is not None and not store.is_domain_introduced(domid):
                    raise GuestGone(f"domain {domid} is gone ({xen_says(domid)})") from None
                raise

        def event(got: tuple[str, str] | None) -> None:
            note(f"event {got[0]} ({got[1]})" if got else "no event before the deadline")

        try:
            return retry_while_watched(store, attempt, (StoreError,), deadline, event)
        except StoreError:
            raise TimeoutError(
                f"nothing was written to {key} in {time.monotonic() - began:.0f} s; "
                f"the wait saw: {'; '.join(seen)}"
            ) from None


def xen_says(domid: int) -> str:
    """The hypervisor's last console lines about domain ``domid`` (a triple fault, a
    crash...), without its save/restore chatter."""
    done = subprocess.run(["xl", "dmesg"], capture_output=True, text=True, timeout=120)
    about = re.compile(rf"\b(d{domid}(v\d+)?|Dom{domid})\b")
    lines = [
        line.removeprefix("(XEN) ")
        for line in done.stdout.splitlines()
        if about.search(line) and " save: " not in line and " restore: " not in line
    ]
    return "; ".join(lines[-3:]) or "Xen logged nothing about it"


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
        # A guest that crashes or reboots (a PVH one under QEMU's emulated CPU was seen to
        # triple-fault while booting) goes, rather than coming back under a new domain id.
        'on_reboot = "destroy"\non_crash = "destroy"\n'
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
        self._creating = {name: self._create(name) for name in kinds}
        self._guests: dict[str, Guest] | None = None
        self._destroyed = False
        #: Each guest's uptime when its agent listened: its boot, in seconds.
        self.boot_seconds: dict[str, float] = {}
        #: Why a guest was created again (it went before its agent listened), by name.
        self.restarts: dict[str, str] = {}

    def _create(self, name: str) -> subprocess.Popen[str]:
        """``xl create`` of guest ``name``, not waited for."""
        config = _config(self._configs, f"vchansim-{name}", self.kinds[name])
        return subprocess.Popen(
            ["xl", "create", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ready(self) -> dict[str, Guest]:
        """The guests by short name, once every agent listens (booting under an emulated
        CPU)."""
        if self._guests is None:
            deadline = self.started + BOOT_DEADLINE
            self._guests = {name: self.await_agent(name, deadline) for name in self.kinds}
        return self._guests

    def await_agent(self, name: str, deadline: float) -> Guest:
        """Guest ``name`` once its agent listens.  A guest that goes first (its kernel
        crashed or rebooted while booting) is created once more, with half a boot
        deadline more if need be; why is in ``restarts`` and a warning.  Going twice
        fails."""
        try:
            return self._listening(name, deadline)
        except GuestGone as gone:
            self.restarts[name] = str(gone)
            warnings.warn(f"guest {name} went before its agent listened: {gone}", stacklevel=2)
        self._creating[name] = self._create(name)
        try:
            return self._listening(name, max(deadline, time.monotonic() + BOOT_DEADLINE / 2))
        except GuestGone as gone:
            raise AssertionError(
                f"guest {name} went twice before its agent listened: {self.restarts[name]}, "
                f"then {gone}; console:\n{console_tail(f'vchansim-{name}')}"
            ) from None

    def _listening(self, name: str, deadline: float) -> Guest:
        """Guest ``name`` once ``xl create`` is done and its agent wrote ``ready``."""
        creating = self._creating[name]
        out, _ = creating.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert creating.returncode == 0, f"xl create {name} failed: {out}"
        found = subprocess.run(["xl", "domid", f"vchansim-{name}"], capture_output=True, text=True)
        if found.returncode != 0:
            raise GuestGone(f"no domain is called vchansim-{name}: {found.stderr.strip()}")
        guest = Guest(f"vchansim-{name}", int(found.stdout))
        try:
            ready = wait_value(f"{agent_root(guest.domid)}/ready", deadline, guest.domid)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; console:\n{console_tail(guest.name)}") from None
        self.boot_seconds[name] = float(json.loads(ready)["uptime"])
        if self._guests is not None:
            self._guests[name] = guest
        return guest

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
