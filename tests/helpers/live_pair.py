"""Two real endpoint processes the inspector's live tests watch: they obey one-line
commands, so a test decides the exact interleaving of what they do."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from vchansim.tui.screens.channel import ChannelScreen

from . import procs
from .pilot import until, until_shown

PATH = "data/vchan/2/tui"
FULL_PATH = f"/local/domain/1/{PATH}"

#: An endpoint's code, ``{open}`` being the expression that opens its channel.  Commands:
#: "send N SEED" (packet write of N :func:`pattern` bytes), "recv N" (packet read; answers
#: with a digest of everything received, or "closed" if the peer closed first), "corrupt
#: FIELD VALUE" (stores VALUE in a field of the control page, as the scenarios' corrupt
#: fault does: "corrupt cli_live 0" is a client's close without its event), "close",
#: "quit".
ENDPOINT = """
import hashlib
from vchansim.channel import ChannelClosed, Vchan
from vchansim.scenario.faults.corrupt import CorruptFault
from vchansim.scenario.spec import Trigger
def pattern(n, seed):
    return ((bytes(range(seed % 256, 256)) + bytes(range(256))) * (n // 256 + 1))[:n]
chan = {open}
say("ready")
digest = hashlib.sha256()
while True:
    cmd = hear().split()
    if not cmd or cmd[0] == "quit":
        break
    if cmd[0] == "send":
        chan.send(pattern(int(cmd[1]), int(cmd[2])))
        say("done")
    elif cmd[0] == "recv":
        try:
            digest.update(chan.recv(int(cmd[1])))
        except ChannelClosed:
            say("done", "closed")
        else:
            say("done", digest.hexdigest())
    elif cmd[0] == "corrupt":
        CorruptFault("endpoint", Trigger(at=0.0), field=cmd[1], value=int(cmd[2])).apply(chan)
        say("done")
    elif cmd[0] == "close":
        chan.close()
        say("done")
"""
SERVER = ENDPOINT.format(open=f'Vchan.server(ShmBackend(1), 2, "{PATH}", 0, 0)')
CLIENT = ENDPOINT.format(open=f'Vchan.client(ShmBackend(2), 1, "{FULL_PATH}")')


def pattern(n: int, seed: int) -> bytes:
    """What the endpoints' "send N SEED" writes."""
    return ((bytes(range(seed % 256, 256)) + bytes(range(256))) * (n // 256 + 1))[:n]


def command(child: procs.Child, line: str) -> list[str]:
    """Have ``child`` do ``line`` and return its answer."""
    child.send(line)
    return child.expect("done")


def start_pair(start: Callable[[str], procs.Child]) -> tuple[procs.Child, procs.Child]:
    """A connected server and client, started with ``start``."""
    server = start(SERVER)
    server.expect("ready")
    client = start(CLIENT)
    client.expect("ready")
    return server, client


def finish(*children: procs.Child) -> None:
    """Close the endpoints as a well-behaved program does (the server removes its keys),
    so that the run directory's leak check at teardown has nothing to find."""
    for child in children:
        command(child, "close")
        child.send("quit")
        assert child.wait() == 0


async def attach_first(pilot: Pilot[object]) -> ChannelScreen:
    """From the channel list, attach to the (only) channel with the keyboard."""
    await until_shown(pilot, f"1→2 {PATH}")  # the overview's row
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, ChannelScreen), "the channel view")
    screen = pilot.app.screen
    assert isinstance(screen, ChannelScreen)
    return screen
