"""The bytes in flight of one ring, as hex and ASCII, from ``cons`` on.

As many lines and as many bytes per line as the panel has room for (4 to 32 a line);
offsets count from ``cons``, so the first byte is the next one the consumer gets.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

#: Bytes per line the dump may use, widest first.
_WIDTHS = (32, 24, 16, 12, 8, 6, 4)


def per_line(width: int) -> int:
    """Bytes per line that fit ``width`` cells: "+000 " + 3 per byte (the last without
    its space) + " " + 1 per byte."""
    room = (width - 5) // 4
    return next((n for n in _WIDTHS if n <= room), _WIDTHS[-1])


def hexdump(data: bytes, width: int, lines: int) -> list[str]:
    """``data`` as at most ``lines`` lines of hex and ASCII fitting ``width`` cells."""
    step = per_line(width)
    out = []
    for offset in range(0, min(len(data), step * lines), step):
        chunk = data[offset : offset + step]
        hexes = " ".join(f"{b:02x}" for b in chunk).ljust(3 * step - 1)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"+{offset:03x} {hexes} {ascii_}")
    return out


class HexDump(Widget):
    """One ring's bytes in flight; says why when there are none to show."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.data: bytes | None = None
        self.why = ""

    def show(self, data: bytes | None, why: str) -> None:
        """``data`` from cons (None: not readable, for the reason ``why``)."""
        if (data, why) != (self.data, self.why):
            self.data, self.why = data, why
            self.refresh()

    def render(self) -> Text:
        if self.data is None:
            return Text(self.why, no_wrap=True)
        if not self.data:
            return Text("ring empty", no_wrap=True)
        lines = hexdump(self.data, self.size.width, max(self.size.height, 1))
        return Text("\n".join(lines), no_wrap=True)
