"""Running C programs the wrong way: each mistake gets one clear line, never a hang.

Three kinds of mistake a user makes: starting a libxenvchan program outside
``vchansim exec``; lacking a Debian piece (the fetched ``vchan-socket-proxy``, or the Xen
libraries a program loads or links); and running a program that needs a function the
emulator does not provide.  Each must end promptly with a message that names what is
missing and how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.clibs import NEEDS_XENCTRL_BUILD, xc_probe

from vchansim import cbuild, debian
from vchansim.backends.shm import ShmBackend, emulator_env

ROOT = Path(__file__).resolve().parents[1]
FETCH = ROOT / "tools" / "fetch-xen-tools"
DEADLINE = 10.0
NO_ENV_LINE = (
    "vchansim: no emulator environment (VCHANSIM_DOMID unset); "
    "run this program under `vchansim exec --domid N -- PROGRAM`"
)

pytestmark = [pytest.mark.cbuild, NEEDS_XENCTRL_BUILD]


@pytest.fixture(scope="module")
def probe() -> Path:
    return xc_probe()


def plain_env(**settings: str) -> dict[str, str]:
    """The environment of a shell outside the emulator, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCHANSIM_", "XENSTORED"))}
    return {**env, **settings}


def run(command: list[str | Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=DEADLINE)


# --------------------------------------------------------------------------- outside exec


def test_xenctrl_outside_the_emulator(probe: Path) -> None:
    result = run([probe, "open"], plain_env(LD_LIBRARY_PATH=str(cbuild.library_dir())))
    assert result.stdout.splitlines() == ["open failed ENOENT"]
    assert result.stderr.splitlines() == [NO_ENV_LINE]


@pytest.mark.parametrize("mode", ["server", "client"])
def test_socket_proxy_outside_the_emulator(mode: str) -> None:
    try:
        proxy = debian.socket_proxy()
    except debian.MissingProgramError as exc:
        pytest.skip(str(exc))
    # "-": the proxy's own stdin/stdout, so a client connects to the vchan at once
    args = [proxy, f"--mode={mode}", "1", "/local/domain/1/data/vchan/0/x", "-"]
    with_ours = run(args, plain_env(LD_LIBRARY_PATH=str(cbuild.library_dir())))
    assert with_ours.returncode == 1
    assert with_ours.stderr.splitlines()[0] == NO_ENV_LINE
    # Debian's own libraries fail just as promptly, in their own words
    with_debians = run(args, plain_env())
    assert with_debians.returncode == 1
    assert "No such file or directory" in with_debians.stderr


# --------------------------------------------------------------------------- Debian pieces


def test_unfetched_socket_proxy_names_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(debian.MissingProgramError) as caught:
        debian.socket_proxy()
    message = str(caught.value)
    assert "vchan-socket-proxy (package xen-utils-4.17) has not been fetched" in message
    assert f"{tmp_path}/vchansim/debian/xen-utils-4.17" in message
    assert "run tools/fetch-xen-tools" in message


def apt_without_sources(tmp_path: Path) -> Path:
    """An apt configuration with no package source and an empty package list."""
    state = tmp_path / "apt-state"
    (state / "lists" / "partial").mkdir(parents=True)
    (tmp_path / "apt-cache" / "archives" / "partial").mkdir(parents=True)
    (tmp_path / "sources.d").mkdir()
    config = tmp_path / "apt.conf"
    config.write_text(
        f'Dir::State "{state}";\n'
        f'Dir::State::status "{state}/status";\n'
        f'Dir::Cache "{tmp_path}/apt-cache";\n'
        'Dir::Etc::sourcelist "/dev/null";\n'
        f'Dir::Etc::sourceparts "{tmp_path}/sources.d";\n'
    )
    (state / "status").write_text("")
    return config


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get")
def test_failed_download_is_explained(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = plain_env(XDG_CACHE_HOME=str(cache), APT_CONFIG=str(apt_without_sources(tmp_path)))
    result = run([FETCH], env)
    assert result.returncode == 1
    assert "could not download Debian's xen-utils-4.17 xen-utils-common" in result.stderr
    assert "apt-get update" in result.stderr
    assert list((cache / "vchansim" / "debian").iterdir()) == []  # no debris


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get")
def test_fetch_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = plain_env(XDG_CACHE_HOME=str(tmp_path))
    first = subprocess.run([FETCH], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "programs, vchan-socket-proxy among them (xen-utils-4.17 4.17." in first.stdout
    again = run([FETCH], env)
    assert again.returncode == 0
    assert "Xen's programs already fetched" in again.stdout
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    located = debian.socket_proxy()
    assert located == tmp_path / "vchansim/debian/xen-utils-4.17/vchan-socket-proxy"
    names = debian.programs()
    assert {"vchan-socket-proxy", "xl", "lsevtchn", "xen-detect", "xenhypfs"} <= set(names)
    # the programs and the two lists, nothing else (no scripts, no debris)
    assert sorted(p.name for p in located.parent.iterdir()) == sorted(
        [*names, "programs", "version"]
    )


def test_missing_link_library_names_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = tmp_path / "uses-missing.c"
    source.write_text("int main(void) { return 0; }\n")
    with pytest.raises(cbuild.BuildError) as caught:
        cbuild.build_program(source, libs=("xenvsgone",))
    assert str(caught.value) == (
        "compiling uses-missing.c failed: library -lxenvsgone is not installed "
        "(Debian/Ubuntu: apt-get install libxen-dev libxenmisc4.17)"
    )


def program_missing_its_library(tmp_path: Path, soname: str) -> Path:
    """A real executable whose shared library ``soname`` has been deleted since the link."""
    cc = os.environ.get("CC") or "cc"
    (tmp_path / "lib.c").write_text("int vs_gone(void) { return 0; }\n")
    (tmp_path / "main.c").write_text("int vs_gone(void);\nint main(void) { return vs_gone(); }\n")
    library = tmp_path / soname
    subprocess.run(
        [cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", library, tmp_path / "lib.c"],
        check=True,
    )
    program = tmp_path / "needs-it"
    subprocess.run(
        [cc, "-o", program, tmp_path / "main.c", f"-L{tmp_path}", f"-l:{soname}"], check=True
    )
    library.unlink()
    return program


def test_missing_run_library_names_the_package(tmp_path: Path) -> None:
    program = program_missing_its_library(tmp_path, "libxenvsgone.so.4.17")
    with pytest.raises(debian.MissingProgramError) as caught:
        debian.check_loadable(program)
    assert str(caught.value) == (
        "needs-it cannot run: the loader finds no libxenvsgone.so.4.17 "
        "(Debian/Ubuntu: apt-get install libxenmisc4.17)"
    )
    result = run([program], plain_env())  # and the loader itself stops it at once
    assert result.returncode == 127
    assert "libxenvsgone.so.4.17: cannot open shared object file" in result.stderr


@pytest.mark.parametrize(
    ("soname", "package"),
    [
        ("libxenvchan.so.4.17", "libxenmisc4.17"),
        ("libxenctrl.so.4.17", "libxenmisc4.17"),
        ("libxenstore.so.4", "libxenstore4"),
        ("libxentoollog.so.1", "libxentoollog1"),
        ("libc.so.6", None),
    ],
)
def test_debian_package_of_a_xen_library(soname: str, package: str | None) -> None:
    assert debian.debian_package(soname) == package


# --------------------------------------------------------------------------- unprovided calls


def test_unemulated_xenctrl_function_ends_the_program_clearly(probe: Path, hub_dir: Path) -> None:
    result = run([probe, "unemulated"], emulator_env(ShmBackend(1, rundir=hub_dir)))
    assert result.returncode == 127  # the loader's status for a missing symbol
    assert result.stdout == ""  # xc_domain_pause never returned
    assert result.stderr.splitlines() == [
        "vchansim: xc_domain_pause is not emulated: vchansim's libxenctrl.so.4.17 provides "
        "only xc_interface_open/close, xc_domain_getinfo, xc_evtchn_status and the "
        "xc_evtchn_* compatibility calls; run this program on Xen"
    ]


def test_grant_copy_is_refused(probe: Path, hub_dir: Path) -> None:
    result = run([probe, "grant-copy"], emulator_env(ShmBackend(1, rundir=hub_dir)))
    assert result.stdout.splitlines() == ["grant-copy -1 EOPNOTSUPP"]
