"""Live channels: found through the hub's STATE, watched through a read-only page mapping.

The hub has no notion of a "channel"; it knows grants, event ports and XenStore nodes.
A vchan server publishes ``<path>/ring-ref`` and ``<path>/event-channel`` (key paths cut
at 63 bytes, as libxenvchan does), grants its control page to the client domain under
that ref, and binds that port for it -- so a channel is a pair of nodes that agree with a
grant and a port of one domain.  Nothing here writes anywhere: the inspector connects as
dom0, asks STATE, and maps control pages with INSPECT, which hands out a read-only
descriptor that the kernel, not our good manners, keeps from being written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .. import layout
from ..errors import BackendError
from ..hub.launcher import hub_running
from ..hub.observe import PageView, StatsView, map_grant, map_stats
from ..hub.protocol import HubConnection, Op
from ..layout import PageState
from ..rundir import RunDir
from ..statspage import Wait
from ..trace import RingSample
from .frames import (
    CLIENT_STATES,
    SERVER_STATES,
    EventCounts,
    Frame,
    FrameBuilder,
    live_word,
)
from .identity import Identity, live_identity
from .inflight import InFlight, data_refs

#: The inspector plays the privileged domain, as ``xenstore-ls`` would on real Xen.
INSPECTOR_DOMID = 0
#: Seconds between checks that the watched channel still exists.
GONE_CHECK = 0.5
#: Seconds between two samples of a watched channel taken between redraws: a verdict
#: needs its state seen to last 0.1 s, and a hang that lasts a quarter of a second (an end
#: re-checks its peer twice a second) must not fall between the redraws of a busy screen.
SAMPLE_EVERY = 0.01

_HOME = re.compile(r"/local/domain/(\d+)/")


class NoSuchChannel(BackendError):
    """The channel asked for is not (or no longer) offered on this hub."""

    default_errno = errno.ENOENT


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as the hub and the store describe it."""

    path: str
    server: int
    client: int
    ring_ref: int
    port: int
    #: When the server granted the control page (``time.monotonic()``; None: unknown).
    since: float | None = None
    #: The control page header when listed, or None if it could not be read.
    page: PageState | None = None

    @property
    def label(self) -> str:
        return f"dom{self.server} → dom{self.client}  {self.path}"

    def row(self) -> tuple[str, ...]:
        """The channel as a row under :data:`COLUMNS` (path last: it may be long)."""
        page = self.page
        if page is None:
            orders, srv, cli = "?", "?", "?"
        else:
            orders = f"{page.left_order}/{page.right_order}"
            srv = live_word(page.srv_live, SERVER_STATES)
            cli = live_word(page.cli_live, CLIENT_STATES)
        return (f"dom{self.server} {srv}", f"dom{self.client} {cli}", orders, self.path)

    def as_json(self) -> dict[str, Any]:
        """The channel for ``vchansim inspect --list --json``: its names, and its page's
        header as listed (None if it could not be read)."""
        page = self.page
        header: dict[str, Any] | None = None
        if page is not None:
            header = {
                "left": {"cons": page.left_cons, "prod": page.left_prod},
                "right": {"cons": page.right_cons, "prod": page.right_prod},
                "orders": [page.left_order, page.right_order],
                "srv_live": live_word(page.srv_live, SERVER_STATES),
                "cli_live": live_word(page.cli_live, CLIENT_STATES),
                "srv_notify": page.srv_notify,
                "cli_notify": page.cli_notify,
                "problems": list(page.problems()),
            }
        return {
            "path": self.path,
            "server_domain": self.server,
            "client_domain": self.client,
            "ring_ref": self.ring_ref,
            "port": self.port,
            "since": self.since,
            "page": header,
        }


#: Column names of :meth:`ChannelInfo.row`.
COLUMNS = ("server", "client", "orders", "path")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _grant_of(path: str, ref: int, port: int, state: dict[str, Any]) -> dict[str, Any] | None:
    """The grant ``ref`` whose domain also holds port ``port`` bound to the grantee,
    preferring the domain whose home holds ``path`` when several could."""
    ports = {(p["domid"], p["port"]): p["remote"] for p in state["ports"]}
    matches = [
        g
        for g in state["grants"]
        if g["ref"] == ref and ports.get((g["domid"], port)) == g["grantee"]
    ]
    home = _HOME.match(path)
    matches.sort(key=lambda g: not (home and int(home.group(1)) == g["domid"]))
    return matches[0] if matches else None


def find_channels(state: dict[str, Any]) -> list[ChannelInfo]:
    """Every channel a STATE reply shows: published keys backed by a live grant and port.

    Keys left behind by a server that died without cleaning up match no grant and are
    not listed: there is nothing to attach to.
    """
    nodes: dict[str, str] = state["xenstore"]["nodes"]
    found = []
    for path in sorted(nodes):
        ref_key = layout.key_path(path, layout.RING_REF_KEY)
        port_key = layout.key_path(path, layout.EVENT_CHANNEL_KEY)
        if ref_key == port_key or ref_key not in nodes or port_key not in nodes:
            continue
        ref, port = _int(nodes[ref_key]), _int(nodes[port_key])
        if ref is None or port is None:
            continue
        grant = _grant_of(path, ref, port, state)
        if grant is not None:
            found.append(
                ChannelInfo(path, grant["domid"], grant["grantee"], ref, port, grant.get("since"))
            )
    return found


def matches(path: str, wanted: str) -> bool:
    """Whether ``wanted`` names ``path``: all of it, or its last components."""
    return path == wanted or path.endswith("/" + wanted.strip("/"))


def select_channel(channels: Iterable[ChannelInfo], wanted: str) -> ChannelInfo:
    """The channel whose path is ``wanted``, or ends with it after a ``/`` if only one does."""
    listed = list(channels)
    exact = [c for c in listed if c.path == wanted]
    candidates = exact or [c for c in listed if matches(c.path, wanted)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(c.path for c in candidates)
        raise NoSuchChannel(f"{wanted!r} matches several channels ({names}); give the full path")
    known = ", ".join(c.path for c in listed) or "none"
    raise NoSuchChannel(f"no channel at {wanted!r} (live channels: {known})")


class HubLink:
    """A dom0 connection to a run directory's hub, for looking only.

    It never starts a hub: with none running there is nothing to inspect, and starting
    one would only show an empty machine.
    """

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        if not hub_running(rundir):
            raise BackendError(
                f"no hub is running for {rundir.path}: no channels to inspect (start a vchan, "
                "e.g. 'vchansim serve', or choose the run directory with --rundir)",
                err=errno.ENOENT,
            )
        try:
            self._conn = HubConnection.connect(rundir.hub, INSPECTOR_DOMID)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise BackendError(
                f"the hub for {rundir.path} went away: {exc.strerror}", err=exc.errno
            ) from None

    def state(self) -> dict[str, Any]:
        """The hub's STATE reply, decoded."""
        state: dict[str, Any] = json.loads(self._conn.call(Op.STATE).text)
        return state

    def channels(self) -> list[ChannelInfo]:
        """Live channels, each with its page header read now (None if it vanished meanwhile)."""
        listed = []
        for info in find_channels(self.state()):
            page: PageState | None = None
            with contextlib.suppress(BackendError):
                view = self.map_page(info)
                page = view.snapshot()
                view.close()
            listed.append(replace(info, page=page))
        return listed

    def map_page(self, info: ChannelInfo) -> PageView:
        """Map ``info``'s control page read-only (INSPECT); NoSuchChannel if it is gone."""
        try:
            return map_grant(self._conn, info.server, info.ring_ref)
        except BackendError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise NoSuchChannel(
                f"channel {info.path} has gone: domain {info.server} no longer grants ref "
                f"{info.ring_ref}"
            ) from None

    def map_stats(self, info: ChannelInfo) -> StatsView | None:
        """Map the event statistics of ``info``'s channel read-only (EVT_STATS), or None
        if the hub cannot say (its port is gone, or the hub predates the statistics)."""
        try:
            return map_stats(self._conn, info.server, info.port)
        except BackendError:
            return None

    def map_data(self, info: ChannelInfo, ref: int) -> PageView:
        """Map data page ``ref`` of ``info``'s server read-only (INSPECT)."""
        return map_grant(self._conn, info.server, ref)

    def close(self) -> None:
        self._conn.close()


def _from(wait: Wait | None, origin: float) -> Wait | None:
    """``wait`` with its start on a clock that begins at monotonic time ``origin``."""
    return None if wait is None else replace(wait, since=wait.since - origin)


class LiveSource:
    """Frames sampled from a live channel's control page.

    The source has its own hub connection, so it outlives whatever listed the channel.
    The mapping stays valid after the server revokes its grant (as a foreign mapping
    does on Xen), so a channel that goes keeps showing its last state; :meth:`notice`
    says that it went, checked against the hub every :data:`GONE_CHECK` seconds.  Event
    counts come from the channel's statistics page (EVT_STATS), mapped read-only too;
    they are n/a where the hub cannot give it.

    Besides the sample each :meth:`frame` takes, a thread of the source samples the page
    and the wait words every :data:`SAMPLE_EVERY` seconds, so the verdicts are judged
    from states as short as they are, however seldom the screen asks; the bytes in
    flight are read only for the frames drawn.
    """

    kind = "live"

    def __init__(self, rundir: RunDir, info: ChannelInfo) -> None:
        self.info = info
        self.title = info.label
        with contextlib.ExitStack() as undo:
            self._link = HubLink(rundir)
            undo.callback(self._link.close)
            self._view = self._link.map_page(info)
            undo.callback(self._view.close)
            self._stats = self._link.map_stats(info)
            undo.pop_all()
        self._in_flight = InFlight(self._view, lambda ref: self._link.map_data(info, ref))
        #: Frame times count from the channel's start: when its control page was granted.
        self._start = info.since if info.since is not None else time.monotonic()
        self._builder = FrameBuilder()
        self._checked = time.monotonic()
        self._notice = ""
        self._identity: Identity | None = None
        self._notice = self._check()
        self.samples = 0
        #: What the last frame was made of, as a trace records it (None before the first).
        self.sample: RingSample | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(
            target=self._sample_between, name=f"inspect {info.path}", daemon=True
        )
        self._sampler.start()

    def frame(self) -> Frame:
        now = time.monotonic()
        if not self._notice and now - self._checked >= GONE_CHECK:
            self._checked = now
            self._notice = self._check()
        return self._sample(drawn=True)

    def _sample_between(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample(drawn=False)

    def _sample(self, *, drawn: bool) -> Frame:
        """A frame of the channel now; one to be drawn also reads the bytes in flight and
        is what :attr:`sample` records."""
        with self._lock:
            t = time.monotonic() - self._start
            self.samples += 1
            page = self._view.snapshot()
            in_flight = self._in_flight.read(page) if drawn else (None, None)
            if self._stats is None:
                if drawn:
                    self.sample = RingSample.of(t, page, None, None)
                return self._builder.feed(t, page, in_flight=in_flight)
            server, client = self._stats.waits()
            waits = (_from(server, self._start), _from(client, self._start))
            counts = self._stats.counts()
            if drawn:
                self.sample = RingSample.of(t, page, counts, waits)
            return self._builder.feed(t, page, EventCounts(*counts), waits, in_flight)

    def identity(self) -> Identity | None:
        return self._identity

    def _check(self) -> str:
        """Ask the hub again who the ends are, and whether the channel still exists: a
        notice if it went (its last state stays on screen)."""
        info = self.info
        try:
            state = self._link.state()
        except BackendError as exc:
            return f"lost the hub ({exc}); the page below is still mapped"
        if not any(
            g["domid"] == info.server and g["ref"] == info.ring_ref for g in state["grants"]
        ):
            return (
                f"channel gone: domain {info.server} revoked ref {info.ring_ref}; "
                "showing its last state"
            )
        found = live_identity(
            state, info.path, (info.server, info.client), info.port, info.ring_ref
        )
        refs = data_refs(self._view, self._view.snapshot())
        self._identity = replace(found, data_refs=refs)
        return ""

    def notice(self) -> str:
        return self._notice

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()
        self._in_flight.close()
        self._view.close()
        if self._stats is not None:
            self._stats.close()
        self._link.close()
