"""Backends by name: a registry open to third parties through entry points.

``get_backend("shm", domid=1)`` returns a ready :class:`~.base.Backend`.  Built-in
backends are listed here; others register under the ``vchansim.backends`` entry-point
group (``name = "package.module:BackendClass"``) or call :func:`register`.

A built-in name resolves without reading the installed distributions' metadata: that
scan costs tens of milliseconds and most of an endpoint's import weight, so only a name
that is neither registered nor built in (or a listing of every backend) pays for it.
An installed package therefore cannot replace a built-in backend by name; :func:`register`
can.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

from ..errors import ConfigError
from ..xen import check_domid
from ..xenstore.wire import Perm
from .base import Backend, Events, Grants, Mapping, Store

__all__ = [
    "Backend",
    "Events",
    "Grants",
    "Mapping",
    "Perm",
    "Store",
    "available_backends",
    "check_domid",
    "chosen_backend",
    "get_backend",
    "register",
]

_BUILTIN = {
    "memory": "vchansim.backends.memory:MemoryBackend",
    "shm": "vchansim.backends.shm:ShmBackend",
    "xen": "vchansim.backends.xen:XenBackend",
}
_registered: dict[str, type[Backend]] = {}

DEFAULT_BACKEND = "shm"


def register(name: str, cls: type[Backend]) -> None:
    """Make ``cls`` available as backend ``name`` (overrides built-ins and entry points)."""
    _registered[name] = cls


def _entry_point_targets() -> dict[str, str]:
    """The third-party backends the installed distributions declare (a metadata scan)."""
    from importlib.metadata import entry_points  # heavy: see the module docstring

    return {ep.name: ep.value for ep in entry_points(group="vchansim.backends")}


def available_backends() -> list[str]:
    """Names of every backend that can be asked for."""
    return sorted({*_BUILTIN, *_entry_point_targets(), *_registered})


def _load(target: str) -> type[Backend]:
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"backend target {target!r} is not a vchansim Backend class")
    return cls


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``."""
    if name in _registered:
        return _registered[name]
    target = _BUILTIN.get(name) or _entry_point_targets().get(name)
    if target is None:
        raise ConfigError(
            f"unknown vchansim backend {name!r}; available: {', '.join(available_backends())}"
        )
    return _load(target)


def chosen_backend(name: str | None = None) -> str:
    """``name``, else ``$VCHANSIM_BACKEND``, else ``shm``: the backend a caller gets."""
    return name or os.environ.get("VCHANSIM_BACKEND") or DEFAULT_BACKEND


def get_backend(name: str | None = None, **options: Any) -> Backend:
    """Instantiate backend ``name`` (default ``$VCHANSIM_BACKEND``, else ``shm``)."""
    return backend_class(chosen_backend(name))(**options)
