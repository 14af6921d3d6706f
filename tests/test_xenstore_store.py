"""The emulated xenstored, driven sans-IO through XsConnection: Xen's rules, one by one."""

from __future__ import annotations

import pytest
from helpers.xs_peer import Failed, Peer, fails, store_with_domains
from hypothesis import given, settings
from hypothesis import strategies as st

from vchansim.errors import ConfigError
from vchansim.xenstore import wire
from vchansim.xenstore.store import DOMID_SELF, Quotas, Xenstored, XsConnection
from vchansim.xenstore.wire import Message, XsProtocolError, XsType


@pytest.fixture
def store() -> Xenstored:
    """Small quotas, so that the quota tests reach them."""
    return store_with_domains(Quotas(nodes=20, watches=3, transactions=2, transaction_nodes=30))


# --- domains ---------------------------------------------------------------------------------


def test_ensure_domain_builds_libxl_home(dom0: Peer) -> None:
    assert dom0.perms("/local/domain/1") == ["n0", "r1"]
    assert dom0.read("/local/domain/1/domid") == b"1"
    assert dom0.perms("/local/domain/1/domid") == ["n0", "r1"]
    assert dom0.perms("/local/domain/1/data") == ["n1"]
    assert dom0.perms("/local") == ["n0"]
    assert dom0.ls("/") == ["tool", "local"]
    assert dom0.ls("/local/domain") == ["0", "1", "2"]


def test_ensure_domain_is_idempotent_and_keeps_changes(store: Xenstored, dom1: Peer) -> None:
    dom1.write("data/keep", "x")
    assert store.ensure_domain(1) == "/local/domain/1"
    assert dom1.read("data/keep") == b"x"


@pytest.mark.parametrize("bad", [-1, 0x7FF0, 65536])
def test_domain_ids_outside_xens_range_are_refused(store: Xenstored, bad: int) -> None:
    with pytest.raises(ValueError, match=rf"{bad}.*0\.\.32751"):
        store.ensure_domain(bad)
    with pytest.raises(ConfigError):
        XsConnection(store, bad, lambda data: None)


def test_non_integer_domain_ids_are_refused(store: Xenstored) -> None:
    with pytest.raises(ValueError, match="int"):
        store.ensure_domain(True)


def test_introducing_a_domain_fires_introduce_domain_for_privileged_watchers(
    store: Xenstored, dom0: Peer, dom1: Peer
) -> None:
    dom0.watch("@introduceDomain", "intro")
    dom1.watch("@introduceDomain", "intro")
    assert dom0.take_events() == [("@introduceDomain", "intro")]  # the initial event
    assert dom1.take_events() == [("@introduceDomain", "intro")]
    store.ensure_domain(5)
    store.ensure_domain(5)
    assert dom0.take_events() == [("@introduceDomain", "intro")]
    assert dom1.take_events() == []  # @introduceDomain is n0: domUs don't see it


def test_is_domain_introduced_is_privileged(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "2") == b"T\0"
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, "9") == b"F\0"
    assert dom0.call(XsType.IS_DOMAIN_INTRODUCED, str(DOMID_SELF)) == b"T\0"
    with fails("EACCES"):
        dom1.call(XsType.IS_DOMAIN_INTRODUCED, "1")
    assert store.is_introduced(1) and not store.is_introduced(9)


def test_get_domain_path_uses_atoi(dom1: Peer) -> None:
    assert dom1.call(XsType.GET_DOMAIN_PATH, "7") == b"/local/domain/7\0"
    assert dom1.call(XsType.GET_DOMAIN_PATH, " 12abc") == b"/local/domain/12\0"
    assert dom1.call(XsType.GET_DOMAIN_PATH, "junk") == b"/local/domain/0\0"
    with fails("EINVAL"):
        dom1.call(XsType.GET_DOMAIN_PATH, "1", "2")


# --- paths -------------------------------------------------------------------------------


def test_relative_paths_live_under_the_domains_home(dom0: Peer, dom1: Peer) -> None:
    assert dom1.read("domid") == b"1"
    dom1.write("data/x", "8")
    assert dom0.read("/local/domain/1/data/x") == b"8"
    assert dom0.read("domid") == b"0"


segment = st.text("abcXYZ019-_@", min_size=1, max_size=8)


@given(st.lists(segment, min_size=1, max_size=6))
def test_valid_paths_are_accepted(parts: list[str]) -> None:
    dom0 = Peer(Xenstored(), 0)
    path = "/" + "/".join(parts)
    dom0.write(path, "v")
    assert dom0.read(path) == b"v"


@given(
    st.lists(segment, min_size=1, max_size=4),
    st.sampled_from(["//", "/ ", ".", "*", "\n", "é", ":", "/"]),
)
def test_paths_with_bad_characters_or_shapes_are_einval(parts: list[str], bad: str) -> None:
    dom0 = Peer(Xenstored(), 0)
    path = "/" + "/".join(parts) + bad
    with fails("EINVAL"):
        dom0.write(path, "v")
    with fails("EINVAL"):
        dom0.read(path)


@pytest.mark.parametrize("path", ["", "a/", "/a//b", "@introduceDomain", "/a b"])
def test_malformed_node_paths_are_einval(dom1: Peer, path: str) -> None:
    with fails("EINVAL"):
        dom1.read(path)


def test_special_paths_are_only_for_watches_and_permissions(dom0: Peer) -> None:
    with fails("EINVAL"):  # 4.17: no node, and GET_PERMS has no special case
        dom0.perms("@releaseDomain")
    dom0.chmod("@releaseDomain", "n0", "r1")
    dom0.watch("@releaseDomain")
    dom0.watch("@any text, even this!")
    assert dom0.take_events() == [("@releaseDomain", "t"), ("@any text, even this!", "t")]


def test_path_length_quota_counts_below_the_domain_home(store: Xenstored) -> None:
    store.quotas.path_length = 10
    dom1, dom0 = Peer(store, 1), Peer(store, 0)
    dom1.write("data/67890", "ok")  # exactly 10 characters below /local/domain/1/
    with fails("EINVAL"):
        dom1.write("data/678901", "too long")
    with fails("EINVAL"):
        dom1.read("/tool/xenstored")  # 15 characters, no home prefix to discount
    with fails("EINVAL"):  # 4.17 applies the limit to domain 0 as well
        dom0.write("/tool/xenstored/a/much/longer/path", "too long")
    dom0.write("/local/domain/1/data/67890", "ok")


# --- permissions -----------------------------------------------------------------------------


def test_permission_matrix(dom0: Peer, dom1: Peer, dom2: Peer) -> None:
    dom1.write("data/secret", "s")
    with fails("EACCES"):
        dom2.read("/local/domain/1/data/secret")
    assert dom0.read("/local/domain/1/data/secret") == b"s"
    dom1.chmod("data/secret", "n1", "r2")
    assert dom2.read("/local/domain/1/data/secret") == b"s"
    with fails("EACCES"):
        dom2.write("/local/domain/1/data/secret", "no")
    dom1.chmod("data/secret", "r1")  # default access: everybody may read
    assert dom2.read("/local/domain/1/data/secret") == b"s"
    dom1.chmod("data/secret", "r1", "n2")  # a listed entry beats the default
    with fails("EACCES"):
        dom2.read("/local/domain/1/data/secret")
    dom1.chmod("data/secret", "n1", "w2")
    dom2.write("/local/domain/1/data/secret", "blind")  # w: write without read
    with fails("EACCES"):
        dom2.read("/local/domain/1/data/secret")


def test_missing_nodes_say_eacces_unless_the_ancestor_is_visible(dom1: Peer, dom2: Peer) -> None:
    with fails("ENOENT"):
        dom1.read("data/missing/deeper")
    with fails("ENOENT"):
        dom2.read("/local/domain/2/missing")  # its home is readable: n0 r2
    with fails("EACCES"):
        dom2.read("/local/domain/1/data/missing/deeper")
    with fails("EACCES"):
        dom2.write("/local/domain/1/data/new", "x")


def test_new_nodes_inherit_and_unprivileged_creators_own_them(dom0: Peer, dom1: Peer) -> None:
    dom0.write("/shared", "")
    dom0.chmod("/shared", "n0", "b1", "r2")
    dom1.write("/shared/a/b", "x")
    assert dom0.perms("/shared/a") == ["n1", "b1", "r2"]
    assert dom0.perms("/shared/a/b") == ["n1", "b1", "r2"]
    dom0.write("/shared/c", "")
    assert dom0.perms("/shared/c") == ["n0", "b1", "r2"]


def test_only_owner_may_set_perms_and_only_dom0_may_change_owner(
    dom0: Peer, dom1: Peer, dom2: Peer
) -> None:
    dom1.write("data/x", "")
    dom1.chmod("data/x", "n1", "b2")
    with fails("EACCES"):
        dom2.chmod("/local/domain/1/data/x", "n1", "b2", "r0")  # b is not ownership
    with fails("EPERM"):
        dom1.chmod("data/x", "n2")
    dom0.chmod("/local/domain/1/data/x", "n2")
    assert dom0.perms("/local/domain/1/data/x") == ["n2"]
    with fails("EACCES"):
        dom1.read("data/x")


@pytest.mark.parametrize(
    ("perms", "error"),
    [((), "EINVAL"), (("x1",), "EINVAL"), (("r",), "EINVAL"), (("n40000",), "ENOENT")],
)
def test_set_perms_argument_errors(dom1: Peer, perms: tuple[str, ...], error: str) -> None:
    dom1.write("data/x", "")
    with fails(error):
        dom1.chmod("data/x", *perms)


def test_foreign_domids_after_the_owner_are_kept(dom1: Peer) -> None:
    dom1.write("data/x", "")
    dom1.chmod("data/x", "n1", "r40000")
    assert dom1.perms("data/x") == ["n1", "r40000"]


def test_permission_count_quota_binds_domus_only(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    dom1.write("data/x", "")
    dom1.chmod("data/x", "n1", "r2", "r3", "r4", "r5")  # 5 entries: the default quota
    with fails("ENOSPC"):
        dom1.chmod("data/x", "n1", "r2", "r3", "r4", "r5", "r6")
    dom0.chmod("/local/domain/1/data/x", "n1", "r2", "r3", "r4", "r5", "r6", "r7")


# --- node operations -------------------------------------------------------------------------


def test_values_are_binary_and_may_be_empty(dom0: Peer) -> None:
    dom0.write("/v", b"\0\x01\xff tail")
    assert dom0.read("/v") == b"\0\x01\xff tail"
    dom0.write("/v", b"")
    assert dom0.read("/v") == b""


def test_write_creates_parents_and_directory_keeps_insertion_order(dom0: Peer) -> None:
    for name in ("zeta", "alpha", "mid"):
        dom0.write(f"/d/{name}/leaf", name)
    assert dom0.ls("/d") == ["zeta", "alpha", "mid"]
    assert dom0.read("/d/alpha") == b""


def test_mkdir_creates_once(dom0: Peer) -> None:
    dom0.watch("/m")
    dom0.call(XsType.MKDIR, "/m/n")
    dom0.call(XsType.MKDIR, "/m/n")
    assert dom0.take_events() == [("/m", "t"), ("/m/n", "t")]  # initial, then one creation


def test_rm_semantics(dom0: Peer) -> None:
    dom0.write("/r/a/b/c", "")
    dom0.rm("/r/a")
    assert dom0.ls("/r") == []
    dom0.rm("/r/never")  # absent, parent present: fine
    with fails("ENOENT"):
        dom0.rm("/r/never/deeper")
    with fails("EINVAL"):
        dom0.rm("/")


def test_directory_too_long_for_one_reply_is_e2big_and_comes_in_parts(dom0: Peer) -> None:
    names = [f"child-with-a-long-name-{i:04d}" for i in range(200)]
    for name in names:
        dom0.call(XsType.MKDIR, f"/big/{name}")
    with fails("E2BIG"):
        dom0.ls("/big")
    collected: list[bytes] = []
    offset = 0
    while True:
        chunk = dom0.call(XsType.DIRECTORY_PART, "/big", str(offset))
        assert len(chunk) <= wire.PAYLOAD_MAX
        generation, _, rest = chunk.partition(b"\0")
        assert generation.isdigit()
        last = rest.endswith(b"\0\0")
        part = wire.split_strings(rest[:-1] if last else rest)
        collected += part
        offset += sum(len(p) + 1 for p in part)
        if last:
            break
    assert [c.decode() for c in collected] == names
    assert dom0.call(XsType.DIRECTORY_PART, "/big", "999999").endswith(b"\0\0")
    with fails("EINVAL"):
        dom0.call(XsType.DIRECTORY_PART, "/big")


# --- watches ---------------------------------------------------------------------------------


def test_watch_events_for_node_children_and_removal(dom0: Peer, dom1: Peer) -> None:
    dom1.watch("/local/domain/1/data", "w")
    assert dom1.take_events() == [("/local/domain/1/data", "w")]
    dom1.write("data/a/b", "1")
    dom0.write("/local/domain/1/data/a", "2")
    dom0.write("/local/domain/1/domid", "1")  # outside the watched subtree
    dom0.rm("/local/domain/1/data/a")
    assert dom1.take_events() == [
        ("/local/domain/1/data/a/b", "w"),
        ("/local/domain/1/data/a", "w"),
        ("/local/domain/1/data/a", "w"),  # the removal: one event for the subtree root
    ]


def test_removal_fires_exact_events_for_watched_descendants(dom0: Peer) -> None:
    dom0.write("/t/a/b", "")
    dom0.watch("/t/a/b", "deep")
    dom0.watch("/t/a/b/c", "absent")
    dom0.take_events()
    dom0.rm("/t")
    assert dom0.take_events() == [("/t/a/b", "deep")]


def test_relative_watches_report_relative_paths(dom1: Peer) -> None:
    dom1.watch("data", "rel")
    dom1.write("data/x", "1")
    assert dom1.take_events() == [("data", "rel"), ("data/x", "rel")]


def test_own_events_arrive_before_the_reply(dom1: Peer) -> None:
    dom1.watch("data")
    dom1.take_events()
    dom1.conn.receive(wire.encode(XsType.WRITE, b"data/x\0v"))
    types = [m.type for m in wire.Decoder().feed(b"".join(dom1.sent))]
    assert types == [XsType.WATCH_EVENT, XsType.WRITE]


def test_watchers_only_see_nodes_they_may_read(dom0: Peer, dom1: Peer, dom2: Peer) -> None:
    dom2.watch("/local/domain/1/data", "spy")
    dom2.take_events()  # the initial event is sent regardless, as in xenstored
    dom1.write("data/private", "p")
    assert dom2.take_events() == []
    dom1.chmod("data/private", "n1", "r2")
    dom1.write("data/private", "q")
    assert dom2.take_events() == [
        ("/local/domain/1/data/private", "spy"),
        ("/local/domain/1/data/private", "spy"),
    ]


def test_losing_read_access_still_reports_the_change(dom1: Peer, dom2: Peer) -> None:
    dom1.write("data/p", "")
    dom1.chmod("data/p", "n1", "r2")
    dom2.watch("/local/domain/1/data/p", "w")
    dom2.take_events()
    dom1.chmod("data/p", "n1")
    assert dom2.take_events() == [("/local/domain/1/data/p", "w")]


def test_unwatch_duplicates_and_reset(dom1: Peer) -> None:
    dom1.watch("data", "a")
    with fails("EEXIST"):
        dom1.watch("data", "a")
    dom1.watch("data", "b")
    dom1.call(XsType.UNWATCH, "/local/domain/1/data", "a")  # same node, spelt absolutely
    with fails("ENOENT"):
        dom1.call(XsType.UNWATCH, "data", "a")
    dom1.take_events()
    dom1.write("data/x", "")
    assert dom1.take_events() == [("data/x", "b")]
    dom1.call(XsType.RESET_WATCHES, "")
    dom1.write("data/y", "")
    assert dom1.take_events() == []


def test_watch_quota_is_per_domain_and_e2big(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    other = Peer(store, 1)
    for token in "abc":
        dom1.watch("data", token)
    other.watch("data", "d")  # 4 = quota + 1, xenstored's comparison
    with fails("E2BIG"):
        other.watch("data", "e")
    with fails("E2BIG"):
        dom1.watch("data", "e")
    for token in "abcdefgh":
        dom0.watch("/", token)
    other.conn.close()
    dom1.watch("data", "e")


@pytest.mark.parametrize(
    "payload", [b"only-path\0", b"p\0t\0depth\0", b"p\0t"], ids=["one", "three", "unterminated"]
)
def test_watch_needs_exactly_two_strings(dom1: Peer, payload: bytes) -> None:
    reply = dom1.exchange(XsType.WATCH, payload)
    assert (reply.type, reply.payload) == (XsType.ERROR, b"EINVAL\0")


# --- transactions ----------------------------------------------------------------------------


def test_transaction_isolation_and_commit(dom0: Peer, dom1: Peer) -> None:
    dom0.watch("/local/domain/1/data", "w")
    dom0.take_events()
    tx = dom1.start()
    assert tx == 1
    dom1.write("data/k", "v", tx=tx)
    assert dom1.read("data/k", tx=tx) == b"v"
    with fails("ENOENT"):
        dom1.read("data/k")
    assert dom0.take_events() == []  # held back until commit
    dom1.end(tx)
    assert dom1.read("data/k") == b"v"
    assert dom0.take_events() == [("/local/domain/1/data/k", "w")]


def test_abort_discards(dom1: Peer) -> None:
    tx = dom1.start()
    dom1.write("data/k", "v", tx=tx)
    dom1.end(tx, commit=False)
    with fails("ENOENT"):
        dom1.read("data/k")
    with fails("ENOENT"):
        dom1.read("data/k", tx=tx)  # the id is gone


def test_conflicting_commit_is_eagain_and_changes_nothing(dom0: Peer, dom1: Peer) -> None:
    dom1.write("data/counter", "1")
    tx = dom1.start()
    value = int(dom1.read("data/counter", tx=tx))
    dom1.write("data/counter", str(value + 1), tx=tx)
    dom0.write("/local/domain/1/data/counter", "10")
    with fails("EAGAIN"):
        dom1.end(tx)
    assert dom1.read("data/counter") == b"10"


def test_reads_of_absent_nodes_conflict_too(dom0: Peer, dom1: Peer) -> None:
    tx = dom1.start()
    with fails("ENOENT"):
        dom1.read("data/flag", tx=tx)
    dom1.write("data/other", "x", tx=tx)
    dom0.write("/local/domain/1/data/flag", "set")
    with fails("EAGAIN"):
        dom1.end(tx)


def test_unrelated_changes_do_not_conflict(dom0: Peer, dom1: Peer) -> None:
    tx = dom1.start()
    dom1.write("data/mine", "x", tx=tx)
    dom0.write("/elsewhere", "y")
    dom1.end(tx)
    assert dom1.read("data/mine") == b"x"


def test_removal_inside_a_transaction(dom0: Peer, dom1: Peer) -> None:
    dom1.write("data/gone/leaf", "")
    dom0.watch("/local/domain/1/data/gone", "w")
    dom0.take_events()
    tx = dom1.start()
    dom1.rm("data/gone", tx=tx)
    assert dom1.ls("data", tx=tx) == []
    assert dom1.ls("data") == ["gone"]
    dom1.end(tx)
    assert dom1.ls("data") == []
    assert dom0.take_events() == [("/local/domain/1/data/gone", "w")]


def test_transaction_protocol_errors(dom1: Peer) -> None:
    tx = dom1.start()
    with fails("EBUSY"):
        dom1.call(XsType.TRANSACTION_START, "", tx=tx)
    with fails("EINVAL"):
        dom1.call(XsType.TRANSACTION_END, "X", tx=tx)
    with fails("ENOENT"):
        dom1.end(0)
    with fails("ENOENT"):
        dom1.read("domid", tx=999)
    assert dom1.exchange(XsType.WATCH, b"domid\0t\0", tx=999).type == XsType.WATCH


def test_transaction_ids_count_per_connection(store: Xenstored, dom1: Peer) -> None:
    assert [dom1.start() for _ in range(3)] == [1, 2, 3]
    assert Peer(store, 2).start() == 1


def test_transaction_quota_is_enospc_after_quota_plus_one(store: Xenstored, dom0: Peer) -> None:
    dom1, also_dom1 = Peer(store, 1), Peer(store, 1)
    for _ in range(3):
        dom1.start()  # 3 open = quota (2) + 1
    with fails("ENOSPC"):
        dom1.start()
    also_dom1.start()  # Xen 4.17 counts per connection
    for _ in range(5):
        dom0.start()  # dom0 is exempt
    dom1.end(1)
    dom1.start()


def test_closing_aborts_transactions(store: Xenstored, dom1: Peer) -> None:
    tx = dom1.start()
    dom1.write("data/pending", "x", tx=tx)
    dom1.conn.close()
    assert store.node("/local/domain/1/data/pending") is None


def test_reset_watches_also_drops_transactions(dom1: Peer) -> None:
    tx = dom1.start()
    dom1.call(XsType.RESET_WATCHES, "")
    with fails("ENOENT"):
        dom1.end(tx)


# --- quotas ----------------------------------------------------------------------------------


def test_node_quota_binds_the_creating_domu(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    assert store.nodes_owned_by(1) == ["/local/domain/1/data"]
    for i in range(19):
        dom1.write(f"data/n{i}", "")
    assert len(store.nodes_owned_by(1)) == 20  # the quota, reached one node at a time
    with fails("ENOSPC"):
        dom1.write("data/one-more", "")
    with fails("ENOSPC"):
        dom1.write("/local/domain/1/data/a/b", "")
    dom0.write("/local/domain/0/data/lots/of/nodes", "")  # dom0 is not limited
    dom1.rm("data/n0")
    dom1.write("data/one-more", "")


def test_node_quota_at_commit_refuses_reaching_it(store: Xenstored, dom1: Peer) -> None:
    for i in range(18):
        dom1.write(f"data/n{i}", "")
    tx = dom1.start()
    dom1.write("data/last", "", tx=tx)  # would make 20 == quota: fine outside a tx
    with fails("ENOSPC"):
        dom1.end(tx)


def test_node_size_quota_counts_as_4_17(store: Xenstored, dom0: Peer, dom1: Peer) -> None:
    """4.17's record: a 24-byte header, 8 bytes per permission, the value, the child
    names with their NULs; a record of node_size (2048) bytes or more is ENOSPC."""
    dom1.write("data/v", b"x" * 2015)  # 24 + 8 + 2015 = 2047
    with fails("ENOSPC"):
        dom1.write("data/v", b"x" * 2016)  # 2048
    with fails("ENOSPC"):  # three permissions: 24 + 24 + 2015
        dom1.chmod("data/v", "n1", "r2", "r0")
    dom1.write("data/v", b"x" * 1999)
    dom1.chmod("data/v", "n1", "r2", "r0")
    with fails("ENOSPC"):
        dom1.write("data/v", b"x" * 2000)
    dom0.write("/local/domain/1/data/v", b"x" * 4000)  # domain 0 is exempt


def test_node_size_quota_covers_the_parents_child_list(store: Xenstored, dom1: Peer) -> None:
    dom1.call(XsType.MKDIR, "data/p")
    for i in range(10):  # each name 199 characters + NUL: 24 + 8 + 2000 = 2032 bytes
        dom1.call(XsType.MKDIR, f"data/p/{i:0>199}")
    with fails("ENOSPC"):  # the parent would become 2032 + 16 = 2048 bytes
        dom1.write("data/p/" + "n" * 15, "v")
    assert len(dom1.ls("data/p")) == 10
    assert store.node("/local/domain/1/data/p/" + "n" * 15) is None
    dom1.write("data/p/" + "n" * 14, "v")  # 2047


def test_transaction_node_quota_dooms_the_transaction(dom1: Peer) -> None:
    tx = dom1.start()
    errors = []
    for i in range(40):  # 30 distinct nodes may be touched (the fixture's quota)
        try:
            dom1.read(f"data/t{i}", tx=tx)
        except Failed as err:
            errors.append(err.name)
    assert errors[:5] == ["ENOENT"] * 5 and errors[-1] == "ENOSPC"
    with fails("ENOMEM"):
        dom1.end(tx)


# --- the wire --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg_type", "payload", "domid", "error"),
    [
        (99, b"", 1, "ENOSYS"),
        (XsType.WATCH_EVENT, b"a\0b\0", 1, "ENOSYS"),
        (XsType.GET_FEATURE, b"", 1, "ENOSYS"),
        (XsType.INTRODUCE, b"3\0" + b"1\0" + b"2\0", 1, "EACCES"),
        (XsType.READ, b"domid", 1, "EINVAL"),
        (XsType.READ, b"domid\0x\0", 1, "EINVAL"),
        (XsType.READ, b"", 1, "EINVAL"),
        (XsType.WRITE, b"no-nul-at-all", 1, "EINVAL"),
    ],
)
def test_error_replies(
    store: Xenstored, msg_type: int, payload: bytes, domid: int, error: str
) -> None:
    peer = Peer(store, domid)
    reply = peer.exchange(msg_type, payload, tx=0, req_id=77)
    assert reply == Message(XsType.ERROR, error.encode() + b"\0", 77, 0)


def test_replies_echo_req_id_and_tx_id(dom1: Peer) -> None:
    tx = dom1.start()
    reply = dom1.exchange(XsType.READ, b"domid\0", tx=tx, req_id=0xDEADBEEF)
    assert reply == Message(XsType.READ, b"1", 0xDEADBEEF, tx)


def test_requests_may_arrive_in_pieces_and_batches(dom1: Peer) -> None:
    stream = wire.encode(XsType.WRITE, b"data/a\0" + b"1") + wire.encode(XsType.READ, b"data/a\0")
    for byte in stream:
        dom1.conn.receive(bytes([byte]))
    replies = wire.Decoder().feed(b"".join(dom1.sent))
    assert [(m.type, m.payload) for m in replies] == [
        (XsType.WRITE, b"OK\0"),
        (XsType.READ, b"1"),
    ]


def test_oversized_message_is_a_protocol_error(dom1: Peer, dom2: Peer) -> None:
    with pytest.raises(XsProtocolError):
        dom1.conn.receive(wire.HEADER.pack(XsType.WRITE, 0, 0, 4097))
    assert dom2.read("domid") == b"2"  # the store is unharmed


def test_log_has_one_readable_line_per_request(dom1: Peer) -> None:
    dom1.write("/local/domain/1/data/x", "8")
    tx = dom1.start()
    with fails("EACCES"):
        dom1.read("/tool", tx=tx)
    assert dom1.log == [
        "dom1 WRITE /local/domain/1/data/x = '8' -> OK",
        "dom1 TRANSACTION_START -> 1",
        "dom1 tx1 READ /tool -> EACCES",
    ]


def test_inspection_helpers(store: Xenstored, dom1: Peer) -> None:
    dom1.write("data/a", "")
    assert store.nodes_owned_by(1) == ["/local/domain/1/data", "/local/domain/1/data/a"]
    assert "@introduceDomain" not in store.paths()
    assert store.paths()[:2] == ["/", "/local"]
    node = store.node("/local/domain/1/data")
    assert node is not None and node.children == ["a"] and node.owner == 1
    node.children.append("not-really")
    assert dom1.ls("data") == ["a"]  # node() hands out copies


# --- a model check ---------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])
paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: "/m/" + "/".join(parts))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), paths, st.binary(max_size=4)),
        st.tuples(st.just("rm"), paths, st.just(b"")),
        st.tuples(st.just("mkdir"), paths, st.just(b"")),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_tree_matches_a_dictionary_model(ops: list[tuple[str, str, bytes]]) -> None:
    store = Xenstored()
    dom0 = Peer(store, 0)
    dom0.call(XsType.MKDIR, "/m")
    model: dict[str, bytes] = {"/m": b""}
    for op, path, value in ops:
        parents = [path[:i] for i in range(3, len(path)) if path[i] == "/"]
        if op == "write":
            dom0.write(path, value)
            model.update({p: model.get(p, b"") for p in parents})
            model[path] = value
        elif op == "mkdir":
            dom0.call(XsType.MKDIR, path)
            model.update({p: model.get(p, b"") for p in [*parents, path]})
        elif path.rsplit("/", 1)[0] not in model:
            with fails("ENOENT"):
                dom0.rm(path)
        else:
            dom0.rm(path)
            model = {p: v for p, v in model.items() if p != path and not p.startswith(path + "/")}
    assert [p for p in store.paths() if p.startswith("/m")] == sorted(model)
    for path, value in model.items():
        assert dom0.read(path) == value
