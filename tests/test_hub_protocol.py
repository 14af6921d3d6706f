"""The hub's wire protocol: the codec, and bad clients that must not disturb good ones."""

from __future__ import annotations

import array
import contextlib
import errno
import json
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.errors import BackendError
from vchansim.hub import open_hub, protocol
from vchansim.hub.protocol import (
    HubConnection,
    HubGoneError,
    Op,
    RequestError,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
)
from vchansim.hub.protocol import dial as dial_hub
from vchansim.rundir import RunDir


def _u32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


@pytest.mark.parametrize(
    ("data", "err", "words"),
    [
        (b"\x01\x00", errno.EPROTO, "shorter than an op"),
        (b"\x01\x00\x00\x00\x00", errno.EPROTO, "not whole u32s"),
        (_u32s(99), errno.EINVAL, "unknown op 99"),
        (_u32s(Op.HELLO, 1, 2), errno.EINVAL, "HELLO takes 4 arguments, the request has 2"),
        (_u32s(Op.GNT_MAP, 1, 1, 3, 7, 8), errno.EINVAL, "GNT_MAP takes 6 arguments"),
        (_u32s(Op.GNT_MAP, 1, 3, 1, 7, 0), errno.EINVAL, "GNT_MAP takes 6 arguments"),
        (_u32s(Op.GNT_SHARE, 1, 1, 3, 21), errno.EINVAL, "GNT_SHARE takes 5 arguments"),
    ],
)
def test_bad_requests_are_named(data: bytes, err: int, words: str) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(data)
    assert info.value.err == err and words in info.value.message


DOC = Path(__file__).resolve().parents[1] / "docs" / "hub-protocol.md"


def _doc_block(kind: str) -> list[str]:
    """The lines of the ```kind fenced block of docs/hub-protocol.md."""
    text = DOC.read_text()
    start = text.index(f"```{kind}\n") + len(kind) + 4
    return text[start : text.index("```", start)].strip().splitlines()


def _words(tokens: list[str]) -> tuple[Op | int, list[int]]:
    op = Op[tokens[0]] if tokens[0] in Op.__members__ else int(tokens[0])
    return op, [int(token) for token in tokens[1:]]


@pytest.mark.parametrize("line", _doc_block("hub-bytes"))
def test_encoding_vectors(line: str) -> None:
    spec, _, hexed = line.partition(" = ")
    expected = bytes.fromhex(hexed.replace(" ", ""))
    kind, *tokens = spec.split(maxsplit=2 if spec.startswith("error") else -1)
    if kind == "request":
        op, args = _words(tokens)
        assert encode_request(op, *args) == expected  # type: ignore[arg-type]
        assert decode_request(expected) == (op, tuple(args))
    elif kind == "reply":
        assert encode_reply(tuple(int(t) for t in tokens[1:])) == expected
    else:
        assert encode_error(getattr(errno, tokens[0]), json.loads(tokens[1])) == expected


def test_conversation_vectors(rundir: RunDir) -> None:
    open_hub(rundir, 0).close()  # a fresh hub
    conns: dict[str, socket.socket] = {}
    try:
        for line in _doc_block("hub-conversation"):
            request, _, expected = line.partition(" -> ")
            name, *tokens = request.split()
            if name not in conns:
                conns[name] = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                conns[name].settimeout(5.0)
                conns[name].connect(os.fspath(rundir.hub))
            op, args = _words(tokens)
            conns[name].send(_u32s(int(op), *args))
            data, fds, _, _ = socket.recv_fds(conns[name], 65536, 16)
            for fd in fds:
                os.close(fd)
            (status,) = struct.unpack_from("<I", data)
            want = expected.split()
            if want[0] != "0":
                assert status == getattr(errno, want[0]), line
                continue
            nfds = int(want.pop()[len("fds=") :])
            words = struct.unpack(f"<{len(data) // 4}I", data)
            assert status == 0 and len(words) == len(want), (line, words)
            assert all(w == "*" or int(w) == got for w, got in zip(want, words, strict=True)), line
            assert len(fds) == nfds, line
    finally:
        for sock in conns.values():
            sock.close()


def test_codec_round_trips() -> None:
    assert decode_request(encode_request(Op.GNT_MAP, 2, 1, 2, 5, 6)) == (
        Op.GNT_MAP,
        (2, 1, 2, 5, 6),
    )
    ok = decode_reply(Op.GNT_SHARE, encode_reply((1, 1, 9)), [])
    assert (ok.status, ok.values) == (0, (1, 1, 9))
    text = decode_reply(Op.XS_SOCKET, encode_reply(text="/run/x/xs/1"), [])
    assert text.text == "/run/x/xs/1"
    error = decode_reply(Op.GNT_MAP, encode_error(errno.EACCES, "read-only"), [])
    assert (error.status, error.text) == (errno.EACCES, "read-only")


@pytest.fixture
def raw(rundir: RunDir) -> Iterator[socket.socket]:
    """A bare socket to the (running) hub, speaking whatever the test sends."""
    open_hub(rundir, 0).close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(5.0)
    sock.connect(os.fspath(rundir.hub))
    yield sock
    sock.close()


def _ask(sock: socket.socket, data: bytes, fds: tuple[int, ...] = ()) -> tuple[int, str] | None:
    """Send one message; the reply's status and text, or None if the hub hung up."""
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)
    reply = sock.recv(65536)
    if not reply:
        return None
    return struct.unpack_from("<I", reply)[0], reply[4:].decode(errors="replace")


def _hello(domid: int = 7) -> bytes:
    return _u32s(Op.HELLO, 1, domid, os.getpid(), 0)


def _hello_on(sock: socket.socket) -> int:
    """Introduce ``sock`` as domain 7; the hub's pid."""
    sock.send(_hello())
    status, hub_pid = struct.unpack("<II", sock.recv(64))
    assert status == 0
    return hub_pid


def _hangs_up(sock: socket.socket) -> bool:
    return sock.recv(16) == b""


def test_short_message_before_hello_is_answered_then_dropped(raw: socket.socket) -> None:
    assert _ask(raw, b"\x01") == (errno.EPROTO, "request of 1 bytes is shorter than an op")
    assert _hangs_up(raw)


def test_request_before_hello_is_refused(raw: socket.socket) -> None:
    assert _ask(raw, _u32s(Op.STATE)) == (errno.EPROTO, "STATE before HELLO")
    assert _hangs_up(raw)


def test_wrong_version_is_refused(raw: socket.socket) -> None:
    status, text = _ask(raw, _u32s(Op.HELLO, 9, 1, 1, 0)) or (0, "")
    assert status == errno.EPROTO and "version 9" in text
    assert _hangs_up(raw)


def test_after_hello_bad_requests_get_errors_and_the_connection_lives(
    raw: socket.socket,
) -> None:
    _hello_on(raw)
    assert _ask(raw, _u32s(99)) == (errno.EINVAL, "unknown op 99")
    assert _ask(raw, _hello()) == (errno.EPROTO, "HELLO sent twice on one connection")
    assert _ask(raw, b"x" * 8192)[0] == errno.EPROTO  # type: ignore[index]
    assert _ask(raw, _u32s(Op.GNT_UNMAP, 5)) == (
        errno.ENOENT,
        "no grant handle 5 on this connection",
    )
    assert _ask(raw, _u32s(Op.GNT_SHARE, 1, 0, 1)) == (
        errno.EINVAL,
        "page count 0 is outside 1..256",
    )
    assert _ask(raw, _u32s(Op.XS_SOCKET, 0x8000))[0] == errno.EINVAL  # type: ignore[index]
    assert _ask(raw, _u32s(Op.STATE))[0] == 0  # type: ignore[index]


def test_event_status_answers_are_not_logged(rundir: RunDir, raw: socket.socket) -> None:
    """libvchan-xen asks EVT_STATUS on every is_open: neither answers nor refusals flood
    the log, while other refusals still reach it."""
    _hello_on(raw)
    assert _ask(raw, _u32s(Op.EVT_STATUS, 7, 1))[0] == 0  # type: ignore[index]
    assert _ask(raw, _u32s(Op.EVT_STATUS, 9, 1))[0] == errno.ESRCH  # type: ignore[index]
    assert _ask(raw, _u32s(Op.EVT_STATUS, 7, 4096))[0] == errno.EINVAL  # type: ignore[index]
    assert _ask(raw, _u32s(99))[0] == errno.EINVAL  # type: ignore[index]
    procs.wait_for(lambda: "unknown op 99" in rundir.log.read_text())
    assert "EVT_STATUS" not in rundir.log.read_text()


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_descriptors_sent_to_the_hub_are_not_kept(raw: socket.socket) -> None:
    hub_pid = _hello_on(raw)
    before = _fd_count(hub_pid)
    strays = [os.eventfd(0) for _ in range(3)]
    try:
        for stray in strays:
            assert _ask(raw, _u32s(Op.STATE), (stray,))[0] == 0  # type: ignore[index]
    finally:
        for stray in strays:
            os.close(stray)
    assert _fd_count(hub_pid) == before


def test_a_client_that_never_reads_is_dropped(rundir: RunDir, raw: socket.socket) -> None:
    _hello_on(raw)
    raw.setblocking(False)
    request = _u32s(Op.STATE)
    deadline = time.monotonic() + procs.DEADLINE
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        while time.monotonic() < deadline:
            try:
                raw.send(request)
            except BlockingIOError:  # the hub has not caught up yet: wait until it reads
                select.select([], [raw], [], 0.1)
    procs.wait_for(lambda: "gone (not reading its replies)" in rundir.log.read_text())


def test_bad_clients_do_not_disturb_good_ones(rundir: RunDir) -> None:
    one, two = ShmBackend(1).grants(), ShmBackend(2).grants()
    try:
        shared = one.share(2, 1)
        mapped = two.map(1, shared.refs)
        with open_hub(rundir, 0) as probe:
            hub_pid = probe.hub_pid
        for message in (b"\x01", _u32s(Op.STATE), _u32s(Op.HELLO, 2, 0, 0, 0), b"\xff" * 9000):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as bad:
                bad.settimeout(5.0)
                bad.connect(os.fspath(rundir.hub))
                _ask(bad, message)
        shared.buf[0] = 9
        assert mapped.buf[0] == 9
        again = two.map(1, one.share(2, 2).refs)
        assert len(again.buf) == 8192
        with open_hub(rundir, 0) as probe:
            assert probe.hub_pid == hub_pid
    finally:
        one.close()
        two.close()


def test_requests_sent_together_are_answered_in_order(raw: socket.socket) -> None:
    for request in (
        _hello(),
        _u32s(Op.GNT_SHARE, 2, 1, 1),
        _u32s(Op.GNT_SET_NOTIFY, 1, 0, 99),
        _u32s(Op.STATE),
    ):
        raw.send(request)
    answers = []
    for _ in range(4):
        data, fds, _, _ = socket.recv_fds(raw, 1 << 20, 4)
        for fd in fds:
            os.close(fd)
        answers.append((struct.unpack_from("<I", data)[0], len(fds)))
    assert answers == [(0, 0), (0, 1), (errno.EINVAL, 0), (0, 0)]


def test_a_refused_hello_is_reported_by_the_first_call(rundir: RunDir) -> None:
    conn = open_hub(rundir, 0x8000)  # HELLO goes out at once, its reply comes with a call's
    try:
        with pytest.raises(BackendError, match="HELLO: domain id 32768") as info:
            conn.call(Op.STATE)
        assert info.value.errno == errno.EINVAL
    finally:
        conn.close()


def test_a_refused_hello_keeps_its_reason_with_requests_queued_behind_it(
    raw: socket.socket,
) -> None:
    """A client pipelining requests behind a HELLO the hub refuses reads the refusal,
    then end-of-file -- never a reset that hides the reason (Linux resets a peer whose
    socket is closed with requests unread)."""
    raw.send(_u32s(Op.HELLO, 1, 0x8000, os.getpid(), 0))
    sent = 0
    with contextlib.suppress(BrokenPipeError):
        for sent in range(1, 200):  # noqa: B007 -- the count is checked below
            raw.send(_u32s(Op.STATE))
    reply = raw.recv(65536)
    assert struct.unpack_from("<I", reply)[0] == errno.EINVAL, (sent, reply)
    assert b"domain id 32768" in reply
    assert _hangs_up(raw)


def _dropped_then(rundir: RunDir, dialled: list[socket.socket]) -> socket.socket:
    """The first time, a connection whose far end is gone, as an exiting hub leaves it;
    then a real one."""
    if dialled:
        sock = dial_hub(rundir.hub)
    else:
        sock, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        far.close()
    dialled.append(sock)
    return sock


def test_a_hello_the_hub_drops_is_repeated_on_a_new_connection(rundir: RunDir) -> None:
    open_hub(rundir, 0).close()  # a hub is running
    dialled: list[socket.socket] = []
    with HubConnection.greet(lambda: _dropped_then(rundir, dialled), 3, redials=1) as conn:
        state = json.loads(conn.call(Op.STATE).text)
        assert len(dialled) == 2 and conn.hub_pid == state["hub"]["pid"]
        assert [c["domid"] for c in state["connections"] if c["id"] == state["you"]] == [3]
    with (
        HubConnection.greet(lambda: _dropped_then(rundir, []), 3) as conn,
        pytest.raises(HubGoneError),
    ):
        conn.call(Op.STATE)


def test_the_running_hub_logs_each_xenstore_request_with_its_outcome(rundir: RunDir) -> None:
    """docs/hub-protocol.md: the hub logs every store operation.  Lines wait in memory
    while the hub is busy, formatted only when written, but reach the log while it runs."""
    with ShmBackend(1, rundir=rundir).store() as xs:
        xs.write("data/logged", b"v")
        assert xs.read("data/logged") == b"v"
        with pytest.raises(OSError):
            xs.read("/tool/secret")
        xs.rm("data/logged")
    lines = [
        "dom1 WRITE data/logged = 'v' -> OK",
        "dom1 READ data/logged -> 'v'",
        "dom1 READ /tool/secret -> EACCES",
    ]
    procs.wait_for(lambda: all(line in rundir.log.read_text() for line in lines))


def test_a_hub_that_never_answers_is_reported_once_the_call_timeout_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls are bounded by the socket's own timeouts (SO_RCVTIMEO), not by polls:
    a hub that takes the connection but never answers costs the call timeout, then one
    line naming the request."""
    monkeypatch.setattr(protocol, "CALL_TIMEOUT", 0.3)
    path = tmp_path / "hub"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mute.bind(os.fspath(path))
    mute.listen()  # and never accepts: the connection waits in its backlog
    try:
        conn = HubConnection.greet(lambda: dial_hub(path), 1)
        with pytest.raises(BackendError) as info:
            conn.call(Op.STATE)
        assert info.value.errno == errno.ETIMEDOUT
        assert "did not answer HELLO within 0.3 s" in str(info.value)
        conn.close()
    finally:
        mute.close()
