"""Jobs in another domain, asked for and answered through XenStore: the agent and its asker.

Two domains share no filesystem, no process table and no socket -- only XenStore, on Xen
as on the emulator.  So a domain that is to run things for another runs an :class:`Agent`
(``vchansim agent``): it watches a directory under its own home and starts a job for
each request written there, as a process forked from itself (it has paid for its imports
once; a job starts in a fork's time).  The asker (an :class:`AgentClient`, in dom0, which
may write anywhere) writes requests and reads the answers.  Under the agent's home::

    data/vchansim-agent/ready          {"pid": P, "uptime": S}  once the agent watches
    data/vchansim-agent/NAME/request   {"kind": K, ...}         written by the asker
    data/vchansim-agent/NAME/pid       P                        the job's process started
    data/vchansim-agent/NAME/out/I     JSON                     what the job says as it runs
    data/vchansim-agent/NAME/in/I      JSON                     what the asker says to it
    data/vchansim-agent/NAME/result    {"ok": ..., ...}         the job's last word

``I`` counts from 0 in each direction; the asker removes each ``out`` node once read and
the whole ``NAME`` once done, so the guest's XenStore quota is not used up.  A request
the agent cannot run (not JSON, an unknown kind, a bad field) is answered at once with
``{"ok": false, "error": LINE}`` and the agent goes on.  What a job is, the kinds say
(``kinds``: name -> :data:`JobKind`); one kind is the agent's own: ``{"kind": "signal",
"job": NAME, "signo": S}`` signals a running job, answered ``{"ok": true, "pid": P}``.
A job's result says ``"signal": S`` when a signal ended its process.

The agent reads its requests as coming from a domain that may already do anything to its
own (dom0, the only other domain that may write to a domain's home); the asker treats
every answer as a guest's word: JSON only, each checked before use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from itertools import count
from typing import Any

from .backends.base import Store, retry_while_watched
from .errors import StoreError, VchanError

#: The agent's directory under its domain's home.
AGENT_DIR = "data/vchansim-agent"
#: A job's name: what a XenStore path component may be, and short.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}\Z")
#: A value XenStore takes in one message (its payload is at most 4096 bytes, path
#: included).
VALUE_MAX = 3072
_TOKEN = "vchansim-agent"

Out = Callable[[object], None]


class AgentError(VchanError):
    """An agent refused a request, did not answer in time, or answered what makes no
    sense; the message says which, naming the domain."""


def agent_root(domid: int) -> str:
    """The agent's directory of domain ``domid``, as an absolute path."""
    return f"/local/domain/{domid}/{AGENT_DIR}"


class Job(ABC):
    """One running job: its process, and what the agent relays for it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fds(self) -> list[int]:
        """Descriptors whose input the job takes (:meth:`readable`) while it runs."""
        return []

    def readable(self, fd: int, out: Out) -> None:  # noqa: B027 - most jobs watch no fd
        """``fd`` can be read: relay what it brought with ``out`` (one ``out`` node each)."""

    def given(self, value: Any) -> None:
        """The asker's next ``in`` value."""
        raise AgentError("this job takes no input")

    @abstractmethod
    def ended(self, status: int, out: Out) -> dict[str, Any]:
        """The process exited with wait status ``status``: the job's result (after
        relaying whatever it still had to say with ``out``)."""


#: Starts a job for a request (the agent, the request's fields): a :class:`Job`, or the
#: answer itself when there is no process to wait for.  Raising refuses the request; the
#: exception's text is the answer's error.
JobKind = Callable[["Agent", dict[str, Any]], "Job | dict[str, Any]"]


class _Running:
    """A job the agent started, with its process descriptor and stream positions."""

    def __init__(self, name: str, job: Job) -> None:
        self.name = name
        self.job = job
        self.pidfd = os.pidfd_open(job.pid)
        self.next_in = 0
        self.next_out = 0
        self.lost: str | None = None  # why an ``out`` value could not be written

    def close(self) -> None:
        os.close(self.pidfd)


class Agent:
    """Runs the jobs requested under its domain's :data:`AGENT_DIR` (see the module)."""

    def __init__(self, store: Store, domid: int, kinds: Mapping[str, JobKind]) -> None:
        self.store = store
        self.domid = domid
        self.root = agent_root(domid)
        self.kinds: dict[str, JobKind] = {"signal": _signal_kind, **kinds}
        self.seen: set[str] = set()
        self.running: dict[str, _Running] = {}

    # -- for the kinds --

    def fork(self, child: Callable[[], None]) -> int:
        """Run ``child`` in a forked process that leaves without the agent's clean-up
        (status 0, or 70 after an exception, which it prints); its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        status = 0
        try:
            os.close(store_fd(self.store))  # the agent's connection is not the job's
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            child()
        except BaseException as exc:
            print(f"vchansim agent: job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 70
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    # -- the loop --

    def serve(self, *, stop: Callable[[], bool] = lambda: False) -> None:
        """Watch for requests and run them until ``stop()`` (checked after each event)."""
        self.store.watch(self.root, _TOKEN)
        uptime = _uptime()
        self.store.write(
            f"{self.root}/ready", json.dumps({"pid": os.getpid(), "uptime": uptime}).encode()
        )
        try:
            while not stop():
                self.step()
        finally:
            self.end_jobs()
            with contextlib.suppress(StoreError, OSError):
                self.store.rm(f"{self.root}/ready")

    def end_jobs(self) -> None:
        """SIGKILL and reap every job still running: an agent leaves no process behind."""
        for run in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(run.job.pid, signal.SIGKILL)
            os.waitpid(run.job.pid, 0)
            run.close()
        self.running.clear()

    def step(self, timeout: float | None = None) -> None:
        """Handle every watch event so far, then wait for one, a job's output or a job's
        end, and handle that."""
        while (event := self.store.read_watch(0)) is not None:
            self.event(event[0])
        by_fd: dict[int, tuple[_Running, bool]] = {}
        for run in self.running.values():
            by_fd[run.pidfd] = (run, True)
            by_fd.update({fd: (run, False) for fd in run.job.fds()})
        ready = select.select([store_fd(self.store), *by_fd], [], [], timeout)[0]
        for fd in ready:
            if fd in by_fd:
                run, exited = by_fd[fd]
                if exited:
                    self.finish(run)
                elif run.name in self.running:
                    run.job.readable(fd, self._out(run))

    def event(self, path: str) -> None:
        """One watch event: a new request, an input for a running job, or (the watch's
        first event, or anything unexpected) a look at every request."""
        rest = path.removeprefix(self.root).strip("/").split("/")
        if len(rest) == 2 and rest[1] == "request":
            self.request(rest[0])
        elif len(rest) == 3 and rest[1] == "in" and rest[0] in self.running:
            self.inputs(self.running[rest[0]])
        elif rest == [""]:
            for name in self._directory(self.root):
                self.request(name)

    def request(self, name: str) -> None:
        """Start request ``name`` once (a name that is not a job's is not one)."""
        if name in self.seen or not _NAME.match(name):
            return
        try:
            raw = self.store.read(f"{self.root}/{name}/request")
        except StoreError:
            return  # its directory exists before its request
        self.seen.add(name)
        try:
            request = _parse_request(raw, self.kinds)
            started = self.kinds[request["kind"]](self, request)
        except Exception as exc:  # every refusal is an answer: the asker waits for one
            self.refuse(name, _one_line(exc))
            return
        if isinstance(started, Job):
            self.running[name] = _Running(name, started)
            self.answer(name, "pid", started.pid)
        else:
            self.answer(name, "result", started)

    def inputs(self, run: _Running) -> None:
        """Hand a running job its ``in`` values, in order."""
        while True:
            try:
                raw = self.store.read(f"{self.root}/{run.name}/in/{run.next_in}")
            except StoreError:
                return
            run.next_in += 1
            try:
                run.job.given(json.loads(raw))
            except Exception as exc:
                print(
                    f"vchansim agent: job {run.name}: input refused: {_one_line(exc)}",
                    file=sys.stderr,
                )

    def finish(self, run: _Running) -> None:
        """The job's process exited: reap it and answer its result."""
        _, status = os.waitpid(run.job.pid, 0)
        run.close()
        del self.running[run.name]
        result = run.job.ended(status, self._out(run))
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        if run.lost is not None:
            result.update(ok=False, error=run.lost)
        self.answer(run.name, "result", result)

    # -- answers --

    def _out(self, run: _Running) -> Out:
        def out(value: object) -> None:
            try:
                self._write(f"{self.root}/{run.name}/out/{run.next_out}", value)
            except (StoreError, ValueError) as exc:
                run.lost = run.lost or f"output {run.next_out} could not be written: {exc}"
            run.next_out += 1

        return out

    def answer(self, name: str, key: str, value: object) -> None:
        """Write an answer; one XenStore refuses (too large, over quota) is answered with
        why, in its place."""
        try:
            self._write(f"{self.root}/{name}/{key}", value)
        except (StoreError, ValueError) as exc:
            self._write(f"{self.root}/{name}/{key}", {"ok": False, "error": f"answer: {exc}"})

    def refuse(self, name: str, why: str) -> None:
        print(f"vchansim agent: request {name} refused: {why}", file=sys.stderr)
        self.answer(name, "result", {"ok": False, "error": why})

    def _write(self, path: str, value: object) -> None:
        data = json.dumps(value).encode()
        if len(data) > VALUE_MAX:
            raise ValueError(f"{len(data)} bytes, more than XenStore takes ({VALUE_MAX})")
        self.store.write(path, data)

    def _directory(self, path: str) -> list[str]:
        try:
            return self.store.directory(path)
        except StoreError:
            return []


def _parse_request(raw: bytes, kinds: Mapping[str, JobKind]) -> dict[str, Any]:
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(f"the request is not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise AgentError("the request is not a JSON object")
    kind = request.get("kind")
    if kind not in kinds:
        raise AgentError(f"unknown kind {kind!r} (this agent runs: {', '.join(sorted(kinds))})")
    return request


def _signal_kind(agent: Agent, request: dict[str, Any]) -> dict[str, Any]:
    """``{"kind": "signal", "job": NAME, "signo": S}``: signal a running job."""
    run = agent.running.get(str(request.get("job")))
    if run is None:
        raise AgentError(f"no job {request.get('job')!r} runs")
    signo = request.get("signo")
    if not isinstance(signo, int) or signo not in set(signal.Signals):
        raise AgentError(f"signo {signo!r} is not a signal")
    os.kill(run.job.pid, signo)
    return {"ok": True, "pid": run.job.pid}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, AgentError) else f"{type(exc).__name__}: {text}"


def _uptime() -> float | None:
    try:
        with open("/proc/uptime") as uptime:
            return float(uptime.read().split()[0])
    except OSError:
        return None


# -- the asker's side --------------------------------------------------------------------


class AgentClient:
    """Requests to the agent of domain ``domid`` and their answers, over ``store`` (a
    connection of a domain that may write in that domain's home: dom0's).  Every wait
    is bounded by ``timeout``: an agent that does not answer is an :class:`AgentError`."""

    def __init__(self, store: Store, domid: int, timeout: float) -> None:
        self.store = store
        self.domid = domid
        self.timeout = timeout
        self.root = agent_root(domid)
        self._names = (f"{secrets.token_hex(3)}-{n}" for n in count())

    def ready(self) -> dict[str, Any]:
        """What the agent said when it started to watch; AgentError if there is none."""
        try:
            raw = self.store.read(f"{self.root}/ready")
        except StoreError:
            raise AgentError(
                f"domain {self.domid} runs no vchansim agent ({self.root}/ready is absent): "
                "start `vchansim agent` in it"
            ) from None
        said = _json(raw, f"the agent of domain {self.domid}'s ready")
        if not isinstance(said, dict):
            raise AgentError(f"the agent of domain {self.domid} wrote a ready that is no object")
        return said

    def submit(self, request: Mapping[str, Any]) -> str:
        """Write ``request``; the name to ask about it by."""
        name = next(self._names)
        data = json.dumps(dict(request)).encode()
        if len(data) > VALUE_MAX:
            raise AgentError(f"a request of {len(data)} bytes is more than XenStore takes")
        self.store.write(f"{self.root}/{name}/request", data)
        return name

    def started(self, name: str) -> int:
        """The pid of job ``name``'s process, once the agent started it; AgentError with
        its answer if it refused, or if it says nothing within the timeout."""
        key, raw = self._first(name, ("pid", "result"), self.timeout)
        if key == "result":
            raise AgentError(f"the agent of domain {self.domid}: {_error_of(raw)}")
        pid = _json(raw, f"job {name}'s pid")
        if not isinstance(pid, int):
            raise AgentError(f"the agent of domain {self.domid} gave pid {pid!r}")
        return pid

    def result(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Job ``name``'s result (a JSON object), waiting up to ``timeout`` (default: the
        client's)."""
        _, raw = self._first(name, ("result",), self.timeout if timeout is None else timeout)
        return self._object(raw, name)

    def answered(self, name: str) -> dict[str, Any] | None:
        """Job ``name``'s result if it has one now (None: not yet), not waiting."""
        try:
            raw = self.store.read(f"{self.root}/{name}/result")
        except StoreError:
            return None
        return self._object(raw, name)

    def _object(self, raw: bytes, name: str) -> dict[str, Any]:
        said = _json(raw, f"job {name}'s result")
        if not isinstance(said, dict):
            raise AgentError(f"the agent of domain {self.domid} answered {said!r}")
        return said

    def signal(self, name: str, signo: int) -> str:
        """Ask the agent to send ``signo`` to job ``name`` (not waiting for its answer)."""
        return self.submit({"kind": "signal", "job": name, "signo": signo})

    def say(self, name: str, index: int, value: object) -> None:
        """Job ``name``'s ``in`` value number ``index``."""
        self.store.write(f"{self.root}/{name}/in/{index}", json.dumps(value).encode())

    def take_out(self, name: str, index: int) -> object | None:
        """Job ``name``'s ``out`` value number ``index``, removed once read (None: not
        written yet)."""
        path = f"{self.root}/{name}/out/{index}"
        try:
            raw = self.store.read(path)
        except StoreError:
            return None
        self.store.rm(path)
        return _json(raw, f"job {name}'s output {index}")

    def remove(self, name: str) -> None:
        """Remove everything of job ``name`` (done with it)."""
        with contextlib.suppress(StoreError):
            self.store.rm(f"{self.root}/{name}")

    def _first(self, name: str, keys: tuple[str, ...], timeout: float) -> tuple[str, bytes]:
        """The first of ``keys`` of job ``name`` to hold a value, waiting on a watch; an
        AgentError naming the domain when none does within ``timeout``."""
        base = f"{self.root}/{name}"
        token = f"wait-{name}"
        deadline = time.monotonic() + timeout
        self.store.watch(base, token)

        def first() -> tuple[str, bytes]:
            for key in keys:
                with contextlib.suppress(StoreError):
                    return key, self.store.read(f"{base}/{key}")
            raise _Unanswered

        try:
            return retry_while_watched(self.store, first, (_Unanswered,), deadline)
        except _Unanswered:
            raise AgentError(
                f"the agent of domain {self.domid} did not answer {base} within "
                f"{timeout:g} s (is `vchansim agent` running there?)"
            ) from None
        finally:
            with contextlib.suppress(StoreError, OSError):
                self.store.unwatch(base, token)


class _Unanswered(Exception):
    """None of the keys a wait looks for holds a value yet."""


def store_fd(store: Store) -> int:
    """The descriptor a store connection's watch events arrive on."""
    fileno: Callable[[], int] | None = getattr(store, "fileno", None)
    if fileno is None:
        raise AgentError(f"a {type(store).__name__} cannot be waited on: no descriptor")
    return fileno()


def _json(raw: bytes, what: str) -> object:
    try:
        value: object = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AgentError(f"{what} is not JSON: {raw[:80]!r}") from None
    return value


def _error_of(raw: bytes) -> str:
    said = _json(raw, "the answer")
    if isinstance(said, dict) and isinstance(said.get("error"), str):
        return str(said["error"])
    return f"answered {said!r}"
