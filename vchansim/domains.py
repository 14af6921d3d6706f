"""The toolstack's part of a domain's life on the emulator: create, destroy, list.

On Xen, libxl makes a domain exist in two places: the hypervisor (the domain and its
event channels) and the XenStore (its home, written by dom0, then INTRODUCE so that
xenstored serves it and fires ``@introduceDomain``).  Destroying it removes the home and
ends it in the hypervisor, whereupon xenstored releases it and fires ``@releaseDomain``.
Here the XenStore is the single source of truth -- the hub closes a released domain's
event channels and answers ``xc_domain_getinfo``/``xc_evtchn_status`` from the store --
so these functions are what libxl does, as domain 0, over the XenStore protocol:

- :func:`create_domain` writes ``/local/domain/N`` (``domid``, ``name``, ``vm``,
  ``data``) and ``/vm/UUID`` (``uuid``, ``name``) with libxl's permissions in one
  transaction, then INTRODUCEs the domain;
- :func:`destroy_domain` removes both trees, then RELEASEs it;
- :func:`list_domains` reads what a toolstack reads.

Domains used without being created (a process acting as domain N gets a home the first
time) keep working; they can be destroyed the same way.  A hub holding created domains
does not leave when idle, since they would leave with it.
"""

from __future__ import annotations

import os
import re
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .backends.shm import ShmBackend
from .errors import ConfigError
from .rundir import RunDir
from .xen import DOMID_MAX, check_domid
from .xenstore.client import XenstoreError, XsClient
from .xenstore.wire import Perm

#: What a domain name may be: Qubes' rule for VM names (a letter, then letters, digits,
#: ``_ . -``), capped at 64 characters; a name of digits only would read as a domain id.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: INTRODUCE's ring frame and event channel: the emulated xenstored needs neither (it
#: serves each domain on its own socket), but Xen's refuses a zero port.
_STORE_FRAME, _STORE_PORT = 0, 1
_TRANSACTION_TRIES = 16


@dataclass(frozen=True)
class DomainInfo:
    """A domain as the toolstack sees it: its id, and the name and UUID libxl wrote
    (``None`` for a domain that was only used, never created)."""

    domid: int
    name: str | None
    uuid: str | None


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"domain name {name!r} is not valid: a letter, then up to 63 letters, digits, "
            "'_', '.' or '-'"
        )
    return name


def _check_uuid(text: str) -> str:
    if not _UUID.fullmatch(text):
        raise ConfigError(f"uuid {text!r} is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    return text.lower()


def _check_guest(domid: int) -> int:
    check_domid(domid)
    if domid == 0:
        raise ConfigError("domain 0 always exists: it cannot be created or destroyed")
    return domid


@contextmanager
def _toolstack(rundir: RunDir | str | os.PathLike[str] | None) -> Iterator[XsClient]:
    """A XenStore connection as domain 0, the toolstack's."""
    with ShmBackend(0, rundir=rundir).store() as xs:
        yield xs


def _read(xs: XsClient, path: str) -> str | None:
    try:
        return xs.read(path).decode(errors="replace")
    except XenstoreError as exc:
        if exc.errno_name == "ENOENT":
            return None
        raise


def _exists(xs: XsClient, domid: int) -> bool:
    return xs.is_domain_introduced(domid) or _read(xs, f"/local/domain/{domid}") is not None


def list_domains(rundir: RunDir | str | os.PathLike[str] | None = None) -> list[DomainInfo]:
    """Every domain with a home in the XenStore, by id (domain 0 first)."""
    with _toolstack(rundir) as xs:
        return _list(xs)


def _list(xs: XsClient) -> list[DomainInfo]:
    found = []
    for entry in xs.directory("/local/domain"):
        if not entry.isdigit() or int(entry) > DOMID_MAX:
            continue
        home = f"/local/domain/{entry}"
        vm = _read(xs, f"{home}/vm")
        uuid = _read(xs, f"{vm}/uuid") if vm else None
        found.append(DomainInfo(int(entry), _read(xs, f"{home}/name"), uuid))
    return sorted(found, key=lambda info: info.domid)


def create_domain(
    domid: int,
    *,
    name: str | None = None,
    uuid: str | None = None,
    rundir: RunDir | str | os.PathLike[str] | None = None,
) -> DomainInfo:
    """Create domain ``domid`` as libxl does (see the module's docstring).

    ``name`` defaults to ``domainN``, ``uuid`` to a random one.  Raises ConfigError,
    changing nothing, for domain 0, an id or name or uuid Xen would refuse, an id in
    use, or a name another domain has.
    """
    _check_guest(domid)
    name = _check_name(name if name is not None else f"domain{domid}")
    uuid = _check_uuid(uuid) if uuid is not None else str(uuidlib.uuid4())
    with _toolstack(rundir) as xs:
        if _exists(xs, domid):
            raise ConfigError(f"domain {domid} already exists")
        for other in _list(xs):
            if other.name == name:
                raise ConfigError(f"domain {other.domid} is already called {name!r}")
        _write_home(xs, domid, name, uuid)
        xs.introduce_domain(domid, _STORE_FRAME, _STORE_PORT)
    return DomainInfo(domid, name, uuid)


def _write_home(xs: XsClient, domid: int, name: str, uuid: str) -> None:
    """libxl's nodes for a new domain, in one transaction (retried on a conflict):
    its home and its ``/vm`` entry are dom0's and readable by the domain, ``data`` is
    the domain's own."""
    home, vm = f"/local/domain/{domid}", f"/vm/{uuid}"
    readable = (Perm("n", 0), Perm("r", domid))
    for _ in range(_TRANSACTION_TRIES):
        tx = xs.transaction_start()
        for path, value in ((home, ""), (vm, "")):
            xs.write(path, value, tx)
            xs.set_perms(path, readable, tx)
        for path, value in (
            (f"{home}/domid", str(domid)),
            (f"{home}/name", name),
            (f"{home}/vm", vm),
            (f"{home}/data", ""),
            (f"{vm}/uuid", uuid),
            (f"{vm}/name", name),
        ):
            xs.write(path, value, tx)
        xs.set_perms(f"{home}/data", (Perm("n", domid),), tx)
        try:
            xs.transaction_end(tx)
            return
        except XenstoreError as exc:
            if exc.errno_name != "EAGAIN":
                raise
    raise ConfigError(f"the XenStore kept changing while domain {domid} was created")


def destroy_domain(domid: int, *, rundir: RunDir | str | os.PathLike[str] | None = None) -> None:
    """Destroy domain ``domid`` as the toolstack does when a domain dies: its home and
    ``/vm`` entry go, then xenstored releases it (``@releaseDomain``; its connections
    end, its nodes go) and the hub closes its event channels.  Raises ConfigError,
    changing nothing, for domain 0 and for a domain that does not exist."""
    _check_guest(domid)
    with _toolstack(rundir) as xs:
        if not _exists(xs, domid):
            raise ConfigError(f"domain {domid} does not exist")
        home = f"/local/domain/{domid}"
        vm = _read(xs, f"{home}/vm")
        for path in (home, vm):
            if path:
                _remove(xs, path)
        if xs.is_domain_introduced(domid):
            xs.release_domain(domid)


def _remove(xs: XsClient, path: str) -> None:
    try:
        xs.rm(path)
    except XenstoreError as exc:
        if exc.errno_name != "ENOENT":
            raise
