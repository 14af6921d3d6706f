"""The run directory: where one emulated machine's hub, lock, log and xenstore sockets live.

Every process that should see the same emulated Xen (the same grant tables, event ports
and XenStore) must agree on one directory, so it is resolved the same way everywhere:
``$VCHANSIM_RUNDIR``, else ``$XDG_RUNTIME_DIR/vchansim``, else ``/tmp/vchansim-<uid>``.

The hub hands out memory and doorbells to whoever can reach its socket, so the directory
is the security boundary: it must be ours and closed to everybody else (0700).  A
directory someone else owns, or one others can enter, is refused rather than repaired --
it may be an attacker's trap, or another user's live run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import ConfigError
from .xen import DOMID_MAX

RUNDIR_ENV = "VCHANSIM_RUNDIR"
#: ``sun_path`` holds 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107


def default_rundir() -> Path:
    """The run directory the environment selects (not created, not checked)."""
    explicit = os.environ.get(RUNDIR_ENV)
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "vchansim"
    return Path(f"/tmp/vchansim-{os.geteuid()}")


def check_socket_path(path: Path) -> Path:
    """Return ``path`` if it fits in ``sun_path``; otherwise say how to shorten it.

    The kernel would truncate or refuse a longer name with a bare ``EINVAL``, far from the
    cause, so we refuse it here, naming the path and the limit.
    """
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        raise ConfigError(
            f"socket path {str(path)!r} is {size} bytes; AF_UNIX allows at most "
            f"{SUN_PATH_MAX}: choose a shorter run directory (${RUNDIR_ENV})",
            err=errno.ENAMETOOLONG,
        )
    return path


@dataclass(frozen=True)
class RunDir:
    """A checked run directory (see :func:`prepare_rundir`) and the well-known paths
    inside it."""

    path: Path

    @cached_property
    def hub(self) -> Path:
        """The hub's control socket (SOCK_SEQPACKET); kept, as every handle dials it."""
        return self.path / "hub"

    @property
    def lock(self) -> Path:
        """The flock that serialises starting a hub."""
        return self.path / "hub.lock"

    @property
    def log(self) -> Path:
        """Where an embedded hub writes its log."""
        return self.path / "hub.log"

    @property
    def xs_dir(self) -> Path:
        """The directory of per-domain xenstore sockets."""
        return self.path / "xs"

    def xs_socket(self, domid: int) -> Path:
        """The xenstore socket through which a connection acts as domain ``domid``."""
        return check_socket_path(self.xs_dir / str(domid))

    def check_entries(self) -> None:
        """Raise ConfigError naming the first well-known entry that is there but is the
        wrong kind of file (a directory where the log goes, a file where the xenstore
        sockets go): a hub started here would fail far from the cause."""
        for name, (is_kind, kind) in _ENTRY_KINDS.items():
            try:
                mode = os.lstat(self.path / name).st_mode
            except FileNotFoundError:
                continue
            if not is_kind(mode):
                raise ConfigError(
                    f"run directory {str(self.path)!r}: {name!r} is there but is not {kind}; "
                    "remove it",
                    err=errno.EEXIST,
                )


#: What each well-known entry of a run directory must be when it is there.  (A hub socket
#: squatted by something else makes the hub itself refuse to start, quoting its log.)
_ENTRY_KINDS = {
    "hub.lock": (stat.S_ISREG, "a regular file"),
    "hub.log": (stat.S_ISREG, "a regular file"),
    "xs": (stat.S_ISDIR, "a directory"),
}


def _describe_owner(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def verify_private_dir(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a real directory of ours with mode 0700 or less."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"run directory {str(path)!r} is not a directory (a symlink or a file is there)",
            err=errno.ENOTDIR,
        )
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"run directory {str(path)!r} is owned by {_describe_owner(info.st_uid)} with mode "
            f"{mode:04o}, not by you ({_describe_owner(os.geteuid())}); refusing to use it",
            err=errno.EPERM,
        )
    if mode & 0o077:
        raise ConfigError(
            f"run directory {str(path)!r} (owner {_describe_owner(info.st_uid)}) has mode "
            f"{mode:04o}: group and others must have no access (chmod 700 it)",
            err=errno.EPERM,
        )


def _checked_names(path: str | os.PathLike[str] | None) -> RunDir:
    """The run directory ``path`` (default: the environment's) names, made absolute, once
    its socket names are known to fit."""
    rundir = RunDir(Path(os.path.abspath(path if path is not None else default_rundir())))
    check_socket_path(rundir.hub)
    rundir.xs_socket(DOMID_MAX)  # the longest xenstore socket name
    return rundir


def prepare_rundir(path: str | os.PathLike[str] | RunDir | None = None) -> RunDir:
    """Resolve, create (0700) and verify the run directory; return its paths.

    ``path`` overrides the environment.  Socket names are checked first, so a too-long
    path creates nothing; then the directory is created if missing (its parents with the
    default mode) and checked whether we created it or not.  A :class:`RunDir` (made
    here, so its names were checked) is only verified, or created again if it is gone.
    """
    rundir = path if isinstance(path, RunDir) else _checked_names(path)
    # Backends come back here before every hub connection, so the usual case -- it is
    # there already -- costs a single lstat.
    try:
        verify_private_dir(rundir.path)
        return rundir
    except ConfigError:
        raise
    except OSError:
        pass  # not there, or not reachable: create it, or say why that fails
    try:
        os.makedirs(rundir.path.parent, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(rundir.path, 0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create run directory {str(rundir.path)!r}: {exc.strerror}", err=exc.errno
        ) from None
    verify_private_dir(rundir.path)
    return rundir
