"""A benchmark endpoint process: one transport, driven line by line on stdin/stdout.

``python -m vchansim.bench.worker TRANSPORT [--domid N] [--peer N] [--spin S] [--fds ...]``

It speaks the same protocol as the C endpoint (``csrc/programs/vchan-bench.c``), so the runner
drives every transport alike.  It prints ``ready``, then answers each command with one
line, ``ok ...`` or ``error CAUSE``.  Times are ``CLOCK_MONOTONIC`` seconds, which every
process on the machine shares, so the runner can time a transfer from the sender's first
call to the receiver's last.  Throughput data flows client -> server.

======================  =====================================================================
``open server PATH R``  set the channel up as server, rings of at least R bytes; reply
                        ``ok SECONDS RING_BYTES PORT``: setup time, client -> server ring
                        size, this end's event port (0 for pipes and sockets)
``open client PATH``    connect to it; same reply
``send MODE TOTAL MSG`` write TOTAL bytes in MSG-byte calls, MODE ``stream`` or ``packet``;
                        reply ``ok START END CPU``: the times around the transfer, and the
                        CPU seconds (user + system) it used
``recv MODE TOTAL MSG`` read TOTAL bytes: stream reads ask for max(MSG, 64 KiB), packets are
                        MSG bytes; reply ``ok START END CPU``
``ping COUNT``          COUNT one-byte round trips; reply ``ok P50 P99`` in seconds, over
                        all but the first COUNT/10 (the warm-up)
``pong COUNT``          echo COUNT single bytes; reply ``ok``
``close``               close the channel; reply ``ok``
``rss``                 reply ``ok BYTES``: this process's peak resident set (VmHWM)
``quit``                exit (so does end of input)
======================  =====================================================================
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from ..errors import ConfigError
from .endpoints import Endpoint, make_endpoint

MAX_MESSAGE = 1 << 20
STREAM_READ = 64 * 1024


def _transfer(ep: Endpoint, buf: memoryview, sending: bool, mode: str, total: int, msg: int) -> str:
    if mode not in ("stream", "packet") or not 1 <= msg <= MAX_MESSAGE or total < 0:
        raise ConfigError(f"bad transfer: mode {mode!r}, {total} bytes, {msg}-byte messages")
    packet = mode == "packet"
    if sending:
        call = ep.send if packet else ep.write
        chunk = msg
    else:
        call = ep.recv_into if packet else ep.read_into
        chunk = msg if packet else max(msg, STREAM_READ)
    cpu = time.process_time()
    start = time.monotonic()
    _move(call, buf[:chunk], total, exact=sending or packet)
    end = time.monotonic()
    return f"ok {start:.9f} {end:.9f} {time.process_time() - cpu:.6f}"


def _move(call: Callable[[memoryview], int], view: memoryview, total: int, exact: bool) -> None:
    """Call ``call`` until ``total`` bytes moved: whole views when ``exact`` (writes and
    packets), else whatever each stream read returns."""
    chunk = len(view)
    if exact:
        for _ in range(total // chunk):
            call(view)
        if total % chunk:
            call(view[: total % chunk])
        return
    left = total
    while left:
        n = call(view if left >= chunk else view[:left])
        if not n:
            raise ConnectionError(f"end of stream with {left} of {total} bytes still to come")
        left -= n


def _ping(ep: Endpoint, count: int) -> str:
    if count < 2:
        raise ConfigError(f"ping needs at least 2 round trips, not {count}")
    warm = count // 10
    byte = memoryview(bytearray(1))
    write, read_into, clock = ep.write, ep.read_into, time.perf_counter
    samples = [0.0] * count
    for i in range(count):
        start = clock()
        write(byte)
        read_into(byte)
        samples[i] = clock() - start
    kept = sorted(samples[warm:])
    return f"ok {kept[len(kept) // 2]:.9f} {kept[len(kept) * 99 // 100]:.9f}"


def _pong(ep: Endpoint, count: int) -> str:
    byte = memoryview(bytearray(1))
    write, read_into = ep.write, ep.read_into
    for _ in range(count):
        read_into(byte)
        write(byte)
    return "ok"


def peak_rss() -> int:
    """This process's peak resident set size in bytes (``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM line in /proc/self/status")


def dispatch(ep: Endpoint, buf: memoryview, words: Sequence[str]) -> str:
    """Run one command; return the reply line."""
    match list(words):
        case ["open", "server", path, ring]:
            seconds, size, port = ep.open("server", path, int(ring))
        case ["open", "client", path]:
            seconds, size, port = ep.open("client", path, 0)
        case ["send" | "recv" as verb, mode, total, msg]:
            return _transfer(ep, buf, verb == "send", mode, int(total), int(msg))
        case ["ping", count]:
            return _ping(ep, int(count))
        case ["pong", count]:
            return _pong(ep, int(count))
        case ["close"]:
            ep.close()
            return "ok"
        case ["rss"]:
            return f"ok {peak_rss()}"
        case _:
            return f"error unknown command or wrong arguments: {' '.join(words)!r}"
    return f"ok {seconds:.9f} {size} {port}"


def serve(ep: Endpoint, lines: Callable[[], str], say: Callable[[str], None]) -> None:
    """Answer commands until ``quit`` or end of input; errors become ``error`` replies."""
    buf = memoryview(bytearray(MAX_MESSAGE))
    say("ready")
    while True:
        words = lines().split()
        if not words or words == ["quit"]:
            return
        try:
            reply = dispatch(ep, buf, words)
        except (OSError, ValueError) as exc:
            reply = f"error {type(exc).__name__}: {exc}"
        say(reply)


def _spin(text: str) -> str | float:
    return text if text in ("off", "adaptive") else float(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vchansim.bench.worker")
    parser.add_argument("transport", choices=("vchansim", "pipe", "socketpair"))
    parser.add_argument("--domid", type=int, default=0, help="this endpoint's domain (vchansim)")
    parser.add_argument("--peer", type=int, default=0, help="the peer's domain (vchansim)")
    parser.add_argument("--spin", type=_spin, default="off", help="spin policy (vchansim)")
    parser.add_argument(
        "--fds", type=int, nargs="*", default=[], help="inherited descriptors (pipe, socketpair)"
    )
    args = parser.parse_args(argv)
    ep = make_endpoint(
        args.transport, domid=args.domid, peer=args.peer, spin=args.spin, fds=tuple(args.fds)
    )

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        serve(ep, sys.stdin.readline, say)
    finally:
        ep.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
