"""Debian's Xen 4.17 programs, unmodified, under the emulator's environment.

Every compiled program of xen-utils-4.17 and xen-utils-common (``tools/fetch-xen-tools``)
must load: the dynamic loader resolves every symbol against the drop-in libraries, the
all-stub ones included (libxenguest finds ``xenforeignmemory_map`` and ``xencall1``
only through libxenctrl's own dependencies).  What each then does is in
docs/c-programs.md's table; the rows tested here are one per kind of outcome: a program
that works (lsevtchn, over ``xc_evtchn_status``), one that needs only XenStore, a
refusal at its first unemulated call (one line, exit 127), and Xen's own xenstored,
which must not take the emulator's XenStore socket away.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import procs
from helpers.clibs import NEEDS_XENCTRL_BUILD

from vchansim import Vchan, cbuild, debian
from vchansim.backends.shm import ShmBackend, emulator_env

DEADLINE = 30.0

pytestmark = [pytest.mark.cbuild, NEEDS_XENCTRL_BUILD]


def _fetched() -> list[str]:
    try:
        return debian.programs()
    except debian.MissingProgramError:
        return []


PROGRAMS = _fetched()
needs_programs = pytest.mark.skipif(
    not PROGRAMS, reason=f"Debian's Xen programs are not fetched: run {debian.FETCH_COMMAND}"
)


def run(hub_dir: Path, domid: int, *command: str | Path) -> subprocess.CompletedProcess[str]:
    """``command`` run as emulated domain ``domid``, stdin closed, from a scratch cwd."""
    return subprocess.run(
        command,
        env=emulator_env(ShmBackend(domid, rundir=hub_dir)),
        cwd=hub_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def program(name: str) -> Path:
    return debian.tools_dir() / name


def unemulated_line(function: str, provides: str) -> str:
    return f"vchansim: {function} is not emulated: vchansim's {provides}; run this program on Xen"


XENCTRL_PROVIDES = (
    "libxenctrl.so.4.17 provides only xc_interface_open/close, xc_domain_getinfo, "
    "xc_evtchn_status and the xc_evtchn_* compatibility calls"
)


def test_a_program_linked_against_libxenguest_loads(hub_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "guest.c"
    source.write_text("int main(void) { return 0; }\n")
    executable = tmp_path / "guest"
    cc = os.environ.get("CC") or "cc"
    # --no-as-needed: the program depends on libxenguest though it calls nothing of it
    subprocess.run([cc, "-o", executable, source, "-Wl,--no-as-needed", "-lxenguest"], check=True)
    result = run(hub_dir, 0, executable)
    assert (result.returncode, result.stderr) == (0, "")


@needs_programs
@pytest.mark.parametrize("name", PROGRAMS)
def test_every_fetched_program_loads(hub_dir: Path, name: str) -> None:
    """``ldd -r`` is the loader itself, relocating every symbol without running main."""
    result = run(hub_dir, 0, "ldd", "-r", program(name))
    if "not a dynamic executable" in result.stdout + result.stderr:
        return  # static: it loads no library at all
    assert "not found" not in result.stdout, result.stdout
    assert "undefined symbol" not in result.stdout + result.stderr, result.stdout
    resolved = dict(re.findall(r"^\s*(libxen\S+) => (\S+) ", result.stdout, re.MULTILINE))
    for soname, path in resolved.items():  # ours where we have one, Debian's otherwise
        assert (Path(path).parent == cbuild.library_dir()) == (soname in cbuild.LIBRARIES), path


@needs_programs
def test_lsevtchn_lists_ports_as_xen_does(hub_dir: Path) -> None:
    lsevtchn = program("lsevtchn")
    with Vchan.server(ShmBackend(1, rundir=hub_dir), 0, "data/ls", blocking=False):
        waiting = run(hub_dir, 0, lsevtchn, "1")
        assert waiting.returncode == 0, waiting.stderr
        assert re.fullmatch(
            r" +\d+: VCPU 0: Interdomain \(Waiting connection\) - Remote Domain 0\n", waiting.stdout
        )
        with Vchan.client(ShmBackend(0, rundir=hub_dir), 1, "/local/domain/1/data/ls"):
            server_side = run(hub_dir, 0, lsevtchn, "1").stdout
            client_side = run(hub_dir, 0, lsevtchn, "0").stdout
    ports = re.fullmatch(
        r" +(\d+): VCPU 0: Interdomain \(Connected\) - Remote Domain 0, Port (\d+)\n", server_side
    )
    assert ports, server_side
    server_port, client_port = ports.groups()
    assert client_side.endswith(
        f" {client_port}: VCPU 0: Interdomain (Connected) - Remote Domain 1, Port {server_port}\n"
    ), client_side
    # Xen's errors, from the hub's EVTCHNOP_status
    unknown = run(hub_dir, 0, lsevtchn, "9")
    assert (unknown.returncode, unknown.stderr) == (1, "xc_evtchn_status: No such process\n")
    guest = run(hub_dir, 2, lsevtchn, "1")
    assert (guest.returncode, guest.stderr) == (1, "xc_evtchn_status: Operation not permitted\n")


@needs_programs
def test_programs_of_xenstore_alone_work(hub_dir: Path) -> None:
    check = run(hub_dir, 0, program("xenstore-control"), "check")
    assert (check.returncode, check.stdout) == (0, "OK\n"), check.stderr
    hvm = run(hub_dir, 0, program("xen-hvmcrash"), "1")  # xc_domain_getinfo, then no more
    assert (hvm.returncode, hvm.stderr) == (1, "domain 1 is not HVM\n")
    detect = run(hub_dir, 0, program("xen-detect"))
    assert detect.stdout == "Not running on Xen.\n"


@needs_programs
@pytest.mark.parametrize(
    ("command", "function", "provides"),
    [
        (("xl", "list"), "xc_version", XENCTRL_PROVIDES),
        (("xentop", "-b", "-i", "1"), "xc_physinfo", XENCTRL_PROVIDES),
        (
            ("xenconsoled", "-i"),
            "xenforeignmemory_open",
            "libxenforeignmemory.so.1 maps no foreign memory",
        ),
        (
            ("xenhypfs", "ls", "/"),
            "xenhypfs_open",
            "libxenhypfs.so.1 has no hypervisor file system",
        ),
    ],
)
def test_an_unemulated_call_ends_the_program_in_one_line(
    hub_dir: Path, command: tuple[str, ...], function: str, provides: str
) -> None:
    result = run(hub_dir, 0, program(command[0]), *command[1:])
    assert result.returncode == 127
    assert result.stderr.splitlines()[-1] == unemulated_line(function, provides)


@needs_programs
def test_xens_xenstored_leaves_the_emulators_xenstore_working(hub_dir: Path) -> None:
    """Xen's xenstored replaces the socket file at its XENSTORED_PATH with its own: the
    hub refuses it the hypervisor connection, and serves the domain again after."""
    assert run(hub_dir, 0, "xenstore-write", "/survives", "yes").returncode == 0
    daemon = run(hub_dir, 0, program("xenstored"), "--no-fork")
    assert daemon.returncode != 0
    assert (
        f"vchansim: xc_interface_open: cannot serve xenstore socket {hub_dir}/xs/0: "
        f"{hub_dir}/xs/0 is already being served" in daemon.stderr.splitlines()
    ), daemon.stderr
    after = run(hub_dir, 0, "xenstore-read", "/survives")
    assert (after.returncode, after.stdout) == (0, "yes\n"), after.stderr
    replaced = "xs/0 was replaced: serving it anew"
    procs.wait_for(lambda: replaced in (hub_dir / "hub.log").read_text(), what="the log line")
