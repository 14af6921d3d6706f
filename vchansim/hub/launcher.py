"""Find the hub of a run directory, starting one if nobody runs it.

Backends call :func:`open_hub` for every handle.  The common case is one ``connect``;
only when no hub answers does :func:`ensure_hub` take ``hub.lock``, look again (another
process may have just started one) and start a detached embedded hub, waiting for it to
report ready on a pipe.  Connecting may still race with an embedded hub that is just
exiting for idleness; that shows up as a refused or reset connection, and we simply
start over.

The limits of a hub started here (grants, ports, XenStore quotas per domain) are the
caller's, else those in ``$VCHANSIM_HUB_OPTIONS`` (hub options such as
``--grant-limit 16 --xs-quota nodes=50``), else Xen's defaults.  They apply only to the
hub being started: one already serving the run directory keeps its own.

:func:`stop_hub` asks a hub to exit; :func:`private_hub` gives a harness (the pytest
plugin, the scenario runner, the benchmarks, the tests) a machine of its own.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackendError, ConfigError
from ..rundir import RunDir, prepare_rundir
from .protocol import HubConnection, HubGoneError, Op, dial

if TYPE_CHECKING:
    from .limits import HubLimits

#: Seconds to wait for a new hub to say it is ready (a cold interpreter start).
START_TIMEOUT = 10.0
#: Environment override of the embedded hub's idle time, in seconds.
IDLE_ENV = "VCHANSIM_HUB_IDLE"
#: Environment: limit options of embedded hubs (``--grant-limit N --xs-quota nodes=N``...).
OPTIONS_ENV = "VCHANSIM_HUB_OPTIONS"
_CONNECT_ATTEMPTS = 4
_LOCK_POLL = 0.01
_LOG_TAIL_LINES = 20

RunDirLike = RunDir | str | os.PathLike[str] | None


def hub_running(rundir: RunDir) -> bool:
    """Whether something accepts connections on the hub socket right now."""
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        probe.connect(os.fspath(rundir.hub))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    finally:
        probe.close()
    return True


@contextlib.contextmanager
def _start_lock(rundir: RunDir, timeout: float) -> Iterator[None]:
    """Hold ``hub.lock``; give up with a clear error rather than wait forever."""
    import fcntl  # only a process that starts a hub takes the lock

    fd = os.open(rundir.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{rundir.lock} stayed locked for {timeout:g} s: another process is "
                        "stuck starting a hub",
                        err=errno.ETIMEDOUT,
                    ) from None
                time.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or f"({path} is empty)"


def _child_env() -> dict[str, str]:
    """Our environment, with this copy of vchansim importable whatever the hub's cwd."""
    env = dict(os.environ)
    root = os.fspath(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _idle_from_env() -> float | None:
    raw = os.environ.get(IDLE_ENV)
    if not raw:
        return None
    try:
        idle = float(raw)
    except ValueError:
        idle = -1.0
    if idle <= 0:
        raise ConfigError(f"{IDLE_ENV}={raw!r} is not a positive number of seconds")
    return idle


def limits_from_env() -> HubLimits:
    """The limits ``$VCHANSIM_HUB_OPTIONS`` asks for (Xen's defaults when unset);
    ConfigError naming the variable if they are not valid."""
    import shlex

    from .limits import parse_limits  # the option parser: only a process starting a hub

    raw = os.environ.get(OPTIONS_ENV, "")
    try:
        options = shlex.split(raw)
    except ValueError as exc:
        raise ConfigError(f"{OPTIONS_ENV}={raw!r}: {exc}") from None
    return parse_limits(options, OPTIONS_ENV)


def _wait_ready(fd: int, deadline: float) -> bytes:
    """Read the ready pipe until a newline, EOF (the hub died) or the deadline."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data


def start_hub(
    rundir: RunDir,
    *,
    idle: float | None = None,
    limits: HubLimits | None = None,
    timeout: float = START_TIMEOUT,
) -> int:
    """Start an embedded hub for ``rundir`` and return its pid once it is ready.

    ``limits`` default to :func:`limits_from_env`.  The caller should hold ``hub.lock``.
    On failure, raises BackendError quoting the end of ``hub.log``, where the hub's
    output goes.
    """
    # Imported here, not above: an endpoint finding its hub running never pays for them.
    import subprocess

    from .limits import limit_options

    idle = idle if idle is not None else _idle_from_env()
    limits = limits if limits is not None else limits_from_env()
    command = [sys.executable, "-m", "vchansim.hub", "--embedded", "--rundir", str(rundir.path)]
    if idle is not None:
        command += ["--idle", f"{idle:g}"]
    command += limit_options(limits)
    read_end, write_end = os.pipe()
    try:
        command += ["--ready-fd", str(write_end)]
        with open(rundir.log, "wb") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_end,),
                start_new_session=True,
                env=_child_env(),
                cwd="/",
            )
        os.close(write_end)
        write_end = -1
        deadline = time.monotonic() + timeout
        ready = _wait_ready(read_end, deadline)
        # The process we started forks the hub and exits at once; reap it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if not ready.endswith(b"\n"):
        late = time.monotonic() >= deadline
        why = f"not ready within {timeout:g} s" if late else "it exited before being ready"
        raise BackendError(
            f"the vchansim hub for {rundir.path} failed to start ({why}); "
            f"last lines of {rundir.log}:\n{_log_tail(rundir.log)}",
            err=errno.EIO,
        )
    return int(ready)


def ensure_hub(
    rundir: RunDirLike = None, *, idle: float | None = None, limits: HubLimits | None = None
) -> None:
    """Make sure a hub serves ``rundir``: connect, else lock, re-check and start one
    (with ``limits``, see :func:`start_hub`)."""
    checked = prepare_rundir(rundir)
    if hub_running(checked):
        return
    checked.check_entries()
    with _start_lock(checked, 2 * START_TIMEOUT):
        if not hub_running(checked):
            start_hub(checked, idle=idle, limits=limits)


def open_hub(rundir: RunDirLike, domid: int, *, strict: bool = False) -> HubConnection:
    """A connection to ``rundir``'s hub as ``domid``, starting the hub if needed.

    HELLO is sent at once; its reply comes with the first call's (see
    :meth:`~.protocol.HubConnection.greet`), which dials again if the hub turns out to
    have been exiting.
    """
    checked = prepare_rundir(rundir)
    return HubConnection.greet(
        lambda: _dial(checked), domid, strict=strict, redials=_CONNECT_ATTEMPTS - 1
    )


def _dial(rundir: RunDir) -> _socket.socket:
    """A socket connected to ``rundir``'s hub, starting one when nobody listens."""
    # Only the text is kept: a kept exception's traceback would pin our callers' frames
    # (and any memoryviews in them) in a reference cycle.
    reason = ""
    for _ in range(_CONNECT_ATTEMPTS):
        try:
            return dial(rundir.hub)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            reason = str(exc)
        ensure_hub(rundir)
    raise BackendError(
        f"cannot reach the hub at {rundir.hub} after {_CONNECT_ATTEMPTS} attempts: {reason}",
        err=errno.ECONNREFUSED,
    )


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for process ``pid`` (not necessarily our child) to exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def stop_hub(rundir: RunDirLike = None, *, timeout: float = 5.0) -> int | None:
    """Ask the hub of ``rundir`` to exit and wait until it has; return its pid, or None
    if no hub was running.  A hub that does not exit in time is killed (and reported)."""
    checked = prepare_rundir(rundir)
    try:
        conn = HubConnection.connect(checked.hub, 0)
    except (FileNotFoundError, ConnectionRefusedError, HubGoneError):
        return None
    with conn:
        pid = conn.hub_pid
        conn.call(Op.SHUTDOWN)
    if not wait_exit(pid, timeout):
        import signal  # harness tools: an endpoint process never loads them

        os.kill(pid, signal.SIGKILL)
        raise BackendError(
            f"hub pid {pid} of {checked.path} did not exit within {timeout:g} s; killed it",
            err=errno.ETIMEDOUT,
        )
    return pid


@contextlib.contextmanager
def private_hub(
    rundir: RunDirLike = None, *, start: bool = False, limits: HubLimits | None = None
) -> Iterator[RunDir]:
    """A run directory of one's own whose hub is stopped when the block ends.

    Without ``rundir``, a fresh one with a short name under /tmp (``sun_path`` is short),
    removed afterwards; with one, that directory, kept (for an inspector to read).  With
    ``start``, the hub (with ``limits``) is running when the block begins; otherwise the
    first connection starts it.  Every harness that needs a machine of its own -- the
    pytest plugin, the scenario runner, the benchmarks, the tests -- makes it here.
    """
    import shutil  # harness tools: an endpoint process never loads them
    import tempfile

    own = rundir is None
    checked = prepare_rundir(tempfile.mkdtemp(prefix="vs-", dir="/tmp") if own else rundir)
    try:
        if start:
            ensure_hub(checked, limits=limits)
        yield checked
    finally:
        try:
            stop_hub(checked)
        finally:
            if own:
                shutil.rmtree(checked.path, ignore_errors=True)
