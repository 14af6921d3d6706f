"""Qubes OS's libvchan-xen (and its test programs), built unmodified for the tests.

The sources are test inputs, never part of vchansim: ``$QUBES_SRC`` (a directory holding
checkouts named after their repositories, as ``tools/fetch-qubes DIR`` makes them), else
the pinned tarballs in ``$QUBES_TARBALLS`` or ``../shared/third-party/qubes`` beside
this checkout.  They are copied (or unpacked) into a scratch directory and built there
against Debian's Xen 4.17 headers and libraries, exactly as their own Makefiles say; the
tests then run the results under ``vchansim exec``, where the loader binds Debian's
libxenctrl, libxenevtchn and libxengnttab to vchansim's drop-ins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VCHAN_XEN = "qubes-core-vchan-xen"
#: How a test says where the sources would come from when there are none.
FETCH_HINT = (
    "no Qubes sources: run `tools/fetch-qubes DIR` and set QUBES_SRC=DIR "
    "(or QUBES_TARBALLS to a directory of the pinned tarballs)"
)


def _tarball_dir() -> Path:
    return Path(os.environ.get("QUBES_TARBALLS") or ROOT.parent / "shared/third-party/qubes")


def unpack(repo: str, scratch: Path) -> Path:
    """A private, writable copy of ``repo``'s sources under ``scratch``; skips the test
    (naming the command that fetches them) when none is available."""
    target = scratch / repo
    if target.exists():
        return target
    src = os.environ.get("QUBES_SRC")
    if src and (Path(src) / repo).is_dir():
        shutil.copytree(Path(src) / repo, target, ignore=shutil.ignore_patterns(".git"))
        return target
    tarballs = sorted(_tarball_dir().glob(f"{repo}-*.tar.gz"))
    if not tarballs:
        pytest.skip(FETCH_HINT)
    with tarfile.open(tarballs[-1]) as archive:
        archive.extractall(scratch, filter="data")
    return target


def make(directory: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """Run the sources' own ``make``; a failure fails the test with make's last lines."""
    result = subprocess.run(
        ["make", "-s", "-C", str(directory), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise AssertionError(f"building {directory} failed:\n{tail}")


def build_vchan_xen(scratch: Path) -> Path:
    """libvchan-xen and its test programs ``test/node`` and ``test/node-select``; the
    source directory (``vchan/`` holds the library, ``test/`` the programs)."""
    tree = unpack(VCHAN_XEN, scratch)
    if not (tree / "test/node-select").exists():
        make(tree / "vchan", "-f", "Makefile.linux")
        make(tree / "test")
    return tree
