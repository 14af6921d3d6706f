"""What a set-up asks of the hub, in which order and in how many round trips.

A set-up's time is its round trips to the hub (each a wake-up of the hub and one of the
end), so the requests that do not wait for each other's answers go out together and
before the end's own work: the server's XenStore transaction is started while its port
and grant are made, its writes are answered while it builds its page, and the client's
lookup is answered while the hub takes its two handles in.  The test records, on the real
hub, every write on each end's XenStore connection and every hub call, and checks that
what XenStore ends up holding is what libxenvchan writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vchansim.backends.shm import ShmBackend
from vchansim.channel import Vchan
from vchansim.hub.protocol import HubConnection, Op
from vchansim.rundir import RunDir
from vchansim.xenstore import wire
from vchansim.xenstore.client import XsClient
from vchansim.xenstore.wire import Perm, XsType

Event = tuple[str, tuple[str, ...]]


class RecordingBackend(ShmBackend):
    """The shm backend, noting each XenStore write (the request types it carried) and
    each hub call (its op) in ``noted``, in order."""

    def __init__(self, domid: int, rundir: RunDir) -> None:
        super().__init__(domid, rundir=rundir)
        self.noted: list[Event] = []

    def store(self) -> XsClient:
        client = super().store()
        write: Callable[[bytes], None] = client._io.write

        def spy(data: bytes) -> None:
            messages = wire.Decoder().feed(data)
            self.noted.append(("xs", tuple(XsType(m.type).name for m in messages)))
            write(data)

        client._io.write = spy  # type: ignore[method-assign]
        return client

    def _connect(self) -> HubConnection:
        conn = super()._connect()
        call = conn.call

        def spy(op: Op, *args: int, **kwargs: Any) -> Any:
            self.noted.append(("hub", (op.name,)))
            return call(op, *args, **kwargs)

        conn.call = spy  # type: ignore[method-assign]
        return conn


def test_a_setup_takes_four_round_trips_for_the_server_and_three_for_the_client(
    rundir: RunDir,
) -> None:
    for domid in (1, 2):  # the hub serves both domains' xenstore sockets already
        ShmBackend(domid, rundir=rundir).store().close()
    server_end, client_end = RecordingBackend(1, rundir), RecordingBackend(2, rundir)
    server = Vchan.server(server_end, 2, "data/trips")
    client = Vchan.client(client_end, 1, "/local/domain/1/data/trips")
    try:
        assert server_end.noted == [
            ("xs", ("READ", "TRANSACTION_START")),  # answered while the hub makes these:
            ("hub", ("EVT_BIND_UNBOUND",)),
            ("hub", ("GNT_SHARE",)),
            ("xs", ("WRITE", "SET_PERMS", "WRITE", "SET_PERMS")),  # ...and while the page is built
            ("xs", ("TRANSACTION_END",)),
        ]
        assert client_end.noted == [
            ("xs", ("READ", "READ")),
            ("hub", ("EVT_BIND_INTERDOMAIN",)),
            ("hub", ("GNT_MAP",)),
        ]
        client.write(b"x")
        assert server.read(1) == b"x"
        with ShmBackend(0, rundir=rundir).store() as dom0:
            ring_ref = int(dom0.read("/local/domain/1/data/trips/ring-ref"))
            for key, value in (("ring-ref", ring_ref), ("event-channel", server.port)):
                node = f"/local/domain/1/data/trips/{key}"
                assert dom0.read(node) == str(value).encode()
                assert dom0.get_perms(node) == [Perm("n", 1), Perm("r", 2)]
    finally:
        client.close()
        server.close()
