"""The package as a user gets it: an sdist and a wheel, installed into fresh virtual
environments, with and without a C compiler.

Without a compiler the install must still succeed and run on the Python core: a vchan
pair moves data, a built-in scenario passes, the library lists its scenarios.  With one,
the wheel carries the C accelerator and uses it.  Both carry the licence and the
scenario library.  (About half a minute: each venv installs the dependencies from the
package index pip is configured with.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import docsamples

from vchansim import __version__
from vchansim.rundir import RUNDIR_ENV, RunDir

pytestmark = pytest.mark.slow  # builds an sdist and a wheel and installs them in venvs

ROOT = Path(__file__).resolve().parents[1]
#: Bound on building or installing (the dependencies come from the package index).
INSTALL_DEADLINE = 600.0
#: Bound on one command of the installed package.
RUN_DEADLINE = 120.0


PAIR = textwrap.dedent(
    """
    from vchansim import Vchan, get_backend

    server = Vchan.server(get_backend("shm", domid=1), 0, "data/vchan/0/7", read_min=65536)
    client = Vchan.client(get_backend("shm", domid=0), 1, "/local/domain/1/data/vchan/0/7")
    client.write(b"hello from a fresh venv")
    print(server.read(23).decode())
    client.close()
    server.close()
    """
)


def _run(command: list[str], *, cwd: Path, env: dict[str, str], deadline: float) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=deadline
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """Our environment without what would make the venv import this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VCHANSIM_PURE")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tracked tree, so that building and installing leave the checkout be."""
    copy = tmp_path_factory.mktemp("tree") / "vchansim"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source, target = ROOT / name.decode(), copy / name.decode()
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return copy


@pytest.fixture(scope="module")
def dists(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sdist built from the copy of the tree."""
    out = tmp_path_factory.mktemp("dist")
    code = "import sys; from setuptools import build_meta as b; b.build_sdist(sys.argv[1])"
    _run([sys.executable, "-c", code, str(out)], cwd=tree, env=_clean_env(),
         deadline=INSTALL_DEADLINE)
    yield out


def _sdist(dists: Path) -> Path:
    (found,) = dists.glob("vchansim-*.tar.gz")
    return found


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=RUN_DEADLINE)
    return where / "bin"


def test_the_sdist_carries_the_licence_the_python_core_and_the_library(dists: Path) -> None:
    with tarfile.open(_sdist(dists)) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in (
        "LICENSE",
        "vchansim/pycore.py",
        "vchansim/_fastpath.c",
        "vchansim/scenarios/kill-client.toml",
    ):
        assert needed in names


def test_without_a_compiler_the_sdist_installs_and_runs_on_the_python_core(
    dists: Path, tmp_path: Path, rundir: RunDir
) -> None:
    bin_dir = _venv(tmp_path / "venv")
    # CC=false: every compile fails, as on a machine without one.
    env = _clean_env(CC="false", **{RUNDIR_ENV: str(rundir.path)})
    pip = [str(bin_dir / "pip"), "install", "--quiet", str(_sdist(dists))]
    _run(pip, cwd=tmp_path, env=env, deadline=INSTALL_DEADLINE)
    assert not list((tmp_path / "venv").glob("lib/python*/site-packages/vchansim/_fastpath*.so"))
    cli = str(bin_dir / "vchansim")
    version = _run([cli, "--version"], cwd=tmp_path, env=env, deadline=RUN_DEADLINE)
    assert version.strip() == f"vchansim {__version__} (ring core: python)"
    python = str(bin_dir / "python")
    said = _run([python, "-c", PAIR], cwd=tmp_path, env=env, deadline=RUN_DEADLINE)
    assert said.strip() == "hello from a fresh venv"
    listing = _run([cli, "scenarios", "list"], cwd=tmp_path, env=env, deadline=RUN_DEADLINE)
    assert "kill-client" in listing.split()
    run = [cli, "run", "--no-progress", "index-wrap"]
    report = _run(run, cwd=tmp_path, env=env, deadline=RUN_DEADLINE)
    assert "1 passed" in report


@pytest.mark.skipif(shutil.which(os.environ.get("CC") or "cc") is None, reason="needs cc")
def test_with_a_compiler_the_wheel_carries_and_uses_the_accelerator(
    dists: Path, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels),
             str(_sdist(dists))]
    _run(build, cwd=tmp_path, env=_clean_env(), deadline=INSTALL_DEADLINE)
    (wheel,) = wheels.glob("vchansim-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.startswith("vchansim/_fastpath") and n.endswith(".so") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE")
               for n in names)
    assert "vchansim/scenarios/index-wrap.toml" in names
    assert {"vchansim/py.typed", "vchansim/_fastpath.pyi"} <= set(names)  # typed, C too
    bin_dir = _venv(tmp_path / "venv")
    install = [str(bin_dir / "pip"), "install", "--quiet", str(wheel)]
    _run(install, cwd=tmp_path, env=_clean_env(), deadline=INSTALL_DEADLINE)
    version = _run([str(bin_dir / "vchansim"), "--version"], cwd=tmp_path, env=_clean_env(),
                   deadline=RUN_DEADLINE)
    assert version.strip() == f"vchansim {__version__} (ring core: c)"


def _path_without(where: Path, *missing: str) -> str:
    """A PATH like ours in which the programs ``missing`` (name prefixes) do not exist."""
    where.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else ():
            target = where / program.name
            if not program.name.startswith(missing) and not os.path.lexists(target):
                target.symlink_to(program)
    return str(where)


def test_install_user_works_without_apt_naming_what_it_skipped(
    tree: Path, tmp_path: Path
) -> None:
    bin_dir = _venv(tmp_path / "venv")
    path = os.pathsep.join([str(bin_dir), _path_without(tmp_path / "bin", "apt", "dpkg")])
    env = _clean_env(PATH=path, XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    done = subprocess.run([str(tree / "tools" / "install"), "--user"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=INSTALL_DEADLINE)
    assert done.returncode == 0, done.stderr
    skipped = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert skipped == [
        AnyStartingWith("tools/install: --user: skipped the system packages gcc "),
        "tools/install: --user: skipped Debian's Xen programs: no apt-get/dpkg-deb here",
    ]
    version = _run([str(bin_dir / "vchansim"), "--version"], cwd=tmp_path, env=env,
                   deadline=RUN_DEADLINE)
    assert version.startswith(f"vchansim {__version__} ")


class AnyStartingWith(str):
    """Equal to any string that starts with it (for one line of a list)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__


# -- a user's project on the installed plugin ------------------------------------------------

#: How the user's project enables the plugin besides its entry point (both must work).
ENABLE_BY_CONFTEST = 'pytest_plugins = ["vchansim.pytest_plugin"]\n'
ENABLE_BY_OPTION = ("-p", "vchansim.pytest_plugin")


@pytest.fixture(scope="module")
def user_venv(dists: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the sdist (no compiler) and pytest, nothing else: a user's."""
    where = tmp_path_factory.mktemp("user")
    bin_dir = _venv(where / "venv")
    pip = [str(bin_dir / "pip"), "install", "--quiet", str(_sdist(dists)), "pytest"]
    _run(pip, cwd=where, env=_clean_env(CC="false"), deadline=INSTALL_DEADLINE)
    return bin_dir


def _user_project(where: Path, *, fixed: bool, conftest: str = "") -> Path:
    """docs/pytest.md's sample project (its relay as first written, or fixed)."""
    for name, text in docsamples.project(docsamples.ROOT / "docs" / "pytest.md",
                                         fixed=fixed).items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    (where / "conftest.py").write_text(conftest)  # the project root on sys.path
    return where


def _user_pytest(bin_dir: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "python"), "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project, env=_clean_env(), capture_output=True, text=True, timeout=INSTALL_DEADLINE,
    )


@pytest.mark.parametrize("enable", ["conftest", "option"])
def test_a_user_project_tests_its_relay_under_every_fault_as_docs_pytest_md_says(
    user_venv: Path, tmp_path: Path, enable: str
) -> None:
    conftest = ENABLE_BY_CONFTEST if enable == "conftest" else ""
    project = _user_project(tmp_path, fixed=True, conftest=conftest)
    args = ENABLE_BY_OPTION if enable == "option" else ()
    done = _user_pytest(user_venv, project, "-v", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already registered" not in done.stdout + done.stderr
    for test in ("test_a_dead_sink_closes_the_source", "test_a_frozen_sink_loses_nothing",
                 "test_notifications_gone_wrong_lose_nothing[spurious]",
                 "test_a_hostile_source_is_cut_off",
                 "test_running_out_of_event_ports_leaves_nothing_behind"):
        assert f"::{test} PASSED" in done.stdout


def test_the_first_relay_fails_as_docs_pytest_md_shows(user_venv: Path, tmp_path: Path) -> None:
    project = _user_project(tmp_path, fixed=False)
    done = _user_pytest(user_venv, project, "-q", "-rfE")
    assert done.returncode == 1, done.stdout + done.stderr
    (shown,) = [s.body for s in docsamples.samples(docsamples.ROOT / "docs" / "pytest.md")
                if s.language == "text" and s.body.startswith("FAILED")]
    summary = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert sorted(line.split(" - ")[0] for line in summary) == sorted(
        line.split(" - ")[0] for line in shown.splitlines()
    )
    assert "the test ran past its deadline of 10 s" in done.stdout
    assert "vchansim resources left behind by this test (shm backend)" in done.stdout
