"""Scenarios between domains on real Xen: the server in dom0, the client in a guest.

``vchansim run --backend xen --client-domain N`` in dom0, N a guest booted from the
``tools/xen-vm-test --domu`` image: the guest's agent (vchansim's agent, started by its
init) forks each scenario's client there, on the guest's devices; the server is a
process of dom0's.  In the PV guest, streams both ways through one channel between the
domains; in the PV and in the PVH guest, a SIGKILL of the guest's client sent through
its agent, which dom0's server must see as a close (the kernel's unmap-notify across
domains); a program endpoint is not applicable.  Nothing a run left is still held in
dom0 or written under its XenStore directory.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from guests import BOOT_DEADLINE, KERNEL, RAMDISK, Booting

from vchansim.backends.xen import XenBackend
from vchansim.cli import main
from vchansim.xenleaks import XenSnapshot

pytestmark = [
    pytest.mark.skipif(
        not (KERNEL and RAMDISK), reason="no guest image: run tools/xen-vm-test --domu"
    ),
    # The first test may wait for the guests to finish booting (until BOOT_DEADLINE from
    # the session's start); then each dom0 server takes tens of seconds to start.
    pytest.mark.timeout(BOOT_DEADLINE + 600),
]

#: What runs with the client in each guest: in the PVH guest only the kill, to keep the
#: VM run's time (both were seen to pass there too).
RUN = {"a": ("stream-both-ways", "kill-client"), "c": ("kill-client",)}
NOT_APPLICABLE = {"c-client": "is a program endpoint"}
DATA = "/local/domain/0/data"


@pytest.mark.parametrize("guest", ["a", "c"], ids=["pv", "pvh"])
def test_library_scenarios_with_the_client_in_a_guest(
    guest_boot: Booting | None, guest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert guest_boot is not None
    domid = guest_boot.ready()[guest].domid
    store = XenBackend().store()
    before = XenSnapshot.take(store, DATA)
    argv = ["run", "--backend", "xen", "--client-domain", str(domid), "--json"]
    status = main([*argv, *RUN[guest], *NOT_APPLICABLE])
    report = json.loads(capsys.readouterr().out)
    if os.environ.get("VCHANSIM_XEN_RESULTS"):  # kept by tools/xen-vm-test --out
        path = Path(os.environ["VCHANSIM_XEN_RESULTS"], f"cross-domain-{guest}.json")
        path.write_text(json.dumps({"domid": domid, **report}, indent=1))
    results = {r["scenario"]: r for r in report["scenarios"]}
    assert status == 3, report  # nothing failed, one not applicable
    for name in RUN[guest]:
        result = results[name]
        assert result["status"] == "passed", result
        verdicts = {v["kind"]: v for v in result["verdicts"]}
        assert verdicts["no_leaks"]["passed"], result
        assert {e["endpoint"] for e in result["endpoints"]} == {"server", "client"}
    client = next(e for e in results["kill-client"]["endpoints"] if e["endpoint"] == "client")
    assert client["exitcode"] == -signal.SIGKILL, client  # killed in the guest by its agent
    for name, reason in NOT_APPLICABLE.items():
        assert results[name]["status"] == "not-applicable", results[name]
        assert reason in results[name]["not_applicable"]
    assert before.leaks(store) == []
    store.close()
