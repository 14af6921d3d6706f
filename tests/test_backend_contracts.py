"""The Events contract: optional abilities are methods of the base with defaults, and
the scenario harness's tapped handle forwards every one -- so a scenario wakes its
endpoints through the same calls a user's program makes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from vchansim.backends.base import Events
from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.channel import Vchan
from vchansim.scenario.tap import EventTap, TappedBackend, TappedEvents

PATH = "data/vchan/contract"
#: Every public method of the contract, abstract or optional.
METHODS = sorted(
    name for name, _ in inspect.getmembers(Events, inspect.isfunction) if not name.startswith("_")
)


def _forward(name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)(*args, **kwargs)

    return call


def _recorder_init(self: Any, inner: Events, calls: list[str]) -> None:
    self.inner, self.calls = inner, calls


#: A real handle that notes, in order, every method of the contract called on it.
Recorder = type(
    "Recorder", (Events,), {"__init__": _recorder_init} | {m: _forward(m) for m in METHODS}
)


class RecordingBackend(MemoryBackend):
    """The memory backend, its event handles recorded into ``calls``."""

    def __init__(self, domid: int, hv: MemoryHypervisor, calls: list[str]) -> None:
        super().__init__(domid, hypervisor=hv)
        self.calls = calls

    def events(self) -> Events:
        return Recorder(super().events(), self.calls)


def exchange(tapped: bool) -> tuple[list[str], list[str]]:
    """A fixed conversation on one channel; the calls each end's handle received."""
    hv = MemoryHypervisor()
    server_calls: list[str] = []
    client_calls: list[str] = []
    server_backend = RecordingBackend(1, hv, server_calls)
    client_backend = RecordingBackend(0, hv, client_calls)
    if tapped:
        server_backend = TappedBackend(server_backend, EventTap())  # type: ignore[assignment]
        client_backend = TappedBackend(client_backend, EventTap())  # type: ignore[assignment]
    srv = Vchan.server(server_backend, 0, PATH, blocking=False)
    cli = Vchan.client(client_backend, 1, f"/local/domain/1/{PATH}", blocking=False)
    assert cli.write(b"ping") == 4
    assert srv.wait(5.0) and srv.read(4) == b"ping"
    assert srv.write(b"pong") == 4
    assert cli.wait(5.0) and cli.read(4) == b"pong"
    cli.close()
    srv.close()
    return server_calls, client_calls


def test_tapped_and_untapped_channels_make_the_same_calls_on_their_handles():
    plain = exchange(tapped=False)
    tapped = exchange(tapped=True)
    assert tapped == plain
    for calls in plain:
        assert "consume" in calls and "waiting" in calls  # the production wake path
        assert "pending" not in calls and "unmask" not in calls


def test_the_tapped_handle_overrides_every_method_of_the_contract():
    missing = [m for m in METHODS if m not in vars(TappedEvents)]
    assert missing == []
    assert {"consume", "waiting"} <= set(METHODS)


def test_the_default_consume_is_pending_then_unmask():
    hv = MemoryHypervisor()
    calls: list[str] = []
    srv = Recorder(MemoryBackend(1, hypervisor=hv).events(), calls)
    cli = MemoryBackend(0, hypervisor=hv).events()
    port = srv.bind_unbound(0)
    cport = cli.bind_interdomain(1, port)
    cli.notify(cport)
    del calls[:]
    assert Events.consume(srv, 5.0) == port
    assert calls == ["pending", "unmask"]
    cli.notify(cport)
    assert srv.consume(0) == port  # left armed: the next event fires again


@pytest.mark.parametrize("name", ["bind_unbound", "notify", "pending", "close"])
def test_a_handle_missing_a_required_method_cannot_be_made(name):
    body = {m: _forward(m) for m in METHODS if m != name}
    incomplete = type("Incomplete", (Events,), body)
    with pytest.raises(TypeError, match=name):
        incomplete()
