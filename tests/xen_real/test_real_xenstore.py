"""What vchansim says to the real xenstored, next to what Xen's C libxenvchan says.

Both go through a recording relay in front of ``/var/run/xenstored/socket`` (they find it
through ``XENSTORED_PATH``, as libxenstore's ``xs_open`` does).  The C library's
conversations are checked against docs/protocol.md §7.9, and vchansim's against the C ones,
with the values that legitimately differ (grant refs, ports, transaction ids) masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from xsrecorder import Conversation, XenstoreRecorder

from vchansim.backends.xen import XenBackend
from vchansim.channel import Vchan

DAEMON = "/var/run/xenstored/socket"


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[XenstoreRecorder]:
    with XenstoreRecorder(str(tmp_path / "xs.sock"), DAEMON) as relay:
        monkeypatch.setenv("XENSTORED_PATH", relay.listen_path)
        yield relay


def masked(conversations: list[Conversation], path: str) -> list[list[tuple]]:
    """Each conversation's requests with the channel path, numbers and tx ids generalised."""
    out = []
    for conv in conversations:
        steps = []
        for kind, tx, fields in conv.summary():
            text = [f.decode().replace(path, "<path>") for f in fields]
            if kind == "WRITE":
                text[1] = re.sub(r"^\d+$", "<n>", text[1])
            steps.append((kind, "T" if tx else 0, *text))
        out.append(steps)
    return out


SECTION_7_9 = [
    [  # server init, one connection
        ("READ", 0, "domid", ""),
        ("TRANSACTION_START", 0, "", ""),
        ("WRITE", "T", "<path>/ring-ref", "<n>"),
        ("SET_PERMS", "T", "<path>/ring-ref", "n0", "r0", ""),
        ("WRITE", "T", "<path>/event-channel", "<n>"),
        ("SET_PERMS", "T", "<path>/event-channel", "n0", "r0", ""),
        ("TRANSACTION_END", "T", "T", ""),
    ],
    [("READ", 0, "<path>/ring-ref", ""), ("READ", 0, "<path>/event-channel", "")],  # client
    [("RM", 0, "<path>", "")],  # server close
]


def test_libxenvchan_traffic_is_section_7_9(recorder, start, record, xs_path):
    server = start("c", "server", 0, xs_path, "echo")
    recorder.wait_finished(1)  # the server has published before the client looks
    client = start("c", "client", 0, xs_path, "ping", 1, 1)
    record(server.result(), client.result())
    assert masked(recorder.wait_finished(3), xs_path) == SECTION_7_9


@pytest.fixture
def backend() -> XenBackend:
    """Made before the recorder starts: its own domid query is not the channel's traffic."""
    return XenBackend()


def test_vchansim_traffic_is_libxenvchans(backend, recorder, xs_path):
    server = Vchan.server(backend, 0, xs_path)
    client = Vchan.client(backend, 0, xs_path)
    client.write(b"z")
    assert server.read(1) == b"z"
    client.close()
    server.close()
    assert masked(recorder.wait_finished(3), xs_path) == SECTION_7_9
