"""Build the C drop-in libraries (and small C programs) on first need, and cache them.

Unmodified programs built on Xen's libxenvchan run on the emulator when small libraries
of ours stand in for Xen's ``libxengnttab.so.1``, ``libxenevtchn.so.1`` and
``libxenctrl.so.4.17`` (see docs/c-programs.md), with all-stub ones for the hypervisor
interfaces the emulator has not (``libxencall.so.1`` ...), so that every program of
Xen's loads and fails only at a call it cannot make.  They are shipped as C sources, not
binaries, because they must match the user's libc and Xen packages; the first program
that needs them compiles them with the system C compiler (well under a second) into a
per-user cache directory named after a hash of the sources, so an upgrade of vchansim
rebuilds and an unchanged one never does.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import VchanError

#: What the libraries are called; the dynamic loader looks for exactly these names.
LIBRARIES = (
    "libxengnttab.so.1",
    "libxenevtchn.so.1",
    "libxenctrl.so.4.17",
    "libxencall.so.1",
    "libxenforeignmemory.so.1",
    "libxendevicemodel.so.1",
    "libxenhypfs.so.1",
)
#: Files of the C sources that decide the build (and so the cache key).
_SOURCE_PATTERNS = ("*.c", "*.h", "*.map", "Makefile")
#: How gcc and clang report an #include they cannot find.
_MISSING_HEADER = re.compile(r"fatal error: '?([\w./+-]+\.h)'?[: ]")
#: How GNU ld reports a ``-lNAME`` it cannot find.
_MISSING_LIBRARY = re.compile(r"cannot find -l([\w.+-]+)")


class BuildError(VchanError):
    """The C libraries or a C program could not be built (missing tool, header, or error)."""


def source_dir() -> Path:
    """The directory of the C sources, shipped inside the package (``vchansim/csrc``)."""
    packaged = Path(__file__).resolve().parent / "csrc"
    if not (packaged / "Makefile").is_file():
        raise BuildError(
            f"the C sources of vchansim's drop-in libraries are missing from {packaged}; "
            "reinstall vchansim"
        )
    return packaged


def program_source(name: str) -> Path:
    """The source of a C program shipped with vchansim (``csrc/programs``): vchan-pipe,
    the default program of scenario endpoints, and vchan-bench, the benchmark's C
    endpoint.  Build it with :func:`build_program`."""
    path = source_dir() / "programs" / name
    if not path.is_file():
        raise BuildError(f"the C program {path} is missing; reinstall vchansim")
    return path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/vchansim``, else ``~/.cache/vchansim``: per user, never shared."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vchansim"


def _compiler() -> list[str]:
    """The C compiler command ($CC, as make uses it, else ``cc``), checked to exist."""
    command = shlex.split(os.environ.get("CC") or "cc")
    if not command or shutil.which(command[0]) is None:
        shown = command[0] if command else "''"
        raise BuildError(
            f"building vchansim's C libraries needs a C compiler, and {shown!r} was not found: "
            "install one (Debian/Ubuntu: apt-get install gcc) or set CC"
        )
    return command


def _require_make() -> str:
    make = shutil.which("make")
    if make is None:
        raise BuildError(
            "building vchansim's C libraries needs make, which was not found "
            "(Debian/Ubuntu: apt-get install make)"
        )
    return make


def _digest(files: Iterable[Path], *extra: str) -> str:
    """A short hash of the files' names and contents and of ``extra`` strings."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        h.update(item.encode() + b"\0")
    return h.hexdigest()[:16]


def _publish(build: Callable[[Path], None], final: Path) -> Path:
    """Run ``build(tmpdir)`` and move the result to ``final`` atomically.

    Concurrent first uses (parallel tests, two programs starting together) each build
    privately; the first rename wins and the others discard their copy, so nobody ever
    sees a half-written library.
    """
    root = final.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(
            f"cannot create the build cache {root}: {exc.strerror}; set XDG_CACHE_HOME "
            "to a writable directory"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _library_hint(name: str) -> str:
    """Which package brings the link-time ``libNAME.so`` that ld could not find."""
    if name.startswith("xen"):
        # Debian puts Xen's unversioned .so links in libxen-dev, the libraries themselves
        # in libxenmisc4.17 (vchan, ctrl, ...) and small libxen*1 packages.
        package = "libxen-dev libxenmisc4.17"
    else:
        package = f"the -dev package that provides lib{name}.so"
    return f"library -l{name} is not installed (Debian/Ubuntu: apt-get install {package})"


def _run(command: Sequence[str], what: str) -> None:
    """Run a build command; on failure raise BuildError with the cause the tools gave."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    output = (result.stderr or result.stdout).strip()
    missing = _MISSING_HEADER.search(output)
    if missing:
        raise BuildError(
            f"{what} failed: header <{missing.group(1)}> is not installed "
            "(Debian/Ubuntu: apt-get install libxen-dev)"
        )
    library = _MISSING_LIBRARY.search(output)
    if library:
        raise BuildError(f"{what} failed: {_library_hint(library.group(1))}")
    tail = "\n".join(output.splitlines()[-15:])
    raise BuildError(f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n{tail}")


def library_dir() -> Path:
    """The directory holding the built drop-in libraries, building them if needed.

    Put it first on ``LD_LIBRARY_PATH`` and Xen's libxenvchan loads them instead of the
    real grant-table and event-channel libraries.
    """
    src = source_dir()
    compiler = _compiler()
    sources = [p for pattern in _SOURCE_PATTERNS for p in src.glob(pattern)]
    final = cache_root() / f"lib-{_digest(sources, *compiler)}"
    if all((final / name).is_file() for name in LIBRARIES):
        return final
    make = _require_make()

    def build(tmp: Path) -> None:
        cc = f"CC={shlex.join(compiler)}"
        _run([make, "-s", "-C", str(src), f"BUILD={tmp}", cc], "building the C libraries")

    return _publish(build, final)


def build_program(source: Path, *, libs: Sequence[str] = ("xenvchan",)) -> Path:
    """Compile the one-file C program ``source`` against ``libs``; return the executable.

    Used for the shipped programs (:func:`program_source`) and the test probes: they link
    against Xen's real libxenvchan, whose headers come with Debian's libxen-dev.
    """
    compiler = _compiler()
    flags = [f"-l{lib}" for lib in libs]
    final = cache_root() / f"prog-{_digest([source], *compiler, *flags)}"
    executable = final / source.stem
    if executable.is_file():
        return executable

    def build(tmp: Path) -> None:
        command = [*compiler, "-O2", "-Wall", "-o", str(tmp / source.stem), str(source), *flags]
        _run(command, f"compiling {source.name}")

    _publish(build, final)
    return executable
