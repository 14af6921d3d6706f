"""Every live view of the inspector, drawn from channels in fixed states
(tests/helpers/fixed_channels.py): snapshots of the overview, the channel view with its
bytes and its ends, and the problems panel with each stall verdict; Pilot checks of
what each says; and the layout at 80x24, 120x40 and 200x60 -- every panel on screen and
sized to what it holds, the overview's columns within 80 columns.

``pytest --snapshot-update`` rewrites the SVGs in tests/__snapshots__/ after a deliberate
change; the replay's snapshots are in test_tui_replay.py and test_tui_layout.py.
"""

from __future__ import annotations

import pytest
from helpers.fixed_channels import (
    EVERY,
    HOME,
    OVERVIEW,
    READ,
    RECOVERED,
    STREAMING,
    VERDICTS,
    FixedInspector,
    State,
    page,
)
from helpers.pilot import run, until
from textual.pilot import Pilot

from vchansim.statspage import Blocked
from vchansim.tui.screens.channels import ChannelsScreen
from vchansim.tui.screens.live import LiveScreen
from vchansim.tui.widgets.details import Details
from vchansim.tui.widgets.overview import Overview
from vchansim.tui.widgets.view import Problems

SIZES = [(80, 24), (120, 40), (200, 60)]
SIZE_IDS = [f"{w}x{h}" for w, h in SIZES]
#: The sizes with room for every panel's content.
TALL_SIZES, TALL_IDS = SIZES[1:], SIZE_IDS[1:]
#: The panels of the live channel view, top to bottom.
PANELS = ("#ring-left", "#ring-right", "#bits", "#problems", "#details", "Footer")
#: Each verdict's severity as the panel shows it: red frame for a hang, amber for a stall.
SEVERITY = {
    "lost-wakeup": "-bad",
    "unasked-wait": "-bad",
    "missed-close": "-bad",
    "deadlock": "-bad",
    "consumer-stalled": "-warn",
}


# -- snapshots ----------------------------------------------------------------------------


def test_snapshot_overview(snap_compare) -> None:
    assert snap_compare(FixedInspector(OVERVIEW), terminal_size=(80, 24))


def test_snapshot_overview_of_a_channel_with_each_verdict(snap_compare) -> None:
    assert snap_compare(FixedInspector(EVERY), terminal_size=(120, 40))


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_snapshot_live_view_with_the_bytes_in_flight(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(FixedInspector(view=STREAMING), terminal_size=size)


@pytest.mark.parametrize("size", TALL_SIZES, ids=TALL_IDS)
def test_snapshot_live_view_with_the_ends(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(FixedInspector(view=STREAMING), press=["i"], terminal_size=size)


@pytest.mark.parametrize("verdict", sorted(VERDICTS))
def test_snapshot_problems_panel_with_each_verdict(snap_compare, verdict: str) -> None:
    assert snap_compare(FixedInspector(view=VERDICTS[verdict]))


def test_snapshot_problems_panel_with_a_verdict_that_is_over(snap_compare) -> None:
    assert snap_compare(FixedInspector(view=RECOVERED))


# -- what each view says ------------------------------------------------------------------


@pytest.mark.parametrize("verdict", sorted(VERDICTS))
def test_each_verdict_is_named_in_its_colour_in_the_view_and_its_overview_row(
    verdict: str,
) -> None:
    async def body(pilot: Pilot[object]) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, ChannelsScreen)
        text = pilot.app.export_text()
        mark = "✖" if SEVERITY[verdict] == "-bad" else "◐"
        assert f"{mark} {verdict}" in text
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, LiveScreen), "the view")
        problems = pilot.app.screen.query_one(Problems)
        assert problems.has_class(SEVERITY[verdict])
        assert f"{mark} {verdict}: " in pilot.app.export_text()
        assert [s.name for s in pilot.app.screen.frame.stalls] == [verdict]

    run(FixedInspector([VERDICTS[verdict]]), body)


def test_a_healthy_channel_has_no_verdict_and_its_ends_are_named() -> None:
    async def body(pilot: Pilot[object]) -> None:
        text = pilot.app.export_text()
        assert "page is consistent · no stalled wait" in text
        assert "+000 68 65 6c 6c 6f 20 6f 76 65 72 20 61 hello over a" in text
        await pilot.press("i")
        await pilot.pause()
        text = pilot.app.export_text()
        assert "server dom1     port 5     pid 4242" in text
        assert "grants   control page ref 8 · data pages 9-12" in text

    run(FixedInspector(view=STREAMING), body, size=(120, 40))


def test_a_hang_that_is_over_stays_listed_with_when_it_held() -> None:
    """The view and the overview keep a verdict whose state ended (a short hang must
    not be missed between two looks), amber where nothing is wrong now."""

    async def body(pilot: Pilot[object]) -> None:
        assert "was ✖ unasked-wait" in pilot.app.export_text()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, LiveScreen), "the view")
        screen = pilot.app.screen
        assert not screen.frame.stalls
        (seen,) = screen.frame.ended
        assert (seen.name, seen.arose, seen.ended) == ("unasked-wait", 9.0, 9.75)
        text = pilot.app.export_text()
        assert "page is consistent · no stalled wait now" in text
        assert "✖ unasked-wait from t 9.00 to 9.75 s, now over" in text
        problems = screen.query_one(Problems)
        assert problems.has_class("-warn") and not problems.has_class("-bad")

    run(FixedInspector([RECOVERED]), body)


# -- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("state", ["streaming", "deadlock", "missed-close"])
def test_every_panel_of_the_live_view_is_on_screen_and_sized_to_its_content(
    size: tuple[int, int], state: str
) -> None:
    async def body(pilot: Pilot[object]) -> None:
        screen = pilot.app.screen
        width, height = size
        for selector in PANELS:
            region = screen.query_one(selector).region
            assert region.height > 0, selector
            assert region.right <= width and region.bottom <= height, (selector, region)
        # The problems panel: its text wrapped, and no empty row.
        region = screen.query_one(Problems).region
        lines = pilot.app.export_text().splitlines()
        inside = [
            lines[y][region.x + 2 : region.right - 2]
            for y in range(region.y + 1, region.bottom - 1)
        ]
        assert inside and all(row.strip() for row in inside), inside
        # The rest goes to the bytes in flight, down to the footer; the streaming ring
        # holds more than fits, so every row of it is used.
        details = screen.query_one(Details)
        assert details.region.bottom == height - 1
        if state == "streaming":
            rows = [line for line in pilot.app.export_text().splitlines() if "│ +" in line]
            assert len(rows) == details.region.height - 2

    shown = STREAMING if state == "streaming" else VERDICTS[state]
    run(FixedInspector(view=shown), body, size=size)


@pytest.mark.parametrize("size", [(80, 30), *TALL_SIZES], ids=["80x30", *TALL_IDS])
def test_the_ends_view_is_as_tall_as_its_lines(size: tuple[int, int]) -> None:
    """Who the ends are takes four lines: where they fit, its panel holds them and no
    empty row, and the bytes view, chosen again, takes the rest down to the footer."""

    async def body(pilot: Pilot[object]) -> None:
        details = pilot.app.screen.query_one(Details)
        await pilot.press("i")
        await until(pilot, lambda: details.region.height == 4 + 2, "the ends' panel")
        lines = pilot.app.export_text().splitlines()
        inside = [
            lines[y][details.region.x + 2 : details.region.right - 2]
            for y in range(details.region.y + 1, details.region.bottom - 1)
        ]
        assert [row.split()[0] for row in inside] == ["server", "client", "xenstore", "grants"]
        await pilot.press("b")
        await until(pilot, lambda: details.region.bottom == size[1] - 1, "the bytes' panel")

    run(FixedInspector(view=STREAMING), body, size=size)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_the_overview_fits_its_columns_without_scrolling_sideways(size: tuple[int, int]) -> None:
    async def body(pilot: Pilot[object]) -> None:
        table = pilot.app.screen.query_one(Overview)
        assert table.row_count == len(OVERVIEW)
        assert table.max_scroll_x == 0, (table.virtual_size, table.size)
        text = pilot.app.export_text()
        for cells in (
            "1→0 data/demo           connected  100 0   20.6M 0   ok",
            "1→2 data/vchan/2/stuck  connected  0 100   0 1.0K    ◐ consumer-stalled",
            "1→0 data/lost           connected  0 100   0 4.0K    ✖ lost-wakeup",
        ):
            assert cells in text
        assert "3 channels · 2 with problems · fill, rate: c→s s→c · enter opens one" in text

    run(FixedInspector(OVERVIEW), body, size=size)


def test_a_channel_in_each_state_fits_80_columns() -> None:
    async def body(pilot: Pilot[object]) -> None:
        table = pilot.app.screen.query_one(Overview)
        assert table.row_count == len(EVERY) and table.max_scroll_x == 0
        text = pilot.app.export_text()
        for verdict in VERDICTS:
            assert verdict in text
        assert "cli exited" in text  # missed-close: the client's live byte is 0
        assert "was ✖ unasked-wait" in text

    run(FixedInspector(EVERY), body)


def test_a_hang_and_a_stall_on_one_channel_fit_80_columns() -> None:
    """A hang beside a stall names the hang and counts the stall."""
    # The server sleeps writing with room free and no READ request left (lost-wakeup);
    # the client sleeps writing into its full ring, asking, while the server writes too.
    both = State(
        HOME + "data/two/problems",
        page(right_prod=0x800, left_prod=0x400, srv_notify=READ),
        asleep=(Blocked.WRITE, Blocked.WRITE),
    )

    async def body(pilot: Pilot[object]) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, ChannelsScreen)
        frame = screen.frames[both.path]
        assert {s.name for s in frame.stalls} == {"lost-wakeup", "consumer-stalled"}
        assert "✖ lost-wakeup +1 stall" in pilot.app.export_text()
        assert screen.query_one(Overview).max_scroll_x == 0

    run(FixedInspector([both]), body)
