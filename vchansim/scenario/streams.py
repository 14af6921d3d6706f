"""Deterministic traffic: the bytes and sizes an endpoint sends, derived from the seed.

Every byte a scenario moves is a pure function of ``(seed, sender, offset)``, so a
receiver can check each byte as it arrives, a restarted endpoint can resume mid-stream,
and the runner can recompute any range's digest without having seen the traffic.  The
stream is cut into blocks seeded independently, which makes random access cheap: no
endpoint ever has to generate what it skips.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

#: Bytes per independently seeded block of a stream.
BLOCK = 1 << 16


class ByteStream:
    """The endless byte stream endpoint ``name`` sends under ``seed``."""

    def __init__(self, seed: int, name: str) -> None:
        self._prefix = f"{seed}/{name}/data/"
        self._cached = -1
        self._block = b""

    def _get(self, index: int) -> bytes:
        if index != self._cached:
            self._block = random.Random(self._prefix + str(index)).randbytes(BLOCK)
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


def digest(seed: int, name: str, start: int, count: int) -> str:
    """sha256 (hex) of ``count`` bytes of ``name``'s stream from ``start``."""
    stream = ByteStream(seed, name)
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

    def __init__(self, stream: ByteStream, start: int) -> None:
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
