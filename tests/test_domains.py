"""Domain lifecycle: ``vchansim domain create/destroy/list`` and vchansim.domains.

Creation writes what libxl writes and INTRODUCEs the domain; destruction removes it and
RELEASEs it, and the hub then closes the domain's event channels.  Each is observed from
outside: the XenStore as domain 0 reads it, its watch events, the hub's answers to the
drop-in libxenctrl (``xc_domain_getinfo``, ``xc_evtchn_status`` in tests/c/xc-probe.c)
and the ports of the domain's peers.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.clibs import NEEDS_XENCTRL_BUILD, foreground_hub, run_probe
from helpers.procs import wait_for

from vchansim.backends.shm import ShmBackend
from vchansim.domains import DomainInfo, create_domain, destroy_domain, list_domains
from vchansim.errors import BackendError, ConfigError
from vchansim.hub.protocol import HubConnection, Op
from vchansim.hub.server import Hub
from vchansim.rundir import RunDir
from vchansim.xenstore.client import XsClient

UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
DEADLINE = 10.0


@pytest.fixture
def hub_dir() -> Iterator[Path]:
    with foreground_hub() as (path, _):
        yield path


def dom0(hub_dir: Path) -> XsClient:
    return ShmBackend(0, rundir=hub_dir).store()


def test_create_writes_what_libxl_writes(hub_dir: Path) -> None:
    assert create_domain(3, name="work", uuid=UUID.upper(), rundir=hub_dir) == DomainInfo(
        3, "work", UUID
    )
    with dom0(hub_dir) as xs:
        home = "/local/domain/3"
        assert [xs.read(f"{home}/{key}") for key in ("domid", "name", "vm")] == [
            b"3",
            b"work",
            f"/vm/{UUID}".encode(),
        ]
        assert xs.read(f"/vm/{UUID}/uuid") == UUID.encode()
        assert xs.read(f"/vm/{UUID}/name") == b"work"
        shown = {
            path: [f"{p.access}{p.domid}" for p in xs.get_perms(path)]
            for path in (home, f"{home}/name", f"{home}/data", f"/vm/{UUID}")
        }
        assert shown == {
            home: ["n0", "r3"],
            f"{home}/name": ["n0", "r3"],
            f"{home}/data": ["n3"],
            f"/vm/{UUID}": ["n0", "r3"],
        }
        assert xs.is_domain_introduced(3)
    assert list_domains(hub_dir) == [DomainInfo(0, None, None), DomainInfo(3, "work", UUID)]


def test_create_and_destroy_fire_the_special_watches(hub_dir: Path) -> None:
    with dom0(hub_dir) as xs:
        xs.watch("@introduceDomain", "in")
        xs.watch("@releaseDomain", "out")
        initial = [xs.read_watch(DEADLINE) for _ in range(2)]
        assert sorted(event or ("", "") for event in initial) == [  # the initial events
            ("@introduceDomain", "in"),
            ("@releaseDomain", "out"),
        ]
        create_domain(4, rundir=hub_dir)
        assert xs.read_watch(DEADLINE) == ("@introduceDomain", "in")
        destroy_domain(4, rundir=hub_dir)
        assert xs.read_watch(DEADLINE) == ("@releaseDomain", "out")
        assert not xs.is_domain_introduced(4)
        assert xs.directory("/vm") == []
        assert "4" not in xs.directory("/local/domain")


def test_a_name_and_uuid_are_given_by_default(hub_dir: Path) -> None:
    info = create_domain(5, rundir=hub_dir)
    assert info.name == "domain5" and info.uuid is not None and len(info.uuid) == 36
    assert list_domains(hub_dir)[1] == info


@pytest.mark.parametrize(
    ("domid", "name", "uuid", "words"),
    [
        (3, None, None, "domain 3 already exists"),
        (4, "work", None, "domain 3 is already called 'work'"),
        (4, "9lives", None, "domain name '9lives' is not valid"),
        (4, "a/b", None, "domain name 'a/b' is not valid"),
        (4, None, "not-a-uuid", "uuid 'not-a-uuid' is not of the form"),
        (0, None, None, "domain 0 always exists"),
        (32752, None, None, "outside Xen's range"),
    ],
    ids=["exists", "name-taken", "name-digit", "name-slash", "uuid", "dom0", "reserved"],
)
def test_bad_creations_change_nothing(
    hub_dir: Path, domid: int, name: str | None, uuid: str | None, words: str
) -> None:
    create_domain(3, name="work", rundir=hub_dir)
    before = list_domains(hub_dir)
    with pytest.raises(ConfigError, match=words):
        create_domain(domid, name=name, uuid=uuid, rundir=hub_dir)
    assert list_domains(hub_dir) == before


@pytest.mark.parametrize(("domid", "words"), [(6, "does not exist"), (0, "always exists")])
def test_bad_destructions_change_nothing(hub_dir: Path, domid: int, words: str) -> None:
    create_domain(3, rundir=hub_dir)
    before = list_domains(hub_dir)
    with pytest.raises(ConfigError, match=words):
        destroy_domain(domid, rundir=hub_dir)
    assert list_domains(hub_dir) == before


def test_destroying_twice_is_refused(hub_dir: Path) -> None:
    create_domain(3, rundir=hub_dir)
    destroy_domain(3, rundir=hub_dir)
    with pytest.raises(ConfigError, match="domain 3 does not exist"):
        destroy_domain(3, rundir=hub_dir)


def test_a_domain_used_without_creation_can_be_destroyed(hub_dir: Path) -> None:
    ShmBackend(7, rundir=hub_dir).xenstore_socket()  # a process acted as domain 7
    assert [info.domid for info in list_domains(hub_dir)] == [0, 7]
    destroy_domain(7, rundir=hub_dir)
    assert [info.domid for info in list_domains(hub_dir)] == [0]


def _status(conn: HubConnection, domid: int, port: int) -> tuple[int, ...]:
    return conn.call(Op.EVT_STATUS, domid, port).values


def test_destroy_closes_the_domains_ports(hub_dir: Path) -> None:
    """Its peers' ends go back to "unbound, waiting for it", as on Xen, which is what
    libvchan-xen's is_open looks at; the destroyed domain is then unknown (ESRCH)."""
    create_domain(1, rundir=hub_dir)
    with (
        HubConnection.connect(RunDir(hub_dir).hub, 0) as server,
        HubConnection.connect(RunDir(hub_dir).hub, 1) as guest,
    ):
        (local, *_) = server.call(Op.EVT_BIND_UNBOUND, 1).values
        (remote, *_) = guest.call(Op.EVT_BIND_INTERDOMAIN, 0, local).values
        assert _status(server, 0, local) == (2, 1, remote)
        destroy_domain(1, rundir=hub_dir)
        assert _status(server, 0, local) == (1, 1, 0)
        with pytest.raises(BackendError) as info:
            _status(server, 1, remote)
        assert info.value.errno == errno.ESRCH
        guest.call(Op.EVT_UNBIND, remote)  # its process may still tidy up: no error
    wait_for(lambda: f"dom1 destroyed: closed port {remote}" in (hub_dir / "hub.log").read_text())


@pytest.mark.cbuild
@NEEDS_XENCTRL_BUILD
def test_libxenctrl_sees_created_and_destroyed_domains(xenctrl_probe: Path, hub_dir: Path) -> None:
    assert run_probe(xenctrl_probe, hub_dir, 0, "getinfo", "9", "1")[0] == "getinfo -1 ESRCH"
    assert run_probe(xenctrl_probe, hub_dir, 0, "status", "9", "-1") == ["status -1 ESRCH"]
    create_domain(9, rundir=hub_dir)
    assert run_probe(xenctrl_probe, hub_dir, 0, "getinfo", "9", "1")[:2] == [
        "getinfo 1 -",
        "domain 9 ok",
    ]
    assert run_probe(xenctrl_probe, hub_dir, 0, "status", "9", "-1") == ["status -1 EINVAL"]
    destroy_domain(9, rundir=hub_dir)
    assert run_probe(xenctrl_probe, hub_dir, 0, "getinfo", "9", "1")[0] == "getinfo -1 ESRCH"
    assert run_probe(xenctrl_probe, hub_dir, 0, "status", "9", "-1") == ["status -1 ESRCH"]


def test_a_hub_holding_created_domains_is_not_idle(tmp_path: Path) -> None:
    hub = Hub(RunDir(tmp_path), embedded=True)
    assert not hub.busy()
    hub.store.introduce_domain(3)  # merely used: the hub may leave
    assert not hub.busy()
    hub.store.note_created(3)  # the toolstack's INTRODUCE: it would take domain 3 along
    assert hub.busy()
    hub.store.release_domain(3)
    assert not hub.busy()


def vchansim(hub_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VCHANSIM_RUNDIR": str(hub_dir)}
    return subprocess.run(
        [sys.executable, "-m", "vchansim", "domain", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def test_the_command(hub_dir: Path) -> None:
    created = vchansim(hub_dir, "create", "2", "--name", "sys-net", "--uuid", UUID)
    assert (created.returncode, created.stdout) == (0, f"domain 2 created: sys-net {UUID}\n")
    listed = vchansim(hub_dir, "list")
    assert listed.stdout.splitlines() == [
        "   ID  NAME                  UUID",
        "    0  -                     -",
        f"    2  sys-net               {UUID}",
    ]
    as_json = json.loads(vchansim(hub_dir, "list", "--json").stdout)
    assert as_json == [
        {"domid": 0, "name": None, "uuid": None},
        {"domid": 2, "name": "sys-net", "uuid": UUID},
    ]
    assert vchansim(hub_dir, "destroy", "2").stdout == "domain 2 destroyed\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("destroy", "2"), "vchansim domain: domain 2 does not exist"),
        (("create", "2", "--uuid", "x"), "vchansim domain: uuid 'x' is not of the form"),
        (("create", "0"), "vchansim domain: domain 0 always exists"),
    ],
    ids=["unknown", "bad-uuid", "dom0"],
)
def test_command_errors_are_one_line(hub_dir: Path, args: tuple[str, ...], line: str) -> None:
    result = vchansim(hub_dir, *args)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line)
