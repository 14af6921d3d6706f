"""Each end: is it live, what did it ask to be kicked for, and is it asleep.

``cli_live``/``srv_live`` say whether each end is there; the notify bytes hold requests
("send me an event when you next WRITE / READ").  A request sits in the *other* end's
byte: ``srv_notify`` holds what the client asked of the server, and the server clears a
bit as it honours it.  Each bit is its own widget so that "lit" is a CSS class.  What an
end sleeps in comes from the statistics page, not the control page (n/a where the source
cannot see it).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from ... import layout
from ..frames import CLIENT_STATES, SERVER_STATES, EventCounts, Frame, live_word
from ..stalls import EndWait
from .text import set_text

_BITS = (("WRITE", layout.NOTIFY_WRITE), ("READ", layout.NOTIFY_READ))
_ASKS = {
    "srv_notify": "requests the client made of the server",
    "cli_notify": "requests the server made of the client",
}


class LiveState(Static):
    """One end's live byte, decoded; ``-invalid`` when the byte holds no known state."""

    def __init__(self, end: str) -> None:
        super().__init__(id=f"live-{end}", classes="live")
        self.end = end
        self._states = SERVER_STATES if end == "server" else CLIENT_STATES

    def show(self, value: int) -> None:
        word = live_word(value, self._states)
        self.set_class(value not in self._states, "-invalid")
        self.set_class(value == layout.LIVE_CONNECTED, "-connected")
        set_text(self, f"{self.end} {word}")


class Bit(Static):
    """One notify bit; ``-lit`` while set, and marked ● (clear: ○) for colourless
    terminals and text captures."""

    def __init__(self, byte: str, name: str, mask: int) -> None:
        super().__init__(f"○{name}", id=f"{byte}-{name.lower()}", classes="bit")
        self.byte = byte
        self.mask = mask
        self.label = name
        self.tooltip = f"{byte} & {name}: {_ASKS[byte]}"

    def show(self, value: int) -> None:
        lit = bool(value & self.mask)
        if lit != self.has_class("-lit"):
            self.set_class(lit, "-lit")
            self.update(f"{'●' if lit else '○'}{self.label}", layout=False)


class Asleep(Static):
    """Whether one end sleeps, in what and for how long; ``-asleep`` while it does."""

    def __init__(self, end: str) -> None:
        super().__init__(id=f"wait-{end}", classes="wait")

    def show(self, known: bool, wait: EndWait | None) -> None:
        self.set_class(wait is not None, "-asleep")
        set_text(self, "wait n/a" if not known else "awake" if wait is None else wait.describe())


def events_text(events: EventCounts | None) -> str:
    if events is None:
        return "events n/a"
    return f"events srv→cli {events.srv_to_cli}  cli→srv {events.cli_to_srv}"


class PageBits(Vertical):
    """One row per end -- its live byte, the requests it made (which sit in the peer's
    notify byte), its sleep -- then event counts: who waits for whom, one line each."""

    def compose(self) -> ComposeResult:
        for end, byte in (("server", "cli_notify"), ("client", "srv_notify")):
            with Horizontal(classes="end-row"):
                yield LiveState(end)
                yield Static(byte, classes="bit-label")
                for name, mask in _BITS:
                    yield Bit(byte, name, mask)
                yield Asleep(end)
        yield Static(id="events")

    def show(self, frame: Frame) -> None:
        page = frame.page
        self.query_one("#live-server", LiveState).show(page.srv_live)
        self.query_one("#live-client", LiveState).show(page.cli_live)
        for bit in self.query(Bit):
            bit.show(getattr(page, bit.byte))
        waits = frame.waits
        for index, end in enumerate(("server", "client")):
            wait = waits[index] if waits is not None else None
            self.query_one(f"#wait-{end}", Asleep).show(waits is not None, wait)
        set_text(self.query_one("#events", Static), events_text(frame.events))
