"""Debian's own ``vchan-socket-proxy``, unmodified, bridging a UNIX socket over a vchan.

The binary comes from Debian's xen-utils-4.17 (``tools/fetch-xen-tools``) and runs under
``vchansim exec``: Debian's libxenvchan and libxenstore, the drop-in libxengnttab,
libxenevtchn and libxenctrl.  At the other end of its vchan is a Python endpoint
(``tests/interop_peer.py``, its own process); at the other end of its socket, this test.
Data go both ways at once and are compared by SHA-256, and a close at either edge must
travel through the proxy to the other.

In client mode the proxy runs as domain 0: it asks libxenctrl whether the server's
domain exists while it waits for the vchan to appear, and gives up only when it does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from helpers.interop import PYTHON_PEER, Endpoint, Transfers, start
from helpers.procs import wait_for

from vchansim import cbuild, debian
from vchansim.backends.shm import ShmBackend, emulator_env
from vchansim.xenstore.client import XenstoreError

ROOT = Path(__file__).resolve().parents[1]
#: Bytes from the Python vchan endpoint to the socket, and from the socket to it.  The
#: proxy asks for libxenvchan's smallest rings (1 and 2 KiB inside the shared page).
DOWN, UP = 8 << 20, 5_000_000
PEER_SENDS_DOWN = ("--send", str(DOWN), "--recv", str(UP))
DEADLINE = 30.0

pytestmark = [
    pytest.mark.cbuild,
    pytest.mark.skipif(
        not Path("/usr/include/libxenvchan.h").exists(),
        reason="needs Xen's headers and libraries (tools/install)",
    ),
]


@pytest.fixture(scope="module")
def proxy() -> Path:
    try:
        return debian.socket_proxy()
    except debian.MissingProgramError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Proxies a test started; stopped (SIGTERM, forwarded by `vchansim exec`) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(DEADLINE)
        if proc.stderr is not None:
            proc.stderr.close()


def run_proxy(
    proxy: Path, hub_dir: Path, domid: int, args: Sequence[str], started: list
) -> subprocess.Popen[bytes]:
    """``vchansim exec --domid DOMID -- vchan-socket-proxy ARGS`` on this module's hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VCHANSIM_", "XENSTORED"))}
    env["VCHANSIM_RUNDIR"] = str(hub_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "vchansim", "exec", "--domid", str(domid), "--"]
    proc = subprocess.Popen([*command, str(proxy), *args], env=env, stderr=subprocess.PIPE)
    started.append(proc)
    return proc


def python_peer(hub_dir: Path, domid: int, args: Sequence[str], started: list) -> Endpoint:
    """The Python vchan endpoint (its own process) as domain ``domid``, once it is ready."""
    peer = start(PYTHON_PEER, hub_dir, domid, args)
    started.append(peer)
    peer.expect("ready")
    return peer


class SocketEnd:
    """The application's side of the proxied socket: sends ``send`` seeded random bytes
    while receiving ``recv`` bytes, hashing both, in two threads."""

    def __init__(self, sock: socket.socket, send: int, recv: int) -> None:
        sock.settimeout(DEADLINE)
        self.sock = sock
        self.sent: tuple[int, str] | None = None
        self.received: tuple[int, str] | None = None
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._guard, args=(self._send, send)),
            threading.Thread(target=self._guard, args=(self._recv, recv)),
        ]
        for thread in self._threads:
            thread.start()

    def _guard(self, work: Callable[..., None], *args: object) -> None:
        try:
            work(*args)
        except BaseException as exc:  # re-raised by join() in the test's thread
            self._errors.append(exc)

    def _send(self, count: int) -> None:
        data = random.Random(7).randbytes(count)
        self.sock.sendall(data)
        self.sent = (count, hashlib.sha256(data).hexdigest())

    def _recv(self, count: int) -> None:
        digest, buf, got = hashlib.sha256(), memoryview(bytearray(1 << 16)), 0
        while got < count:
            n = self.sock.recv_into(buf, min(len(buf), count - got))
            assert n, f"the proxy closed the socket after {got} of {count} bytes"
            digest.update(buf[:n])
            got += n
        self.received = (got, digest.hexdigest())

    def join(self) -> None:
        for thread in self._threads:
            thread.join(DEADLINE)
            assert not thread.is_alive(), "socket transfer did not finish in time"
        if self._errors:
            raise self._errors[0]


def assert_same_data(at_peer: Transfers, end: SocketEnd) -> None:
    """What each edge of the proxy received is, by count and SHA-256, what the other sent."""
    assert at_peer["sent"][:2] == end.received == (DOWN, at_peer["sent"][1])
    assert at_peer["received"][:2] == end.sent == (UP, at_peer["received"][1])


def published(hub_dir: Path, path: str) -> bool:
    """Whether a vchan server has published ``path`` (its event-channel key) yet."""
    with ShmBackend(0, rundir=hub_dir).store() as store:
        try:
            store.read(f"{path}/event-channel")
        except XenstoreError:
            return False
    return True


def connect_when_listening(path: Path) -> socket.socket:
    """Connect to the UNIX socket the proxy listens on, once it does."""

    def attempt() -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return sock

    return wait_for(attempt, DEADLINE, f"the proxy to listen on {path}")  # type: ignore[return-value]


def test_proxy_runs_on_the_drop_in_libraries(proxy: Path, hub_dir: Path) -> None:
    env = emulator_env(ShmBackend(1, rundir=hub_dir))
    out = subprocess.run(["ldd", proxy], env=env, capture_output=True, text=True).stdout
    for name in cbuild.LIBRARIES:
        if name != "libxenhypfs.so.1":  # only libxenlight's users load that one
            assert f"{name} => {cbuild.library_dir() / name}" in out
    assert "libxenvchan.so.4.17 => /" in out  # Debian's own


def test_server_mode_bridges_a_vchan_client_to_a_socket(
    proxy: Path, hub_dir: Path, processes: list, endpoints: list
) -> None:
    app_path = hub_dir / "server-mode.sock"  # short: AF_UNIX paths are
    app = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    app.bind(str(app_path))
    app.listen(1)
    app.settimeout(DEADLINE)
    vchan = "/local/domain/1/data/vchan/2/proxied"
    # The proxy publishes at once, and connects to the socket when a vchan client comes.
    server = run_proxy(proxy, hub_dir, 1, ["--mode=server", "2", vchan, str(app_path)], processes)
    wait_for(lambda: published(hub_dir, vchan), DEADLINE, "the proxy to publish its vchan")
    client_args = ["client", "1", vchan, *PEER_SENDS_DOWN, "--linger"]
    peer = python_peer(hub_dir, 2, client_args, endpoints)
    conn, _ = app.accept()
    with contextlib.closing(app), contextlib.closing(conn):
        end = SocketEnd(conn, send=UP, recv=DOWN)
        at_peer = peer.transfers()
        end.join()
        assert_same_data(at_peer, end)
        # Only now may the vchan client close: like Xen's, the proxy drops what is still
        # in the ring when it sees the close.
        peer.release()
        assert peer.finish() == 0
        assert conn.recv(1) == b""  # the vchan client's close reached the socket
    assert server.poll() is None  # given a socket path, it serves later clients too


def test_client_mode_waits_for_the_server_then_bridges(
    proxy: Path, hub_dir: Path, processes: list, endpoints: list
) -> None:
    ShmBackend(1, rundir=hub_dir).xenstore_socket()  # domain 1 exists: it has a home
    app_path = hub_dir / "client-mode.sock"
    vchan = "/local/domain/1/data/vchan/0/proxied"
    client = run_proxy(proxy, hub_dir, 0, ["--mode=client", "1", vchan, str(app_path)], processes)
    conn = connect_when_listening(app_path)
    # The proxy now waits for the vchan to appear: domain 1 exists, so it does not give up.
    server_args = ["server", "0", "data/vchan/0/proxied", *PEER_SENDS_DOWN, "--hold"]
    peer = python_peer(hub_dir, 1, server_args, endpoints)
    with contextlib.closing(conn):
        end = SocketEnd(conn, send=UP, recv=DOWN)
        at_peer = peer.transfers()
        end.join()
        assert_same_data(at_peer, end)
    # the socket's close reached the vchan server
    assert peer.expect("closed") == ["is_open=0", "read=ChannelClosed"]
    assert peer.finish() == 0
    assert client.poll() is None  # still listening for the next connection


def test_client_mode_gives_up_on_a_domain_that_does_not_exist(
    proxy: Path, hub_dir: Path, processes: list
) -> None:
    app_path = hub_dir / "no-domain.sock"
    vchan = "/local/domain/77/data/vchan/0/nobody"
    client = run_proxy(proxy, hub_dir, 0, ["--mode=client", "77", vchan, str(app_path)], processes)
    with contextlib.closing(connect_when_listening(app_path)):
        assert client.wait(DEADLINE) == 1  # xc_domain_getinfo said ESRCH
    assert client.stderr is not None
    assert "vchan client init: No such process" in client.stderr.read().decode()
