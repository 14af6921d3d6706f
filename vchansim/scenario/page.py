"""The endpoint's own mapping of the shared control page, field by field.

A hostile peer writes exactly this memory.  ``Vchan`` keeps it private; reaching it
here, in one place, keeps the rest of the harness on the public API.
"""

from __future__ import annotations

from typing import Literal

from .. import layout
from ..channel import Vchan

#: Control-page fields a hostile endpoint may corrupt: name -> (offset, width in bytes).
PAGE_FIELDS = layout.FIELDS
_FORMATS: dict[int, Literal["B", "H", "I"]] = {1: "B", 2: "H", 4: "I"}


def control_page(chan: Vchan) -> memoryview:
    """The endpoint's own mapping of the shared control page."""
    return chan._page


def field_view(chan: Vchan, name: str) -> memoryview:
    """Field ``name`` of ``chan``'s control page as a one-item view (release it)."""
    offset, width = PAGE_FIELDS[name]
    return control_page(chan)[offset : offset + width].cast(_FORMATS[width])


def set_indices(chan: Vchan, index: int) -> None:
    """Start all four ring indices at ``index``, as a long-lived channel would have them.

    Only meaningful on a server before its client connects: both rings stay empty.
    """
    for name in ("left.cons", "left.prod", "right.cons", "right.prod"):
        view = field_view(chan, name)
        view[0] = index
        view.release()
