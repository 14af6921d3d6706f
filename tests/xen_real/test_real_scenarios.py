"""The whole scenario library on real Xen: ``vchansim run --backend xen all`` in dom0.

Both endpoints of each scenario are processes of dom0 on its devices (forks of the
runner's fork server).  Every scenario of the library must either pass -- every
expectation held, the real-Xen leak check among them -- or be not applicable with its
reason: exactly the ones that need the emulator (a program endpoint, a fault lowering a
machine limit), never passed.  The run's exit status says so (3), and nothing a
scenario left is still held in dom0 or XenStore.  A scenario added to the library is
covered here by that rule, without naming it.  The pytest plugin's ``run_scenario``
runs them there too (the plugin is on ``--vchan-backend xen`` in the VM).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from vchansim.backends.xen import XenBackend
from vchansim.cli import main
from vchansim.library import builtin_names
from vchansim.scenario.xen_executor import XEN_DEVICES
from vchansim.xenleaks import XenSnapshot

#: The library's scenarios that cannot mean on Xen what they mean on the emulator, and
#: the reason each is reported with.
NOT_APPLICABLE = {
    "c-client": "is a program endpoint",
    "c-server-killed": "is a program endpoint",
    "grant-exhaustion": "lowers the machine's limits",
    "xenstore-quota": "lowers the machine's limits",
}
DATA = "/local/domain/0/data"
#: Run last, with no guest left (conftest.py says why).
pytestmark = pytest.mark.usefixtures("without_guests")


@pytest.mark.timeout(900)
def test_the_whole_library_runs_on_real_xen_in_dom0(capsys: pytest.CaptureFixture[str]) -> None:
    store = XenBackend().store()
    before = XenSnapshot.take(store, DATA)
    status = main(["run", "--backend", "xen", "--json", "--no-progress", "all"])
    report = json.loads(capsys.readouterr().out)
    results = {r["scenario"]: r for r in report["scenarios"]}
    if os.environ.get("VCHANSIM_XEN_RESULTS"):  # kept by tools/xen-vm-test --out
        Path(os.environ["VCHANSIM_XEN_RESULTS"], "scenarios.json").write_text(
            json.dumps(report, indent=1)
        )
    assert set(results) == set(builtin_names())
    assert set(NOT_APPLICABLE) <= set(results)
    failed = {n: r for n, r in results.items() if r["status"] not in ("passed", "not-applicable")}
    assert not failed, failed
    assert status == 3, report  # nothing failed, some not applicable
    for name, result in results.items():
        if name in NOT_APPLICABLE:
            assert result["status"] == "not-applicable" and not result["passed"], result
            assert NOT_APPLICABLE[name] in result["not_applicable"], result
            assert result["verdicts"] == [] and result["endpoints"] == []
            continue
        assert result["status"] == "passed" and result["passed"], result
        verdicts = {v["kind"]: v for v in result["verdicts"]}
        assert verdicts["no_leaks"]["passed"], result
        assert len({e["endpoint"] for e in result["endpoints"]}) == 2, result
    server = next(e for e in results["kill-server"]["endpoints"] if e["endpoint"] == "server")
    assert server["exitcode"] == -signal.SIGKILL, server  # it killed itself at its offset
    # The run removed what it left (killed servers' keys), and holds nothing.
    assert before.leaks(store) == []
    store.close()


def test_run_scenario_runs_on_real_xen_and_skips_what_is_not_applicable(run_scenario) -> None:
    result = run_scenario("kill-server")  # fails the test unless every verdict held
    assert {result.scenario.server.backend, result.scenario.client.backend} == {"xen"}
    server = next(i for i in result.record.instances if i.name == "server")
    assert server.exitcode == -signal.SIGKILL and XEN_DEVICES.is_dir()
    with pytest.raises(pytest.skip.Exception, match="is a program endpoint"):
        run_scenario("c-client")
    unchecked = run_scenario("grant-exhaustion", check=False)
    assert unchecked.status == "not-applicable" and not unchecked.passed
