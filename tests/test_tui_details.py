"""The live view's debugger parts, on channels between two real processes: the bytes in
flight (in the control page and in granted data pages, across the ring's wrap), who the
ends are, times from the channel's start, and pausing the picture."""

from __future__ import annotations

import asyncio
import time

from helpers.live_pair import (
    CLIENT,
    ENDPOINT,
    FULL_PATH,
    PATH,
    attach_first,
    command,
    finish,
    pattern,
    start_pair,
)
from helpers.pilot import run, until, until_shown
from textual.pilot import Pilot
from textual.widgets import Static

from vchansim.rundir import RunDir
from vchansim.tui.app import InspectorApp
from vchansim.tui.live import HubLink, LiveSource, select_channel
from vchansim.tui.widgets.hexdump import HexDump

#: A server whose left (client -> server) ring is 8 KiB: two granted data pages.
BIG_SERVER = ENDPOINT.format(open=f'Vchan.server(ShmBackend(1), 2, "{PATH}", 8192, 0)')


def left_bytes(pilot: Pilot) -> bytes | None:
    return pilot.app.screen.query_one("#hex-left", HexDump).data


def test_the_bytes_in_flight_of_an_in_page_ring_in_hex_and_ascii(rundir: RunDir, spawn) -> None:
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await asyncio.to_thread(command, client, "send 300 65")  # "ABC..." first
        await until(pilot, lambda: left_bytes(pilot) == pattern(300, 65), "the bytes")
        text = pilot.app.export_text()
        assert "+000 41 42 43 44 45 46 47 48" in text and "ABCDEFGH" in text
        assert "ring empty" in text  # the right ring
        await asyncio.to_thread(command, server, "recv 100")
        await until(pilot, lambda: left_bytes(pilot) == pattern(300, 65)[100:], "after cons")

    run(app, body, size=(120, 40))
    finish(client, server)


def test_a_ring_in_granted_pages_is_read_through_them_across_its_wrap(
    rundir: RunDir, spawn
) -> None:
    server = spawn(BIG_SERVER)
    server.expect("ready")
    client = spawn(CLIENT)
    client.expect("ready")
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await until_shown(pilot, "order 13 · 8.0 KiB")
        await asyncio.to_thread(command, client, "send 6000 1")
        await until(pilot, lambda: left_bytes(pilot) == pattern(6000, 1)[:1024], "page 0..1")
        await asyncio.to_thread(command, server, "recv 6000")
        # 6000..10000 of an 8 KiB ring: the end of page 1, then the start of page 0.
        await asyncio.to_thread(command, client, "send 4000 7")
        await until(pilot, lambda: left_bytes(pilot) == pattern(4000, 7)[:1024], "the wrap")
        await asyncio.to_thread(command, server, "recv 3500")
        await until(pilot, lambda: left_bytes(pilot) == pattern(4000, 7)[3500:], "past it")
        await pilot.press("i")
        await pilot.pause()
        ends = str(pilot.app.screen.query_one("#ends", Static).content)
        source = pilot.app.screen.source
        data = sorted(
            g["ref"]
            for g in source._link.state()["grants"]
            if g["domid"] == 1 and g["ref"] != source.info.ring_ref
        )
        assert len(data) == 2 and f"data pages {data[0]}-{data[1]}" in ends, ends

    run(app, body, size=(120, 40))
    finish(client, server)


def test_the_ends_are_named_by_domain_port_pid_and_command(rundir: RunDir, spawn) -> None:
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await pilot.press("i")
        await until_shown(pilot, f"pid {client.pid}")
        text = str(pilot.app.screen.query_one("#ends", Static).content)
        lines = text.splitlines()
        assert lines[0].startswith("server dom1") and f"pid {server.pid}" in lines[0]
        assert lines[1].startswith("client dom2") and f"pid {client.pid}" in lines[1]
        assert "python" in lines[0] and "python" in lines[1]  # their command lines
        state = pilot.app.screen.source._link.state()
        ref = next(g["ref"] for g in state["grants"] if g["domid"] == 1)
        assert f"xenstore {FULL_PATH}" in lines[2] and f"ring-ref={ref}" in lines[2]
        assert "event-channel=" in lines[2]
        assert f"control page ref {ref} · data pages none: in page" in lines[3]

    run(app, body, size=(120, 40))
    finish(client, server)


def test_times_count_from_the_channel_start_and_space_holds_the_picture(
    rundir: RunDir, spawn
) -> None:
    before = time.monotonic()
    server, client = start_pair(spawn)
    link = HubLink(rundir)
    info = select_channel(link.channels(), PATH)
    link.close()
    assert info.since is not None and before <= info.since <= time.monotonic()
    attached = time.monotonic()
    source = LiveSource(rundir, info)
    try:
        # Not from attaching: from when the server granted the control page.
        assert source.frame().time >= attached - info.since > 0
    finally:
        source.close()
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        await attach_first(pilot)
        await until_shown(pilot, "since the channel started")
        await pilot.press("space")
        await until_shown(pilot, "⏸ paused at t")
        await asyncio.to_thread(command, client, "send 300 0")
        held = pilot.app.screen.redraws
        await until(pilot, lambda: pilot.app.screen.redraws > held + 5, "redraws")
        assert "prod 0x00000000 @ 0" in pilot.app.export_text()  # the held picture
        await pilot.press("space")
        await until_shown(pilot, "prod 0x0000012c @ 300")

    run(app, body, size=(120, 40))
    finish(client, server)
