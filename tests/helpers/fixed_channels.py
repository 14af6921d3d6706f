"""Channels in fixed states, for the inspector's snapshots and layout tests: every view
drawn from the same control pages, wait words and identities each run, on a fixed clock,
so that what it shows depends on no timing, pid or path of the machine.

Each state is a short list of samples fed through the real :class:`FrameBuilder` (the
verdicts need a state seen to last), the way a live source feeds it; the views draw the
last frame.  :class:`FixedInspector` opens either the overview of several such channels
or one channel's live view, through the same screens the real inspector uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from textual import events

from vchansim import layout
from vchansim.layout import PageState
from vchansim.rundir import RunDir
from vchansim.statspage import Blocked, Wait
from vchansim.tui import app
from vchansim.tui.app import InspectorApp
from vchansim.tui.frames import EventCounts, Frame, FrameBuilder
from vchansim.tui.identity import EndIdentity, Identity
from vchansim.tui.live import ChannelInfo
from vchansim.tui.screens.channels import ChannelsScreen
from vchansim.tui.screens.live import LiveScreen

#: The run directory the overview's title names (nothing is created there).
RUNDIR = RunDir(Path("/run/vchansim-demo"))
#: Seconds since the channel started at the last sample of every state.
NOW = 10.5
#: When the sleeps of the stalled states began (so they are 1.5 s old at NOW).
ASLEEP = 9.0
#: The bytes in flight of the streaming channel's left ring.
TEXT = b"hello over a vchan\n" * 60

#: What the rings of the stalled states hold.
FILLER = bytes(range(0x20, 0x7F)) * 3

CONNECTED = layout.LIVE_CONNECTED
READ, WRITE = layout.NOTIFY_READ, layout.NOTIFY_WRITE


def page(**fields: int) -> PageState:
    """A page of two connected ends, both rings empty at index 0 (orders 10 and 12),
    with ``fields`` changed."""
    base = PageState(
        left_cons=0,
        left_prod=0,
        right_cons=0,
        right_prod=0,
        left_order=10,
        right_order=12,
        cli_live=CONNECTED,
        srv_live=CONNECTED,
        cli_notify=0,
        srv_notify=0,
    )
    return replace(base, **fields)


@dataclass(frozen=True)
class State:
    """One channel's fixed state: its last page, the samples before it, the ends' sleeps."""

    path: str
    last: PageState
    #: (server, client) sleeps, each since :data:`ASLEEP` when set.
    asleep: tuple[Blocked | None, Blocked | None] = (None, None)
    #: Producer bytes per second of each ring over the 5 s before NOW (the rates).
    rates: tuple[int, int] = (0, 0)
    events: tuple[int, int] = (17, 23)
    server: int = 1
    client: int = 0
    #: The page before ``woke``, when the sleeps ended (None: they last to NOW).
    earlier: PageState | None = None
    woke: float | None = None
    #: The bytes in flight of each ring; None: as many of :data:`FILLER` as it holds.
    in_flight: tuple[bytes | None, bytes | None] = (None, None)

    @property
    def info(self) -> ChannelInfo:
        return ChannelInfo(self.path, self.server, self.client, ring_ref=8, port=5, since=0.0)

    def frame(self) -> Frame:
        """The last frame, after 5 s of samples at 4 a second: both indices of each ring
        moved at its rate, the fill as in the last page; the sleeps from ASLEEP on (to
        ``woke``, over ``earlier``, when given)."""
        builder = FrameBuilder()
        frame = None
        for step in range(21):
            t = NOW - 5.0 + step * 0.25
            back = [int(rate * (NOW - t)) for rate in self.rates]
            awake = self.woke is not None and t >= self.woke
            then = self.last if awake or self.earlier is None else self.earlier
            shown = replace(
                then,
                left_cons=(then.left_cons - back[0]) & layout.U32,
                left_prod=(then.left_prod - back[0]) & layout.U32,
                right_cons=(then.right_cons - back[1]) & layout.U32,
                right_prod=(then.right_prod - back[1]) & layout.U32,
            )
            waits = tuple(
                None if b is None or t < ASLEEP or awake else Wait(b, ASLEEP) for b in self.asleep
            )
            frame = builder.feed(t, shown, EventCounts(*self.events), waits, self.bytes())  # type: ignore[arg-type]
        assert frame is not None
        return frame

    def bytes(self) -> tuple[bytes, bytes]:
        """The bytes in flight of each ring (the first 256 of them at most)."""
        fills = (self.last.fill("left"), self.last.fill("right"))
        return tuple(  # type: ignore[return-value]
            FILLER[: min(n, 256)] if given is None else given
            for given, n in zip(self.in_flight, fills, strict=True)
        )

    def identity(self) -> Identity:
        command = f"vchansim serve --domid {self.server} {self.client} {self.path}"
        return Identity(
            path=self.path,
            server=EndIdentity("server", self.server, 5, 4242, command),
            client=EndIdentity(
                "client", self.client, 7, 4243, f"vchansim connect {self.client} {self.path}"
            ),
            keys=(("event-channel", "5"), ("ring-ref", "8")),
            ring_ref=8,
            data_refs=(9, 10, 11, 12),
        )


class FixedSource:
    """A :class:`~vchansim.tui.source.Source` that always shows ``state``'s last frame."""

    kind = "live"

    def __init__(self, state: State) -> None:
        self.state = state
        self.info = state.info
        self.title = state.info.label
        self._frame = state.frame()

    def frame(self) -> Frame:
        return self._frame

    def identity(self) -> Identity:
        return self.state.identity()

    def notice(self) -> str:
        return ""

    def close(self) -> None:
        pass


HOME = "/local/domain/1/"

#: A client streaming into its full 1 KiB ring, the server reading: all well.
STREAMING = State(
    HOME + "data/demo",
    page(
        left_cons=0x0E0F5286,
        left_prod=0x0E0F5686,
        srv_notify=READ | WRITE,
        right_order=11,
    ),
    rates=(21_600_000, 0),
    events=(228_962, 230_438),
    in_flight=(TEXT, b""),
)

#: Each verdict's state, the sleeper asleep since ASLEEP (docs/inspector.md's table).
VERDICTS: dict[str, State] = {
    # The client sleeps reading with 4 KiB in its ring; the server took its WRITE request.
    "lost-wakeup": State(
        HOME + "data/lost",
        page(right_prod=0x2800, right_cons=0x1800, cli_notify=READ | WRITE),
        asleep=(None, Blocked.READ),
        rates=(0, 4096),
    ),
    # The server sleeps writing on a full ring, its READ request cleared by its client.
    "unasked-wait": State(
        HOME + "data/unasked",
        page(right_prod=0x5000, right_cons=0x4000),
        asleep=(Blocked.WRITE, None),
        rates=(0, 8192),
    ),
    # The server sleeps writing although its client's live byte says it closed.
    "missed-close": State(
        HOME + "data/closed",
        page(right_prod=0x5000, right_cons=0x4000, cli_notify=READ, cli_live=layout.LIVE_CLOSED),
        asleep=(Blocked.WRITE, None),
        rates=(0, 8192),
    ),
    # Both write into full rings and asked to be told of room: neither reads.
    "deadlock": State(
        HOME + "data/both",
        page(
            left_prod=0x2400,
            left_cons=0x2000,
            right_prod=0x5000,
            right_cons=0x4000,
            cli_notify=READ,
            srv_notify=READ,
        ),
        asleep=(Blocked.WRITE, Blocked.WRITE),
        rates=(4096, 4096),
    ),
    # The server waits for room its client, awake, is not making.
    "consumer-stalled": State(
        HOME + "data/vchan/2/stuck",
        page(right_prod=0x5000, right_cons=0x4000, cli_notify=READ),
        asleep=(Blocked.WRITE, None),
        rates=(0, 1000),
        client=2,
    ),
}


#: A server that slept 0.75 s on a full ring it had not asked about (unasked-wait), until
#: its liveness re-check re-armed the request and its client read again: all well now.
RECOVERED = State(
    HOME + "data/recovered",
    page(right_prod=0x5800, right_cons=0x4C00, cli_notify=READ),
    asleep=(Blocked.WRITE, None),
    rates=(0, 2048),
    earlier=page(right_prod=0x5000, right_cons=0x4000),
    woke=9.75,
)


class FixedChannels(ChannelsScreen):
    """The overview of fixed channels instead of a hub's."""

    def __init__(self, states: Sequence[State]) -> None:
        super().__init__(RUNDIR)
        self.states = {state.path: state for state in states}

    def list_channels(self) -> list[ChannelInfo]:
        return [state.info for state in self.states.values()]

    def open_source(self, info: ChannelInfo) -> FixedSource:  # type: ignore[override]
        return FixedSource(self.states[info.path])


class FixedInspector(InspectorApp):
    """The inspector opened on the overview of ``channels``, or on the view of ``view``."""

    CSS_PATH = Path(app.__file__).with_name(InspectorApp.CSS_PATH)  # not beside this file

    def __init__(self, channels: Sequence[State] = (), view: State | None = None) -> None:
        super().__init__(rundir=RUNDIR)
        self.states = channels
        self.view = view

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # not InspectorApp's: no hub, no trace
        if self.view is not None:
            self.push_screen(LiveScreen(FixedSource(self.view)))  # type: ignore[arg-type]
        else:
            self.push_screen(FixedChannels(self.states))


#: The overview's channels: one streaming, one stalled, one hung.
OVERVIEW = [STREAMING, VERDICTS["consumer-stalled"], VERDICTS["lost-wakeup"]]
#: A channel in each state: the streaming one, one per verdict, one recovered.
EVERY = [STREAMING, *VERDICTS.values(), RECOVERED]
