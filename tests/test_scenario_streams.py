"""Deterministic traffic: the same seed gives the same bytes and sizes, any range can be
produced without generating what precedes it, and a receiver pinpoints a wrong byte."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from vchansim.scenario.streams import (
    BLOCK,
    ByteStream,
    SizeSpec,
    StreamCheck,
    digest,
    first_difference,
    sizes,
)


def test_same_seed_and_sender_give_the_same_bytes_others_differ():
    a = bytes(ByteStream(1, "srv").read(0, 4096))
    assert a == bytes(ByteStream(1, "srv").read(0, 4096))
    assert a != bytes(ByteStream(2, "srv").read(0, 4096))
    assert a != bytes(ByteStream(1, "cli").read(0, 4096))


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 3 * BLOCK), n=st.integers(0, 2 * BLOCK))
def test_any_range_equals_the_same_range_of_the_whole_stream(offset, n):
    whole = bytes(ByteStream(9, "x").read(0, 5 * BLOCK))
    assert bytes(ByteStream(9, "x").read(offset, n)) == whole[offset : offset + n]


def test_digest_is_sha256_of_the_range():
    expected = hashlib.sha256(bytes(ByteStream(3, "s").read(1000, 200_000))).hexdigest()
    assert digest(3, "s", 1000, 200_000) == expected


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_first_difference_finds_the_exact_byte(data):
    n = data.draw(st.integers(1, 5000))
    base = bytes(ByteStream(1, "d").read(0, n))
    at = data.draw(st.integers(0, n - 1))
    changed = bytearray(base)
    changed[at] ^= 0xFF
    assert first_difference(memoryview(changed), memoryview(base)) == at


def test_stream_check_reports_the_stream_offset_of_the_first_wrong_byte():
    stream = ByteStream(4, "srv")
    data = bytearray(stream.read(5000, 30_000))
    data[12_345] ^= 1
    data[20_000] ^= 1  # only the first one is reported
    check = StreamCheck(ByteStream(4, "srv"), start=5000)
    for i in range(0, len(data), 7000):
        check.feed(memoryview(data)[i : i + 7000])
    assert check.mismatch_at == 5000 + 12_345
    assert check.count == 30_000 and check.offset == 35_000
    assert check.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_correct_stream_checks_clean():
    check = StreamCheck(ByteStream(4, "srv"), start=0)
    for offset in range(0, 100_000, 9999):
        check.feed(ByteStream(4, "srv").read(offset, min(9999, 100_000 - offset)))
    assert check.mismatch_at is None and check.hexdigest() == digest(4, "srv", 0, 100_000)


def test_sizes_are_deterministic_in_range_or_fixed():
    spec = SizeSpec(10, 500)
    first = list(itertools.islice(sizes(7, "srv", "writes", spec), 200))
    assert first == list(itertools.islice(sizes(7, "srv", "writes", spec), 200))
    assert all(10 <= n <= 500 for n in first) and len(set(first)) > 50
    assert set(itertools.islice(sizes(7, "srv", "writes", SizeSpec(64, 64)), 50)) == {64}
    assert first != list(itertools.islice(sizes(7, "srv", "reads", spec), 200))
