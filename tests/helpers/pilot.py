"""Driving the inspector in a test: run an app headless with a body, and wait for what
it shows (bounded by a deadline, never by a sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from vchansim.tui.app import InspectorApp

#: Seconds a test waits for the app to show something before it fails.
DEADLINE = 10.0


def run(
    app: InspectorApp,
    body: Callable[[Pilot[object]], Awaitable[None]],
    size: tuple[int, int] = (80, 24),
) -> None:
    """Run ``app`` headless on a ``size`` terminal and let ``body`` drive it."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


async def until(pilot: Pilot[object], condition: Callable[[], object], what: str) -> None:
    """Let the app run until ``condition`` holds (fail at the deadline)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def until_shown(pilot: Pilot[object], text: str) -> None:
    """Let the app run until ``text`` is on screen."""
    await until(pilot, lambda: text in pilot.app.export_text(), f"{text!r} on screen")
