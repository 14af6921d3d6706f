"""The emulated xenstored against Debian's real clients (libxenstore via XENSTORED_PATH)
and against our own client, over real UNIX sockets."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vchansim.errors import StoreError
from vchansim.xenstore import wire
from vchansim.xenstore.client import XenstoreError, XsClient
from vchansim.xenstore.server import XenstoreService, socket_path
from vchansim.xenstore.store import Quotas, Xenstored
from vchansim.xenstore.wire import Perm, XsType

TOOLS = ["xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-rm", "xenstore-chmod"]
TOOLS += ["xenstore-list", "xenstore-exists", "xenstore-watch"]
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason="Debian's xenstore-utils are not installed",
)
TIMEOUT = 10.0


@dataclass
class Daemon:
    store: Xenstored
    service: XenstoreService
    directory: Path
    log: list[str] = field(default_factory=list)

    def socket(self, domid: int) -> str:
        return socket_path(self.directory, domid)

    def run(self, *argv: str, domid: int = 0) -> subprocess.CompletedProcess[str]:
        """Run a real xenstore tool as domain ``domid``."""
        env = {**os.environ, "XENSTORED_PATH": self.socket(domid)}
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )

    def ok(self, *argv: str, domid: int = 0) -> str:
        result = self.run(*argv, domid=domid)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def client(self, domid: int) -> XsClient:
        return XsClient.connect(self.socket(domid))

    def raw(self, domid: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self.socket(domid))
        return sock


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    store = Xenstored(Quotas(nodes=30, watches=4, transactions=2))
    lines: list[str] = []
    service = XenstoreService(store, log=lambda line: lines.append(str(line)))
    for domid in (0, 1, 2):
        service.listen(domid, socket_path(tmp_path, domid))
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    daemon = Daemon(store, service, tmp_path, lines)
    with daemon.client(0) as probe:  # returns once the loop is serving
        assert probe.read("domid") == b"0"
    yield daemon
    service.shutdown()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    service.close()
    assert not list(tmp_path.glob("*.sock"))


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def recv_message(sock: socket.socket) -> wire.Message:
    msg_type, req_id, tx_id, length = wire.decode_header(recv_exact(sock, wire.HEADER_SIZE))
    return wire.Message(msg_type, recv_exact(sock, length), req_id, tx_id)


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready, "xenstore-watch printed nothing"
    return proc.stdout.readline().decode().rstrip("\n")


# --- the real tools ------------------------------------------------------------------------


def test_sockets_are_private_unix_sockets(daemon: Daemon) -> None:
    mode = os.stat(daemon.socket(1)).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_write_read_list_exists_rm(daemon: Daemon) -> None:
    daemon.ok("xenstore-write", "/vchan/a", "hello", "/vchan/b", "")
    assert daemon.ok("xenstore-read", "/vchan/a") == "hello\n"
    assert daemon.ok("xenstore-list", "/vchan") == "a\nb\n"
    assert daemon.ok("xenstore-ls", "-f", "/vchan") == '/vchan/a = "hello"\n/vchan/b = ""\n'
    assert daemon.run("xenstore-exists", "/vchan/a").returncode == 0
    daemon.ok("xenstore-rm", "/vchan/a")
    assert daemon.run("xenstore-exists", "/vchan/a").returncode == 1
    assert daemon.run("xenstore-read", "/vchan/a").returncode == 1
    assert daemon.ok("xenstore-list", "/vchan") == "b\n"


def test_ls_shows_libxl_layout_and_permissions(daemon: Daemon) -> None:
    listing = daemon.ok("xenstore-ls", "-p", "/local/domain/1")
    assert [(line.split()[0], line.split()[-1]) for line in listing.splitlines()] == [
        ("domid", "(n0,r1)"),
        ("data", "(n1)"),
    ]


def test_relative_paths_resolve_in_the_sockets_domain(daemon: Daemon) -> None:
    assert daemon.ok("xenstore-read", "domid", domid=1) == "1\n"
    daemon.ok("xenstore-write", "data/x", "5", domid=1)
    assert daemon.ok("xenstore-read", "/local/domain/1/data/x") == "5\n"
    assert daemon.ok("xenstore-read", "domid", domid=2) == "2\n"


def test_permission_matrix_across_domains(daemon: Daemon) -> None:
    daemon.ok("xenstore-write", "data/secret", "s", domid=1)
    assert daemon.run("xenstore-read", "/local/domain/1/data/secret", domid=2).returncode != 0
    assert daemon.ok("xenstore-read", "/local/domain/1/data/secret") == "s\n"
    daemon.ok("xenstore-chmod", "data/secret", "n1", "r2", domid=1)
    assert daemon.ok("xenstore-read", "/local/domain/1/data/secret", domid=2) == "s\n"
    assert daemon.run("xenstore-write", "/local/domain/1/data/secret", "x", domid=2).returncode
    assert daemon.run("xenstore-chmod", "/local/domain/1/data/secret", "n2", domid=2).returncode
    assert daemon.run("xenstore-chmod", "data/secret", "n2", domid=1).returncode  # EPERM
    assert "(n1,r2)" in daemon.ok("xenstore-ls", "-p", "/local/domain/1/data")
    with daemon.client(2) as dom2, pytest.raises(XenstoreError) as info:
        dom2.read("/local/domain/1/domid")
    assert info.value.errno == errno.EACCES


def test_long_child_lists_come_back_through_directory_part(daemon: Daemon) -> None:
    names = [f"a-rather-long-child-name-{i:03d}" for i in range(200)]
    with daemon.client(0) as dom0:
        for name in names:
            dom0.mkdir(f"/big/{name}")
        assert dom0.directory("/big") == names
    assert daemon.ok("xenstore-list", "/big").split() == names
    assert any("DIRECTORY /big -> E2BIG" in line for line in daemon.log)
    assert any("DIRECTORY_PART /big" in line for line in daemon.log)


def test_xenstore_watch_sees_the_initial_event_then_each_change(daemon: Daemon) -> None:
    env = {**os.environ, "XENSTORED_PATH": daemon.socket(0)}
    proc = subprocess.Popen(["xenstore-watch", "/w"], env=env, stdout=subprocess.PIPE, bufsize=0)
    try:
        assert read_line(proc) == "/w"
        with daemon.client(0) as dom0:
            dom0.write("/w/x", "1")
            assert read_line(proc) == "/w/x"
            dom0.write("/elsewhere", "not watched")
            dom0.write("/w", "2")
            assert read_line(proc) == "/w"
            dom0.rm("/w")
            assert read_line(proc) == "/w"
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


def test_xenstore_watch_with_a_relative_path(daemon: Daemon) -> None:
    env = {**os.environ, "XENSTORED_PATH": daemon.socket(1)}
    proc = subprocess.Popen(
        ["xenstore-watch", "-n", "2", "data"], env=env, stdout=subprocess.PIPE, bufsize=0
    )
    try:
        assert read_line(proc) == "data"
        daemon.ok("xenstore-write", "data/y", "1", domid=1)
        assert read_line(proc) == "data/y"
        assert proc.wait(TIMEOUT) == 0  # -n 2: exits after two events
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


# --- our client ----------------------------------------------------------------------------


def test_transaction_conflict_is_eagain_and_a_retry_succeeds(daemon: Daemon) -> None:
    with daemon.client(1) as a, daemon.client(1) as b:
        a.write("data/counter", "0")
        tx = a.transaction_start()
        a.write("data/counter", str(int(a.read("data/counter", tx)) + 1), tx)
        b.write("data/counter", "10")
        with pytest.raises(XenstoreError) as info:
            a.transaction_end(tx)
        assert (info.value.errno_name, info.value.errno) == ("EAGAIN", errno.EAGAIN)
        assert isinstance(info.value, StoreError)
        tx = a.transaction_start()
        a.write("data/counter", str(int(a.read("data/counter", tx)) + 1), tx)
        a.transaction_end(tx)
        assert b.read("data/counter") == b"11"


def test_quota_errors_reach_clients(daemon: Daemon) -> None:
    with daemon.client(1) as dom1:
        for i in range(29):  # dom1 already owns .../data: 30 is the fixture's quota
            dom1.write(f"data/n{i}", "")
        with pytest.raises(XenstoreError) as info:
            dom1.write("data/full", "")
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == "data/full"
        result = daemon.run("xenstore-write", "data/full", "x", domid=1)
        assert result.returncode != 0 and "could not write" in result.stderr
        for token in "abcde":  # quota 4, refused once the count exceeds it
            dom1.watch("data", token)
        with pytest.raises(XenstoreError) as info:
            dom1.watch("data", "f")
        assert info.value.errno_name == "E2BIG"
        for _ in range(3):
            dom1.transaction_start()
        with pytest.raises(XenstoreError) as info:
            dom1.transaction_start()
        assert info.value.errno_name == "ENOSPC"


def test_client_watch_queue_and_timeout(daemon: Daemon) -> None:
    with daemon.client(1) as dom1, daemon.client(0) as dom0:
        dom1.watch("data", "tok")
        assert dom1.read_watch(TIMEOUT) == ("data", "tok")
        dom0.write("/local/domain/1/data/a", "1")
        dom0.write("/local/domain/1/data/b", "2")
        assert dom1.read("data/a") == b"1"  # the events arrive while we wait for this reply
        assert dom1.read_watch(0) == ("data/a", "tok")
        assert dom1.read_watch(0) == ("data/b", "tok")
        assert dom1.read_watch(0.05) is None
        dom1.unwatch("data", "tok")
        dom0.write("/local/domain/1/data/c", "3")
        assert dom1.read("data/c") == b"3"
        assert dom1.read_watch(0) is None


def test_client_operations_and_fd_transport(daemon: Daemon) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket(1))
    with XsClient(sock.detach()) as dom1:  # a bare descriptor, as /dev/xen/xenbus gives
        assert dom1.get_domain_path(1) == "/local/domain/1"
        dom1.mkdir("data/d")
        dom1.write("data/d/v", b"\x00bin")
        assert dom1.read("data/d/v") == b"\x00bin"
        dom1.set_perms("data/d/v", [Perm("n", 1), Perm("r", 2)])
        assert dom1.get_perms("data/d/v") == [Perm("n", 1), Perm("r", 2)]
        assert dom1.directory("data/d") == ["v"]
        dom1.rm("data/d")
        with pytest.raises(XenstoreError) as info:
            dom1.read("data/d")
        assert info.value.errno == errno.ENOENT
        with pytest.raises(XenstoreError) as info:
            dom1.write("data/too-big", b"x" * wire.PAYLOAD_MAX)
        assert info.value.errno_name == "E2BIG"  # refused locally, like libxenstore


def test_a_pipeline_returns_each_result_in_order(daemon: Daemon) -> None:
    with daemon.client(1) as dom1, daemon.client(0) as dom0:
        dom1.write("data/a", "1")
        dom1.watch("data/a", "tok")
        assert dom1.read_watch(TIMEOUT) == ("data/a", "tok")
        dom0.write("/local/domain/1/data/a", "2")  # its event reaches dom1 inside the pipeline
        value, tx = dom1.pipeline().read("data/a").transaction_start().execute()
        assert value == b"2" and isinstance(tx, int) and tx != 0
        done = dom1.pipeline().write("data/b", "3", tx).set_perms("data/b", [Perm("n", 1)], tx)
        assert done.execute() == [None, None]
        dom1.transaction_end(tx)
        assert dom1.read("data/b") == b"3"
        assert dom1.read_watch(0) == ("data/a", "tok")


def test_a_pipeline_raises_its_first_failure_once_all_are_answered(daemon: Daemon) -> None:
    with daemon.client(1) as dom1:
        pipeline = dom1.pipeline().read("data/none").write("data/c", "4").read("/local/domain/0")
        with pytest.raises(XenstoreError) as info:
            pipeline.execute()
        assert (info.value.errno, info.value.filename) == (errno.ENOENT, "data/none")
        assert dom1.read("data/c") == b"4"  # the others took effect; the stream is in step


def test_a_submitted_pipeline_is_answered_while_the_client_goes_on(daemon: Daemon) -> None:
    """submit() sends at once and leaves the replies: a later request reads them first
    (the stream stays in step), and the results, failure included, come when asked."""
    with daemon.client(1) as dom1, daemon.client(0) as dom0:
        dom1.write("data/a", "1")
        dom1.watch("data/a", "tok")
        assert dom1.read_watch(TIMEOUT) == ("data/a", "tok")
        failing = dom1.pipeline().read("data/none").write("data/b", "2").submit()
        started = dom1.pipeline().read("data/a").transaction_start().submit()
        dom0.write("/local/domain/1/data/a", "3")
        assert dom1.read("data/b") == b"2"  # behind both submitted pipelines
        value, tx = started.results()
        assert value == b"1" and isinstance(tx, int) and tx != 0
        with pytest.raises(XenstoreError) as info:
            failing.results()
        assert (info.value.errno, info.value.filename) == (errno.ENOENT, "data/none")
        dom1.transaction_end(tx, commit=False)
        late = dom1.pipeline().read("data/a").submit()
        assert dom1.read_watch(TIMEOUT) == ("data/a", "tok")  # reads the reply on its way
        assert late.results() == [b"3"]


def test_a_pipeline_goes_out_in_one_write(daemon: Daemon) -> None:
    """Over a socket the requests of a pipeline leave together, so the daemon reads
    them in one go and answers them together: one wake-up each way."""
    with daemon.client(1) as dom1:
        dom1.write("data/a", "1")
        before = len(daemon.log)
        sent: list[bytes] = []
        write = dom1._io.write
        dom1._io.write = lambda data: (sent.append(data), write(data))[1]  # type: ignore[method-assign]
        assert dom1.pipeline().read("data/a").write("data/b", "2").read("data/a").execute() == [
            b"1",
            None,
            b"1",
        ]
        assert len(sent) == 1
        assert len(daemon.log) - before == 3


def _read_message(sock: socket.socket) -> tuple[int, int, bytes]:
    """One whole message from ``sock``: type, transaction, payload."""
    header = b""
    while len(header) < wire.HEADER_SIZE:
        header += sock.recv(wire.HEADER_SIZE - len(header))
    msg_type, _req, tx, length = wire.decode_header(header)
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return msg_type, tx, payload


def test_over_a_device_each_request_waits_for_its_reply() -> None:
    """A descriptor that is not a socket (``/dev/xen/xenbus``) gets no pipelining: while a
    reply is outstanding nothing more is written.  Here the test plays the device."""
    device, kernel = socket.socketpair()
    client = XsClient(os.dup(device.fileno()))  # an int: used as a device would be
    device.close()
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            client.pipeline().read("a").transaction_start().write("b", "1", 7).execute()
        )
    )
    worker.start()
    seen = []
    replies = [b"x", b"7\0", b"OK\0"]
    for reply in replies:
        msg_type, tx, payload = _read_message(kernel)
        with pytest.raises(BlockingIOError):
            kernel.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)  # the next waits for us
        seen.append((XsType(msg_type), tx, payload))
        kernel.sendall(wire.encode(msg_type, reply, tx_id=tx))
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert seen == [
        (XsType.READ, 0, b"a\0"),
        (XsType.TRANSACTION_START, 0, b"\0"),
        (XsType.WRITE, 7, b"b\x001"),
    ]
    assert results == [b"x", 7, None]
    client.close()
    kernel.close()


# --- bytes on the wire -----------------------------------------------------------------------


def test_protocol_md_byte_vectors_over_a_socket(daemon: Daemon) -> None:
    ok_reply = b"OK\0"
    with daemon.raw(1) as dom1:
        dom1.sendall(bytes.fromhex("02000000 00000000 00000000 06000000 646f6d696400"))
        assert recv_exact(dom1, 17) == bytes.fromhex("02000000 00000000 00000000 01000000 31")
    with daemon.raw(0) as dom0:
        for tx in range(1, 7):  # make the next transaction id 7, as in the vectors
            dom0.sendall(wire.encode(XsType.TRANSACTION_START, b"\0"))
            assert recv_message(dom0).payload == f"{tx}\0".encode()
            dom0.sendall(wire.encode(XsType.TRANSACTION_END, b"F\0", tx_id=tx))
            assert recv_message(dom0).payload == ok_reply
        dom0.sendall(bytes.fromhex("06000000 00000000 00000000 01000000 00"))
        assert recv_exact(dom0, 18) == bytes.fromhex("06000000 00000000 00000000 02000000 3700")
        ring_ref = b"/local/domain/1/data/vchan/0/5/ring-ref\0" + b"8"
        dom0.sendall(bytes.fromhex("0b000000 00000000 07000000 29000000") + ring_ref)
        assert recv_exact(dom0, 19) == bytes.fromhex("0b000000 00000000 07000000 03000000 4f4b00")
        dom0.sendall(wire.encode(XsType.WRITE, b"/x\0", tx_id=7))
        assert recv_message(dom0).payload == ok_reply
        dom0.sendall(bytes.fromhex("0e000000 00000000 07000000 09000000 2f78006e31007230 00"))
        assert recv_exact(dom0, 19) == bytes.fromhex("0e000000 00000000 07000000 03000000 4f4b00")
        dom0.sendall(bytes.fromhex("07000000 00000000 07000000 02000000 5400"))
        assert recv_exact(dom0, 19) == bytes.fromhex("07000000 00000000 07000000 03000000 4f4b00")
        assert daemon.ok("xenstore-read", "/local/domain/1/data/vchan/0/5/ring-ref") == "8\n"
        assert "(n1,r0)" in daemon.ok("xenstore-ls", "-p", "/")
        dom0.sendall(
            bytes.fromhex("0d000000 00000000 00000000 1f000000")
            + b"/local/domain/1/data/vchan/0/5\0"
        )
        assert recv_exact(dom0, 19) == bytes.fromhex("0d000000 00000000 00000000 03000000 4f4b00")
    assert daemon.run("xenstore-exists", "/local/domain/1/data/vchan/0/5").returncode == 1
    assert daemon.ok("xenstore-list", "/local/domain/1/data/vchan/0") == ""


def test_a_hostile_client_is_dropped_while_others_are_served(daemon: Daemon) -> None:
    with daemon.client(2) as good, daemon.raw(1) as bad:
        bad.sendall(wire.encode(99, b"junk"))
        assert recv_message(bad) == wire.Message(XsType.ERROR, b"ENOSYS\0")  # still talking
        bad.sendall(wire.HEADER.pack(XsType.WRITE, 0, 0, 5000) + b"x" * 100)
        assert bad.recv(16) == b""  # dropped
        assert good.read("domid") == b"2"  # also a sync point: the drop happened before
        assert daemon.service.connection_count() == 1
        assert daemon.ok("xenstore-read", "domid", domid=1) == "1\n"
    assert any("dom1 connection ended: protocol violation" in line for line in daemon.log)


def test_release_hangs_up_on_the_domain_until_it_is_introduced_again(daemon: Daemon) -> None:
    with daemon.client(0) as dom0, daemon.raw(1) as guest:
        dom0.release_domain(1)
        assert guest.recv(16) == b""  # its connection ended with the domain
        assert not dom0.is_domain_introduced(1)
        with daemon.raw(1) as late:
            assert late.recv(16) == b""  # nobody serves a released domain
        assert daemon.run("xenstore-read", "domid", domid=1).returncode != 0
        dom0.introduce_domain(1, 0, 3)
        assert daemon.ok("xenstore-read", "domid", domid=1) == "1\n"
    assert any("dom1 connection ended: domain 1 released" in line for line in daemon.log)
    assert any("dom1 connection refused: domain not introduced" in line for line in daemon.log)


def test_a_client_that_never_reads_does_not_stall_the_others(daemon: Daemon) -> None:
    request = wire.encode(XsType.READ, b"domid\0") * 512
    cap = 4 * 1024 * 1024
    with daemon.client(2) as good, daemon.raw(1) as slow:
        slow.setblocking(False)
        sent = 0
        # Push requests, never reading a reply, until the daemon stops taking them.
        while sent < cap and select.select([], [slow], [], 0.5)[1]:
            with contextlib.suppress(BlockingIOError):
                sent += slow.send(request)
        assert sent < cap  # back-pressure: it stopped reading a client that doesn't read
        for _ in range(20):
            assert good.read("domid") == b"2"
        assert daemon.ok("xenstore-read", "domid") == "0\n"


def test_module_entry_point_serves_until_terminated(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vchansim.xenstore.server",
            "--socket-dir",
            tmp_path,
            "--domains",
            "0,3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("dom3 xenstore socket")
        env = {**os.environ, "XENSTORED_PATH": socket_path(tmp_path, 3)}
        result = subprocess.run(
            ["xenstore-read", "domid"], env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout == "3\n"
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0
        assert not list(tmp_path.glob("*.sock"))
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
