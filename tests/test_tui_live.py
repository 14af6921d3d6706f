"""The inspector on live channels between two real processes: listing, attaching, what
the view shows as the endpoints work, block, die and close -- and proof that watching a
channel changes nothing about it."""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from helpers import procs
from helpers.live_pair import FULL_PATH, PATH, attach_first, command, finish, start_pair
from helpers.pilot import run, until, until_shown
from textual.pilot import Pilot
from textual.widgets import DataTable

from vchansim import layout
from vchansim.cli import inspect as inspect_cli
from vchansim.errors import BackendError, ConfigError
from vchansim.hub import Op, hub_running, open_hub
from vchansim.hub.launcher import private_hub
from vchansim.leaks import assert_no_leaks
from vchansim.rundir import RunDir
from vchansim.tui.app import InspectorApp
from vchansim.tui.live import HubLink, LiveSource
from vchansim.tui.screens.channel import ChannelScreen
from vchansim.tui.screens.channels import ChannelsScreen
from vchansim.tui.screens.dialogs import ErrorScreen
from vchansim.tui.source import Source
from vchansim.tui.widgets.bits import Bit

# -- attaching and watching -----------------------------------------------------------------


def test_attach_to_a_channel_between_two_processes_and_watch_it_work_block_and_end(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    server, client = start_pair(spawn)
    command(client, "send 300 0")
    app = InspectorApp(rundir=rundir)

    async def body(pilot: Pilot) -> None:
        # The overview's row: both ends, 300 B of 1 KiB in the client's ring, no problem.
        row = f"1→2 {PATH}  connected  29 0    0 0       ok"
        await until_shown(pilot, row)
        # The row is highlighted already, so one click on it attaches (as Enter would).
        await pilot.click(app.screen.query_one(DataTable), offset=(2, 1))
        await until(pilot, lambda: isinstance(app.screen, ChannelScreen), "the channel view")
        screen = app.screen
        await until_shown(pilot, "prod 0x0000012c @ 300")
        text = app.export_text()
        assert "live · dom1 → dom2  /local/domain/1/data/vchan/2/tui" in text
        assert "order 10 · 1.0 KiB" in text and "order 11 · 2.0 KiB" in text
        assert "300 B  29%" in text
        # The client's hello at connect, and the kick its first write owed the server
        # (whose cli_notify starts with WRITE set, as libxenvchan's server_init does).
        assert "events srv→cli 0  cli→srv 2" in text
        assert "server connected" in text and "client connected" in text

        write_bit = screen.query_one("#cli_notify-write", Bit)
        assert not write_bit.has_class("-lit")
        server.send("recv 500")  # only 300 there: the server asks to be kicked, and sleeps
        await until(pilot, lambda: write_bit.has_class("-lit"), "cli_notify WRITE to light")
        await asyncio.to_thread(command, client, "send 200 1")
        await asyncio.to_thread(server.expect, "done")
        await until(pilot, lambda: not write_bit.has_class("-lit"), "the client to take it")
        await until_shown(pilot, "cons 0x000001f4 @ 500")
        assert "0 B   0%" in app.export_text()
        assert "events srv→cli 0  cli→srv 3" in app.export_text()  # the kick it asked for

        client.kill()  # the hub's unmap-notify clears cli_live for it
        await until_shown(pilot, "client exited")
        await asyncio.to_thread(command, server, "close")
        await until_shown(pilot, "channel gone: domain 1 revoked ref")
        assert "server exited" in app.export_text()
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChannelsScreen), "the list again")
        await until_shown(pilot, "no channels yet")

    run(app, body)
    server.send("quit")
    assert server.wait() == 0
    assert_no_leaks(rundir)  # the inspector let go of its mappings and its hub connections


def test_the_inspector_maps_the_page_read_only(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    server, client = start_pair(spawn)
    link = HubLink(rundir)
    try:
        (info,) = link.channels()
        assert info.page is not None and info.page.cli_live == layout.LIVE_CONNECTED
        view = link.map_page(info)
        with pytest.raises(TypeError, match=r"read-only|readonly"):
            view._map[layout.CLI_NOTIFY] = 3
        view.close()
    finally:
        link.close()
    source = LiveSource(rundir, info)
    try:
        assert isinstance(source, Source)  # what the screens draw from
        frame = source.frame()
        assert (frame.page.srv_live, frame.left.order, frame.right.order) == (1, 10, 11)
        assert frame.events is not None and frame.events.cli_to_srv == 1  # its hello
    finally:
        source.close()
    finish(client, server)


# -- who waits for whom ---------------------------------------------------------------------


def server_reading(screen: ChannelScreen) -> bool:
    """Whether the frame on screen shows the server asleep reading."""
    frame = screen.frame
    sleep = None if frame is None or frame.waits is None else frame.waits[0]
    return sleep is not None and sleep.direction == "read"


async def next_drawn(pilot: Pilot[object], screen: ChannelScreen) -> None:
    """Wait for a frame drawn from a sample taken after now (the screen samples the
    channel as it draws, on the app's own loop)."""
    assert screen.frame is not None
    now = screen.frame.time
    await until(
        pilot,
        lambda: screen.frame is not None and screen.frame.time > now,
        "the next frame",
    )


async def freeze_asleep(pilot: Pilot[object], screen: ChannelScreen, child: procs.Child) -> None:
    """Stop the server ``child`` in its sleep reading, as the inspector sees it.  Frozen
    there it cannot reach its liveness re-check, which would end a missed close within
    half a second; stopped in the instant between two of its sleeps, it is let go on
    and stopped again."""
    while True:
        await until(pilot, lambda: server_reading(screen), "the server asleep reading")
        child.stop()
        await next_drawn(pilot, screen)  # sampled after the stop: what it shows stays
        if server_reading(screen):
            return
        child.resume()


def test_a_close_without_its_event_under_a_sleeping_reader_is_flagged_missed_close_live(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    """The server sleeps reading an empty ring; the client clears its live byte without
    the event a close sends.  The inspector names the state while it lasts, and keeps
    the verdict once the server, let go on, sees the close at its liveness re-check."""
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir)

    def verdicts() -> set[str]:
        frame = app.screen.frame if isinstance(app.screen, ChannelScreen) else None
        return {stall.name for stall in frame.stalls} if frame is not None else set()

    def over() -> set[str]:
        frame = app.screen.frame if isinstance(app.screen, ChannelScreen) else None
        return {seen.name for seen in frame.ended} if frame is not None else set()

    async def body(pilot: Pilot[object]) -> None:
        screen = await attach_first(pilot)
        assert verdicts() == set()
        server.send("recv 1")  # an empty ring: it asks for WRITE and sleeps
        await freeze_asleep(pilot, screen, server)
        await asyncio.to_thread(command, client, "corrupt cli_live 0")
        await until(pilot, lambda: "missed-close" in verdicts(), "the missed-close verdict")
        assert verdicts() == {"missed-close"}  # nothing else is wrong
        await until_shown(pilot, "✖ missed-close: the server still sleeps")
        server.resume()
        assert await asyncio.to_thread(server.expect, "done") == ["closed"]
        await until(pilot, lambda: "missed-close" in over(), "the verdict kept as over")
        assert verdicts() == set()
        await until_shown(pilot, "✖ missed-close from t ")
        assert "now over" in app.export_text()

    run(app, body, size=(120, 40))
    finish(server, client)


# -- bad input ------------------------------------------------------------------------------


def test_attaching_to_a_channel_that_does_not_exist_or_has_gone_says_so(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    server, client = start_pair(spawn)
    app = InspectorApp(rundir=rundir, attach="data/vchan/2/nope")

    async def body(pilot: Pilot) -> None:
        await until_shown(pilot, "cannot attach")
        assert isinstance(app.screen, ErrorScreen)
        text = app.export_text()
        assert "cannot attach" in text and "no channel at 'data/vchan/2/nope'" in text
        assert FULL_PATH in text  # the channels that do exist are named
        await pilot.press("escape")
        listing = app.screen
        assert isinstance(listing, ChannelsScreen)
        (info,) = listing.channels
        await asyncio.to_thread(finish, client, server)  # the server revokes its grant
        listing.attach(info)  # what Enter does on a row that is stale by now
        await until_shown(pilot, f"channel {FULL_PATH} has gone")
        assert isinstance(app.screen, ErrorScreen)

    run(app, body)


def test_with_no_hub_the_list_says_so_and_starts_none() -> None:
    with private_hub() as empty:
        app = InspectorApp(rundir=empty)

        async def body(pilot: Pilot) -> None:
            await until_shown(pilot, "no hub is running for")

        run(app, body)
        assert not hub_running(empty)
        with pytest.raises(BackendError, match="no hub is running"):
            HubLink(empty)


# -- the command ----------------------------------------------------------------------------


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    inspect_cli.register(parser.add_subparsers())
    return parser.parse_args(["inspect", *argv])


def test_inspect_list_prints_the_channels(
    rundir: RunDir, spawn: Callable[..., procs.Child], capsys: pytest.CaptureFixture[str]
) -> None:
    server, client = start_pair(spawn)
    args = cli("--list", "--rundir", str(rundir.path))
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["server", "client", "orders", "path"]
    assert lines[1].split() == ["dom1", "connected", "dom2", "connected", "10/11", FULL_PATH]
    args = cli("--list", "--rundir", str(rundir.path), "vchan/2/other")
    assert args.func(args) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # the header only
    args = cli("--list", "--json", "--rundir", str(rundir.path))
    assert args.func(args) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["path"] == FULL_PATH
    assert (listed["server_domain"], listed["client_domain"]) == (1, 2)
    assert listed["page"]["orders"] == [10, 11] and listed["page"]["problems"] == []
    assert listed["page"]["srv_live"] == listed["page"]["cli_live"] == "connected"
    assert isinstance(listed["ring_ref"], int) and isinstance(listed["since"], float)
    finish(client, server)


def test_inspect_refuses_what_it_cannot_do_with_a_reason() -> None:
    args = cli()  # pytest's stdout is not a terminal
    with pytest.raises(ConfigError, match="needs a terminal; use --list"):
        args.func(args)
    args = cli("--replay", "x.trace", "--list")
    with pytest.raises(ConfigError, match="--replay shows a trace"):
        args.func(args)
    args = cli("--paused")
    with pytest.raises(ConfigError, match="--paused only applies to --replay"):
        args.func(args)
    args = cli("--json")
    with pytest.raises(ConfigError, match="--json only applies to --list"):
        args.func(args)
    for other in (("--replay", "x.trace"), ("--list",)):
        args = cli("--record", "x.jsonl", *other)
        with pytest.raises(ConfigError, match="--record records a live channel: not with"):
            args.func(args)


# -- watching changes nothing ---------------------------------------------------------------


@dataclass
class Observed:
    """Everything about a run that the inspector must not change."""

    headers: list[bytes]
    digests: list[list[str]]
    page: bytes


class PageTap:
    """The test's own read-only view of the control page, straight from the hub protocol
    (so that the comparison does not rest on the code under test)."""

    def __init__(self, rundir: RunDir) -> None:
        with open_hub(rundir, 0) as conn:
            reply = conn.call(Op.INSPECT, 1, 1)  # dom1's first grant: the control page
        try:
            self.map = mmap.mmap(
                reply.fds[0], layout.PAGE_SIZE, prot=mmap.PROT_READ, offset=reply.values[0] << 12
            )
        finally:
            reply.close_fds()

    def header(self) -> bytes:
        return self.map[: layout.HEADER_SIZE]


def traffic(
    rundir: RunDir,
    server: procs.Child,
    client: procs.Child,
    between: Callable[[], None] = lambda: None,
) -> Observed:
    """A fixed exchange that wraps both rings several times, with one blocked read in the
    middle (so notify bits and events take part); the page header after every step.
    ``between`` runs after each half-step (the watched run waits there for a sample)."""
    tap = PageTap(rundir)
    headers, digests = [], []
    for i in range(12):
        n, m = 300 + 37 * i, 700 + 53 * i
        command(client, f"send {n} {i}")
        between()
        digests.append(command(server, f"recv {n}"))
        command(server, f"send {m} {i}")
        between()
        digests.append(command(client, f"recv {m}"))
        headers.append(tap.header())
        if i == 6:
            server.send("recv 400")
            procs.wait_for(
                lambda: tap.header()[layout.CLI_NOTIFY] & layout.NOTIFY_WRITE, what="the block"
            )
            headers.append(tap.header())
            command(client, "send 400 99")
            digests.append(server.expect("done"))
            headers.append(tap.header())
    page = tap.map[:]
    tap.map.close()
    return Observed(headers, digests, page)


def pair_in(root: RunDir, stack: list[procs.Child]) -> tuple[procs.Child, procs.Child]:
    def start(code: str) -> procs.Child:
        child = procs.Child(code, root)
        stack.append(child)
        return child

    return start_pair(start)


def test_watching_a_channel_changes_neither_its_bytes_nor_its_page() -> None:
    children: list[procs.Child] = []
    try:
        with private_hub() as alone:
            unwatched = traffic(alone, *pair_in(alone, children))
        with private_hub() as watched_dir:
            server, client = pair_in(watched_dir, children)
            app = InspectorApp(rundir=watched_dir)
            seen: dict[str, object] = {}

            async def body(pilot: Pilot) -> None:
                screen = await attach_first(pilot)
                source = screen.source
                before = source.samples

                def sampled() -> None:  # let the inspector look at every state in between
                    now = source.samples
                    procs.wait_for(lambda: source.samples > now, what="a sample")

                seen["observed"] = await asyncio.to_thread(
                    traffic, watched_dir, server, client, sampled
                )
                seen["samples"] = source.samples - before
                final = seen["observed"].headers[-1]  # type: ignore[attr-defined]
                left_prod = int.from_bytes(final[4:8], "little")
                await until_shown(pilot, f"prod 0x{left_prod:08x}")

            run(app, body)
            watched = seen["observed"]
    finally:
        for child in children:
            child.close()
    assert seen["samples"] >= 24  # it sampled all along, between every two steps
    assert watched == unwatched
    assert len(unwatched.headers) == 14 and len(unwatched.digests) == 25
    assert unwatched.headers[7][layout.CLI_NOTIFY] & layout.NOTIFY_WRITE  # the blocked read
