"""The run directory: where it is, and that a foreign or open one is refused."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vchansim.backends.shm import ShmBackend
from vchansim.errors import ConfigError
from vchansim.rundir import SUN_PATH_MAX, default_rundir, prepare_rundir

NOBODY = 65534


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCHANSIM_RUNDIR", "/tmp/explicit")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_rundir() == Path("/tmp/explicit")
    monkeypatch.delenv("VCHANSIM_RUNDIR")
    assert default_rundir() == Path("/run/user/7/vchansim")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_rundir() == Path(f"/tmp/vchansim-{os.geteuid()}")


def test_created_private_with_well_known_paths(scratch: Path) -> None:
    rundir = prepare_rundir(scratch / "a" / "run")
    info = os.lstat(rundir.path)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    assert rundir.hub == scratch / "a" / "run" / "hub"
    assert rundir.lock.name == "hub.lock" and rundir.log.name == "hub.log"
    assert rundir.xs_socket(3) == rundir.path / "xs" / "3"


def test_environment_is_used(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCHANSIM_RUNDIR", str(scratch / "env"))
    assert prepare_rundir().path == scratch / "env"
    assert (scratch / "env").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_directory_of_another_user_is_refused(scratch: Path) -> None:
    os.chown(scratch, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as info:
        prepare_rundir(scratch)
    message = str(info.value)
    assert str(scratch) in message and f"uid {NOBODY}" in message and "0700" in message
    assert info.value.errno == errno.EPERM
    with pytest.raises(ConfigError, match="owned by"):
        ShmBackend(1, rundir=scratch)


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777])
def test_directory_open_to_others_is_refused(scratch: Path, mode: int) -> None:
    os.chmod(scratch, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}") as info:
        prepare_rundir(scratch)
    assert str(scratch) in str(info.value) and "owner uid" in str(info.value)


def test_a_prepared_directory_removed_since_is_made_again(scratch: Path) -> None:
    prepared = prepare_rundir(scratch / "run")
    shutil.rmtree(prepared.path)
    assert prepare_rundir(prepared) == prepared
    assert stat.S_IMODE(os.lstat(prepared.path).st_mode) == 0o700


def test_a_prepared_directory_opened_to_others_since_is_refused(scratch: Path) -> None:
    prepared = prepare_rundir(scratch / "run")
    os.chmod(prepared.path, 0o755)
    with pytest.raises(ConfigError, match="mode 0755"):
        prepare_rundir(prepared)


def test_symlink_is_refused(scratch: Path) -> None:
    target = scratch / "real"
    target.mkdir(mode=0o700)
    link = scratch / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="not a directory"):
        prepare_rundir(link)


def test_socket_path_too_long_is_refused(scratch: Path) -> None:
    deep = scratch / ("d" * (SUN_PATH_MAX - len(str(scratch))))
    with pytest.raises(ConfigError, match="AF_UNIX allows at most 107") as info:
        prepare_rundir(deep)
    assert info.value.errno == errno.ENAMETOOLONG
    assert str(deep) in str(info.value)
    assert not deep.exists()  # refused before anything was created


def test_uncreatable_directory_is_named(scratch: Path) -> None:
    blocker = scratch / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create run directory") as info:
        prepare_rundir(blocker / "run")
    assert str(blocker / "run") in str(info.value)


@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("hub.log", os.mkdir, "a regular file"),
        ("hub.lock", os.mkdir, "a regular file"),
        ("xs", lambda path: Path(path).touch(), "a directory"),
    ],
)
def test_an_entry_of_the_wrong_kind_is_named_before_a_hub_starts(
    scratch: Path, name: str, make, kind: str
) -> None:
    """A directory where the hub's log goes, or a file where its xenstore sockets go,
    would make the hub fail far from the cause (or a raw IsADirectoryError)."""
    rundir = prepare_rundir(scratch / "run")
    make(rundir.path / name)
    backend = ShmBackend(1, rundir=rundir.path)
    for open_handle in (backend.store, backend.grants):
        with pytest.raises(ConfigError) as info:
            open_handle()
        assert str(info.value) == (
            f"run directory {str(rundir.path)!r}: {name!r} is there but is not {kind}; remove it"
        )
    assert not rundir.hub.exists()  # no hub was started
