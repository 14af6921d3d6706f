"""The channel view uses the space it has: every panel on screen and sized to what it
holds from 80x24 to 200x60, bigger rings on taller terminals, the space left over to the
detail views; the replay timeline's play position never hides a mark."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.demo_trace import FAULT_T
from helpers.pilot import run
from textual.pilot import Pilot
from textual.widgets import Static

from vchansim.tui.app import InspectorApp
from vchansim.tui.screens.replay import ReplayScreen
from vchansim.tui.widgets.details import Details
from vchansim.tui.widgets.ring import RingDiagram
from vchansim.tui.widgets.timeline import Timeline
from vchansim.tui.widgets.view import Problems

SIZES = [(80, 24), (120, 40), (200, 60)]
#: The ring diagram's cells at each size: round (twice as wide as tall) and growing.
DIAGRAMS = {(80, 24): (8, 4), (120, 40): (16, 8), (200, 60): (28, 14)}


PANELS = ("#ring-left", "#ring-right", "#bits", "#problems", "#timeline", "Footer")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_panel_is_on_screen_and_sized_to_its_content(demo_trace: Path, size) -> None:
    async def body(pilot: Pilot) -> None:
        await pilot.press("right_square_bracket", "right")  # the fault: two problems
        await pilot.pause()
        screen = pilot.app.screen
        assert isinstance(screen, ReplayScreen)
        width, height = size
        for selector in PANELS:
            region = screen.query_one(selector).region
            assert region.height > 0, selector
            assert region.right <= width and region.bottom <= height, (selector, region)
        problems = screen.query_one(Problems)
        lines = len(str(problems.content).splitlines())
        assert problems.region.height == lines + 2  # its text and its border, no more
        diagram = screen.query_one(RingDiagram)
        assert (diagram.size.width, diagram.size.height) == DIAGRAMS[size]
        details = screen.query_one(Details)
        # What is left over goes to the detail views (none at 80x24 in a replay, whose
        # timeline takes those rows).
        assert details.display == (size != (80, 24))
        if size != (80, 24):
            assert details.region.height >= 8
            taken = sum(screen.query_one(s).region.height for s in PANELS[1:])
            title_status = 2
            assert taken + details.region.height + title_status + 8 >= height

    run(InspectorApp(trace=demo_trace, autoplay=False), body, size=size)


def test_the_play_position_never_hides_a_fault_mark(demo_trace: Path) -> None:
    async def body(pilot: Pilot) -> None:
        await pilot.press("right_square_bracket")  # onto the fault: same column
        await pilot.pause()
        timeline = pilot.app.screen.query_one(Timeline)
        assert timeline.now == FAULT_T
        cursor, track, _ = str(timeline.render()).split("\n")
        column = cursor.index("▼")
        assert track[column] == "✖"

    run(InspectorApp(trace=demo_trace, autoplay=False), body, size=(120, 40))


def test_n_and_shift_n_jump_to_where_a_problem_begins(demo_trace: Path) -> None:
    async def body(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await pilot.press("n")
        assert screen.source.index == 6 and screen.source.frame().problems
        await pilot.press("n")  # no later one: a notice, and the position stays
        assert screen.source.index == 6
        await pilot.press("end", "N")
        assert screen.source.index == 6

    run(InspectorApp(trace=demo_trace, autoplay=False), body)


def test_b_and_i_choose_the_detail_view(demo_trace: Path) -> None:
    async def body(pilot: Pilot) -> None:
        details = pilot.app.screen.query_one(Details)
        assert details.current == "bytes"
        assert "n/a in a replay: a trace records indices" in pilot.app.export_text()
        await pilot.press("i")
        await pilot.pause()
        assert details.current == "ends"
        text = str(pilot.app.screen.query_one("#ends", Static).content)
        assert "server dom1" in text and "client dom2" in text
        assert "xenstore data/vchan/demo" in text
        await pilot.press("b")
        assert details.current == "bytes"

    run(InspectorApp(trace=demo_trace, autoplay=False), body, size=(120, 40))


def test_snapshot_replay_at_120x40_with_the_ends(demo_trace: Path, snap_compare) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)
    assert snap_compare(app, press=["right_square_bracket", "right", "i"], terminal_size=(120, 40))
