"""``tools/fetch-qubes`` without a network: from the pinned tarballs, or failing in one line.

Cloning the pinned commits from GitHub needs the network, which a test cannot count on;
what is tested is everything around it.  An unreachable remote is made by pointing git's
``url.<base>.insteadOf`` for github.com at a directory that does not exist, which fails
the same ``git fetch`` the same way, at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from qubes import QREXEC, ROOT, VCHAN_XEN, _tarball_dir

FETCH = ROOT / "tools" / "fetch-qubes"
REPOS = (VCHAN_XEN, QREXEC)

needs_tarballs = pytest.mark.skipif(
    not any(_tarball_dir().glob(f"{VCHAN_XEN}-*.tar.gz")),
    reason=f"the pinned Qubes tarballs are not in {_tarball_dir()}",
)


def fetch(dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "QUBES_TARBALLS"}
    return subprocess.run(
        [FETCH, dest], env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def offline(**env: str) -> dict[str, str]:
    """Settings under which every github.com URL is unreachable."""
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "url.file:///nonexistent-remote/.insteadOf",
        "GIT_CONFIG_VALUE_0": "https://github.com/",
        **env,
    }


@needs_tarballs
def test_the_pinned_tarballs_unpack_and_a_second_run_leaves_them(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    first = fetch(dest, QUBES_TARBALLS=str(_tarball_dir()))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(REPOS)  # no scratch left
    assert (dest / VCHAN_XEN / "vchan" / "Makefile.linux").is_file()
    assert first.stdout.splitlines()[-1] == (
        f"now: QUBES_SRC={dest} python3 -m pytest -q tests/test_qubes_vchan.py"
    )
    again = fetch(dest, **offline(QUBES_TARBALLS=str(_tarball_dir())))
    assert again.returncode == 0, again.stderr
    assert f"{dest}/{QREXEC} exists: left as it is" in again.stdout.splitlines()


@needs_tarballs
def test_a_checkout_of_ones_own_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    (dest / VCHAN_XEN).mkdir(parents=True)
    (dest / VCHAN_XEN / "mine").write_text("my branch\n")
    done = fetch(dest, QUBES_TARBALLS=str(_tarball_dir()))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (dest / VCHAN_XEN).iterdir()] == ["mine"]
    assert (dest / QREXEC).is_dir()


def test_a_missing_tarball_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "tarballs"
    empty.mkdir()
    dest = tmp_path / "src"
    result = fetch(dest, QUBES_TARBALLS=str(empty))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"fetch-qubes: no {empty}/{VCHAN_XEN}-a1337c28.tar.gz: QUBES_TARBALLS must hold the "
        "pinned tarballs (unset it to clone from GitHub instead)"
    ]
    assert list(dest.iterdir()) == []


def test_a_corrupt_tarball_is_one_line(tmp_path: Path) -> None:
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    (tarballs / f"{VCHAN_XEN}-a1337c28.tar.gz").write_bytes(b"not a tarball")
    dest = tmp_path / "src"
    result = fetch(dest, QUBES_TARBALLS=str(tarballs))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"fetch-qubes: cannot unpack {tarballs}/{VCHAN_XEN}-a1337c28.tar.gz: ")
    assert list(dest.iterdir()) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_unreachable_github_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    result = fetch(dest, **offline())
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "fetch-qubes: cannot fetch a1337c282ffefcfc13a570683c57bc04813038db from "
        f"https://github.com/QubesOS/{VCHAN_XEN} ("
    )
    assert line.endswith("); offline, set QUBES_TARBALLS to a directory of the pinned tarballs")
    assert list(dest.iterdir()) == []  # so the next run tries again, not "exists"
