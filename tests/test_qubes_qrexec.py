"""Qubes OS's qrexec, unmodified, between emulated domains.

tests/qubes.py builds qrexec-daemon, qrexec-client, qrexec-agent and qrexec-client-vm
from the pinned sources over libvchan-xen, and each runs under ``vchansim exec``: one
qrexec-daemon in dom0 per VM, one qrexec-agent in each VM (domains created first, as the
toolstack does).  What qubesd and the policy daemon do is played by stand-ins written
here: an allow-all policy program (``--policy-program``) and one service, ``test.Echo``,
which answers with the caller's domain and its stdin.  Hard-coded paths are moved with
the programs' own options (``--socket-dir``, ``--agent-socket``) and environment
(``QREXEC_SERVICE_PATH``).

The agent runs ``user:command`` requests through ``su - USER`` (built without PAM), so
the tests that send them need root.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import qubes
from helpers.clibs import foreground_hub
from helpers.procs import wait_for
from qubes import DEADLINE, Running

from vchansim.domains import create_domain, destroy_domain

pytestmark = [
    pytest.mark.cbuild,
    pytest.mark.skipif(
        not Path("/usr/include/libxenvchan.h").exists(),
        reason="needs Xen's headers and libraries (tools/install)",
    ),
]
NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0, reason="qrexec-agent runs user:command through `su - root`: needs root"
)
#: The VMs: domain id, name, UUID.
VMS = {
    "work": (1, "11111111-2222-4333-8444-555555555555"),
    "personal": (2, "66666666-7777-4888-9999-aaaaaaaaaaaa"),
}
CAT_SIZE = 32 << 20
#: Where each program is built in qrexec's tree.
PROGRAMS = {
    "qrexec-daemon": "daemon",
    "qrexec-client": "daemon",
    "qrexec-agent": "agent",
    "qrexec-client-vm": "agent",
}

POLICY = """\
#!/bin/sh
# Allow-all stand-in for qrexec-policy-exec: called as  -- SOURCE TARGET SERVICE
printf 'result=allow\\nuser=root\\ntarget=%s\\nrequested_target=%s\\nautostart=False\\n' "$3" "$3"
"""
ECHO_SERVICE = """\
#!/bin/sh
printf '%s in %s: ' "$QREXEC_REMOTE_DOMAIN" "$WHERE"
cat
"""


@dataclass
class Machine:
    """dom0 and the VMs on one hub: the qrexec programs and where they listen."""

    hub_dir: Path
    tree: Path
    work: Path
    daemons: dict[str, Running] = field(default_factory=dict)
    agents: dict[str, Running] = field(default_factory=dict)

    @property
    def sockets(self) -> Path:
        return self.work / "sockets"

    def services(self, where: str) -> Path:
        """The service directory of ``where`` (dom0 or a VM): test.Echo, saying where."""
        path = self.work / f"rpc-{where}"
        if not path.exists():
            path.mkdir()
            (path / "test.Echo").write_text(ECHO_SERVICE)
            (path / "test.Echo").chmod(0o755)
        return path

    def run(
        self,
        domid: int,
        argv: Sequence[str | Path],
        *,
        stdin: int | IO[bytes] = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> Running:
        return qubes.run_as(self.hub_dir, domid, argv, self.tree, stdin=stdin, env=env)

    def program(self, name: str) -> Path:
        return self.tree / PROGRAMS[name] / name

    def agent_socket(self, vm: str) -> Path:
        return self.sockets / f"agent.{vm}"

    def start_agent(self, vm: str) -> Running:
        """qrexec-agent in ``vm``: it offers its vchan to dom0 and, once its daemon
        connected, listens for qrexec-client-vm."""
        self.agent_socket(vm).unlink(missing_ok=True)
        env = {"QREXEC_SERVICE_PATH": str(self.services(vm)), "WHERE": vm}
        argv: list[str | Path] = [
            self.program("qrexec-agent"),
            f"--agent-socket={self.agent_socket(vm)}",
            "--no-fork-server",
        ]
        self.agents[vm] = self.run(VMS[vm][0], argv, env=env)
        return self.agents[vm]

    def start_daemon(self, vm: str) -> Running:
        """qrexec-daemon for ``vm`` in dom0, in the foreground (``--direct``)."""
        domid, uuid = VMS[vm]
        env = {"QREXEC_SERVICE_PATH": str(self.services("dom0")), "WHERE": "dom0"}
        argv: list[str | Path] = [
            self.program("qrexec-daemon"),
            "--direct",
            f"--socket-dir={self.sockets}",
            f"--policy-program={self.work / 'policy'}",
            "-u",
            uuid,
            str(domid),
            vm,
            "root",
        ]
        self.daemons[vm] = self.run(0, argv, env=env)
        return self.daemons[vm]

    def wait_connected(self, vm: str) -> None:
        """Until the agent of ``vm`` has its daemon (it listens only then)."""
        wait_for(
            lambda: self.agent_socket(vm).exists() and (self.sockets / f"qrexec.{vm}").exists(),
            DEADLINE,
            f"{vm}'s agent and daemon to connect:\n{self.logs(vm)}",
        )

    def logs(self, vm: str) -> str:
        return "\n".join(
            f"{role}: {run.tail()}"
            for role, run in (("daemon", self.daemons.get(vm)), ("agent", self.agents.get(vm)))
            if run
        )

    def client(
        self, vm: str, command: str, *, stdin: int | IO[bytes] = subprocess.DEVNULL
    ) -> Running:
        """``qrexec-client -d VM COMMAND`` in dom0."""
        argv: list[str | Path] = [
            self.program("qrexec-client"),
            f"--socket-dir={self.sockets}",
            "-d",
            vm,
            command,
        ]
        return self.run(0, argv, stdin=stdin)

    def client_vm(self, vm: str, target: str, service: str) -> Running:
        """``qrexec-client-vm TARGET SERVICE`` in ``vm``."""
        argv: list[str | Path] = [
            self.program("qrexec-client-vm"),
            f"--agent-socket={self.agent_socket(vm)}",
            target,
            service,
        ]
        return self.run(VMS[vm][0], argv, stdin=subprocess.PIPE)

    def stop(self) -> None:
        for run in (*self.agents.values(), *self.daemons.values()):
            if run.proc.poll() is None:
                run.proc.terminate()
            run.proc.wait(DEADLINE)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    tree = qubes.build_qrexec(tmp_path_factory.mktemp("qubes"))
    work = tmp_path_factory.mktemp("qrexec")
    (work / "policy").write_text(POLICY)
    (work / "policy").chmod(0o755)
    (work / "sockets").mkdir()
    with foreground_hub() as (hub_dir, _):
        box = Machine(hub_dir, tree, work)
        try:
            for vm, (domid, uuid) in VMS.items():
                create_domain(domid, name=vm, uuid=uuid, rundir=hub_dir)
                box.start_agent(vm)
                box.start_daemon(vm)
            for vm in VMS:
                box.wait_connected(vm)
            yield box
        finally:
            box.stop()


def said(run: Running) -> tuple[int, str]:
    status = run.finish()
    return status, run.out.text.decode(errors="replace")


@NEEDS_ROOT
def test_a_command_in_a_vm_gives_its_output_and_exit_status(machine: Machine) -> None:
    run = machine.client("work", "root:echo hello; exit 3")
    assert said(run) == (3, "hello\n"), run.tail()
    # work's agent ran it (through su, whose login shell starts from a clean environment)
    assert b"executed: root:echo hello; exit 3" in machine.agents["work"].err.text


@NEEDS_ROOT
def test_32_mib_through_cat_in_a_vm(machine: Machine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(CAT_SIZE))
    with data.open("rb") as stdin:
        run = machine.client("personal", "root:cat", stdin=stdin)
        status = run.finish()
    assert status == 0, run.tail()
    assert run.out.count == CAT_SIZE
    assert run.out.digest.hexdigest() == hashlib.sha256(data.read_bytes()).hexdigest()


def _call(machine: Machine, vm: str, target: str, text: bytes) -> tuple[int, str, str]:
    run = machine.client_vm(vm, target, "test.Echo")
    run.stdin.write(text)
    run.stdin.close()
    status, out = said(run)
    return status, out, run.tail()


def test_a_vm_calls_a_dom0_service(machine: Machine) -> None:
    """agent -> daemon -> policy program -> the service, run by the daemon in dom0."""
    status, out, err = _call(machine, "work", "dom0", b"ping")
    assert (status, out) == (0, "work in dom0: ping"), err + machine.logs("work")


def test_a_vm_calls_another_vms_service(machine: Machine) -> None:
    """work's daemon asks the policy, then personal's daemon has personal's agent start
    the service; the data go over a vchan straight between the two VMs."""
    status, out, err = _call(machine, "work", "personal", b"ping")
    assert (status, out) == (0, "work in personal: ping"), err + machine.logs("personal")


@NEEDS_ROOT
def test_the_agent_restarts_and_the_daemon_reconnects(machine: Machine) -> None:
    old = machine.agents["work"]
    old.proc.send_signal(signal.SIGTERM)
    old.finish()
    daemon = machine.daemons["work"]
    wait_for(
        lambda: b"qrexec-agent has disconnected" in daemon.err.text,
        DEADLINE,
        f"the daemon to notice:\n{daemon.tail()}",
    )
    machine.start_agent("work")
    wait_for(
        lambda: b"qrexec-agent has reconnected" in daemon.err.text,
        DEADLINE,
        f"the daemon to reconnect:\n{machine.logs('work')}",
    )
    machine.wait_connected("work")
    assert said(machine.client("work", "root:echo back")) == (0, "back\n")


def test_destroying_a_vm_ends_its_daemon(machine: Machine) -> None:
    """The daemon looks at its vchan every second: the VM's ports closed, it reads
    disconnected, finds the domain gone and gives up (exit 1)."""
    destroy_domain(VMS["personal"][0], rundir=machine.hub_dir)
    daemon = machine.daemons["personal"]
    assert daemon.finish() == 1
    assert b"qrexec-agent has disconnected" in daemon.err.text
    assert b"Failed to reconnect to qrexec-agent, terminating" in daemon.err.text
