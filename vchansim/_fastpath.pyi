"""Types of the C accelerator (``_fastpath.c``): the same interface as
:mod:`vchansim.pycore`, whose docstrings say what each operation does.

``python3 -m mypy.stubtest vchansim._fastpath`` checks this file against the built module.
"""

from typing import final

from typing_extensions import disjoint_base

@disjoint_base
class RingCore:
    def __init__(
        self, indices: memoryview, cons_slot: int, prod_slot: int, buf: memoryview, order: int
    ) -> None: ...
    @property
    def cons(self) -> int: ...
    @property
    def prod(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def order(self) -> int: ...
    def fill(self) -> int: ...
    def data_ready(self) -> int: ...
    def buffer_space(self) -> int: ...
    def put(self, src: bytes | bytearray | memoryview, n: int | None = None, /) -> int: ...
    def get(
        self, dst: bytearray | memoryview, n: int | None = None, need: int | None = 1, /
    ) -> int: ...
    def release(self) -> None: ...

@disjoint_base
class NotifyCore:
    def __init__(self, page: memoryview, own: int, peer: int) -> None: ...
    def request(self, bit: int, /) -> None: ...
    def take(self, bit: int, /) -> bool: ...
    def release(self) -> None: ...

@final
class Waiter:
    def __init__(
        self, notify: NotifyCore, epfd: int, kick_fd: int, wait_word: int, sent_counter: int
    ) -> None: ...
    def read(
        self,
        ring: RingCore,
        dst: bytearray | memoryview,
        n: int | None,
        need: int,
        live: int,
        timeout: float | None,
        /,
    ) -> int: ...
    def write(
        self,
        ring: RingCore,
        src: bytes | bytearray | memoryview,
        n: int | None,
        need: int,
        live: int,
        timeout: float | None,
        /,
    ) -> int: ...

@disjoint_base
class ChannelCore:
    _closed: bool
    blocking: bool
    timeout: float | None
    server_persist: bool
    _core_waits: Waiter | None
    _rd: RingCore
    _wr: RingCore
    _live: int
    _recheck: float
    def read_into(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int: ...
    def write(self, data: bytes | bytearray | memoryview) -> int: ...

def full_fence() -> None: ...
def fetch_add_u64(address: int, amount: int, /) -> int: ...
def eventfd_kick(fd: int, counter_address: int, /) -> None: ...
def wait_one(epfd: int, timeout: float | None, /) -> int: ...
