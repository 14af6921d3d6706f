"""The C drop-in libraries as artefacts: how they build, what they export, how they refuse.

Nothing here needs a hub: these are the properties a user meets before any channel
exists -- the first build, the symbol versions the dynamic loader checks, and the one
clear line a program gets when it was started outside the emulator.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vchansim import cbuild
from vchansim.scenario.program import pipe_program

C_DIR = Path(__file__).parent / "c"
SYSTEM_LIBS = Path("/usr/lib/x86_64-linux-gnu")
NO_ENV_LINE = (
    "vchansim: no emulator environment (VCHANSIM_DOMID unset); "
    "run this program under `vchansim exec --domid N -- PROGRAM`"
)

pytestmark = [
    pytest.mark.cbuild,
    pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler"),
]
XEN_HEADERS = Path("/usr/include/libxenvchan.h").exists()
NO_HEADERS = "the C test programs need Xen's headers (libxen-dev; tools/install)"
needs_xen_headers = pytest.mark.skipif(not XEN_HEADERS, reason=NO_HEADERS)


def exported(library: Path) -> dict[str, str]:
    """Defined dynamic functions of ``library`` and their default versions."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", "--with-symbol-versions", library],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(re.findall(r" T (\w+)@@(\S+)$", out, re.MULTILINE))


def version_chain(library: Path) -> list[str]:
    """The version definitions of ``library`` with their parents, in order."""
    out = subprocess.run(["readelf", "-V", library], capture_output=True, text=True).stdout
    section = out.split("Version definition section", 1)[1].split("Version needs", 1)[0]
    return re.findall(r"(?:Name|Parent 1): (\S+)", section)[1:]


@pytest.mark.parametrize("name", cbuild.LIBRARIES)
def test_exports_match_xens_library(name: str) -> None:
    ours = cbuild.library_dir() / name
    theirs = SYSTEM_LIBS / name
    if not theirs.exists():
        pytest.skip(f"Xen's {name} is not installed to compare with")
    assert exported(ours) == exported(theirs)
    assert version_chain(ours) == version_chain(theirs)


def test_versions_are_xens() -> None:
    gnttab = exported(cbuild.library_dir() / "libxengnttab.so.1")
    evtchn = exported(cbuild.library_dir() / "libxenevtchn.so.1")
    assert gnttab["xengntshr_share_page_notify"] == "VERS_1.0"
    assert gnttab["xengnttab_grant_copy"] == "VERS_1.1"
    assert gnttab["xengnttab_fd"] == gnttab["xengntshr_fd"] == "VERS_1.2"
    assert evtchn["xenevtchn_pending"] == "VERS_1.0"
    assert evtchn["xenevtchn_restrict"] == "VERS_1.1"
    assert evtchn["xenevtchn_fdopen"] == "VERS_1.2"
    # nothing of the hub client leaks into the libraries' ABI
    assert all(sym.startswith(("xengnttab_", "xengntshr_")) for sym in gnttab)
    assert all(sym.startswith("xenevtchn_") for sym in evtchn)


def test_libxenvchan_binds_to_ours() -> None:
    env = {**os.environ, "LD_LIBRARY_PATH": str(cbuild.library_dir())}
    libxenvchan = SYSTEM_LIBS / "libxenvchan.so.4.17"
    if not libxenvchan.exists():
        pytest.skip("Debian's libxenvchan is not installed")
    out = subprocess.run(["ldd", libxenvchan], env=env, capture_output=True, text=True).stdout
    for name in ("libxengnttab.so.1", "libxenevtchn.so.1"):  # libxenvchan needs only these
        assert f"{name} => {cbuild.library_dir() / name}" in out


def test_cached_build_needs_no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("cc") or "cc")
    built = cbuild.library_dir()
    assert built.parent == tmp_path / "vchansim"
    assert sorted(p.name for p in built.iterdir()) == sorted(cbuild.LIBRARIES)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no make any more
    assert cbuild.library_dir() == built
    assert [p.name for p in (tmp_path / "vchansim").iterdir()] == [built.name]  # no debris


def test_missing_compiler_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(cbuild.BuildError, match=r"'no-such-cc' was not found.*apt-get install"):
        cbuild.library_dir()


def test_missing_header_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = tmp_path / "needs-xen.c"
    source.write_text("#include <xen-not-installed.h>\nint main(void) { return 0; }\n")
    with pytest.raises(cbuild.BuildError, match=r"<xen-not-installed\.h>.*libxen-dev"):
        cbuild.build_program(source)


def test_compile_error_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return undeclared_thing; }\n")
    with pytest.raises(cbuild.BuildError, match=r"(?s)compiling broken\.c failed.*undeclared_"):
        cbuild.build_program(source, libs=())


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def probe() -> Path:
    if not XEN_HEADERS:
        pytest.skip(NO_HEADERS)
    return cbuild.build_program(C_DIR / "clib-probe.c", libs=("xenevtchn", "xengnttab"))


@pytest.fixture
def empty_rundir() -> Iterator[Path]:
    """A private run directory where no hub runs."""
    path = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def c_env(rundir: Path | None, **settings: str) -> dict[str, str]:
    """Our libraries first on the library path, and only the emulator variables given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCHANSIM_", "XENSTORED"))}
    env["LD_LIBRARY_PATH"] = str(cbuild.library_dir())
    if rundir is not None:
        env["VCHANSIM_RUNDIR"] = str(rundir)
    return {**env, **settings}


def open_with(probe: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([probe, "open"], env=env, capture_output=True, text=True, timeout=10)


def test_no_domid_fails_with_one_clear_line(probe: Path, empty_rundir: Path) -> None:
    result = open_with(probe, c_env(empty_rundir))
    assert result.stdout.splitlines() == [
        "xenevtchn_open failed: ENOENT",
        "xengnttab_open failed: ENOENT",
    ]
    # at most once per library, whatever the program retries
    assert set(result.stderr.splitlines()) == {NO_ENV_LINE}


@pytest.mark.parametrize("domid", ["-1", "32752", "dom1", "1x"])
def test_bad_domid_is_refused(probe: Path, empty_rundir: Path, domid: str) -> None:
    result = open_with(probe, c_env(empty_rundir, VCHANSIM_DOMID=domid))
    assert "xenevtchn_open failed: EINVAL" in result.stdout
    assert f"VCHANSIM_DOMID={domid} is not a domain id (0..32751)" in result.stderr


def test_no_hub_is_named(probe: Path, empty_rundir: Path) -> None:
    result = open_with(probe, c_env(empty_rundir, VCHANSIM_DOMID="1"))
    assert "xenevtchn_open failed: ENOENT" in result.stdout
    assert f"vchansim: no hub at {empty_rundir}/hub (No such file or directory)" in result.stderr
    assert "vchansim exec --domid N" in result.stderr


def test_open_run_directory_is_refused(probe: Path, empty_rundir: Path) -> None:
    empty_rundir.chmod(0o755)
    result = open_with(probe, c_env(empty_rundir, VCHANSIM_DOMID="1"))
    assert "xenevtchn_open failed: EPERM" in result.stdout
    assert "has mode 0755: group and others must have no access" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_foreign_run_directory_is_refused(probe: Path, empty_rundir: Path) -> None:
    os.chown(empty_rundir, 65534, 65534)
    result = open_with(probe, c_env(empty_rundir, VCHANSIM_DOMID="1"))
    assert "xenevtchn_open failed: EPERM" in result.stdout
    assert "is owned by uid 65534, not by you" in result.stderr


@needs_xen_headers
def test_vchan_program_outside_emulator_fails_fast() -> None:
    program = pipe_program()
    env = c_env(None)
    for role in ("server", "client"):
        result = subprocess.run(
            [program, role, "2", "/local/domain/1/data/vchan/2/x", "--send", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines()[0] == NO_ENV_LINE
