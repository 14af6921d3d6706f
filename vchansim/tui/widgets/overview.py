"""The overview: one row per live channel of the hub, with what a glance must tell.

Each row says who the ends are and whether they are connected, how full each ring is
and how fast it moves, and the verdicts on the channel -- the same ones its own view
gives (a corrupt page, a stalled wait), since each row is drawn from a
:class:`~..frames.Frame` of that channel.  A channel not sampled yet shows its listing
only.  Rows keep their order (the hub's) and the cursor stays on its channel as rows
come and go.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from ..frames import CLIENT_STATES, SERVER_STATES, Frame, RingFrame, live_word
from ..live import ChannelInfo
from .ring import human_bytes

#: Column names, in order, so that at 80 columns what matters most is on screen (the
#: table scrolls sideways for the rest).  Fill and rate are of the left ring (client →
#: server), then the right one (server → client), as in the channel view.
COLUMNS = ("channel", "state", "fill", "problems", "rate")


def name(info: ChannelInfo) -> str:
    """``1→2 data/vchan``: the ends, and the path as the server wrote it (relative to its
    home, where it is under it; ``vchansim inspect PATH`` accepts either)."""
    home = f"/local/domain/{info.server}/"
    path = info.path.removeprefix(home)
    return f"{info.server}→{info.client} {path}"


def _fill(ring: RingFrame) -> str:
    size = ring.size
    return "?" if size is None else f"{min(100 * ring.fill // size, 999)}%"


def _rates(frame: Frame) -> str:
    return " ".join(f"{human_bytes(ring.rate)}/s" for ring in frame.rings)


def verdicts(frame: Frame) -> Text:
    """The channel's problems in a few words: red for what can only end in a hang."""
    hangs = [*(["corrupt page"] if frame.problems else [])]
    hangs += [s.name for s in frame.stalls if s.severity == "hang"]
    stalls = [s.name for s in frame.stalls if s.severity != "hang"]
    if not hangs and not stalls:
        return Text("ok", style="green")
    text = Text()
    if hangs:
        text.append("✖ " + ", ".join(hangs), style="bold red")
    if stalls:
        text.append((" " if hangs else "") + "◐ " + ", ".join(stalls), style="yellow")
    return text


def state(frame: Frame) -> str:
    """``connected`` when both ends are, else what each end's live byte says."""
    page = frame.page
    server = live_word(page.srv_live, SERVER_STATES)
    client = live_word(page.cli_live, CLIENT_STATES)
    if server == client == "connected":
        return "connected"
    return f"server {server}, client {client}"


def row(info: ChannelInfo, frame: Frame | None) -> tuple[str | Text, ...]:
    """The cells of ``info``'s row, drawn from ``frame`` (None: not sampled yet)."""
    if frame is None:
        return (name(info), "", "", "", "")
    return (
        name(info),
        state(frame),
        " ".join(_fill(ring) for ring in frame.rings),
        verdicts(frame),
        _rates(frame),
    )


class Overview(DataTable[str | Text]):
    """Every channel of the hub; the row under the cursor is the one to open."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.add_columns(*COLUMNS)

    def show(self, channels: Sequence[tuple[ChannelInfo, Frame | None]]) -> None:
        """Redraw the rows, the cursor staying on its channel if it is still listed."""
        chosen = self.chosen_path()
        self.clear()
        for info, frame in channels:
            self.add_row(*row(info, frame), key=info.path)
        paths = [info.path for info, _ in channels]
        if chosen in paths:
            self.move_cursor(row=paths.index(chosen))

    def chosen_path(self) -> str | None:
        """The path of the channel under the cursor, or None with no rows."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value
