"""The XenStore wire protocol: framing, message types, error names and permission strings.

Written once and shared by the emulated xenstored (:mod:`.store`), the synchronous client
(:mod:`.client`) and the tests, so that both ends of every conversation agree on the bytes
by construction.  Everything here is pure: no sockets, no state beyond the incremental
:class:`Decoder`.  Layout and numbers follow ``xen/include/public/io/xs_wire.h``
(docs/protocol.md §7).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

#: Largest payload either side may send (``XENSTORE_PAYLOAD_MAX``).
PAYLOAD_MAX = 4096
#: Longest absolute path the protocol documents (``XENSTORE_ABS_PATH_MAX``).
ABS_PATH_MAX = 3072
#: Longest path below a domain's home (``XENSTORE_REL_PATH_MAX``); xenstored's default
#: ``path-max`` quota for unprivileged domains.
REL_PATH_MAX = 2048

#: type, req_id, tx_id, len -- four little-endian u32.
HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size


class XsType(IntEnum):
    """Every message type of ``enum xsd_sockmsg_type`` (value 20, XS_RESTRICT, is gone)."""

    CONTROL = 0
    DEBUG = 0  # the historical name of CONTROL; an alias, not a new member
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 0xFFFF


_TYPE_NAMES = {member.value: member.name for member in XsType}


def type_name(value: int) -> str:
    """A readable name for a type number, including numbers no enum member has."""
    return _TYPE_NAMES.get(value) or f"TYPE{value}"


#: xenstored's error table (``xsd_errors``), in its order: the daemon sends the *name*,
#: and the first entry (EINVAL) is what it falls back to for an untranslatable errno.
ERROR_NAMES: tuple[str, ...] = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)
ERRNO_BY_NAME: dict[str, int] = {name: getattr(errno, name) for name in ERROR_NAMES}
NAME_BY_ERRNO: dict[int, str] = {num: name for name, num in ERRNO_BY_NAME.items()}


def errno_from_name(name: str) -> int:
    """The errno for an error name off the wire; unknown names mean EINVAL, as in libxenstore."""
    return ERRNO_BY_NAME.get(name, errno.EINVAL)


def name_from_errno(num: int) -> str:
    """The wire name for an errno; xenstored sends EINVAL for numbers its table lacks."""
    return NAME_BY_ERRNO.get(num, "EINVAL")


class XsProtocolError(Exception):
    """The byte stream cannot be a XenStore conversation; the connection must be dropped."""


class PayloadTooLarge(XsProtocolError):
    """A header announced more than :data:`PAYLOAD_MAX` payload bytes.

    xenstored stops talking to a client that does this (the rest of the stream cannot be
    framed any more), and libxenstore refuses such a reply with E2BIG.
    """

    def __init__(self, length: int) -> None:
        super().__init__(f"payload of {length} bytes exceeds the {PAYLOAD_MAX}-byte maximum")
        self.length = length


@dataclass(frozen=True)
class Message:
    """One framed message.  ``type`` stays an ``int`` so unknown types survive decoding."""

    type: int
    payload: bytes = b""
    req_id: int = 0
    tx_id: int = 0

    def encode(self) -> bytes:
        """Header plus payload; refuses over-long payloads like libxenstore does locally."""
        if len(self.payload) > PAYLOAD_MAX:
            raise PayloadTooLarge(len(self.payload))
        return HEADER.pack(self.type, self.req_id, self.tx_id, len(self.payload)) + self.payload

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def encode(msg_type: int, payload: bytes = b"", *, req_id: int = 0, tx_id: int = 0) -> bytes:
    """Shorthand for ``Message(...).encode()``."""
    return Message(msg_type, payload, req_id, tx_id).encode()


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """Unpack a 16-byte header into (type, req_id, tx_id, len)."""
    return HEADER.unpack(data)


class Decoder:
    """Turns a byte stream, fed in arbitrary pieces, into complete :class:`Message` objects.

    The length check happens as soon as a header is complete, so a hostile peer announcing
    a huge payload is refused before we buffer any of it.  After raising, the decoder stays
    broken: the stream has lost its framing and nothing later in it can be trusted.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header: tuple[int, int, int, int] | None = None
        self._error: PayloadTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return every message it completes (possibly none)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        # Walk the buffer by offset and cut what was used once at the end: a read often
        # brings several requests, and each cut would move the rest of the buffer.
        messages: list[Message] = []
        pos, end = 0, len(buf)
        while True:
            if self._header is None:
                if end - pos < HEADER_SIZE:
                    break
                self._header = HEADER.unpack_from(buf, pos)
                pos += HEADER_SIZE
                if self._header[3] > PAYLOAD_MAX:
                    del buf[:pos]
                    self._error = PayloadTooLarge(self._header[3])
                    raise self._error
            msg_type, req_id, tx_id, length = self._header
            if end - pos < length:
                break
            messages.append(Message(msg_type, bytes(buf[pos : pos + length]), req_id, tx_id))
            pos += length
            self._header = None
        del buf[:pos]
        return messages


# --- payloads ---------------------------------------------------------------------------


def split_strings(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings at the start of ``payload``, without their NULs.

    Bytes after the last NUL are not a string and are left out, as xenstored's parser
    does; callers that care (WRITE's value) slice the payload themselves.
    """
    fields = payload.split(b"\0")
    return fields[:-1]


def one_arg(payload: bytes) -> bytes | None:
    """The single argument of a one-string request, or None if the payload is not exactly
    one NUL-terminated string (xenstored answers EINVAL then)."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1]


def join_strings(fields: Iterable[bytes | str]) -> bytes:
    """Each field followed by a NUL -- the shape of most request and reply payloads."""
    return b"".join(_as_bytes(field) + b"\0" for field in fields)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


# --- permissions ------------------------------------------------------------------------

ACCESS_LETTERS = "nrwb"


@dataclass(frozen=True)
class Perm:
    """One permission entry such as ``r1``: ``access`` is n(one), r(ead), w(rite) or b(oth).

    In a node's list the first entry names the owner and its letter is the access of every
    domain not listed; later entries grant specific domains (docs/protocol.md §7.5).
    """

    access: str
    domid: int

    def __post_init__(self) -> None:
        if self.access not in tuple(ACCESS_LETTERS):
            raise ValueError(f"permission letter {self.access!r} is not one of n, r, w, b")
        if isinstance(self.domid, bool) or not isinstance(self.domid, int):
            raise ValueError(f"permission domain id {self.domid!r} is not an int")
        if not 0 <= self.domid <= 0xFFFFFFFF:
            raise ValueError(f"permission domain id {self.domid} does not fit xenstored's u32")

    @property
    def can_read(self) -> bool:
        return self.access in "rb"

    @property
    def can_write(self) -> bool:
        return self.access in "wb"

    @classmethod
    def parse(cls, text: bytes | str) -> Perm:
        """Parse ``r1``-style text; only decimal domain ids are accepted."""
        raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        letter, digits = raw[:1], raw[1:]
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(f"permission {raw!r} is not a letter followed by a decimal domid")
        return cls(letter, int(digits))

    def __str__(self) -> str:
        return f"{self.access}{self.domid}"


def format_perms(perms: Sequence[Perm]) -> bytes:
    """The GET_PERMS reply / SET_PERMS tail: every entry NUL-terminated."""
    return join_strings(str(perm) for perm in perms)


def parse_perms(fields: Iterable[bytes]) -> list[Perm]:
    """Parse a sequence of permission strings; raises ValueError on the first bad one."""
    return [Perm.parse(field) for field in fields]


_C_SPACE = b" \t\n\v\f\r"
_LONG_MAX = 2**63 - 1
_HEX = b"0123456789abcdefABCDEF"


def parse_request_perms(fields: Iterable[bytes]) -> list[Perm]:
    """Permission strings as xenstored reads SET_PERMS: a letter, then a domain id that
    C's ``strtol(..., 0)`` must consume entirely (``r0x10`` is domain 16, ``r010``
    domain 8, ``r-1`` domain 0xFFFFFFFF), cut to xenstored's u32.  Raises ValueError on
    the first string it rejects (xenstored: EINVAL)."""
    perms = []
    for text in fields:
        letter, number = text[:1].decode("latin-1"), text[1:]
        value, used = strtol(number)
        if not number or letter not in ACCESS_LETTERS or used != len(number):
            raise ValueError(f"permission {text!r} is not a letter and a whole number")
        perms.append(Perm(letter, value & 0xFFFFFFFF))
    return perms


def strtol(raw: bytes) -> tuple[int, int]:
    """C ``strtol(raw, &end, 0)`` on a 64-bit machine: the value (clamped to ``long``) and
    how many bytes it consumed (0 when no digits: C leaves ``end`` at the start)."""
    pos = len(raw) - len(raw.lstrip(_C_SPACE))
    sign = 1
    if raw[pos : pos + 1] in (b"+", b"-"):
        sign = -1 if raw[pos : pos + 1] == b"-" else 1
        pos += 1
    base, digits = 10, b"0123456789"
    after_prefix = raw[pos + 2 : pos + 3]
    if raw[pos : pos + 2] in (b"0x", b"0X") and after_prefix and after_prefix in _HEX:
        base, digits, pos = 16, _HEX, pos + 2
    elif raw[pos : pos + 1] == b"0":
        base, digits = 8, b"01234567"
    first = pos
    while pos < len(raw) and raw[pos] in digits:
        pos += 1
    if pos == first:
        return 0, 0
    value = sign * int(raw[first:pos], base)
    return max(-_LONG_MAX - 1, min(_LONG_MAX, value)), pos
