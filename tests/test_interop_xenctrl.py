"""The drop-in libxenctrl.so.4.17 against Xen's own header and semantics.

``tests/c/xc-probe.c`` is compiled against Debian's ``<xenctrl.h>`` and linked against
Debian's libxenctrl, then run under the emulator's environment, where the loader binds it
to ours.  It fills a guard pattern before each call and compares every byte of each entry
with what the header's ``xc_dominfo_t`` says the emulator promises, so a layout mismatch
of a single field fails here.

On the emulator a domain exists once it has a home, ``/local/domain/<id>``, which the hub
creates the first time a process acts as that domain; only domain 0 may list them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.clibs import NEEDS_XENCTRL_BUILD, foreground_hub, run_probe

from vchansim.backends.shm import ShmBackend

#: The domains this module's hub knows, besides domain 0.
DOMAINS = (1, 2, 5)

pytestmark = [pytest.mark.cbuild, NEEDS_XENCTRL_BUILD]


@pytest.fixture(scope="module")
def hub_dir(hub_dir: Path) -> Path:
    """The module's hub, its store given homes for domains 0, 1, 2 and 5."""
    for domid in (0, *DOMAINS):
        ShmBackend(domid, rundir=hub_dir).xenstore_socket()
    return hub_dir


def test_open_and_close(xenctrl_probe: Path, hub_dir: Path) -> None:
    assert run_probe(xenctrl_probe, hub_dir, 1, "open") == ["open ok"]


def test_getinfo_lists_every_domain_in_xens_layout(xenctrl_probe: Path, hub_dir: Path) -> None:
    assert run_probe(xenctrl_probe, hub_dir, 0, "getinfo", "0", "10") == [
        "getinfo 4 -",
        "domain 0 ok",
        "domain 1 ok",
        "domain 2 ok",
        "domain 5 ok",
        "unused ok",
        "guard ok",
    ]


@pytest.mark.parametrize(
    ("first", "count", "expected"),
    [
        ("2", "1", ["getinfo 1 -", "domain 2 ok"]),
        # Xen's rule: the next existing domain at or above `first`; callers compare ids
        ("3", "1", ["getinfo 1 -", "domain 5 ok"]),
        ("1", "2", ["getinfo 2 -", "domain 1 ok", "domain 2 ok"]),
        ("6", "2", ["getinfo -1 ESRCH"]),
        ("0", "0", ["getinfo 0 -"]),
    ],
    ids=["exact", "next-above", "two", "none-left", "zero-entries"],
)
def test_getinfo_follows_xen(
    xenctrl_probe: Path, hub_dir: Path, first: str, count: str, expected: list[str]
) -> None:
    assert run_probe(xenctrl_probe, hub_dir, 0, "getinfo", first, count) == [
        *expected,
        "unused ok",
        "guard ok",
    ]


def test_a_guest_may_not_ask(xenctrl_probe: Path, hub_dir: Path) -> None:
    # Xen refuses the domain-info hypercall to guests; the store refuses them the listing.
    assert run_probe(xenctrl_probe, hub_dir, 2, "getinfo", "1", "1")[0] == "getinfo -1 EPERM"


def test_a_domain_exists_once_a_process_acts_as_it(xenctrl_probe: Path) -> None:
    with foreground_hub() as (path, _):  # its own hub: the other tests' domains stay as listed
        assert run_probe(xenctrl_probe, path, 0, "getinfo", "9", "1")[0] == "getinfo -1 ESRCH"
        ShmBackend(9, rundir=path).xenstore_socket()
        assert run_probe(xenctrl_probe, path, 0, "getinfo", "9", "1")[:2] == [
            "getinfo 1 -",
            "domain 9 ok",
        ]


@pytest.mark.parametrize(
    ("domid", "dom", "port", "expected"),
    [
        (0, "1", "1", "status 0 - 0 - -"),  # a valid port with nothing bound: closed
        (0, "9", "-1", "status -1 ESRCH"),  # libvchan-xen's "is domain 9 alive?"
        (0, "1", "-1", "status -1 EINVAL"),  # ... it is
        (2, "1", "1", "status -1 EPERM"),  # a guest asking about another domain
        (2, "32752", "4095", "status 0 - 0 - -"),  # DOMID_SELF, the highest port
        (2, "2", "4096", "status -1 EINVAL"),
    ],
    ids=["closed", "no-domain", "alive", "guest-other", "self", "too-high"],
)
def test_evtchn_status_follows_xen(
    xenctrl_probe: Path, hub_dir: Path, domid: int, dom: str, port: str, expected: str
) -> None:
    assert run_probe(xenctrl_probe, hub_dir, domid, "status", dom, port) == [expected]


def test_evtchn_status_from_a_forked_child(xenctrl_probe: Path, hub_dir: Path) -> None:
    """qrexec forks with an open interface: the child asks on its own hub connection and
    the parent's still answers afterwards."""
    assert run_probe(xenctrl_probe, hub_dir, 0, "status-fork", "9", "-1") == ["status -1 ESRCH"] * 3


def test_the_compat_evtchn_calls_forward_to_libxenevtchn(
    xenctrl_probe: Path, hub_dir: Path
) -> None:
    assert run_probe(xenctrl_probe, hub_dir, 1, "compat", "1") == [
        "compat fds ok",
        "compat bind-unbound ok",
        "status 0 - 1 1 -",
        "compat bind-interdomain ok",
        "status 0 - 2 1 2",
        "compat first-pending ok",
        "compat unmask ok",
        "compat notify ok",
        "compat pending ok",
        "compat notify-back ok",
        "compat pending-back ok",
        "compat bind-virq -1 EOPNOTSUPP",
        "compat unbind ok",
        "status 0 - 1 1 -",
        "compat unbind-again -1 ENOTCONN",
        "compat close ok",
        "status 0 - 0 - -",
    ]
