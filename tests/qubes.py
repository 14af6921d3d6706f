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

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
VCHAN_XEN, QREXEC = "qubes-core-vchan-xen", "qubes-core-qrexec"
#: Bytes a bulk transfer moves, and how long a program may take on a loaded 2-core box.
SIZE = 8 << 20
DEADLINE = 120.0
#: How much of a program's stdout a test can read back as text.
_KEPT_OUTPUT = 1 << 16
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


def stage(scratch: Path) -> Path:
    """Where libvchan-xen is installed (``lib/``, ``include/``, ``lib/pkgconfig/``)."""
    return scratch / "stage"


def build_vchan_xen(scratch: Path) -> Path:
    """libvchan-xen, installed under :func:`stage`, and its test programs ``test/node``
    and ``test/node-select``; its source directory."""
    tree = unpack(VCHAN_XEN, scratch)
    if not (tree / "test/node-select").exists():
        where = stage(scratch)
        dirs = (f"PREFIX={where}", f"LIBDIR={where}/lib", f"INCLUDEDIR={where}/include")
        make(tree / "vchan", "-f", "Makefile.linux", *dirs, "all", "install")
        make(tree / "test")
    return tree


def build_qrexec(scratch: Path) -> Path:
    """qrexec's libqrexec-utils, daemon (``qrexec-daemon``, ``qrexec-client``) and agent
    (``qrexec-agent``, ``qrexec-client-vm``) for the Xen backend, over the libvchan-xen
    of :func:`build_vchan_xen`; its source directory."""
    build_vchan_xen(scratch)
    tree = unpack(QREXEC, scratch)
    if not (tree / "agent/qrexec-client-vm").exists():
        env = {"PKG_CONFIG_PATH": str(stage(scratch) / "lib/pkgconfig")}
        make(tree / "libqrexec", "BACKEND_VMM=xen", env=env)
        make(tree / "daemon", "BACKEND_VMM=xen", env=env)
        make(tree / "agent", "BACKEND_VMM=xen", "qrexec-agent", "qrexec-client-vm", env=env)
    return tree


def library_dirs(tree: Path) -> list[Path]:
    """The built shared libraries' directories for a program from ``tree``."""
    scratch = tree.parent
    return [stage(scratch) / "lib", scratch / QREXEC / "libqrexec"]


class Running:
    """A program started by ``run_as``, its stdout and stderr drained by threads."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc, self.out = proc, Drain(proc.stdout, keep=_KEPT_OUTPUT)
        self.err = Drain(proc.stderr, keep=sys.maxsize)

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def finish(self) -> int:
        """Wait for the program (bounded) and its output; its exit status."""
        try:
            status = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.proc.args!r} did not finish:\n{self.tail()}") from None
        self.err.join(DEADLINE)
        self.out.join(DEADLINE)
        return status

    def tail(self) -> str:
        return self.err.text.decode(errors="replace")[-400:]


def run_as(
    hub_dir: Path,
    domid: int,
    argv: Sequence[str | Path],
    tree: Path,
    *,
    stdin: int | IO[bytes] = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> Running:
    """``vchansim exec --domid DOMID -- ARGV`` on ``hub_dir``'s hub, with the Qubes
    libraries built from ``tree``'s scratch directory on the loader's path."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VCHANSIM_", "XENSTORED"))}
    full["VCHANSIM_RUNDIR"] = str(hub_dir)
    full["LD_LIBRARY_PATH"] = os.pathsep.join(str(d) for d in library_dirs(tree))
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH")) if p)
    full.update(env or {})
    command = [sys.executable, "-m", "vchansim", "exec", "--domid", str(domid), "--"]
    return Running(
        subprocess.Popen(
            [*command, *map(str, argv)],
            env=full,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )


class Drain(threading.Thread):
    """Reads a program's output (stdout or stderr) to its end, hashing it as it comes and
    keeping its first ``keep`` bytes as ``text``."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.keep = stream, keep
        self.digest, self.count, self.text = hashlib.sha256(), 0, b""
        self.arrived = threading.Event()
        self.start()

    def run(self) -> None:
        while chunk := self.stream.read1(1 << 16):  # type: ignore[attr-defined]
            self.digest.update(chunk)
            self.count += len(chunk)
            if len(self.text) < self.keep:
                self.text += chunk[: self.keep - len(self.text)]
            if self.count >= SIZE:
                self.arrived.set()
        self.arrived.set()
