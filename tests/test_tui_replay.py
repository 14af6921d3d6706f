"""Replaying a trace in the inspector: the transport, the screen, bad traces, small
terminals, and snapshots of what it draws (80x24, from a small fixed trace)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.demo_trace import FAULT_T, RECORDS, ring
from helpers.pilot import run, until, until_shown
from textual.pilot import Pilot

from vchansim.trace import TraceError, TraceWriter
from vchansim.tui.app import InspectorApp
from vchansim.tui.playback import ReplaySource
from vchansim.tui.screens.base import TooSmall
from vchansim.tui.screens.dialogs import ErrorScreen, HelpScreen
from vchansim.tui.screens.replay import ReplayScreen
from vchansim.tui.source import Source
from vchansim.tui.widgets.bits import Bit
from vchansim.tui.widgets.timeline import Timeline


def test_replay_source_steps_seeks_and_plays_on_the_trace_clock(demo_trace: Path) -> None:
    src = ReplaySource.open(demo_trace)
    assert isinstance(src, Source)  # what the screens draw from
    assert (src.index, src.now, src.playing) == (0, 0.0, False)
    assert [m.kind for m in src.marks] == ["endpoint", "endpoint", "fault"]  # no progress
    assert (src.start, src.end) == (0.0, pytest.approx(1.1))
    src.step(1)
    assert (src.index, src.now) == (1, pytest.approx(0.1))
    src.seek(0.55)
    assert src.index == 5 and src.frame().left.prod == 1000
    src.toggle()
    src.advance(0.1)
    assert src.index == 6 and src.frame().left.corrupt
    src.faster(1)
    assert src.speed == 2.0
    src.advance(0.1)
    assert src.now == pytest.approx(0.85) and src.index == 8
    src.advance(10)
    assert src.now == pytest.approx(1.1) and not src.playing and src.index == RECORDS - 1
    src.toggle()  # play at the end: from the top again
    assert src.playing and src.now == 0.0
    assert src.seek_mark(1).t == FAULT_T and src.now == FAULT_T and not src.playing
    assert src.seek_mark(1) is None and src.now == FAULT_T
    assert src.seek_mark(-1) is None  # the only fault is where we are
    assert src.recent().kind == "fault"


def test_events_come_from_the_trace_and_the_notice_flags_a_cut_short_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.trace"
    writer = TraceWriter(path, {"scenario": "cut"})
    writer.record("ring", 0.0, **ring(0.0, 3))
    del writer  # killed before its end record: the file is complete up to its last line
    src = ReplaySource.open(path)
    assert src.frame().events is not None and src.frame().events.cli_to_srv == 6
    assert "no end record" in src.notice()


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (None, "truncated (no end of line)"),
        ('{"type":"header","format":"vchansim-trace","version":1}\n{"type": "ri\n', "not a JSON"),
        ("hello\n", "not a JSON"),
        ('{"type":"header","format":"something-else"}\n', "not a vchansim trace"),
        ('{"type":"header","format":"vchansim-trace","version":1}\n', "no ring records"),
        ("", "empty file"),
    ],
)
def test_a_bad_trace_is_a_message_on_screen_and_exit_status_1(
    demo_trace: Path, content: str | None, cause: str
) -> None:
    bad = Path("bad.trace")
    if content is None:  # a real trace cut in the middle of a line
        data = demo_trace.read_bytes()
        bad.write_bytes(data[: data.index(b'"ring"') + 20])
    else:
        bad.write_text(content)
    app = InspectorApp(trace=bad)

    async def body(pilot: Pilot) -> None:
        assert isinstance(app.screen, ErrorScreen)
        text = app.export_text()
        assert "cannot replay" in text and "bad.trace" in text and cause in text
        await pilot.press("enter")
        await until(pilot, lambda: app.return_value is not None, "the app to exit")

    run(app, body)
    assert app.return_value == 1


def test_a_missing_trace_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nowhere\.trace: cannot read trace"):
        ReplaySource.open(tmp_path / "nowhere.trace")


# -- the screen -----------------------------------------------------------------------------


def test_keys_step_jump_to_the_fault_and_show_it_in_red(demo_trace: Path) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)

    async def body(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        text = app.export_text()
        assert "#1/12" in text and "endpoint: server listening port=1" in text
        assert "client not yet connected" in text
        await pilot.press("right", "right")
        assert "#3/12" in app.export_text()
        assert "client connected" in app.export_text()
        await pilot.press("right_square_bracket")
        text = app.export_text()
        assert "#6/12" in text and "fault: client: corrupt left.prod += 5000" in text
        await pilot.press("right")  # the record that shows the damage
        left = screen.query_one("#ring-left")
        assert left.has_class("-corrupt") and not screen.query_one("#ring-right").has_class(
            "-corrupt"
        )
        assert screen.query_one("#problems").has_class("-bad")
        assert "exceeds its size 1024" in app.export_text()
        lit = {bit.id for bit in screen.query(Bit) if bit.has_class("-lit")}
        assert lit == {"srv_notify-read"}  # record 6: srv_notify READ, cli_notify clear
        assert "events srv→cli 6  cli→srv 12" in app.export_text()

    run(app, body)


def test_space_plays_and_a_click_on_the_timeline_seeks(demo_trace: Path) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)

    async def body(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await pilot.press("minus", "minus")  # x0.25: the 1.1 s trace lasts 4.4 s
        await pilot.press("space")
        assert "▶ x0.25" in app.export_text()
        await until(pilot, lambda: screen.source.index >= 3, "playback to move on")
        await pilot.press("space")
        assert not screen.source.playing and screen.source.index < RECORDS - 1
        timeline = screen.query_one(Timeline)
        await pilot.click(timeline, offset=(timeline.size.width - 1, 1))
        assert screen.source.now == pytest.approx(1.1) and "⏸" in app.export_text()
        await pilot.click(timeline, offset=(0, 1))
        assert screen.source.now == 0.0 and screen.source.index == 0
        await pilot.press("plus", "plus", "plus", "plus")
        assert "x4" in app.export_text()

    run(app, body)


def test_the_view_redraws_at_least_20_times_a_second(demo_trace: Path) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)

    async def body(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        started, before = time.monotonic(), screen.redraws
        await until(pilot, lambda: time.monotonic() - started >= 2.0, "two seconds")
        rate = (screen.redraws - before) / (time.monotonic() - started)
        assert rate >= 20, f"{rate:.1f} redraws a second"

    run(app, body)


def test_help_lists_every_key_of_the_screen_including_unshown_ones(demo_trace: Path) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)

    async def body(pilot: Pilot) -> None:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.export_text()
        for what in ("Play/pause", "Step back", "Next fault", "Prev fault", "Faster", "Quit"):
            assert what in text
        await pilot.press("escape")
        assert isinstance(app.screen, ReplayScreen)
        await pilot.press("q")
        await until(pilot, lambda: app.return_value is not None, "q to quit")

    run(app, body)
    assert app.return_value == 0


def test_a_small_terminal_gets_a_sentence_until_it_is_big_enough(demo_trace: Path) -> None:
    """A resize is a message: the app restyles and repaints on its own turns, later
    still on a loaded machine, so each check waits for what it expects (to a deadline)."""
    app = InspectorApp(trace=demo_trace, autoplay=False)

    async def body(pilot: Pilot) -> None:
        notice = app.screen.query_one(TooSmall)
        timeline = app.screen.query_one(Timeline)
        await until(pilot, lambda: notice.display and not timeline.display, "the notice")
        await until_shown(pilot, "The terminal is 60x20; the inspector needs at least 80x24")
        await pilot.resize_terminal(79, 30)
        await until_shown(pilot, "The terminal is 79x30")
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: not notice.display and timeline.display, "the view again")
        await until_shown(pilot, "#1/12")

    run(app, body, size=(60, 20))


# -- snapshots (pytest --snapshot-update rewrites them after a deliberate change) ------------


def test_snapshot_replay_at_the_fault(demo_trace: Path, snap_compare) -> None:
    """The fault's record: left ring flagged red, problems listed, a notify bit lit."""
    app = InspectorApp(trace=demo_trace, autoplay=False)
    assert snap_compare(app, press=["right_square_bracket", "right"])


def test_snapshot_help(demo_trace: Path, snap_compare) -> None:
    app = InspectorApp(trace=demo_trace, autoplay=False)
    assert snap_compare(app, press=["question_mark"])


def test_snapshot_bad_trace(demo_trace: Path, snap_compare) -> None:
    Path("bad.trace").write_text('{"type":"header"')
    assert snap_compare(InspectorApp(trace="bad.trace"))


def test_snapshot_too_small(demo_trace: Path, snap_compare) -> None:
    assert snap_compare(InspectorApp(trace=demo_trace, autoplay=False), terminal_size=(60, 20))
