"""The pytest plugin, as a user's own test suite sees it (run with pytester): connected
pairs on either backend, isolated run directories that survive pytest-xdist, scenarios
from a test, a leak check that fails the test that leaked, a deadline on every test that
uses the machine, and the fault API striking channels and processes the test opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from vchansim.pytest_plugin import DEFAULT_TIMEOUT

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

USER_SUITE = """
import pytest
from vchansim import Vchan
from vchansim.errors import ChannelClosed


def test_a_pair_talks_both_ways(vchan_pair):
    vchan_pair.client.write(b"ping")
    assert vchan_pair.server.read(4) == b"ping"
    vchan_pair.server.send(b"pong")
    assert vchan_pair.client.recv(4) == b"pong"


@pytest.mark.vchan(backend="memory", read_min=1024, write_min=2048)
def test_marker_chooses_backend_and_rings(vchan_pair, vchan_env):
    assert vchan_env.backend == "memory"
    assert (vchan_pair.server.read_ring.size, vchan_pair.server.write_ring.size) == (1024, 2048)


@pytest.mark.parametrize(
    "vchan_pair", [{"read_min": 65536}, "memory", {"blocking": False}], indirect=True
)
def test_pairs_parametrised_indirectly(vchan_pair):
    vchan_pair.server.write(b"x" * 100)
    assert vchan_pair.client.recv(100) == b"x" * 100


@pytest.mark.parametrize("vchan_pair", ["memory"], indirect=True)
def test_an_indirect_backend_reaches_the_environment(vchan_pair, vchan_env):
    assert vchan_env.backend == "memory"


def test_the_peer_close_is_seen(vchan_pair):
    vchan_pair.server.close()
    with pytest.raises(ChannelClosed):
        vchan_pair.client.read(1)


def test_own_channels_in_the_test_s_machine(vchan_env):
    with Vchan.server(vchan_env.domain(7), 3, "data/mine") as srv:
        with Vchan.client(vchan_env.domain(3), 7, "/local/domain/7/data/mine") as cli:
            cli.write(b"hi")
            assert srv.read(2) == b"hi"


def test_each_test_has_its_own_run_directory(vchan_rundir, tmp_path_factory):
    mark = vchan_rundir.path / "mine"
    assert not mark.exists()
    mark.touch()
    assert len(str(vchan_rundir.path)) < 40  # short: AF_UNIX paths must fit 108 bytes


def test_a_scenario_from_a_test(run_scenario):
    result = run_scenario({
        "endpoints": {
            "s": {"role": "server", "workload": {"send": 20000}},
            "c": {"role": "client", "workload": {"send": 5000}},
        },
        "expect": [{"kind": "delivered"}, {"kind": "no_leaks"}],
    })
    assert result.passed and result.record.instances[0].pid is not None
"""


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the user's suite in a fresh pytest, with only the plugins named here."""
    pytester.makepyfile(test_user=USER_SUITE)
    return pytester.runpytest("-p", "vchansim.pytest_plugin", "-p", "no:cacheprovider", *args)


@pytest.fixture(autouse=True)
def _isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner pytest loads our plugin explicitly (installed or not), nothing else
    by itself; subprocesses (xdist workers, endpoints) import this checkout."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_a_user_suite_runs_on_the_fixtures(pytester):
    result = run_suite(pytester)
    result.assert_outcomes(passed=10)


def test_the_suite_is_safe_under_xdist(pytester):
    result = run_suite(pytester, "-p", "xdist.plugin", "-n", "2")
    result.assert_outcomes(passed=10)


def test_the_backend_option_applies_to_every_pair(pytester):
    pytester.makepyfile(
        test_opt="""
        def test_it(vchan_env, vchan_pair):
            assert vchan_env.backend == "memory"
        """
    )
    result = pytester.runpytest("-p", "vchansim.pytest_plugin", "--vchan-backend", "memory")
    result.assert_outcomes(passed=1)


LEAKY = """
import pytest
from vchansim import Vchan


def test_forgets_to_close(vchan_env):
    vchan_env.kept = Vchan.server(vchan_env.domain(1), 0, "data/leak")


@pytest.mark.vchan(backend="memory")
def test_forgets_to_close_in_memory(vchan_env):
    vchan_env.kept = Vchan.server(vchan_env.domain(1), 0, "data/leak")
"""


def test_a_leak_fails_the_test_that_leaked_naming_what_is_left(pytester):
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "vchansim.pytest_plugin")
    result.assert_outcomes(passed=2, errors=2)
    for backend in ("shm", "memory"):
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_forgets_to_close*",
                f"*vchansim resources left behind by this test ({backend} backend)*",
                "*grant ref 1 of dom1*still in the table*",
                "*xenstore node /local/domain/1/data/leak/*",
            ]
        )


def test_a_failing_scenario_fails_the_test_with_every_verdict(pytester):
    pytester.makepyfile(
        test_scn="""
        SCENARIO = {
            "scenario": {"backend": "memory"},
            "endpoints": {"s": {"role": "server", "workload": {"send": 100}},
                          "c": {"role": "client"}},
            "expect": [{"kind": "delivered"},
                       {"kind": "error", "endpoint": "c", "error": "ChannelClosed"}],
        }

        def test_checked(run_scenario):
            run_scenario(SCENARIO)

        def test_unchecked(run_scenario):
            result = run_scenario(SCENARIO, check=False)
            assert [v.passed for v in result.verdicts] == [True, False]
        """
    )
    result = pytester.runpytest("-p", "vchansim.pytest_plugin")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*[[]ok[]] every byte sent is delivered: s→c 100 B*", "*[[]FAIL[]] c raises*"]
    )


def test_run_scenario_runs_on_the_backend_the_suite_chose(pytester):
    """``--vchan-backend`` moves both endpoints, as ``vchansim run --backend`` does; a
    scenario the backend cannot run fails its test with one line; without a choice a
    scenario runs on its own backend."""
    pytester.makepyfile(
        test_scn="""
        import pytest

        STREAM = {"endpoints": {"s": {"role": "server", "workload": {"send": 5000}},
                                "c": {"role": "client"}},
                  "expect": [{"kind": "delivered"}, {"kind": "no_leaks"}]}

        def test_moved(run_scenario, request):
            result = run_scenario(STREAM)
            assert result.scenario.server.backend == request.config.getoption("vchan_backend")
            threads = [i.pid is None for i in result.record.instances]
            assert threads == [result.scenario.server.backend == "memory"] * 2

        def test_refused(run_scenario):
            run_scenario("kill-server")

        @pytest.mark.vchan(backend="shm")
        def test_marked(run_scenario):
            assert run_scenario(STREAM).scenario.client.backend == "shm"

        def test_own(run_scenario):
            result = run_scenario({**STREAM, "scenario": {"backend": "memory"}})
            assert result.record.instances[0].pid is None
        """
    )
    result = pytester.runpytest("-p", "vchansim.pytest_plugin", "--vchan-backend", "memory")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_refused*", "vchansim: *kill*memory*"])
    result.stdout.no_fnmatch_line("*During handling*")
    nothing_chosen = pytester.runpytest("-p", "vchansim.pytest_plugin", "-k", "marked or own")
    nothing_chosen.assert_outcomes(passed=2)


def test_run_scenario_on_xen_where_there_is_none_fails_with_one_line(pytester):
    pytester.makepyfile(
        test_scn="""
        def test_it(run_scenario):
            run_scenario("stream-both-ways")
        """
    )
    result = pytester.runpytest("-p", "vchansim.pytest_plugin", "--vchan-backend", "xen")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["vchansim: stream-both-ways: backend 'xen' needs /dev/xen*"])
    result.stdout.no_fnmatch_line("*During handling*")


def test_unknown_pair_options_are_a_usage_error(pytester):
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.vchan(ring_size=4096)
        def test_it(vchan_pair):
            pass
        """
    )
    result = pytester.runpytest("-p", "vchansim.pytest_plugin")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown vchan option(s) ring_size*"])


FAULTS = '''
import signal
import subprocess
import sys
import time

import pytest
from vchansim import Vchan
from vchansim.errors import BackendError, ChannelClosed, GrantError, StoreError

# A peer of the test's own server, in a process of its own (domain 0): it says "up", then
# counts what it receives until the close.
PEER = """
from vchansim import Vchan, get_backend
c = Vchan.client(get_backend("shm", domid=0), 1, "/local/domain/1/data/peer", wait=30)
c.write(b"up")
print(len(b"".join(c)), flush=True)
"""


@pytest.fixture
def peer(vchan_env):
    server = Vchan.server(vchan_env.domain(1), 0, "data/peer")
    process = subprocess.Popen([sys.executable, "-c", PEER], stdout=subprocess.PIPE, text=True)
    assert server.read(2) == b"up"
    yield server, process
    process.kill()
    process.wait()
    server.close()


def state(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_kill_is_a_dying_peer(vchan_env, peer):
    server, process = peer
    vchan_env.faults.kill(process)
    with pytest.raises(ChannelClosed):
        server.read(1)
    assert process.wait() == -signal.SIGKILL


def test_stall_freezes_the_peer_and_lets_it_go_on(vchan_env, peer):
    server, process = peer
    vchan_env.faults.stall(process, 1.0)
    deadline = time.monotonic() + 10
    while state(process.pid) != "T":    # SIGSTOP is delivered asynchronously
        assert time.monotonic() < deadline, "the peer was never stopped"
    server.write(b"z" * 100_000)        # more than the ring: waits for the frozen peer
    server.close()
    assert process.stdout.readline() == "100000\\n"


@pytest.mark.vchan(backend="memory")
@pytest.mark.parametrize("action", ["drop", "duplicate", "delay"])
def test_notifications_are_tampered_with_and_counted(vchan_env, vchan_pair, action):
    rule = vchan_env.faults.notifications(0, action)     # the client's domain
    vchan_pair.client.write(b"x" * 100)
    assert vchan_pair.server.read(100) == b"x" * 100
    vchan_pair.client.close()            # the close notifies the server: the rule sees it
    assert rule.applied >= 1
    assert vchan_env.faults.log[0][0].startswith(action)


def test_a_corrupt_index_locks_the_ring_as_libxenvchan_does(vchan_env, vchan_pair):
    change = vchan_env.faults.corrupt(vchan_pair.client, "left.prod", add=1 << 31)
    print(change)
    vchan_pair.server.timeout = 1.0
    with pytest.raises(TimeoutError):    # more data than the ring holds: none is read
        vchan_pair.server.read(1)


@pytest.mark.parametrize(
    "backend", [pytest.param(b, marks=pytest.mark.vchan(backend=b)) for b in ("shm", "memory")]
)
@pytest.mark.parametrize(
    "resource, leave, error",
    [("ports", 1, BackendError), ("grants", 17, GrantError), ("xenstore", 6, StoreError)],
)
def test_exhaust_meets_the_second_vchan(vchan_env, resource, leave, error, backend):
    assert vchan_env.backend == backend
    vchan_env.faults.exhaust(resource, leave=leave)
    first = Vchan.server(vchan_env.domain(1), 2, "data/a", read_min=65536)
    try:
        with pytest.raises(error):
            Vchan.server(vchan_env.domain(1), 3, "data/b", read_min=65536)
    finally:
        first.close()


def test_exhaust_refuses_a_machine_in_use(vchan_env, vchan_pair):
    with pytest.raises(ValueError, match="in use already"):
        vchan_env.faults.exhaust("ports")
'''


def test_the_fault_api_strikes_the_test_s_own_channels_and_processes(pytester):
    pytester.makepyfile(test_faults=FAULTS)
    result = pytester.runpytest_subprocess("-p", "vchansim.pytest_plugin", "-s")
    result.assert_outcomes(passed=13)


DEADLINES = '''
import os
import select
import signal

import pytest


def test_the_default_deadline_is_armed(vchan_env):
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert DEFAULT - 30 < left <= DEFAULT


@pytest.mark.vchan(timeout=2)
def test_a_hang_in_the_user_s_own_wait_fails(vchan_env):
    r, _ = os.pipe()
    select.select([r], [], [])


@pytest.mark.vchan(timeout=0)
def test_no_deadline(vchan_env):
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
'''


def test_every_test_on_the_machine_has_a_deadline(pytester):
    pytester.makepyfile(test_deadlines=f"DEFAULT = {DEFAULT_TIMEOUT!r}\n{DEADLINES}")
    result = pytester.runpytest_subprocess("-p", "vchansim.pytest_plugin")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_a_hang_in_the_user_s_own_wait_fails _*",
        ">*select.select*",
        "E*vchansim: the test ran past its deadline of 2 s (set it with "
        "@pytest.mark.vchan(timeout=...), --vchan-timeout or the vchansim_timeout ini)",
    ])


def test_the_deadline_comes_from_the_option_or_the_ini(pytester):
    pytester.makepyfile(
        test_opt="""
        import signal

        def test_it(vchan_env):
            assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 7
        """
    )
    pytester.runpytest_subprocess(
        "-p", "vchansim.pytest_plugin", "--vchan-timeout", "7"
    ).assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nvchansim_timeout = 7\n")
    pytester.runpytest_subprocess("-p", "vchansim.pytest_plugin").assert_outcomes(passed=1)
