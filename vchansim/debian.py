"""Find the programs taken from Debian's Xen packages, and say how to get what is missing.

Xen's own ``vchan-socket-proxy`` is the reference libxenvchan program the emulator runs
unmodified, and every other program of Xen's tools must at least load under it.  They
ship in Debian's ``xen-utils-4.17`` and ``xen-utils-common``, which cannot be installed
here without the hypervisor's boot and service machinery, so ``tools/fetch-xen-tools``
downloads those packages and extracts only their compiled programs into the per-user
cache, next to the built C libraries.  This module finds them there and checks that the
loader can resolve their libraries, turning either failure into one error that names the
command or the Debian package to install.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .cbuild import cache_root
from .errors import VchanError

#: The Debian package the programs come from, and the command that fetches them.
PACKAGE = "xen-utils-4.17"
FETCH_COMMAND = "tools/fetch-xen-tools"
SOCKET_PROXY = "vchan-socket-proxy"

#: One line of ``ldd`` output for a library the loader cannot find.
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found$", re.MULTILINE)


class MissingProgramError(VchanError):
    """A program from Debian's Xen packages, or a library it needs, is not installed."""

    default_errno = errno.ENOENT


def tools_dir() -> Path:
    """Where ``tools/fetch-xen-tools`` puts the programs: ``<cache>/debian/xen-utils-4.17``."""
    return cache_root() / "debian" / PACKAGE


def debian_package(soname: str) -> str | None:
    """The Debian package that ships Xen library ``soname``, by Debian's naming rule.

    The 4.17-versioned libraries (libxenvchan, libxenctrl, ...) are all in
    ``libxenmisc4.17``; the others are named after their soname (``libxenstore.so.4`` is
    in ``libxenstore4``).  None for a library that is not Xen's.
    """
    stem, _, version = soname.partition(".so.")
    if not stem.startswith("libxen") or not version:
        return None
    return "libxenmisc4.17" if version == "4.17" else f"{stem}{version}"


def unresolved_libraries(program: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """The shared libraries ``program`` needs that the loader cannot find under ``env``."""
    result = subprocess.run(
        ["ldd", str(program)],
        env=dict(env if env is not None else os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    return _NOT_FOUND.findall(result.stdout)


def check_loadable(program: Path, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MissingProgramError` naming each library ``program`` lacks, and its
    package."""
    missing = unresolved_libraries(program, env)
    if not missing:
        return
    packages = sorted({debian_package(name) or f"the package with {name}" for name in missing})
    raise MissingProgramError(
        f"{program.name} cannot run: the loader finds no {', '.join(missing)} "
        f"(Debian/Ubuntu: apt-get install {' '.join(packages)})"
    )


def programs() -> list[str]:
    """The names of every program ``tools/fetch-xen-tools`` fetched (its ``programs``
    list), or MissingProgramError naming the command when it has not run."""
    listing = tools_dir() / "programs"
    try:
        return listing.read_text().split()
    except FileNotFoundError:
        raise MissingProgramError(
            f"Debian's Xen programs (packages {PACKAGE}, xen-utils-common) have not been "
            f"fetched into {listing.parent}: run {FETCH_COMMAND}"
        ) from None


def locate(program: str) -> Path:
    """The fetched Debian ``program``, checked to exist and to find its libraries."""
    path = tools_dir() / program
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingProgramError(
            f"Debian's {program} (package {PACKAGE}) has not been fetched into "
            f"{path.parent}: run {FETCH_COMMAND} (it downloads the package with "
            "apt-get download and extracts only the program; nothing is installed)"
        )
    check_loadable(path)
    return path


def socket_proxy() -> Path:
    """Debian's ``vchan-socket-proxy``, ready to run under ``vchansim exec``."""
    return locate(SOCKET_PROXY)
