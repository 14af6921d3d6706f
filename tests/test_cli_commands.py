"""The command line as a user drives it: serve/connect in two unrelated processes, exec,
and clear one-line errors for bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.leaks import LeakKind, assert_no_leaks, find_leaks

DEADLINE = procs.DEADLINE


def vchansim(rundir, *args: str, **kwargs) -> subprocess.Popen:
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(
        [sys.executable, "-m", "vchansim", *args],
        env=procs.child_env(rundir),
        **(pipes | kwargs),
    )


class Collector(threading.Thread):
    """Reads a process's stdout to the end (a full pipe would stall its peer) and says
    when ``expect`` bytes have arrived."""

    def __init__(self, proc: subprocess.Popen, expect: int) -> None:
        super().__init__()
        self.proc, self.expect = proc, expect
        self.data = bytearray()
        self.enough = threading.Event()
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self.data += chunk
            if len(self.data) >= self.expect:
                self.enough.set()
        self.enough.set()


def one_line(err: bytes) -> str:
    """The single line a failing command printed, with no traceback."""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_two_processes_talk_both_ways_and_end_of_input_closes_cleanly(rundir):
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)
    server = vchansim(rundir, "serve", "--domid", "1", "--read-min", "64K", "0", "data/cli")
    client = vchansim(rundir, "connect", "--domid", "0", "1", "data/cli")
    server_out, client_out = Collector(server, len(up)), Collector(client, len(down))
    server.stdin.write(down)
    server.stdin.flush()
    client.stdin.write(up)
    client.stdin.close()  # the client stops sending and keeps receiving
    assert server_out.enough.wait(DEADLINE) and client_out.enough.wait(DEADLINE)
    server.stdin.close()  # now the server closes, its data all read by the client
    assert server.wait(DEADLINE) == 0, server.stderr.read().decode()
    assert client.wait(DEADLINE) == 0, client.stderr.read().decode()
    for collector in (server_out, client_out):
        collector.join(DEADLINE)
    assert client_out.data == down
    assert hashlib.sha256(server_out.data).digest() == hashlib.sha256(up).digest()
    assert_no_leaks(rundir)


def test_serve_keeps_its_data_until_a_client_comes(rundir, cpu_load):
    """The client's input is empty: it keeps receiving until the server closes, and the
    server closes only once the client has read what it held."""
    server = vchansim(rundir, "serve", "--domid", "3", "0", "data/late")
    server.stdin.write(b"hello, late client\n")
    server.stdin.close()  # input ends before any client exists
    client = vchansim(rundir, "connect", "--domid", "0", "3", "data/late")
    out, err = client.communicate(b"", timeout=4 * DEADLINE)
    assert client.returncode == 0, err.decode()
    assert out == b"hello, late client\n"
    assert server.wait(DEADLINE) == 0, server.stderr.read().decode()
    procs.reap(server)


def test_connect_with_no_input_receives_everything_under_cpu_load(rundir, cpu_load):
    payload = os.urandom(4 << 20)
    server = vchansim(rundir, "serve", "--domid", "1", "0", "data/load")
    client = vchansim(rundir, "connect", "--domid", "0", "1", "data/load")
    client.stdin.close()  # `connect </dev/null`
    received = Collector(client, len(payload))
    server.stdin.write(payload)
    server.stdin.close()
    assert client.wait(4 * DEADLINE) == 0, client.stderr.read().decode()
    assert server.wait(DEADLINE) == 0, server.stderr.read().decode()
    received.join(DEADLINE)
    assert hashlib.sha256(received.data).digest() == hashlib.sha256(payload).digest()
    for proc in (server, client):
        procs.reap(proc)


def test_at_eof_swaps_the_parts_so_a_client_can_upload(rundir, cpu_load):
    payload = os.urandom(2 << 20)
    server = vchansim(rundir, "serve", "--at-eof", "receive", "--domid", "1", "0", "data/up")
    server.stdin.close()  # `serve --at-eof receive </dev/null >FILE`
    stored = Collector(server, len(payload))
    client = vchansim(rundir, "connect", "--at-eof", "close", "--domid", "0", "1", "data/up")
    _, err = client.communicate(payload, timeout=4 * DEADLINE)
    assert client.returncode == 0, err.decode()
    assert server.wait(DEADLINE) == 0, server.stderr.read().decode()
    stored.join(DEADLINE)
    assert hashlib.sha256(stored.data).digest() == hashlib.sha256(payload).digest()
    procs.reap(server)


def test_a_server_with_no_input_closing_first_makes_the_client_say_what_it_lost(rundir):
    server = vchansim(rundir, "serve", "--domid", "1", "0", "data/early")
    server.stdin.close()  # `serve </dev/null`: it closes once its client is there
    client = vchansim(rundir, "connect", "--domid", "0", "1", "data/early")
    client.stdin.write(os.urandom(1 << 16))
    _, err = client.communicate(timeout=DEADLINE)
    assert client.returncode == 3
    line = one_line(err)
    assert line.startswith("vchansim connect: the peer closed first: ") and (
        " bytes read from input not sent, " in line
    ), line
    assert server.wait(DEADLINE) == 0
    procs.reap(server)


def test_connect_into_a_pipe_that_closes_says_so_in_one_line(rundir, tmp_path):
    """``connect | head -c 10``: the output fails; the server, whose data the client can
    no longer take, says how much of it went unread."""
    data = tmp_path / "zeros"
    data.write_bytes(bytes(1 << 20))
    with data.open("rb") as source:
        server = vchansim(rundir, "serve", "--domid", "1", "0", "data/head", stdin=source)
    client = vchansim(rundir, "connect", "--domid", "0", "1", "data/head")
    assert client.stdout.read(10) == bytes(10)
    client.stdout.close()
    _, err = client.communicate(timeout=DEADLINE)
    assert client.returncode == 3
    assert one_line(err).startswith("vchansim connect: writing the output failed: Broken pipe: ")
    assert server.wait(DEADLINE) == 3
    assert " sent but not read by the peer" in server.stderr.read().decode()
    procs.reap(server)


def test_serve_and_connect_without_stdin_or_stdout_say_so_in_one_line(rundir):
    for command, redirect, name in (("serve", "<&-", "stdin"), ("connect", ">&-", "stdout")):
        shell = f'exec "$@" {redirect}'
        proc = subprocess.run(
            ["sh", "-c", shell, "sh", sys.executable, "-m", "vchansim", command, "1", "data/x"],
            env=procs.child_env(rundir),
            capture_output=True,
            timeout=DEADLINE,
        )
        assert proc.returncode == 1
        assert one_line(proc.stderr) == (
            f"vchansim {command}: {name} is closed: give it a file, a pipe or /dev/null"
        )


def test_wait_takes_only_a_number_of_seconds(rundir):
    for bad in ("nan", "-1", "soon"):
        client = vchansim(rundir, "connect", "--wait", bad, "1", "data/x")
        _, err = client.communicate(timeout=DEADLINE)
        assert client.returncode == 2
        assert err.decode().splitlines()[-1] == (
            f"vchansim connect: error: argument --wait: {bad!r} is not a number of seconds >= 0"
        )


def test_connect_to_nothing_fails_with_one_clear_line(rundir):
    client = vchansim(rundir, "connect", "--domid", "0", "--wait", "0.2", "7", "data/none")
    _, err = client.communicate(b"", timeout=DEADLINE)
    assert client.returncode == 1
    assert err.decode().strip().splitlines() == [
        "vchansim connect: no vchan server for domain 7 at '/local/domain/7/data/none': "
        "reading /local/domain/7/data/none/ring-ref failed (ENOENT)"
    ]


def test_bad_domain_id_is_named(rundir):
    proc = vchansim(rundir, "serve", "--domid", "40000", "0", "data/x")
    _, err = proc.communicate(b"", timeout=DEADLINE)
    assert proc.returncode == 1
    assert "40000" in err.decode() and "Traceback" not in err.decode()


def test_exec_runs_a_program_as_the_domain_with_the_emulator_environment(rundir):
    script = (
        "import os; print(os.environ['VCHANSIM_DOMID'], os.environ['XENSTORED_PATH']);"
        "import subprocess; subprocess.run(['xenstore-write', 'data/mark', 'set'], check=True);"
        "print(subprocess.run(['xenstore-read', 'domid'], capture_output=True, text=True).stdout);"
        "subprocess.run(['xenstore-rm', 'data/mark'], check=True)"
    )
    proc = vchansim(rundir, "exec", "--domid", "5", "--", sys.executable, "-c", script)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err.decode()
    domid, socket_path, read_back = out.decode().split()
    assert domid == "5" and socket_path == str(rundir.xs_socket(5)) and read_back == "5"


def test_exec_passes_the_exit_status_and_names_a_missing_program(rundir):
    proc = vchansim(
        rundir, "exec", "--domid", "1", "--", sys.executable, "-c", "raise SystemExit(7)"
    )
    assert proc.wait(DEADLINE) == 7
    proc = vchansim(rundir, "exec", "--domid", "1", "--", "/nonexistent/program")
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 127
    assert err.decode() == "vchansim exec: /nonexistent/program: no such program\n"


def test_exec_a_program_that_cannot_run_exits_126_with_one_line(rundir, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    for program in (script, tmp_path):  # no execute bit; a directory
        proc = vchansim(rundir, "exec", "--domid", "1", "--", str(program))
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 126
        assert err.decode() == f"vchansim exec: {program}: cannot execute: Permission denied\n"


def test_exec_without_a_program_shows_execs_usage(rundir):
    proc = vchansim(rundir, "exec", "--domid", "1", "--")
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2
    lines = err.decode().splitlines()
    assert lines[0].startswith("usage: vchansim exec ")
    assert lines[-1] == (
        "vchansim exec: error: exec needs a program to run: vchansim exec --domid N -- PROGRAM"
    )


def test_rundir_option_picks_the_hub_over_the_environment(rundir, tmp_path):
    from vchansim.hub.launcher import stop_hub

    other = tmp_path / "other"
    script = "import os; print(os.environ['VCHANSIM_RUNDIR'], os.environ['XENSTORED_PATH'])"
    proc = vchansim(rundir, "exec", "--rundir", str(other), "--domid", "3", "--",
                    sys.executable, "-c", script)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err.decode()
        assert out.decode().split() == [str(other), str(other / "xs" / "3")]
    finally:
        stop_hub(other)


def test_rundir_with_a_backend_that_has_no_hub_is_one_line(rundir, tmp_path):
    proc = vchansim(rundir, "serve", "--backend", "memory", "--rundir", str(tmp_path), "0", "d")
    _, err = proc.communicate(b"", timeout=DEADLINE)
    assert proc.returncode == 1
    assert err.decode() == (
        "vchansim serve: --rundir is the shm emulator's hub; the 'memory' backend has none\n"
    )


def test_a_broken_run_directory_is_named_in_one_line(rundir):
    """A directory where the hub's log goes: the first command that would start the hub
    names it, instead of an IsADirectoryError traceback."""
    (rundir.path / "hub.log").mkdir()
    for command in (["serve", "1", "data/x"], ["connect", "1", "data/x"]):
        proc = vchansim(rundir, *command)
        _, err = proc.communicate(b"", timeout=DEADLINE)
        assert proc.returncode == 1
        assert one_line(err) == (
            f"vchansim {command[0]}: run directory {str(rundir.path)!r}: 'hub.log' is there "
            "but is not a regular file; remove it"
        )


def test_a_killed_servers_keys_are_stale_to_connect_and_to_the_leak_report(rundir):
    """A SIGKILLed server leaves its keys in XenStore, as on Xen; connect says the server
    is gone (after waiting for a new one), and the leak report names the keys stale."""
    server = vchansim(rundir, "serve", "--domid", "1", "0", "data/dead")
    assert b"offers" in server.stderr.readline()  # published
    server.kill()
    server.wait(DEADLINE)
    left = find_leaks(
        rundir, timeout=DEADLINE, kinds={LeakKind.GRANT, LeakKind.PORT, LeakKind.XENSTORE}
    )
    assert len(left) == 2 and all(leak.kind is LeakKind.XENSTORE for leak in left), left
    assert all("(a stale vchan server key: domain 1 has no " in str(leak) for leak in left), left
    client = vchansim(rundir, "connect", "--domid", "0", "--wait", "0.3", "1", "data/dead")
    _, err = client.communicate(b"", timeout=DEADLINE)
    assert client.returncode == 1
    assert one_line(err).startswith(
        "vchansim connect: no live vchan server for domain 1 at '/local/domain/1/data/dead': "
        "binding its event-channel port "
    )
    assert "its keys are stale" in err.decode()
    store = ShmBackend(1).store()  # a toolstack's clean-up, so that the test ends clean
    store.rm("/local/domain/1/data/dead")
    store.close()
    procs.reap(server)
