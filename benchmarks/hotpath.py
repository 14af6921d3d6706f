"""Per-call costs of the Python hot path, in one process: where a small message's time goes.

    python benchmarks/hotpath.py [--messages 1,64,65536] [--calls 20000]

Writes and reads alternate on one channel of the in-process ``memory`` backend, so no
scheduler or cache-line transfer is involved: what is left is the interpreter's work per
call (plus the copy, for large messages).  The primitives the calls are made of -- the
fence, the notify-bit test, a ring index read -- are timed alone for comparison.  Use it
before and after a hot-path change; ``vchansim bench`` then shows what survives between
processes.
"""

from __future__ import annotations

import argparse
import mmap
import timeit
from collections.abc import Callable

from vchansim import layout
from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.channel import Vchan
from vchansim.core import full_fence
from vchansim.ring import Notifier, Ring


def best_ns(step: Callable[[], object], calls: int) -> float:
    """The fastest of five runs of ``calls`` calls, per call, in nanoseconds."""
    return min(timeit.repeat(step, number=calls, repeat=5)) / calls * 1e9


def _one_message(
    write: Callable[[memoryview], int],
    read: Callable[[memoryview], int],
    data: memoryview,
    buf: memoryview,
) -> Callable[[], None]:
    """One message: write ``data``, read it back into ``buf``."""

    def step() -> None:
        write(data)
        read(buf)

    return step


def channel_costs(messages: list[int], calls: int) -> None:
    hv = MemoryHypervisor()
    ring = max(messages)
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "data/hot", ring, ring)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, "/local/domain/1/data/hot")
    try:
        for size in messages:
            data = memoryview(bytes(size))
            buf = memoryview(bytearray(size))
            for name, write, read in (
                ("write + read_into", cli.write, srv.read_into),
                ("send + recv_into", cli.send, srv.recv_into),
            ):
                ns = best_ns(_one_message(write, read, data, buf), calls)
                rate = size / ns * 1e9 / (1 << 20)
                print(f"{size:>8} B  {name:18} {ns / 1000:7.2f} µs/message  {rate:9.1f} MiB/s")
    finally:
        cli.close()
        srv.close()


def primitive_costs(calls: int) -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE)
    view = memoryview(page)
    notifier = Notifier(view, server=True)
    notifier.request(layout.NOTIFY_WRITE)
    ring = Ring.left(view, memoryview(mmap.mmap(-1, 1024)), 10)
    for name, step in (
        ("full fence", full_fence),
        ("notify take, not asked (fence + read)", lambda: notifier.take(layout.NOTIFY_READ)),
        ("notify request, already set", lambda: notifier.request(layout.NOTIFY_WRITE)),
        ("ring data_ready", ring.data_ready),
        ("empty lambda (call overhead)", lambda: None),
    ):
        print(f"{name:40} {best_ns(step, calls):7.0f} ns")
    ring.release()
    notifier.release()
    view.release()
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", default="1,64,65536", help="message sizes, bytes")
    parser.add_argument("--calls", type=int, default=20000, help="calls per timing")
    args = parser.parse_args()
    channel_costs([int(m) for m in args.messages.split(",")], args.calls)
    primitive_costs(args.calls * 10)


if __name__ == "__main__":
    main()
