"""vchansim's counterpart of ``tests/c/xen/vchan_peer.c``: one vchan end, same modes.

The real-Xen tests pair this with itself and with Xen's C library in every combination,
so both speak the same command line and print the same one-line JSON result:

    PYTHONPATH=. python tests/xen_real/pypeer.py [-r KEY] [-s MINSIZE] [-w SECONDS]
        [--ready KEY] [--backend NAME] ROLE DOMID PATH
        (echo | source N | sink N | ping N SIZE | roundtrip N | await-close)

``roundtrip N`` (Python only) sends N random bytes to an echo peer while reading the echo
back, and compares SHA-256 digests: data both ways through one channel.  ``await-close``
(Python only) pings an echo peer once, then waits for the peer to go (killed, say) and
reports how long the close took to be seen, and when each event came meanwhile.
``--ready KEY`` writes KEY in XenStore once the channel works (after the first ping for
``await-close``), for whoever kills the peer.
The tests call :func:`run` in a forked child rather than spawning an interpreter, which
under an emulated CPU costs seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vchansim.backends import get_backend
from vchansim.backends.base import Backend
from vchansim.channel import Vchan
from vchansim.errors import ChannelClosed, VchanError

PATTERN_LEN = 8191  # prime: never lines up with a power-of-two ring
CHUNK = 65536


def make_pattern() -> bytes:
    """The C peer's test pattern: 8191 bytes of a 32-bit LCG's bits 16..23."""
    x = 0x2545F491
    out = bytearray(PATTERN_LEN)
    for i in range(PATTERN_LEN):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


class PatternStream:
    """Slices of the endlessly repeated pattern, at any stream offset, without copying."""

    def __init__(self) -> None:
        self._tile = memoryview(make_pattern() * (CHUNK // PATTERN_LEN + 2))

    def at(self, offset: int, length: int) -> memoryview:
        start = offset % PATTERN_LEN
        return self._tile[start : start + length]


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", dest="report_key", help="also write the result to this XenStore key")
    parser.add_argument("-s", dest="min_size", type=int, default=0, help="server ring minimum")
    parser.add_argument("-w", dest="wait", type=float, default=0.0, help="client retry window")
    parser.add_argument("--ready", dest="ready_key", help="XenStore key to write when ready")
    parser.add_argument("--backend", default="xen")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("peer", type=int)
    parser.add_argument("path")
    modes = ("echo", "source", "sink", "ping", "roundtrip", "await-close")
    parser.add_argument("mode", choices=modes)
    parser.add_argument("count", type=int, nargs="?", default=0)
    parser.add_argument("size", type=int, nargs="?", default=1)
    return parser.parse_args(argv)


CONNECT_DEADLINE = 60.0


def connect(backend: Backend, args: argparse.Namespace) -> Vchan:
    """The channel, connected: a server waits for its client (which kicks it on connecting)
    so that timings cover the transfer only, as the C peer's do."""
    if args.role == "server":
        chan = Vchan.server(backend, args.peer, args.path, args.min_size, args.min_size)
        deadline = time.monotonic() + CONNECT_DEADLINE
        while chan.is_open() == 2:
            if time.monotonic() > deadline:
                chan.close()
                raise TimeoutError(f"no client came for {args.path} in {CONNECT_DEADLINE} s")
            chan.wait(1.0)
        return chan
    deadline = time.monotonic() + args.wait
    while True:
        try:
            return Vchan.client(backend, args.peer, args.path)
        except VchanError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


def echo(chan: Vchan, result: dict[str, Any]) -> None:
    start = None
    for chunk in chan:
        start = start or time.monotonic()
        chan.write(chunk)
        result["bytes"] += len(chunk)
    result["seconds"] = time.monotonic() - start if start else 0.0


def source(chan: Vchan, total: int, result: dict[str, Any]) -> None:
    stream = PatternStream()
    start = time.monotonic()
    while result["bytes"] < total:
        n = min(CHUNK, total - result["bytes"])
        chan.write(stream.at(result["bytes"], n))
        result["bytes"] += n
    result["seconds"] = time.monotonic() - start


def sink(chan: Vchan, total: int, result: dict[str, Any]) -> None:
    stream = PatternStream()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = None
    while result["bytes"] < total:
        got = chan.read_into(buf, min(CHUNK, total - result["bytes"]))
        start = start or time.monotonic()
        if view[:got] != stream.at(result["bytes"], got):
            raise AssertionError(f"bytes {result['bytes']}..+{got} differ from the pattern")
        result["bytes"] += got
    result["seconds"] = time.monotonic() - start if start else 0.0


def ping(chan: Vchan, rounds: int, size: int, result: dict[str, Any]) -> None:
    message = bytes(PatternStream().at(0, size))
    start = time.monotonic()
    for _ in range(rounds):
        chan.write(message)
        if chan.recv(size) != message:
            raise AssertionError("the echo differs from the request")
        result["bytes"] += 2 * size
    result["seconds"] = time.monotonic() - start
    result["rtt_us"] = result["seconds"] * 1e6 / rounds if rounds else 0.0


def roundtrip(chan: Vchan, total: int, result: dict[str, Any]) -> None:
    """Write and read at once, non-blocking, so neither side stalls on a full ring."""
    payload = memoryview(os.urandom(total))
    echoed = hashlib.sha256()
    inbox = bytearray(CHUNK)
    sent = received = 0
    chan.blocking = False
    start = time.monotonic()
    while received < total:
        moved = chan.write(payload[sent : sent + CHUNK]) if sent < total else 0
        sent += moved
        got = chan.read_into(inbox)
        echoed.update(memoryview(inbox)[:got])
        received += got
        if not moved and not got:
            chan.wait(1.0)
    result["seconds"] = time.monotonic() - start
    result["bytes"] = 2 * total
    result["sha256"] = echoed.hexdigest()
    if echoed.digest() != hashlib.sha256(payload).digest():
        raise AssertionError("SHA-256 of the echo differs from what was sent")


#: How long await-close waits for the peer to go, and then for its unmap-notify event.
CLOSE_DEADLINE = 60.0
EVENT_DEADLINE = 10.0


def await_close(chan: Vchan, ready: Callable[[], None], result: dict[str, Any]) -> None:
    """One ping through the echo, then watch for the peer to go, recording its two signs:
    the live byte cleared and each event that came meanwhile.

    PROTOCOL.md §6.3: the kernel of an auto-translated (HVM/PVH) domain may send a dead
    client's unmap-notify event *before* it clears the byte; a PV kernel clears it at
    munmap, well before.  Blocking on the event would hide that order, so this end spins,
    reading the byte and polling the event channel, and reports every event with the time
    it was seen (``time.monotonic()``) and the byte right after (``events``); whoever
    killed the peer knows when and can tell the kill's event from a late one of the
    ping's.  Then, if no event came, it waits for one."""
    ping(chan, 1, 1, result)
    ready()
    poller = select.poll()
    poller.register(chan.fileno(), select.POLLIN)
    start = time.monotonic()
    events: list[tuple[float, int]] = []
    while chan.is_open():
        if poller.poll(0):
            chan.wait(0)
            events.append((time.monotonic(), chan.is_open()))
        if time.monotonic() - start > CLOSE_DEADLINE:
            raise AssertionError(f"the peer still looks alive after {CLOSE_DEADLINE} s")
    result["closed_at"] = time.monotonic()
    result["close_seen_s"] = round(result["closed_at"] - start, 3)
    result["events"] = events
    result["event_seen"] = bool(events) or chan.wait(EVENT_DEADLINE)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Run one peer to completion; the result says ok or names the failure."""
    args = parse(argv)
    result: dict[str, Any] = {
        "role": args.role,
        "mode": args.mode,
        "bytes": 0,
        "seconds": 0.0,
        "rtt_us": 0.0,
        "ok": False,
        "error": "",
    }
    backend = get_backend(args.backend)

    def ready() -> None:
        if args.ready_key:
            with backend.store() as store:
                store.write(args.ready_key, b"1")

    try:
        with connect(backend, args) as chan:
            if args.mode == "await-close":
                await_close(chan, ready, result)
            else:
                ready()
            if args.mode == "echo":
                echo(chan, result)
            elif args.mode == "source":
                source(chan, args.count, result)
            elif args.mode == "sink":
                sink(chan, args.count, result)
            elif args.mode == "ping":
                ping(chan, args.count, args.size, result)
            elif args.mode == "roundtrip":
                roundtrip(chan, args.count, result)
        result["ok"] = True
    except (OSError, AssertionError, ChannelClosed) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    if args.report_key:
        with backend.store() as store:
            store.write(args.report_key, json.dumps(result).encode())
    return result


def main() -> int:
    result = run(sys.argv[1:])
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
