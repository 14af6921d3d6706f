"""Deterministic traffic: the bytes and sizes an endpoint sends, derived from the seed.

Every byte a scenario moves is a pure function of ``(seed, sender, offset)``, so a
receiver can check each byte as it arrives, a restarted endpoint can resume mid-stream,
and the runner can recompute any range's digest without having seen the traffic.  A
Python endpoint's stream is cut into blocks seeded independently, which makes random
access cheap: no endpoint ever has to generate what it skips.  A program endpoint sends
vchan-pipe's data (csrc/programs/vchan-pipe.c): xorshift64 from a seed drawn from the
scenario's, which can only be produced in order; blocks are remembered by the
generator's state at their start, so each is made once per reader.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: Bytes per block of a stream (a whole number of 8-byte xorshift words).
BLOCK = 1 << 16
_U64 = (1 << 64) - 1
_BLOCK_WORDS = struct.Struct(f"<{BLOCK // 8}Q")


class _Blocks:
    """A stream made of BLOCK-sized blocks; subclasses say how block ``index`` is made."""

    def __init__(self) -> None:
        self._cached = -1
        self._block = b""

    def _make(self, index: int) -> bytes:
        raise NotImplementedError

    def _get(self, index: int) -> bytes:
        if index != self._cached:
            self._block = self._make(index)
            self._cached = index
        return self._block

    def read(self, offset: int, n: int) -> memoryview:
        """Bytes ``offset .. offset+n`` of the stream (a view when they sit in one block)."""
        index, pos = divmod(offset, BLOCK)
        if pos + n <= BLOCK:
            return memoryview(self._get(index))[pos : pos + n]
        out = bytearray()
        while len(out) < n:
            index, pos = divmod(offset + len(out), BLOCK)
            take = min(BLOCK - pos, n - len(out))
            out += memoryview(self._get(index))[pos : pos + take]
        return memoryview(out)


class ByteStream(_Blocks):
    """The endless byte stream Python endpoint ``name`` sends under ``seed``."""

    def __init__(self, seed: int, name: str) -> None:
        super().__init__()
        self._prefix = f"{seed}/{name}/data/"

    def _make(self, index: int) -> bytes:
        return random.Random(self._prefix + str(index)).randbytes(BLOCK)


class XorshiftStream(_Blocks):
    """vchan-pipe's data from ``seed``: the little-endian 64-bit outputs of xorshift64."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._starts = [seed]  # generator state at the start of block i

    def _make(self, index: int) -> bytes:
        while len(self._starts) <= index:  # a jump ahead: make the blocks in between
            self._starts.append(_xorshift_block(self._starts[-1])[1])
        block, after = _xorshift_block(self._starts[index])
        if len(self._starts) == index + 1:
            self._starts.append(after)
        return block


def _xorshift_block(state: int) -> tuple[bytes, int]:
    """One block of xorshift64 output from ``state``, and the state after it."""
    words: list[int] = []
    append = words.append
    x = state
    for _ in range(BLOCK // 8):
        x ^= (x << 13) & _U64
        x ^= x >> 7
        x ^= (x << 17) & _U64
        append(x)
    return _BLOCK_WORDS.pack(*words), x


def program_seed(seed: int, name: str) -> int:
    """The ``--seed`` of program endpoint ``name``: 64 bits drawn from the scenario's
    seed and the name (never 0, xorshift's fixed point)."""
    drawn = int.from_bytes(hashlib.sha256(f"{seed}/{name}/program".encode()).digest()[:8], "little")
    return drawn or 1


def open_stream(seed: int, name: str, kind: str = "python") -> ByteStream | XorshiftStream:
    """The stream endpoint ``name`` of ``kind`` (``python`` or ``program``) sends."""
    return XorshiftStream(program_seed(seed, name)) if kind == "program" else ByteStream(seed, name)


def digest(seed: int, name: str, start: int, count: int, kind: str = "python") -> str:
    """sha256 (hex) of ``count`` bytes of ``name``'s stream from ``start``."""
    stream = open_stream(seed, name, kind)
    sha = hashlib.sha256()
    offset = start
    while offset < start + count:
        n = min(BLOCK - offset % BLOCK, start + count - offset)
        sha.update(stream.read(offset, n))
        offset += n
    return sha.hexdigest()


@dataclass(frozen=True)
class SizeSpec:
    """A size that is fixed (``low == high``) or drawn uniformly from ``low..high``."""

    low: int
    high: int

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def describe(self) -> str:
        return str(self.low) if self.fixed else f"{self.low}..{self.high}"


def sizes(seed: int, name: str, what: str, spec: SizeSpec) -> Iterator[int]:
    """The endless sequence of ``what`` sizes (``writes``, ``reads``, ``packets``) of ``name``."""
    rng = random.Random(f"{seed}/{name}/{what}")
    while True:
        yield spec.low if spec.fixed else rng.randint(spec.low, spec.high)


def first_difference(got: memoryview, expected: memoryview) -> int:
    """Index of the first byte where two equal-length, unequal buffers differ.

    Bisects with slice comparisons (done in C) rather than walking byte by byte.
    """
    lo, hi = 0, len(got)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if got[lo:mid] != expected[lo:mid]:
            hi = mid
        else:
            lo = mid
    return lo


class StreamCheck:
    """Checks received bytes against the sender's stream as they arrive.

    ``start`` is the stream offset of the first byte this receiver will see (not 0 for a
    client that reconnected mid-stream).  Keeps a running sha256 and the stream offset of
    the first wrong byte, if any.
    """

    def __init__(self, stream: ByteStream | XorshiftStream, start: int) -> None:
        self._stream = stream
        self.start = start
        self.offset = start
        self.mismatch_at: int | None = None
        self._sha = hashlib.sha256()

    def feed(self, data: memoryview) -> None:
        n = len(data)
        if self.mismatch_at is None:
            expected = self._stream.read(self.offset, n)
            if data != expected:
                self.mismatch_at = self.offset + first_difference(data, expected)
        self._sha.update(data)
        self.offset += n

    @property
    def count(self) -> int:
        return self.offset - self.start

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
