"""An endpoint in another domain: the client run by that domain's agent, the rest here.

``vchansim run --client-domain N`` (``run_scenario(client_domain=N)``) places the
scenario's client in domain N and runs it there through N's agent (``vchansim agent``,
:mod:`vchansim.agent`); the server stays in the runner's domain, in a process of the
executor's as ever (:class:`AgentExecutor` wraps that executor).  To the runner the
remote client looks like any endpoint: a pipe that carries its reports and its commands,
and whose end-of-file is its end.  A thread per remote instance (:class:`_Relay`) plays
the other end of that pipe over XenStore: commands out as ``in`` values, reports back
from ``out`` values, read as a guest's word (``messages.report_from_json``); a report
that does not read is the endpoint's error, in one line.  Its times are the other
domain's clock moved onto ours by the smallest delay its reports showed.

The runner's faults reach the remote endpoint as signals its agent sends (a kill, a
pause).  Every wait on the agent is bounded (half the scenario's deadline): an agent that
does not answer a start is an :class:`~vchansim.agent.AgentError` naming the domain, one
that goes silent mid-run is ended by the run's deadline.  The leak check is the local
executor's -- on the emulator the shared hub's, for both domains; on Xen this domain's
processes and devices and XenStore under the server's path -- plus, for the remote
domain, any endpoint whose agent never said it ended.  The agent's job directories are
removed before it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import multiprocess

from ..agent import AgentClient, AgentError, store_fd
from ..backends.base import Backend, Store
from ..errors import ConfigError
from ..leaks import Leak, LeakKind
from .endpoint import EndpointJob, describe_error
from .messages import Message, Result, report_from_json
from .sampler import Observer
from .spec import Scenario

if TYPE_CHECKING:
    from .executors import Executor

#: Seconds ``reap`` waits for a remote endpoint's relay once its pipe has ended.
REAP_WAIT = 5.0


class RemoteHandle:
    """A remote endpoint instance: its job at the agent, and how it ended."""

    def __init__(self, name: str, pid: int, relay: _Relay) -> None:
        self.name = name
        self.pid = pid
        self.relay = relay


class _Relay(threading.Thread):
    """Plays a remote endpoint's side of its pipe to the runner, over XenStore."""

    def __init__(self, client: AgentClient, name: str, conn: Any) -> None:
        super().__init__(name=f"vchansim-relay-{name}", daemon=True)
        self.client = client
        self.job = name
        self.conn = conn
        self.exitcode: int | None = None
        self.ended = False  # the agent said the job ended
        self._stop_r, self._stop_w = os.pipe()
        self._offset: float | None = None
        self._next_in = 0
        self._next_out = 0

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def run(self) -> None:
        store = self.client.store
        base = f"{self.client.root}/{self.job}"
        try:
            store.watch(base, "relay")
            while not self._step():
                if self._wait(store):
                    return  # stopped, or the runner is gone
        except (AgentError, ValueError) as exc:
            self._send(self._failed(str(exc)))
        except (EOFError, OSError):
            pass  # the runner closed its end, or the store went away: nothing to tell
        finally:
            self.conn.close()
            store.close()
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)

    def _step(self) -> bool:
        """Commands out, reports in, and whether the job has ended (its result read)."""
        while self.conn.poll():
            self.client.say(self.job, self._next_in, {"command": str(self.conn.recv())})
            self._next_in += 1
        self._reports()
        result = self.client.answered(self.job)
        if result is None:
            return False
        self._reports()  # written before the result
        self._ending(result)
        return True

    def _reports(self) -> None:
        while (value := self.client.take_out(self.job, self._next_out)) is not None:
            self._next_out += 1
            self._send(self._rebased(report_from_json(value)))

    def _rebased(self, message: Message) -> Message:
        """``message`` with its time on our clock (see the module)."""
        now = time.monotonic()
        delay = now - message.t
        self._offset = delay if self._offset is None else min(self._offset, delay)
        return replace(message, t=min(now, message.t + self._offset))

    def _ending(self, result: dict[str, Any]) -> None:
        exit_code = result.get("exit")
        if result.get("ok") is not True or not isinstance(exit_code, int):
            why = result.get("error", f"its agent answered {result!r}")
            self._send(self._failed(f"the endpoint's job failed in its domain: {why}"))
        self.exitcode = exit_code if isinstance(exit_code, int) else None
        self.ended = True

    def _failed(self, why: str) -> Result:
        where = f"domain {self.client.domid}, job {self.job}"
        error = describe_error(AgentError(f"{why} ({where})"), "io")
        return Result(error=error)

    def _send(self, message: Message) -> None:
        self.conn.send(message)

    def _wait(self, store: Store) -> bool:
        """Wait for a watch event, a command or a stop; whether to stop."""
        if store.read_watch(0) is not None:
            while store.read_watch(0) is not None:
                pass
            return False
        ready = select.select([store_fd(store), self.conn.fileno(), self._stop_r], [], [])[0]
        return self._stop_r in ready


class AgentExecutor:
    """The scenario's client in domain ``domid``, through its agent; everything else is
    ``local``'s.  ``store_of`` opens a store connection of this domain (one that may write
    in ``domid``'s home); ``bound`` bounds every wait on the agent."""

    def __init__(
        self, local: Executor, store_of: Callable[[], Store], domid: int, bound: float
    ) -> None:
        self.local = local
        self.domid = domid
        self.bound = bound
        self._store_of = store_of
        self.client = AgentClient(store_of(), domid, bound)
        self._client_name = ""
        self._handles: list[RemoteHandle] = []
        self._jobs: list[str] = []
        try:
            self.client.ready()
        except BaseException:
            self.client.store.close()
            raise

    @property
    def rundir(self) -> str | None:
        return self.local.rundir

    @property
    def backends(self) -> Callable[[int], Backend]:
        return self.local.backends

    def placed(self, scenario: Scenario) -> Scenario:
        """The local executor's placement, with the client in the agent's domain."""
        placed = self.local.placed(scenario)
        if placed.server.domain == self.domid:
            raise ConfigError(
                f"{scenario.name}: the server is in domain {self.domid} too; "
                "--client-domain places the client in another domain than the server's"
            )
        self._client_name = placed.client.name
        return replace(placed, client=replace(placed.client, domain=self.domid))

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]:
        if job.name != self._client_name:
            return self.local.start(job)
        from .agentjob import ENDPOINT_KIND, encode_job

        name = self.client.submit({"kind": ENDPOINT_KIND, "job": encode_job(job)})
        self._jobs.append(name)
        pid = self.client.started(name)
        ours, theirs = multiprocess.Pipe()
        relay = _Relay(AgentClient(self._store_of(), self.domid, self.bound), name, theirs)
        relay.start()
        handle = RemoteHandle(name, pid, relay)
        self._handles.append(handle)
        return ours, handle, pid

    def prepare(self) -> None:
        self.local.prepare()

    def kill(self, handle: Any) -> None:
        self.signal(handle, signal.SIGKILL)

    def signal(self, handle: Any, signo: int) -> None:
        if isinstance(handle, RemoteHandle):
            self._jobs.append(self.client.signal(handle.name, signo))
        elif signo == signal.SIGKILL:
            self.local.kill(handle)
        else:
            self.local.signal(handle, signo)

    def reap(self, handle: Any) -> int | None:
        if not isinstance(handle, RemoteHandle):
            return self.local.reap(handle)
        handle.relay.join(REAP_WAIT)
        if handle.relay.is_alive():  # the agent never said the job ended
            handle.relay.stop()
            handle.relay.join()
        return handle.relay.exitcode

    def observe(self, domid: int, ref: int, port: int) -> Observer:
        return self.local.observe(domid, ref, port)

    def leaks(self) -> list[Leak]:
        """The local executor's findings (its jobs' directories removed first), and each
        remote endpoint its agent never said had ended."""
        self._remove_jobs()
        found = [
            Leak(
                LeakKind.PROCESS,
                f"endpoint process {h.pid} in domain {self.domid}: its agent never said it ended",
            )
            for h in self._handles
            if not h.relay.ended
        ]
        return found + self.local.leaks()

    def close(self) -> None:
        try:
            for handle in self._handles:
                handle.relay.stop()
                handle.relay.join(REAP_WAIT)
            self._remove_jobs()
        finally:
            self.client.store.close()
            self.local.close()

    def _remove_jobs(self) -> None:
        for name in self._jobs:
            self.client.remove(name)
        self._jobs = []
