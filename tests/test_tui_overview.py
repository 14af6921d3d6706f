"""The overview of every live channel of a hub: two real channels side by side, one
moving data and one whose writer waits on a reader that does not read; each row says
so, and the stalled one opens in its own view."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from helpers import procs
from helpers.live_pair import ENDPOINT, FULL_PATH, PATH, command, finish, start_pair
from helpers.pilot import run, until, until_shown
from textual.pilot import Pilot

from vchansim.leaks import assert_no_leaks
from vchansim.rundir import RunDir
from vchansim.tui.app import InspectorApp
from vchansim.tui.screens.channels import ChannelsScreen
from vchansim.tui.screens.live import LiveScreen
from vchansim.tui.widgets.overview import Overview

#: The second channel, between the same domains (listed first: the list is by path).
STUCK = "data/vchan/2/stuck"
STUCK_FULL = f"/local/domain/1/{STUCK}"
STUCK_SERVER = ENDPOINT.format(open=f'Vchan.server(ShmBackend(1), 2, "{STUCK}", 0, 0)')
STUCK_CLIENT = ENDPOINT.format(open=f'Vchan.client(ShmBackend(2), 1, "{STUCK_FULL}")')
#: Packets of 1 KiB (the client's ring) the busy channel moves while the overview watches.
PACKETS = 200


def move(client: procs.Child, server: procs.Child) -> None:
    """Client to server, one packet at a time."""
    for _ in range(PACKETS):
        command(client, "send 1024 2")
        command(server, "recv 1024")


def test_the_overview_shows_every_channels_rate_fill_and_problems_and_opens_one(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    busy_server, busy_client = start_pair(spawn)
    stuck_server = spawn(STUCK_SERVER)
    stuck_server.expect("ready")
    stuck_client = spawn(STUCK_CLIENT)
    stuck_client.expect("ready")
    # 2 KiB fill the server's 2 KiB ring, which nobody reads: its next write sleeps, its
    # READ request made, while the client is awake elsewhere -- a consumer-stalled writer.
    command(stuck_server, "send 2048 1")
    stuck_server.send("send 1024 2")
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot[object]) -> None:
        screen = app.screen
        assert isinstance(screen, ChannelsScreen)
        # Columns: channel, state, fill, rate B/s (both rings), problems.
        stuck = re.compile(rf"1→2 {STUCK}  connected  0 100 +\S+ \S+ +◐ consumer-stalled")
        await until(pilot, lambda: stuck.search(app.export_text()), "the stuck row")
        assert "1 with problems" in app.export_text()
        busy = re.compile(rf"1→2 {PATH} +connected  0 0 +\S+ \S+ +ok")
        await until(pilot, lambda: busy.search(app.export_text()), "the busy row")

        moved = asyncio.ensure_future(asyncio.to_thread(move, busy_client, busy_server))
        await until(
            pilot, lambda: screen.frames[FULL_PATH].left.rate > 0, "the busy channel's rate"
        )
        await moved
        assert screen.frames[STUCK_FULL].left.rate == 0  # the stuck one moved nothing

        table = screen.query_one(Overview)
        assert table.chosen_path() == STUCK_FULL  # first row: the cursor starts there
        await pilot.press("down", "up", "enter")
        await until(pilot, lambda: isinstance(app.screen, LiveScreen), "the channel view")
        await until_shown(pilot, "◐ consumer-stalled: the server waits")
        assert f"live · dom1 → dom2  {STUCK_FULL}" in app.export_text()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the overview again")

    run(app, body, size=(100, 30))
    command(stuck_client, "recv 2048")
    command(stuck_client, "recv 1024")
    stuck_server.expect("done")
    finish(busy_client, busy_server, stuck_client, stuck_server)
    assert_no_leaks(rundir)  # every row's source let go of its mappings
