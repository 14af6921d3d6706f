"""The toolstack's xenstored operations, as Xen 4.17 answers them: CONTROL, INTRODUCE,
RELEASE, RESUME, SET_TARGET and IS_DOMAIN_INTRODUCED, over the wire and as Xenstored methods.

Expected bytes follow docs/misc/xenstore.txt and xenstored_domain.c / xenstored_control.c
of Xen 4.17 (the C daemon cannot run without a hypervisor).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.xs_peer import Failed, Peer, fails

from vchansim.xenstore import wire
from vchansim.xenstore.store import INTRODUCE_DOMAIN, RELEASE_DOMAIN, Xenstored, XsError
from vchansim.xenstore.wire import Message, XsType


def _reply(peer: Peer, msg_type: int, payload: bytes) -> bytes:
    """The raw reply (type and payload) to one request, req_id 5."""
    reply = peer.exchange(msg_type, payload, req_id=5)
    assert reply.req_id == 5
    return wire.HEADER.pack(reply.type, 0, 0, 0)[:4] + reply.payload


def _ok(msg_type: int) -> bytes:
    return wire.HEADER.pack(msg_type, 0, 0, 0)[:4] + b"OK\0"


def _error(name: str) -> bytes:
    return wire.HEADER.pack(XsType.ERROR, 0, 0, 0)[:4] + name.encode() + b"\0"


# --- CONTROL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"check\0", _ok(XsType.CONTROL)),
        (b"check\0extra\0", _error("EINVAL")),  # check takes no arguments
        (b"", _error("EINVAL")),  # no command at all
        (b"check", _error("EINVAL")),  # not NUL-terminated: no string
        (b"no-such-command\0", _error("EINVAL")),
        (b"log\0on\0", _ok(XsType.CONTROL)),
        (b"log\0sideways\0", _error("EINVAL")),
        (b"print\0hello\0", _ok(XsType.CONTROL)),
        (b"print\0", _error("EINVAL")),
    ],
)
def test_control(dom0: Peer, payload: bytes, expected: bytes) -> None:
    assert _reply(dom0, XsType.CONTROL, payload) == expected


def test_control_help_lists_the_commands(dom0: Peer) -> None:
    text = dom0.call(XsType.CONTROL, "help")
    assert text.endswith(b"\n\0")
    assert [line.split(b"\t")[0] for line in text[:-2].split(b"\n")] == [
        b"check",
        b"log",
        b"print",
        b"help",
    ]


@pytest.mark.parametrize(
    "msg_type",
    [
        XsType.CONTROL,
        XsType.INTRODUCE,
        XsType.RELEASE,
        XsType.RESUME,
        XsType.SET_TARGET,
        XsType.IS_DOMAIN_INTRODUCED,
    ],
)
def test_toolstack_operations_are_dom0_only(dom1: Peer, msg_type: int) -> None:
    """Privilege is checked before the payload (xenstored's process_message)."""
    assert _reply(dom1, msg_type, b"") == _error("EACCES")


def test_toolstack_operations_check_the_transaction_id(dom0: Peer) -> None:
    """They are not transaction-free: an unknown transaction id is ENOENT first."""
    reply = dom0.exchange(XsType.RELEASE, b"1\0", tx=42)
    assert reply == Message(XsType.ERROR, b"ENOENT\0", 0, 42)


# --- INTRODUCE, IS_DOMAIN_INTRODUCED -----------------------------------------------------


def test_introduce_fires_introduce_domain_once(store: Xenstored, dom0: Peer, dom2: Peer) -> None:
    dom0.watch(INTRODUCE_DOMAIN, "in")
    dom2.watch(INTRODUCE_DOMAIN, "guest")  # @introduceDomain is dom0's (n0): no events
    dom0.take_events()
    dom2.take_events()
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "7") == b"F\0"
    assert dom0.call(XsType.INTRODUCE, "7", "4567", "3") == b"OK\0"
    assert dom0.take_events() == [(INTRODUCE_DOMAIN, "in")]
    assert dom2.take_events() == []
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "7") == b"T\0"
    assert store.is_introduced(7)
    dom0.call(XsType.INTRODUCE, "7", "4567", "3")  # again: no new event
    assert dom0.take_events() == []


def test_introduce_creates_no_nodes(store: Xenstored, dom0: Peer) -> None:
    """xenstored only starts serving the ring; the home is the toolstack's to write."""
    before = store.paths()
    dom0.call(XsType.INTRODUCE, "7", "0", "3")
    assert store.paths() == before


@pytest.mark.parametrize(
    "payload",
    [
        b"7\0" + b"4567\0",  # fewer than three strings
        b"7\0" + b"4567\0" + b"0\0",  # event channel 0
        b"7\0" + b"4567\0" + b"junk\0",  # atoi("junk") is 0
        b"",
        b"40000\0" + b"1\0" + b"3\0",  # no domain can have that id
    ],
)
def test_introduce_errors(dom0: Peer, payload: bytes) -> None:
    assert _reply(dom0, XsType.INTRODUCE, payload) == _error("EINVAL")


def test_introduce_again_resets_the_domains_connection(dom0: Peer, dom1: Peer) -> None:
    """A ring handed over again loses its watches and transactions (domain_conn_reset)."""
    dom1.watch("data", "mine")
    tx = dom1.start()
    dom1.take_events()
    dom0.call(XsType.INTRODUCE, "1", "1", "3")
    dom0.write("/local/domain/1/data/x", "1")
    assert dom1.take_events() == []
    with fails("ENOENT"):
        dom1.end(tx)


def test_is_domain_introduced_answers(dom0: Peer) -> None:
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "0") == b"T\0"  # dom0 always is
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "32752") == b"T\0"  # DOMID_SELF
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "1x") == b"T\0"  # atoi: 1
    assert _reply(dom0, XsType.IS_DOMAIN_INTRODUCED, b"") == _error("EINVAL")
    assert _reply(dom0, XsType.IS_DOMAIN_INTRODUCED, b"1\0" + b"2\0") == _error("EINVAL")


# --- RELEASE -------------------------------------------------------------------------------


def test_release_removes_what_the_domain_owns(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    dom0.write("/local/domain/0/backend/vif/1/0/state", "1")
    dom0.chmod("/local/domain/0/backend/vif/1", "n1")  # given to the guest
    dom1.write("data/mine/leaf", "x")
    dom0.chmod("/local/domain/1/data/mine/leaf", "n0")  # a dom0 node below a guest's
    dom0.write("/local/domain/1/device/keep", "dom0's")
    assert dom0.call(XsType.RELEASE, "1") == b"OK\0"
    assert not store.is_introduced(1)
    assert store.nodes_owned_by(1) == []
    paths = store.paths()
    assert "/local/domain/0/backend/vif" in paths
    assert not any(p.startswith("/local/domain/0/backend/vif/1") for p in paths)
    assert not any(p.startswith("/local/domain/1/data") for p in paths)  # leaf went too
    # The home libxl made is dom0's: it stays for the toolstack to remove.
    assert "/local/domain/1/domid" in paths and "/local/domain/1/device/keep" in paths


def test_release_fires_watches_then_release_domain(
    store: Xenstored, dom0: Peer, dom2: Peer
) -> None:
    dom0.write("/local/domain/1/data/a/b", "x")
    dom0.chmod("/local/domain/1/data/a", "n1", "r2")
    dom0.chmod("/local/domain/1/data/a/b", "n1", "r2")
    dom0.watch(RELEASE_DOMAIN, "rel")
    dom0.watch("/local/domain/1", "home")
    dom2.watch("/local/domain/1/data/a", "peer")
    dom0.take_events()
    dom2.take_events()
    dom0.call(XsType.RELEASE, "1")
    # /local/domain/1/data (n1) goes with its subtree; as for RM, a watch above it sees
    # the top node, a watch on a node below sees exactly that node.
    assert dom0.take_events() == [("/local/domain/1/data", "home"), (RELEASE_DOMAIN, "rel")]
    assert dom2.take_events() == [("/local/domain/1/data/a", "peer")]


def test_release_ends_the_domains_connections(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    ended: list[str] = []
    other = Peer(store, 1)
    other.conn._on_end = ended.append
    dom0.call(XsType.RELEASE, "1")
    assert ended == ["domain 1 released"]
    with pytest.raises(wire.XsProtocolError):
        dom1.read("domid")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"0\0", "EINVAL"),  # dom0 cannot be released
        (b"junk\0", "EINVAL"),  # atoi: 0
        (b"", "EINVAL"),
        (b"1\0" + b"2\0", "EINVAL"),  # not one argument
        (b"9\0", "ENOENT"),  # never introduced
    ],
)
def test_release_and_resume_errors(dom0: Peer, payload: bytes, error: str) -> None:
    assert _reply(dom0, XsType.RELEASE, payload) == _error(error)
    assert _reply(dom0, XsType.RESUME, payload) == _error(error)


def test_second_release_is_enoent(dom0: Peer) -> None:
    dom0.call(XsType.RESUME, "2")
    dom0.call(XsType.RELEASE, "2")
    for msg_type in (XsType.RELEASE, XsType.RESUME):
        assert _reply(dom0, msg_type, b"2\0") == _error("ENOENT")
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "2") == b"F\0"


def test_release_drops_the_domain_from_special_paths(store: Xenstored, dom0: Peer) -> None:
    dom0.chmod(RELEASE_DOMAIN, "n1", "r2", "r1")
    dom0.call(XsType.RELEASE, "1")
    perms = store.special_perms(RELEASE_DOMAIN)
    assert perms is not None and [str(p) for p in perms] == ["n0", "r2"]


def test_store_methods_are_the_wire_operations(store: Xenstored) -> None:
    """The hub's toolstack calls these directly; errors are xenstored's."""
    store.introduce_domain(12)
    assert store.is_introduced(12)
    store.release_domain(12)
    with pytest.raises(XsError, match="ENOENT"):
        store.release_domain(12)
    with pytest.raises(XsError, match="EINVAL"):
        store.release_domain(0)


# --- SET_TARGET -----------------------------------------------------------------------------


def test_set_target_gives_the_rights_of_the_target(dom0: Peer, dom1: Peer, dom2: Peer) -> None:
    dom1.write("data/secret", "s")  # n1: dom2 may not read it
    dom0.write("/local/domain/0/shared", "v")
    dom0.chmod("/local/domain/0/shared", "n0", "r1")  # dom1's entry
    with fails("EACCES"):
        dom2.read("/local/domain/1/data/secret")
    assert dom0.call(XsType.SET_TARGET, "2", "1") == b"OK\0"
    assert dom2.read("/local/domain/1/data/secret") == b"s"
    dom2.write("/local/domain/1/data/secret", "changed")  # owner's rights: write too
    assert dom2.read("/local/domain/0/shared") == b"v"  # the target's entry applies
    with fails("EACCES"):
        dom1.read("/local/domain/2/data")  # not the other way round


def test_set_target_watch_events_follow_the_targets_rights(
    dom0: Peer, dom1: Peer, dom2: Peer
) -> None:
    dom0.call(XsType.SET_TARGET, "2", "1")
    dom2.watch("/local/domain/1/data", "dm")
    dom2.take_events()
    dom1.write("data/x", "1")
    assert dom2.take_events() == [("/local/domain/1/data/x", "dm")]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"2\0", "EINVAL"),
        (b"", "EINVAL"),
        (b"9\0" + b"1\0", "ENOENT"),
        (b"2\0" + b"9\0", "ENOENT"),
    ],
)
def test_set_target_errors(dom0: Peer, payload: bytes, error: str) -> None:
    assert _reply(dom0, XsType.SET_TARGET, payload) == _error(error)


def test_released_domain_loses_its_target(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    dom0.call(XsType.SET_TARGET, "2", "1")
    dom0.call(XsType.RELEASE, "2")
    store.introduce_domain(2)
    assert store.target_of(2) == -1
    with pytest.raises(Failed):
        Peer(store, 2).read("/local/domain/1/data")


def test_the_samples_in_docs_xenstore_md_run() -> None:
    text = (Path(__file__).parent.parent / "docs" / "xenstore.md").read_text()
    samples = re.findall(r"```python\n(.*?)```", text, re.S)
    assert samples
    for sample in samples:
        exec(compile(sample, "docs/xenstore.md", "exec"), {})
