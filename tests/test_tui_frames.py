"""The inspector's model, without a screen: frames built from page snapshots, the ring
diagram's geometry, and how channels are recognised in a hub's STATE."""

from __future__ import annotations

import pytest

from vchansim import layout
from vchansim.layout import PageState
from vchansim.tui.frames import BUCKET, HISTORY, WINDOW, FrameBuilder
from vchansim.tui.live import ChannelInfo, NoSuchChannel, find_channels, select_channel
from vchansim.tui.widgets.ring import human_bytes, ring_cells


def page(
    left: tuple[int, int] = (0, 0),
    right: tuple[int, int] = (0, 0),
    orders: tuple[int, int] = (10, 11),
    live: tuple[int, int] = (1, 1),
    notify: tuple[int, int] = (0, 0),
) -> PageState:
    """A page header: (cons, prod) per ring, (left, right) orders, (cli, srv) live and
    notify bytes."""
    return PageState(*left, *right, *orders, *live, *notify)


def test_wraps_count_every_lap_of_the_producer_even_across_u32_overflow() -> None:
    builder = FrameBuilder()
    start = 0xFFFFFFFF - 3000  # a long-lived channel, about to overflow its u32 index
    builder.feed(0.0, page(left=(start, start)))
    laps_before = start >> 10
    frame = builder.feed(0.1, page(left=((start + 5000) & 0xFFFFFFFF,) * 2))
    assert frame.left.wraps == (start + 5000) >> 10
    assert frame.left.wraps > laps_before
    assert frame.left.prod == (start + 5000) & 0xFFFFFFFF  # raw, as the page holds it
    assert frame.left.position(frame.left.prod) == (start + 5000) & 1023


def test_an_index_moving_backwards_is_not_counted_as_traffic() -> None:
    builder = FrameBuilder()
    builder.feed(0.0, page(left=(4096, 4096)))
    frame = builder.feed(0.1, page(left=(0, 100)))  # reset to 0 (then 100 written)
    assert frame.left.wraps == 0 and frame.left.rate == 0.0
    frame = builder.feed(0.2, page(left=(0, 612)))
    assert frame.left.rate == 512 / WINDOW and frame.left.wraps == 0
    frame = builder.feed(0.3, page(left=(0, 1636)))  # counting goes on from the new index
    assert frame.left.rate == 1536 / WINDOW and frame.left.wraps == 1


def test_rate_and_sparkline_follow_sample_time_not_sample_count() -> None:
    builder = FrameBuilder()
    builder.feed(10.0, page(right=(0, 0)))
    for step in range(1, 11):  # 10 samples, 1000 bytes each, all inside the first bar
        frame = builder.feed(10.0 + step * BUCKET / 20, page(right=(0, step * 1000)))
    assert frame.right.history[-1] == 10_000 / BUCKET  # the bar still filling shows
    frame = builder.feed(10.0 + BUCKET * 3.2, page(right=(0, 10_000)))
    assert frame.right.history[-4:] == (10_000 / BUCKET, 0.0, 0.0, 0.0)
    assert len(frame.right.history) == HISTORY
    assert frame.right.rate == 10_000 / WINDOW  # all of it within the last WINDOW seconds
    frame = builder.feed(10.0 + BUCKET / 2 + WINDOW, page(right=(0, 10_000)))
    assert frame.right.rate == 0.0


def test_corrupt_indices_and_orders_are_flagged() -> None:
    builder = FrameBuilder()
    frame = builder.feed(0.0, page(left=(0, 1025), orders=(10, 11)))
    assert frame.left.corrupt and not frame.right.corrupt
    assert any("left ring" in p and "1025" in p for p in frame.problems)
    frame = builder.feed(0.1, page(orders=(9, 11)))
    assert frame.left.size is None and frame.left.wraps is None and frame.left.corrupt
    assert any("left_order=9" in p for p in frame.problems)
    assert not builder.feed(0.2, page()).problems


def test_ring_diagram_lights_exactly_the_arc_in_flight() -> None:
    empty = ring_cells(0.0, 0.0, 8, 4)
    assert not any(lit for row in empty for _, lit in row)
    assert all(char != "\u2800" for char in (empty[0][3][0], empty[3][4][0]))  # outline
    full = ring_cells(0.0, 1.0, 8, 4)
    assert all(lit for row in full for char, lit in row if char != "\u2800")
    # From the top, clockwise, half the ring: the right half lights up, the left does not.
    half = ring_cells(0.0, 0.5, 8, 4)
    assert any(lit for row in half for _, lit in row[4:])
    assert not any(lit for row in half for _, lit in row[:3])
    # Starting at three quarters (9 o'clock) for a quarter: only the top-left quadrant.
    quarter = ring_cells(0.75, 0.25, 8, 4)
    lit = {(r, c) for r, row in enumerate(quarter) for c, (_, on) in enumerate(row) if on}
    assert lit and all(r < 2 and c < 4 for r, c in lit)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1 << 20, "1.0 MiB"), (1 << 31, "2.0 GiB")],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


# -- recognising channels in STATE --------------------------------------------------------


def state(nodes: dict[str, str], grants: list[tuple[int, int, int]], ports: list[tuple]) -> dict:
    """A STATE reply with only what channel discovery reads: grants (domid, ref, grantee)
    and ports (domid, port, remote)."""
    return {
        "xenstore": {"nodes": nodes},
        "grants": [{"domid": d, "ref": r, "grantee": g} for d, r, g in grants],
        "ports": [{"domid": d, "port": p, "remote": r} for d, p, r in ports],
    }


def test_channels_are_published_keys_backed_by_a_grant_and_a_port() -> None:
    long_path = "/local/domain/3/data/" + "x" * 40  # keys get cut at 63 bytes
    nodes = {
        "/local/domain/1/data/a/ring-ref": "1",
        "/local/domain/1/data/a/event-channel": "1",
        "/local/domain/1/data/a": "",
        "/local/domain/4/data/stale": "",  # a dead server's keys: no grant behind them
        "/local/domain/4/data/stale/ring-ref": "7",
        "/local/domain/4/data/stale/event-channel": "3",
        long_path: "",
        layout.key_path(long_path, layout.RING_REF_KEY): "2",
        layout.key_path(long_path, layout.EVENT_CHANNEL_KEY): "5",
    }
    # dom5 also has a ref 1 and port 1, for dom6: the path's home domain wins.
    grants = [(1, 1, 2), (5, 1, 6), (3, 2, 0)]
    ports = [(1, 1, 2), (5, 1, 6), (3, 5, 0)]
    found = find_channels(state(nodes, grants, ports))
    assert found == [
        ChannelInfo("/local/domain/1/data/a", server=1, client=2, ring_ref=1, port=1),
        ChannelInfo(long_path, server=3, client=0, ring_ref=2, port=5),
    ]


def test_selecting_a_channel_by_its_path_or_its_end() -> None:
    a = ChannelInfo("/local/domain/1/data/vchan/2/a", 1, 2, 1, 1)
    b = ChannelInfo("/local/domain/3/data/vchan/2/a", 3, 2, 1, 1)
    c = ChannelInfo("/local/domain/1/data/other", 1, 2, 2, 2)
    assert select_channel([a, b, c], "/local/domain/3/data/vchan/2/a") is b
    assert select_channel([a, b, c], "other") is c
    with pytest.raises(NoSuchChannel, match="several channels"):
        select_channel([a, b, c], "vchan/2/a")
    with pytest.raises(NoSuchChannel, match=r"no channel at 'ther'.*data/other"):
        select_channel([a, b, c], "ther")  # a suffix must end at a "/"
