"""The bytes in flight of each ring, read through read-only mappings of its pages.

An in-page ring (order 10 or 11) lies inside the control page the inspector maps anyway;
a larger ring's pages are the grants the control page lists after its header, each mapped
read-only (INSPECT) the first time it is needed.  Nothing is read while a ring's order or
indices are impossible: a corrupt page says nothing about where its bytes are.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from .. import layout
from ..errors import BackendError, ProtocolError
from ..hub.observe import PageView
from ..layout import Geometry, PageState, RingPlacement
from .frames import InFlightBytes

#: Bytes in flight read per ring, from ``cons`` on (more than any panel shows).
SHOWN = 1024


def data_refs(page: PageView, state: PageState) -> tuple[int, ...] | None:
    """The grant refs of the data pages the control page lists, or None while its orders
    are invalid."""
    try:
        geometry = Geometry.for_orders(state.left_order, state.right_order)
    except ProtocolError:
        return None
    count = geometry.grant_count
    return struct.unpack(f"<{count}I", page.read(layout.GRANTS, 4 * count))


class InFlight:
    """Reads both rings' bytes in flight; ``map_ref`` maps one data grant read-only."""

    def __init__(self, page: PageView, map_ref: Callable[[int], PageView]) -> None:
        self._page = page
        self._map_ref = map_ref
        self._pages: dict[int, PageView] = {}

    def read(self, state: PageState) -> InFlightBytes:
        try:
            geometry = Geometry.for_orders(state.left_order, state.right_order)
        except ProtocolError:
            return (None, None)
        refs = data_refs(self._page, state) or ()
        return (
            self._ring(geometry.left, state.left_cons, state.left_prod, refs),
            self._ring(geometry.right, state.right_cons, state.right_prod, refs),
        )

    def _ring(
        self, ring: RingPlacement, cons: int, prod: int, refs: tuple[int, ...]
    ) -> bytes | None:
        fill = (prod - cons) & layout.U32
        if fill > ring.size:
            return None
        out = bytearray()
        position = cons & (ring.size - 1)
        want = min(fill, SHOWN)
        while len(out) < want:
            chunk = self._chunk(ring, position, want - len(out), refs)
            if chunk is None:
                return None
            out += chunk
            position = (position + len(chunk)) & (ring.size - 1)
        return bytes(out)

    def _chunk(
        self, ring: RingPlacement, position: int, count: int, refs: tuple[int, ...]
    ) -> bytes | None:
        """Bytes from ``position`` up to the end of the ring or of its page."""
        if ring.in_page_offset is not None:
            count = min(count, ring.size - position)
            return self._page.read(ring.in_page_offset + position, count)
        index, offset = divmod(position, layout.PAGE_SIZE)
        view = self._data_page(refs[ring.first_grant + index])
        if view is None:
            return None
        return view.read(offset, min(count, layout.PAGE_SIZE - offset))

    def _data_page(self, ref: int) -> PageView | None:
        view = self._pages.get(ref)
        if view is None:
            try:
                view = self._pages[ref] = self._map_ref(ref)
            except BackendError:
                return None
        return view

    def close(self) -> None:
        for view in self._pages.values():
            with contextlib.suppress(OSError, ValueError):
                view.close()
        self._pages.clear()
