"""The shared control page of a vchan (``struct vchan_interface``) and ring placement.

Everything here is pure arithmetic on the fixed layout that libxenvchan has used since
Xen 4.2 (docs/protocol.md §2): field offsets, which orders the server picks for the requested
sizes, where each ring lives, and which orders a client must refuse.  No memory, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError, ProtocolError

if TYPE_CHECKING:
    from mmap import mmap

PAGE_SIZE = 4096
PAGE_SHIFT = 12
#: Ring indices (and every count the hub's wire carries) are u32s that wrap.
U32 = 0xFFFFFFFF

# struct ring_shared left, right -- u32 each
LEFT_CONS = 0
LEFT_PROD = 4
RIGHT_CONS = 8
RIGHT_PROD = 12
# u16 orders
LEFT_ORDER = 16
RIGHT_ORDER = 18
# u8 liveness and notification bytes
CLI_LIVE = 20
SRV_LIVE = 21
CLI_NOTIFY = 22
SRV_NOTIFY = 23
# u32 grants[] (left ring's pages first, then the right ring's)
GRANTS = 24
HEADER_SIZE = 24

#: Every header field by its C name: (byte offset, width in bytes).
FIELDS: dict[str, tuple[int, int]] = {
    "left.cons": (LEFT_CONS, 4),
    "left.prod": (LEFT_PROD, 4),
    "right.cons": (RIGHT_CONS, 4),
    "right.prod": (RIGHT_PROD, 4),
    "left_order": (LEFT_ORDER, 2),
    "right_order": (RIGHT_ORDER, 2),
    "cli_live": (CLI_LIVE, 1),
    "srv_live": (SRV_LIVE, 1),
    "cli_notify": (CLI_NOTIFY, 1),
    "srv_notify": (SRV_NOTIFY, 1),
}

NOTIFY_WRITE = 0x1
NOTIFY_READ = 0x2

LIVE_CLOSED = 0
LIVE_CONNECTED = 1
LIVE_WAITING = 2

MIN_ORDER = 10
MAX_ORDER = 20
MAX_RING_SIZE = 1 << MAX_ORDER
# In-page rings: order 10 sits at byte 1024 of the control page, order 11 at byte 2048.
IN_PAGE_OFFSET = {10: 1024, 11: 2048}

# libxenvchan formats "<path>/ring-ref" into a 64-byte buffer: keys are cut at 63 bytes.
KEY_PATH_MAX = 63
RING_REF_KEY = "ring-ref"
EVENT_CHANNEL_KEY = "event-channel"


def ring_size(order: int) -> int:
    """Bytes in a ring of this order."""
    return 1 << order


def ring_pages(order: int) -> int:
    """Separate granted pages a ring of this order needs (0 for the in-page orders)."""
    return 1 << (order - PAGE_SHIFT) if order >= PAGE_SHIFT else 0


def _min_order(size: int) -> int:
    order = PAGE_SHIFT
    while size > (1 << order):
        order += 1
    return order


def choose_orders(left_min: int, right_min: int) -> tuple[int, int]:
    """Pick (left_order, right_order) exactly as libxenvchan's server does (docs/protocol.md §2.3).

    ``left_min`` is the server's receive ring (client -> server), ``right_min`` its send
    ring.  Small requests are upgraded to the in-page rings so that a minimal vchan needs
    a single granted page.
    """
    for name, value in (("left (read) size", left_min), ("right (write) size", right_min)):
        if value < 0:
            raise ConfigError(f"{name} {value} is negative")
        if value > MAX_RING_SIZE:
            raise ConfigError(f"{name} {value} exceeds the vchan limit of {MAX_RING_SIZE} bytes")
    lo, ro = _min_order(left_min), _min_order(right_min)
    if left_min <= 1024 and right_min <= 2048:
        return 10, 11
    if left_min <= 2048 and right_min <= 1024:
        return 11, 10
    if left_min <= 2048:
        return 11, ro
    if right_min <= 2048:
        return lo, 11
    return lo, ro


def validate_orders(left_order: int, right_order: int) -> None:
    """Refuse the orders a client must refuse (docs/protocol.md §2.4), naming the bad value."""
    for name, order in (("left_order", left_order), ("right_order", right_order)):
        if not MIN_ORDER <= order <= MAX_ORDER:
            raise ProtocolError(
                f"peer published {name}={order}; vchan orders must be {MIN_ORDER}..{MAX_ORDER}"
            )
    if left_order == right_order and left_order < PAGE_SHIFT:
        raise ProtocolError(
            f"peer published left_order=right_order={left_order}: two in-page rings "
            "cannot share one offset"
        )


@dataclass(frozen=True)
class RingPlacement:
    """Where one ring's bytes live: inside the control page, or in granted pages."""

    order: int
    in_page_offset: int | None  # byte offset in the control page, or None if external
    first_grant: int  # index into grants[] of its first page (external rings only)

    @property
    def size(self) -> int:
        return ring_size(self.order)

    @property
    def pages(self) -> int:
        return ring_pages(self.order)


@dataclass(frozen=True)
class Geometry:
    """The placement of both rings for one pair of orders."""

    left: RingPlacement
    right: RingPlacement

    @classmethod
    def for_orders(cls, left_order: int, right_order: int) -> Geometry:
        validate_orders(left_order, right_order)
        left_pages = ring_pages(left_order)
        return cls(
            RingPlacement(left_order, IN_PAGE_OFFSET.get(left_order), 0),
            RingPlacement(right_order, IN_PAGE_OFFSET.get(right_order), left_pages),
        )

    @property
    def grant_count(self) -> int:
        return self.left.pages + self.right.pages

    @property
    def grants_end(self) -> int:
        """First byte after grants[] in the control page."""
        return GRANTS + 4 * self.grant_count


def key_path(xs_path: str, key: str) -> str:
    """``<xs_path>/<key>`` cut to 63 bytes, as libxenvchan does on both sides (§5.1)."""
    full = f"{xs_path}/{key}".encode()
    return full[:KEY_PATH_MAX].decode("utf-8", errors="ignore")


def check_xs_path(xs_path: str) -> None:
    """Refuse base paths for which libxenvchan's 63-byte truncation would break the keys.

    With more than 49 bytes the key names get cut (``…/ri``); at 63 both keys collapse into
    one node.  A C peer computes the same cut keys, so anything up to 62 still interoperates
    — but two keys must stay distinct.
    """
    if not xs_path:
        raise ConfigError("the xenstore path is empty")
    if key_path(xs_path, RING_REF_KEY) == key_path(xs_path, EVENT_CHANNEL_KEY):
        raise ConfigError(
            f"xenstore path {xs_path!r} is {len(xs_path.encode())} bytes; libxenvchan cuts "
            f"key paths at {KEY_PATH_MAX} bytes, so paths must be at most "
            f"{KEY_PATH_MAX - 2} bytes (49 or fewer keep the key names whole)"
        )


@dataclass(frozen=True)
class PageState:
    """A decoded snapshot of a control page's header, as an observer sees it.

    Values are raw: a hostile or buggy peer may have written anything, and the point of a
    snapshot is to show that (see :meth:`problems`).
    """

    left_cons: int
    left_prod: int
    right_cons: int
    right_prod: int
    left_order: int
    right_order: int
    cli_live: int
    srv_live: int
    cli_notify: int
    srv_notify: int

    @classmethod
    def decode(cls, page: bytes | bytearray | memoryview | mmap) -> PageState:
        """Decode the first 24 bytes (one copy, so the fields are mutually consistent)."""
        return cls(*struct.unpack_from("<4I2H4B", bytes(page[:HEADER_SIZE])))

    def fill(self, ring: str) -> int:
        """Bytes in flight in ``ring`` ("left" or "right"), unsanitised."""
        cons, prod = (
            (self.left_cons, self.left_prod)
            if ring == "left"
            else (self.right_cons, self.right_prod)
        )
        return (prod - cons) & U32

    def problems(self) -> list[str]:
        """What is wrong with this page, in words; empty if it is a valid vchan page."""
        found = []
        try:
            validate_orders(self.left_order, self.right_order)
        except ProtocolError as exc:
            found.append(str(exc))
        for ring, order in (("left", self.left_order), ("right", self.right_order)):
            if MIN_ORDER <= order <= MAX_ORDER and self.fill(ring) > ring_size(order):
                found.append(
                    f"{ring} ring: prod - cons = {self.fill(ring)} exceeds its size "
                    f"{ring_size(order)} (corrupt index)"
                )
        if self.cli_live > LIVE_WAITING:
            found.append(f"cli_live = {self.cli_live} is not 0, 1 or 2")
        if self.srv_live > LIVE_CONNECTED:
            found.append(f"srv_live = {self.srv_live} is not 0 or 1")
        for name, value in (("cli_notify", self.cli_notify), ("srv_notify", self.srv_notify)):
            if value & ~(NOTIFY_WRITE | NOTIFY_READ):
                found.append(f"{name} = {value:#04x} has bits other than WRITE and READ")
        return found
