"""The xen backend on a real hypervisor, end to end, from this machine.

``tools/xen-vm-test --domu`` boots Debian's Xen 4.17 with a Linux dom0 under QEMU's
software CPU, starts two PV guests and a PVH guest carrying Python and vchansim, and runs
``tests/xen_real`` in dom0; this test asserts on what came back: every in-VM test passed
(none skipped), each pairing of vchansim's xen backend with itself and with Xen's C
libxenvchan moved data -- in dom0, between dom0 and a guest in both roles, and between
guests -- every scenario of the library passed in dom0 or was not applicable, library
scenarios passed with the server in dom0 and the client in a PV and in a PVH guest
(through the guest's agent), a peer killed inside a guest was seen gone by the other
end (and the order of its two signs was recorded), every guest booted, and dom0's kernel
logged no grant-mapping trouble.  It needs Debian's package registry (apt-get download)
and, once, root to install qemu-system-x86; it took 7 to 20 minutes on two cores shared
with other work (docs/backends.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vchansim.library import builtin_names

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tools" / "xen-vm-test"
#: Liveness only, for the whole run (boot, dom0's tests, the guests' boot and tests, the
#: scenario library): measured 7 to 12½ minutes on two cores shared with other work
#: before the library joined, which adds 1½ to 5 minutes by the load (docs/backends.md).
#: A test that hangs inside the VM is ended by its own pytest timeout and named there;
#: if this strikes instead, the harness's last progress lines name the running test.
VM_TIMEOUT = 1800

pytestmark = pytest.mark.vm


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.timeout(VM_TIMEOUT + 120)
def test_real_xen_run_passes_and_measures_every_pairing(tmp_path: Path) -> None:
    out = tmp_path / "vm"
    done = subprocess.run(
        [sys.executable, HARNESS, "--domu", "--timeout", str(VM_TIMEOUT), "--out", out],
        capture_output=True,
        text=True,
        timeout=VM_TIMEOUT + 60,
    )
    assert done.returncode == 0, (
        f"tools/xen-vm-test exited {done.returncode}\n{done.stdout[-4000:]}\n"
        f"{done.stderr[-4000:]}\nserial log tail:\n{_tail(out / 'serial.log')}"
    )
    check_results(out)


def check_results(out: Path) -> None:
    """What a passing run leaves in its results directory ``out``."""
    suite = ET.parse(out / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 75
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts

    reports = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["ok"] for r in reports)
    pairings = {(r["impl"], r["role"]) for r in reports}
    # vchansim and libxenvchan each as server and as client, in dom0 and in a guest.
    for impl in ("python", "c", "python-domu", "c-domu"):
        assert {(impl, "server"), (impl, "client")} <= pairings, impl
    guest_sinks = [r for r in reports if r["impl"] == "python" and "guest" in r["test"]]
    assert any(r["mode"] == "sink" and r["mib_s"] > 0 for r in guest_sinks)
    between_guests = {r["where"] for r in reports if "guests_" in r["test"]}
    assert between_guests == {"a", "b", "c"}
    in_pvh = [r for r in reports if r.get("where") == "c" and r["impl"] == "python-domu"]
    assert {r["role"] for r in in_pvh} == {"server", "client"}
    # A SIGKILL inside a PV and inside a PVH guest, seen by dom0 and by another guest.
    seen_killed = [r for r in reports if r["test"].startswith("test_sigkill")]
    assert len(seen_killed) == 9 and all(r["close_seen_s"] >= 0 for r in seen_killed)
    # PROTOCOL.md §6.3's order: each kill of a client in a PV and in a PVH guest recorded
    # which of its event and its cleared live byte dom0's server saw first.
    orders = [r for r in reports if r["test"].startswith("test_order")]
    for kind in ("pv", "pvh"):
        seen = [r["first_seen"] for r in orders if r["guest_type"] == kind]
        assert len(seen) == 6 and set(seen) <= {"event", "closed"}, (kind, seen)
    assert all(r["event_seen"] for r in seen_killed + orders)
    assert all(r["rtt_us"] > 0 for r in reports if r["mode"] == "ping")

    # The whole scenario library ran in dom0: each scenario passed or was not applicable.
    scenarios = json.loads((out / "scenarios.json").read_text())["scenarios"]
    assert {r["scenario"] for r in scenarios} == set(builtin_names())
    assert {r["status"] for r in scenarios} == {"passed", "not-applicable"}

    # Scenarios with the server in dom0 and the client in a guest, through its agent:
    # both ways (PV), and a SIGKILL of the guest's client (PV and PVH).
    both_ways = {"stream-both-ways": "passed"}
    for guest, more in (("a", both_ways), ("c", {})):
        crossed = json.loads((out / f"cross-domain-{guest}.json").read_text())
        statuses = {r["scenario"]: r["status"] for r in crossed["scenarios"]}
        expected = {**more, "kill-client": "passed", "c-client": "not-applicable"}
        assert statuses == expected, (guest, statuses)

    dmesg = (out / "dmesg.log").read_text(errors="replace")
    for trouble in ("Bad page map", "BUG:", "general protection"):
        assert trouble not in dmesg, f"dom0 kernel logged {trouble!r}"
    timings = json.loads((out / "timings.json").read_text())
    assert 0 < timings["dom0_ready_s"] < timings["total_s"]
    booted = json.loads((out / "guests.json").read_text())
    assert booted["types"] == {"a": "pv", "b": "pv", "c": "pvh"}
    assert set(booted["ready_uptime_s"]) == set(booted["types"])
