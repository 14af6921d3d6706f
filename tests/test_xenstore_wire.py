"""The XenStore wire codec: numbers from xs_wire.h, docs/protocol.md §7.8 vectors, framing."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchansim.xenstore import wire
from vchansim.xenstore.wire import Decoder, Message, PayloadTooLarge, Perm, XsType

XS_WIRE_H = Path("/usr/include/xen/io/xs_wire.h")

# docs/protocol.md §7.8, byte for byte.
RING_REF = b"/local/domain/1/data/vchan/0/5/ring-ref"
VECTORS = [
    (
        Message(XsType.READ, b"domid\0"),
        "02000000 00000000 00000000 06000000 646f6d696400",
    ),
    (Message(XsType.TRANSACTION_START, b"\0"), "06000000 00000000 00000000 01000000 00"),
    (
        Message(XsType.WRITE, RING_REF + b"\0" + b"8", tx_id=7),
        "0b000000 00000000 07000000 29000000 " + (RING_REF + b"\0" + b"8").hex(),
    ),
    (
        Message(XsType.SET_PERMS, b"/x\0" + wire.format_perms([Perm("n", 1), Perm("r", 0)]), 0, 7),
        "0e000000 00000000 07000000 09000000 2f78006e31007230 00",
    ),
    (Message(XsType.TRANSACTION_END, b"T\0", tx_id=7), "07000000 00000000 07000000 02000000 5400"),
    (
        Message(XsType.RM, b"/local/domain/1/data/vchan/0/5\0"),
        "0d000000 00000000 00000000 1f000000 " + b"/local/domain/1/data/vchan/0/5\0".hex(),
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"), VECTORS, ids=lambda v: getattr(v, "type_name", "")
)
def test_protocol_md_vectors_encode_and_decode(message: Message, expected: str) -> None:
    raw = bytes.fromhex(expected.replace(" ", ""))
    assert message.encode() == raw
    assert Decoder().feed(raw) == [message]


def test_message_types_match_the_table() -> None:
    expected = {
        "CONTROL": 0, "DIRECTORY": 1, "READ": 2, "GET_PERMS": 3, "WATCH": 4, "UNWATCH": 5,
        "TRANSACTION_START": 6, "TRANSACTION_END": 7, "INTRODUCE": 8, "RELEASE": 9,
        "GET_DOMAIN_PATH": 10, "WRITE": 11, "MKDIR": 12, "RM": 13, "SET_PERMS": 14,
        "WATCH_EVENT": 15, "ERROR": 16, "IS_DOMAIN_INTRODUCED": 17, "RESUME": 18,
        "SET_TARGET": 19, "RESET_WATCHES": 21, "DIRECTORY_PART": 22, "GET_FEATURE": 23,
        "SET_FEATURE": 24, "GET_QUOTA": 25, "SET_QUOTA": 26, "INVALID": 0xFFFF,
    }  # fmt: skip
    assert {member.name: member.value for member in XsType} == expected
    assert XsType.DEBUG is XsType.CONTROL
    assert 20 not in {member.value for member in XsType}  # XS_RESTRICT is gone


@pytest.mark.skipif(not XS_WIRE_H.exists(), reason="libxen-dev headers not installed")
def test_types_and_errors_agree_with_the_installed_xs_wire_h() -> None:
    text = XS_WIRE_H.read_text()
    body = text[text.index("enum xsd_sockmsg_type") : text.index("XS_TYPE_COUNT")]
    value = -1
    for name, explicit in re.findall(r"^\s*XS_(\w+)\s*(?:=\s*XS_(\w+ \+ \d+))?,", body, re.M):
        if explicit:
            base, add = explicit.split(" + ")
            value = XsType[base] + int(add)
        else:
            value += 1
        assert XsType[name] == value, name
    assert tuple(re.findall(r"XSD_ERROR\((E\w+)\)", text)) == wire.ERROR_NAMES
    assert f"#define XENSTORE_PAYLOAD_MAX {wire.PAYLOAD_MAX}" in text


def test_error_names_carry_linux_errno_numbers() -> None:
    assert wire.ERRNO_BY_NAME == {
        "EINVAL": 22, "EACCES": 13, "EEXIST": 17, "EISDIR": 21, "ENOENT": 2, "ENOMEM": 12,
        "ENOSPC": 28, "EIO": 5, "ENOTEMPTY": 39, "ENOSYS": 38, "EROFS": 30, "EBUSY": 16,
        "EAGAIN": 11, "EISCONN": 106, "E2BIG": 7, "EPERM": 1,
    }  # fmt: skip
    assert wire.name_from_errno(errno.EAGAIN) == "EAGAIN"


def test_unknown_error_names_and_numbers_fall_back_to_einval() -> None:
    assert wire.errno_from_name("EWHATEVER") == errno.EINVAL
    assert wire.errno_from_name("EBADF") == errno.EINVAL  # not in xenstored's table
    assert wire.name_from_errno(errno.EBADF) == "EINVAL"


def test_type_name_names_unknown_numbers() -> None:
    assert wire.type_name(11) == "WRITE"
    assert wire.type_name(99) == "TYPE99"
    assert Message(99).type_name == "TYPE99"


def test_payload_limit_is_inclusive() -> None:
    assert len(Message(XsType.WRITE, b"x" * wire.PAYLOAD_MAX).encode()) == 16 + 4096
    with pytest.raises(PayloadTooLarge):
        Message(XsType.WRITE, b"x" * (wire.PAYLOAD_MAX + 1)).encode()


def test_decoder_refuses_oversized_header_before_its_payload_and_stays_broken() -> None:
    decoder = Decoder()
    good = wire.encode(XsType.READ, b"a\0")
    with pytest.raises(PayloadTooLarge) as info:
        decoder.feed(good + wire.HEADER.pack(XsType.WRITE, 0, 0, 4097))
    assert info.value.length == 4097
    assert isinstance(info.value, wire.XsProtocolError)
    with pytest.raises(PayloadTooLarge):
        decoder.feed(good)


def test_decoder_accepts_4096_and_keeps_partial_messages() -> None:
    decoder = Decoder()
    raw = wire.encode(XsType.WRITE, b"p\0" + b"v" * 4094, req_id=3, tx_id=9)
    assert decoder.feed(raw[:10]) == []
    assert decoder.buffered == 10
    assert decoder.feed(raw[10:]) == [Message(XsType.WRITE, raw[16:], 3, 9)]
    assert decoder.buffered == 0


messages = st.builds(
    Message,
    type=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    req_id=st.integers(0, 0xFFFFFFFF),
    tx_id=st.integers(0, 0xFFFFFFFF),
)


@given(st.lists(messages, max_size=8), st.lists(st.integers(1, 64), min_size=1))
def test_decoder_round_trips_any_split(batch: list[Message], sizes: list[int]) -> None:
    stream = b"".join(m.encode() for m in batch)
    decoder = Decoder()
    decoded: list[Message] = []
    pos = 0
    step = 0
    while pos < len(stream):
        size = sizes[step % len(sizes)]
        decoded += decoder.feed(stream[pos : pos + size])
        pos += size
        step += 1
    assert decoded == batch
    assert decoder.buffered == 0


def test_string_helpers_follow_xenstored_parsing() -> None:
    assert wire.split_strings(b"a\0bc\0") == [b"a", b"bc"]
    assert wire.split_strings(b"a\0trailing") == [b"a"]  # unterminated tail is not a string
    assert wire.split_strings(b"") == []
    assert wire.one_arg(b"path\0") == b"path"
    assert wire.one_arg(b"\0") == b""
    assert wire.one_arg(b"path") is None
    assert wire.one_arg(b"a\0b\0") is None
    assert wire.one_arg(b"") is None
    assert wire.join_strings(["a", b"b"]) == b"a\0b\0"


@given(st.sampled_from("nrwb"), st.integers(0, 0xFFFFFFFF))
def test_perm_text_round_trips(letter: str, domid: int) -> None:
    perm = Perm(letter, domid)
    assert Perm.parse(str(perm)) == perm
    assert Perm.parse(str(perm).encode()) == perm
    assert perm.can_read == (letter in "rb")
    assert perm.can_write == (letter in "wb")


@pytest.mark.parametrize("text", ["x1", "r", "", "r-1", "r0x1", "r 1", "R1", "r1a", "r²"])
def test_bad_perm_text_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        Perm.parse(text)


def test_perm_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="letter"):
        Perm("q", 1)
    with pytest.raises(ValueError, match="u32"):
        Perm("r", 1 << 32)
    with pytest.raises(ValueError):
        Perm("r", True)


def test_perm_lists_format_and_parse() -> None:
    perms = [Perm("n", 1), Perm("r", 0), Perm("b", 7)]
    raw = wire.format_perms(perms)
    assert raw == b"n1\0r0\0b7\0"
    assert wire.parse_perms(wire.split_strings(raw)) == perms
