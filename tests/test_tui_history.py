"""The live view's history, pause and recording: the model on made-up pages, then the
inspector under Pilot on channels between two real processes -- a ring filling with no
reader on the timeline, a paused picture while sampling goes on, and a recording played
back through the replay's own code."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from helpers.live_pair import attach_first, command, finish, start_pair
from helpers.pilot import run, until, until_shown
from textual.pilot import Pilot

from vchansim import layout
from vchansim.layout import PageState
from vchansim.rundir import RunDir
from vchansim.trace import read_trace
from vchansim.tui import history
from vchansim.tui.app import InspectorApp
from vchansim.tui.frames import EventCounts, Frame, FrameBuilder
from vchansim.tui.history import History
from vchansim.tui.live import LiveSource
from vchansim.tui.playback import ReplaySource
from vchansim.tui.record import DEFAULT_NAME, Recordings
from vchansim.tui.screens.live import LiveScreen
from vchansim.tui.widgets.history import bars


def page(left_fill: int = 0, cli_notify: int = 0, srv_notify: int = 0) -> PageState:
    return PageState(0, left_fill, 0, 0, 10, 11, 1, 1, cli_notify, srv_notify)


def header(state: PageState) -> tuple[int, ...]:
    """The page's fields alone (a replayed frame's page is a trace sample, with more)."""
    return tuple(getattr(state, f.name) for f in dataclasses.fields(PageState))


def frames(*steps: tuple[float, PageState, int]) -> list[Frame]:
    builder = FrameBuilder()
    return [builder.feed(t, p, EventCounts(events, 0)) for t, p, events in steps]


# -- the model --------------------------------------------------------------------------------


def test_slots_keep_the_highest_fill_the_events_sent_and_which_requests_changed() -> None:
    past = History()
    for frame in frames(
        (0.00, page(100), 10),
        (0.04, page(512, cli_notify=layout.NOTIFY_WRITE), 14),
        (0.08, page(0, cli_notify=layout.NOTIFY_WRITE), 20),
        (0.12, page(256, srv_notify=layout.NOTIFY_READ), 21),
    ):
        past.add(frame)
    first, second = past.slots
    assert (first.left, first.events, first.server_asked, first.client_asked) == (
        0.5,
        10,  # 14 - 10, then 20 - 14: the count before the first sample is not this slot's
        True,
        False,
    )
    assert (second.left, second.events, second.server_asked, second.client_asked) == (
        0.25,
        1,
        True,  # WRITE cleared again
        True,
    )
    left, right = past.columns(2)
    assert left is not None and right is not None
    assert left.rate == pytest.approx(10 / history.SLOT) and right.left == 0.25


def test_columns_merge_slots_to_fit_and_the_window_is_bounded() -> None:
    past = History()
    builder = FrameBuilder()
    seconds = history.WINDOW + 60
    for tenth in range(int(seconds * 10)):
        t = tenth / 10
        past.add(builder.feed(t, page(int(t) % 1024), EventCounts(tenth, 0)))
    assert len(past.slots) == history.WINDOW / history.SLOT  # the first minute dropped
    assert past.slots[0].number == 600
    start, end = past.span(100)
    assert end == pytest.approx(seconds) and end - start == pytest.approx(history.WINDOW)
    columns = past.columns(100)
    assert all(c is not None and c.rate == pytest.approx(10.0) for c in columns)


def test_a_column_before_the_first_sample_is_empty_and_a_gap_keeps_the_fill() -> None:
    past = History()
    for frame in frames((1.0, page(512), 0), (1.35, page(512), 0)):
        past.add(frame)
    columns = past.columns(6)
    assert columns[:2] == [None, None]
    assert [c.left for c in columns[2:] if c is not None] == [0.5, 0.5, 0.5, 0.5]
    assert columns[3] is not None and columns[3].rate == 0.0  # nothing sampled, nothing sent


def test_bars_stack_eighths_over_the_rows_they_have() -> None:
    assert bars([0.0, 0.5, 1.0, None, 0.01], 1) == [" ▄█ ▁"]
    assert bars([0.25, 1.0], 2) == [" █", "▄█"]


def test_recordings_never_write_over_a_file_they_did_not_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path(DEFAULT_NAME).write_text("an older recording\n")
    unnamed = Recordings()
    assert [unnamed.next_path().name, unnamed.next_path().name] == [
        "vchansim-recording-2.jsonl",
        "vchansim-recording-3.jsonl",
    ]
    named = Recordings(tmp_path / "run.jsonl")
    (tmp_path / "run.jsonl").write_text("x\n")
    (tmp_path / "run-2.jsonl").write_text("x\n")
    assert named.at_once
    assert [named.next_path().name, named.next_path().name] == ["run.jsonl", "run-3.jsonl"]


# -- live, under Pilot ------------------------------------------------------------------------


def history_line(pilot: Pilot, label: str) -> str:
    """The history panel's row of ``label``, as on screen."""
    text = pilot.app.export_text()
    return next((line for line in text.splitlines() if f"{label} " in line), "")


def test_the_timeline_shows_the_fill_rising_while_no_reader_reads(rundir: RunDir, spawn) -> None:
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await pilot.press("h")
        await until_shown(pilot, "keeps 5 min")
        for sent, percent in ((300, "29%"), (600, "58%"), (900, "87%")):
            await asyncio.to_thread(command, client, f"send 300 {sent}")
            await until(pilot, lambda p=percent: p in history_line(pilot, "c→s fill"), percent)
            # Let it hold a while, so that each level has columns of its own.
            slot = pilot.app.screen.history.slots[-1].number
            await until(pilot, lambda s=slot: pilot.app.screen.history.slots[-1].number > s + 3, "")
        line = history_line(pilot, "c→s fill")
        levels = [" ▁▂▃▄▅▆▇█".index(c) for c in line.split("c→s fill", 1)[1].split()[0]]
        assert levels == sorted(levels) and levels[0] < levels[-1], line  # rising, never down
        assert "0%" in history_line(pilot, "s→c fill")
        assert "events/s" in pilot.app.export_text() and "notify" in pilot.app.export_text()

    run(app, body)  # 80x24: the smallest terminal
    command(server, "recv 900")
    finish(client, server)


def test_pause_holds_the_picture_while_the_history_goes_on(rundir: RunDir, spawn) -> None:
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        screen = await attach_first(pilot)
        assert isinstance(screen, LiveScreen)
        await pilot.press("h")
        await until_shown(pilot, "keeps 5 min")
        await pilot.press("space")
        await until_shown(pilot, "⏸ paused at t")
        assert "space Pause" in pilot.app.export_text()  # the footer names the key
        shown = pilot.app.export_text()
        await asyncio.to_thread(command, client, "send 512 0")
        await until(
            pilot,
            lambda: screen.history.last is not None and screen.history.last.left.fill == 512,
            "the history to see the bytes",
        )
        held = screen.redraws
        await until(pilot, lambda: screen.redraws > held + 5, "redraws")
        assert pilot.app.export_text() == shown  # the picture, timeline included, held
        await pilot.press("space")
        await until(pilot, lambda: "50%" in history_line(pilot, "c→s fill"), "live again")

    run(app, body)
    command(server, "recv 512")
    finish(client, server)


def test_a_recording_replays_the_states_seen_live(
    rundir: RunDir, spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[LiveSource, Frame]] = []
    real_frame = LiveSource.frame

    def watched(source: LiveSource) -> Frame:  # the real sampler, its frames kept
        frame = real_frame(source)
        seen.append((source, frame))
        return frame

    monkeypatch.setattr(LiveSource, "frame", watched)
    server, client = start_pair(spawn)
    path = tmp_path / "live.jsonl"
    app = InspectorApp(rundir=rundir, record=path)  # vchansim inspect --record live.jsonl
    watched_source: list[LiveSource] = []

    async def body(pilot: Pilot) -> None:
        screen = await attach_first(pilot)
        watched_source.append(screen.source)
        await until_shown(pilot, "● rec")
        for sent, read, fill in ((300, 200, 100), (500, 400, 200)):
            await asyncio.to_thread(command, client, f"send {sent} 1")
            await asyncio.to_thread(command, server, f"recv {read}")
            await until(pilot, lambda f=fill: screen.frame.left.fill == f, f"fill {fill}")
        await pilot.press("q")  # quitting closes the recording

    run(app, body)
    finish(client, server)
    [done] = app.recordings.done
    live = [frame for source, frame in seen if source is watched_source[0]]
    count = int(done.split()[1])
    assert done == f"recorded {count} samples to {path}" and count >= 3  # 0, 100, 200 at least
    trace = read_trace(path)
    assert trace.complete and trace.records[-1]["passed"] is None
    replay = ReplaySource.open(path)  # what --replay opens
    assert len(replay.frames) == count
    for was, now in zip(live[:count], replay.frames, strict=True):
        assert now.time == pytest.approx(was.time, abs=1e-6)
        assert header(now.page) == header(was.page)
        assert (now.left.fill, now.right.fill) == (was.left.fill, was.right.fill)
        assert (now.left.wraps, now.right.wraps) == (was.left.wraps, was.right.wraps)
        assert now.events == was.events and now.stalls == was.stalls
    assert {f.left.fill for f in replay.frames} >= {0, 100, 200}
    assert "dom1 → dom2" in replay.title

    async def replayed(pilot: Pilot) -> None:
        await until_shown(pilot, f"#1/{count}")

    run(InspectorApp(trace=path, autoplay=False), replayed)


@pytest.mark.parametrize(
    ("target", "why"),
    [("missing/dir/live.jsonl", "No such file or directory"), ("/dev/full", "No space left")],
)
def test_a_recording_that_cannot_be_written_says_so_in_one_line(
    rundir: RunDir, spawn, tmp_path: Path, target: str, why: str
) -> None:
    server, client = start_pair(spawn)
    path = tmp_path / target if not target.startswith("/") else Path(target)
    app = InspectorApp(rundir=rundir, record=path)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await until_shown(pilot, f"✖ cannot write trace {path}: {why}")
        await asyncio.to_thread(command, client, "send 300 0")
        await until_shown(pilot, "prod 0x0000012c @ 300")  # the view goes on

    run(app, body, size=(160, 40))
    command(server, "recv 300")
    finish(client, server)
    [said] = app.recordings.done  # what the command prints once the screen has gone
    assert said.startswith(f"cannot write trace {path}: {why}") and "\n" not in said
