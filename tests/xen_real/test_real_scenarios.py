"""The scenario library on real Xen: ``vchansim run --backend xen`` in dom0.

Both endpoints of each scenario are processes of dom0 on its devices.  Under QEMU's
software CPU a fresh Python process takes tens of seconds to import vchansim, and every
scenario starts two, so this runs a representative subset (docs/scenarios.md says which
and why): streams both ways through one channel, a SIGKILL of the server mid-stream
(the kernel's unmap-notify reaching the client), and the three kinds of scenario that
need the emulator -- a program endpoint, and a fault lowering each machine limit --
which must come back not applicable with their reasons, never passed.  The run's exit
status says so (3), and nothing a scenario left is still held in dom0 or XenStore.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from vchansim.backends.xen import XenBackend
from vchansim.cli import main
from vchansim.xenleaks import XenSnapshot

RUN = ("stream-both-ways", "kill-server")
NOT_APPLICABLE = {
    "c-client": "is a program endpoint",
    "grant-exhaustion": "lowers the machine's limits",
    "xenstore-quota": "lowers the machine's limits",
}
DATA = "/local/domain/0/data"


@pytest.mark.timeout(900)
def test_library_subset_runs_on_real_xen_in_dom0(capsys: pytest.CaptureFixture[str]) -> None:
    store = XenBackend().store()
    before = XenSnapshot.take(store, DATA)
    status = main(["run", "--backend", "xen", "--json", *RUN, *NOT_APPLICABLE])
    report = json.loads(capsys.readouterr().out)
    results = {r["scenario"]: r for r in report["scenarios"]}
    if os.environ.get("VCHANSIM_XEN_RESULTS"):  # kept by tools/xen-vm-test --out
        Path(os.environ["VCHANSIM_XEN_RESULTS"], "scenarios.json").write_text(
            json.dumps(report, indent=1)
        )
    assert status == 3, report  # nothing failed, some not applicable
    for name in RUN:
        result = results[name]
        assert result["status"] == "passed", result
        verdicts = {v["kind"]: v for v in result["verdicts"]}
        assert verdicts["no_leaks"]["passed"], result
        assert {e["endpoint"] for e in result["endpoints"]} == {"server", "client"}
    server = next(e for e in results["kill-server"]["endpoints"] if e["endpoint"] == "server")
    assert server["exitcode"] == -signal.SIGKILL, server  # it killed itself at its offset
    for name, reason in NOT_APPLICABLE.items():
        result = results[name]
        assert result["status"] == "not-applicable" and not result["passed"], result
        assert reason in result["not_applicable"], result
        assert result["verdicts"] == [] and result["endpoints"] == []
    # The run removed what it left (the killed server's keys), and holds nothing.
    assert before.leaks(store) == []
    store.close()
