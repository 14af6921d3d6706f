"""Raw XenStore exchanges that pin Xen 4.17's rules, for replaying against two daemons.

Each case is a list of requests sent on one fresh dom0 connection.  :func:`play` sends
them one by one and records everything the daemon sent back for each -- reply and watch
events, in order -- by following every request with a marker request (GET_DOMAIN_PATH
with its own request id) and taking what came before the marker's reply.  Run on the
real C xenstored and on vchansim's, the transcripts must be equal.

The cases touch only ``SCRATCH`` and ``vr`` below domain 0's home (plus
``/local/domain/123456``), which :data:`CLEANUP` removes before and after each case, and
they watch no path anybody else changes.  What 4.17 answers with a stale errno, or where
vchansim documents a difference, is not here: ``SET_PERMS`` of an ``@`` path other than
the two 4.17 knows, for one, made the real daemon answer nothing and exit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vchansim.xenstore import wire
from vchansim.xenstore.wire import Message, XsType

SCRATCH = "/vchansim-rules"
MARK_ID = 0x5EC0
T = XsType


@dataclass(frozen=True)
class Step:
    kind: int
    payload: bytes
    tx: int = 0

    def encode(self) -> bytes:
        return Message(self.kind, self.payload, 0, self.tx).encode()


def s(kind: int, *fields: bytes | str, tx: int = 0) -> Step:
    """A request of NUL-terminated strings."""
    return Step(kind, wire.join_strings(fields), tx)


def write(path: str, value: bytes = b"", tx: int = 0) -> Step:
    return Step(T.WRITE, path.encode() + b"\0" + value, tx)


CLEANUP = [s(T.RM, SCRATCH), s(T.RM, "vr"), s(T.RM, "/local/domain/123456")]
B = SCRATCH
PERM_FORMS = ["r0x10", "r010", "r 5", "r+7", "b0X1f", "w-1", "r0x100000002"]
BAD_PERMS = ["r", "r08", "r0x", "r1a", "x1", "r5 ", "R1", "r0x1g", ""]

CASES: dict[str, list[Step]] = {
    "path length, absolute and relative, for dom0": [
        write(B + "/" + "p" * (2048 - len(B) - 1)),
        write(B + "/" + "p" * (2048 - len(B))),
        write("vr/" + "p" * 2045),
        write("vr/" + "p" * 2046),
        write("/local/domain/0/vr/" + "q" * 2045),
        write("/local/domain/0/vr/" + "q" * 2046),
        write("/local/domain/123456/" + "p" * 2027),
        write("/local/domain/123456/" + "p" * 2028),
        s(T.READ, B + "/" + "p" * (2048 - len(B))),
        s(T.RM, "vr/" + "p" * 2046),
    ],
    "no node path": [
        *[s(kind, path) for kind in (T.READ, T.GET_PERMS, T.DIRECTORY, T.MKDIR) for path in
          ("@introduceDomain", "@releaseDomain", "@x", "", "vr/", "/a//b", "/a b", "/\xe9")],
        write("@introduceDomain"),
        write(B + "/a b"),
    ],
    "watches of @ paths and unwatch": [
        s(T.WATCH, "@any text: even spaces, dots.. and //", "tok"),
        s(T.WATCH, "@" + "z" * 2047, "t"),
        s(T.WATCH, "@" + "z" * 2048, "t"),
        s(T.WATCH, B + "/a b", "t"),
        s(T.WATCH, B + "//", "t"),
        s(T.UNWATCH, "/a b", "t"),
        s(T.UNWATCH, "//", "t"),
        s(T.UNWATCH, "@anything at all", "t"),
        s(T.UNWATCH, "@any text: even spaces, dots.. and //", "tok"),
        s(T.WATCH, "vr/w", "t"),
        s(T.WATCH, "/local/domain/0/vr/w", "t"),
        s(T.UNWATCH, "/local/domain/0/vr/w", "t"),
        s(T.WATCH, "/local/domain/0/vr/w", "t"),
        s(T.UNWATCH, "vr/w", "t"),
        s(T.UNWATCH, "vr/w", "t"),
    ],
    "permission strings": [
        write(B + "/p"),
        *[step for form in PERM_FORMS
          for step in (s(T.SET_PERMS, B + "/p", "n0", form), s(T.GET_PERMS, B + "/p"))],
        *[s(T.SET_PERMS, B + "/p", "n0", bad) for bad in BAD_PERMS],
        s(T.SET_PERMS, B + "/p", "n-1"),
        s(T.SET_PERMS, B + "/p", "n0x7ff0"),
        s(T.SET_PERMS, B + "/p"),
        s(T.SET_PERMS, B + "/none", "n0"),
        s(T.GET_PERMS, B + "/p"),
    ],
    "permissions of the @ paths": [
        s(T.WATCH, B, "all"),
        s(T.SET_PERMS, "@introduceDomain", "n0"),
        s(T.SET_PERMS, "@releaseDomain", "n0"),
        s(T.SET_PERMS, "@introduceDomain", "n0", "r08"),
        s(T.GET_PERMS, "@introduceDomain"),
    ],
    "one event for watches yielding the same bytes": [
        s(T.WATCH, B + "/d", "t"),
        s(T.WATCH, B + "/d/x", "t"),
        s(T.WATCH, B, "t"),
        s(T.WATCH, B + "/d/x", "u"),
        write(B + "/d/x", b"v"),
        s(T.WATCH, "vr/d", "t"),
        s(T.WATCH, "vr/d/x", "t"),
        s(T.WATCH, "/local/domain/0/vr", "t"),
        write("vr/d/x", b"v"),
    ],
    "transaction events in first-touch order": [
        write(B + "/b"),
        s(T.WATCH, B, "t"),
        s(T.TRANSACTION_START, ""),
        s(T.READ, B + "/b", tx=1),
        write(B + "/a", tx=1),
        write(B + "/b", b"x", tx=1),
        s(T.TRANSACTION_END, "T", tx=1),
    ],
    "rm events": [
        write(B + "/r/c1"),
        write(B + "/r/c2/g"),
        s(T.WATCH, B + "/r", "t"),
        s(T.WATCH, B + "/r/c2", "t"),
        s(T.WATCH, B + "/r/c1", "u"),
        s(T.RM, B + "/r"),
        s(T.RM, B + "/r"),
        s(T.RM, B + "/r/x/y"),
    ],
    "malformed requests": [
        Step(T.GET_DOMAIN_PATH, b""),
        Step(T.GET_DOMAIN_PATH, b"1"),
        Step(T.GET_DOMAIN_PATH, b"abc\0"),
        Step(T.TRANSACTION_END, b""),
        Step(T.TRANSACTION_END, b"T"),
        Step(T.TRANSACTION_END, b"T\0"),
        Step(T.TRANSACTION_END, b"TT\0"),
        Step(T.WRITE, b""),
        Step(T.WRITE, b"vr/w"),
        Step(T.WRITE, b"vr/w\0a\0b"),
        s(T.READ, "vr/w"),
        Step(T.WATCH, b""),
        Step(T.WATCH, b"vr\0"),
        Step(T.WATCH, b"vr\0t\0x\0"),
        Step(T.UNWATCH, b"vr\0"),
        Step(T.SET_PERMS, b""),
        Step(T.DIRECTORY_PART, b"vr\0"),
        Step(T.DIRECTORY_PART, b"vr\0" + b"0\0" + b"x\0"),
        Step(T.TRANSACTION_START, b"anything"),
        Step(T.READ, b"vr/w\0", 7),
        Step(T.RESET_WATCHES, b"whatever\0"),
        *[Step(kind, b"") for kind in (T.WATCH_EVENT, T.ERROR, 20, 23, 24, 99, 0xFFFF)],
        Step(T.CONTROL, b""),
        Step(T.CONTROL, b"check\0"),
    ],
}

Exchange = Callable[[bytes], list[Message]]


def marker() -> bytes:
    return Message(T.GET_DOMAIN_PATH, b"0\0", MARK_ID, 0).encode()


def until_marker(decoder: wire.Decoder, data: bytes, got: list[Message]) -> bool:
    """Add what ``data`` completes to ``got``; True once the marker's reply came (it is
    not kept)."""
    for message in decoder.feed(data):
        if message.req_id == MARK_ID and message.type == T.GET_DOMAIN_PATH:
            return True
        got.append(message)
    return False


def play(exchange: Exchange, steps: list[Step]) -> list[tuple[str, list[Message]]]:
    """Each step's description and what came back for it."""
    return [(_describe(step), exchange(step.encode() + marker())) for step in steps]


def _describe(step: Step) -> str:
    text = step.payload if len(step.payload) < 80 else step.payload[:60] + b"..."
    return f"{wire.type_name(step.kind)} tx{step.tx} {text!r}"
