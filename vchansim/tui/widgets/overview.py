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

#: Column names, in order, narrow enough that a row fits 80 columns: the problems, whose
#: width varies most, come last.  Fill and rate are of the left ring (client → server),
#: then the right one (server → client), as in the channel view; rates in bytes a second.
COLUMNS = ("channel", "state", "fill %", "rate B/s", "problems")

#: What each end's live byte says, in a word (the channel view spells it out).
_SHORT_STATES = {"connected": "up", "exited": "exited", "not yet connected": "waiting"}
#: Suffixes of :func:`short_bytes`, by power of 1024.
_SHORT_UNITS = ("", "K", "M", "G", "T")


def name(info: ChannelInfo) -> str:
    """``1→2 data/vchan``: the ends, and the path as the server wrote it (relative to its
    home, where it is under it; ``vchansim inspect PATH`` accepts either)."""
    home = f"/local/domain/{info.server}/"
    path = info.path.removeprefix(home)
    return f"{info.server}→{info.client} {path}"


def short_bytes(count: float) -> str:
    """``512``, ``1.5K``, ``200K``, ``20.6M``: at most five characters, for a column that
    holds two of them."""
    power = 0
    while count >= 1000 and power < len(_SHORT_UNITS) - 1:
        count /= 1024
        power += 1
    if power == 0:
        return f"{count:.0f}"
    digits = 1 if count < 100 else 0
    return f"{count:.{digits}f}{_SHORT_UNITS[power]}"


def _fill(ring: RingFrame) -> str:
    size = ring.size
    return "?" if size is None else str(min(100 * ring.fill // size, 999))


def _rates(frame: Frame) -> str:
    return " ".join(short_bytes(ring.rate) for ring in frame.rings)


def verdicts(frame: Frame) -> Text:
    """The channel's problems in a few words: red for what can only end in a hang, each
    named; a stall beside a hang is only counted (the hang is what to look at); with
    none now, the hangs that were (amber: the channel recovered, but look)."""
    hangs = [*(["corrupt page"] if frame.problems else [])]
    hangs += [s.name for s in frame.stalls if s.severity == "hang"]
    stalls = [s.name for s in frame.stalls if s.severity != "hang"]
    if not hangs and not stalls:
        were = [seen.name for seen in frame.ended if seen.severity == "hang"]
        if were:
            return Text("was ✖ " + ", ".join(were), style="yellow")
        return Text("ok", style="green")
    if not hangs:
        return Text("◐ " + ", ".join(stalls), style="yellow")
    text = Text("✖ " + ", ".join(hangs), style="bold red")
    if stalls:
        text.append(f" +{len(stalls)} stall{'s' if len(stalls) > 1 else ''}", style="yellow")
    return text


def state(frame: Frame) -> str:
    """``connected`` when both ends are, else what the ends that are not say
    (``cli exited``, ``cli waiting``)."""
    page = frame.page
    words = {
        "srv": live_word(page.srv_live, SERVER_STATES),
        "cli": live_word(page.cli_live, CLIENT_STATES),
    }
    odd = [f"{end} {_SHORT_STATES.get(w, w)}" for end, w in words.items() if w != "connected"]
    return " ".join(odd) or "connected"


def row(info: ChannelInfo, frame: Frame | None) -> tuple[str | Text, ...]:
    """The cells of ``info``'s row, drawn from ``frame`` (None: not sampled yet)."""
    if frame is None:
        return (name(info), "", "", "", "")
    return (
        name(info),
        state(frame),
        " ".join(_fill(ring) for ring in frame.rings),
        _rates(frame),
        verdicts(frame),
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
