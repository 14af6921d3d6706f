"""The emulated xenstored: node tree, Xen's permission rules, transactions, watches, quotas.

Sans-IO on purpose: :class:`Xenstored` holds the data, :class:`XsConnection` turns the bytes
of one client into operations and hands replies and watch events to a ``send`` callback.
The socket server, the hub and the tests all drive the same code, and the tests can do so
without any socket at all.

Behaviour follows Xen 4.17's C xenstored (what Debian ships); where it has quirks that
a guest could observe -- which error comes back, quota off-by-ones -- we keep them,
because programs tested here must behave the same on a real host.  Domain 0 is the only
privileged domain.  docs/xenstore.md lists the rules and every deliberate difference.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..layout import U32
from ..xen import DOMID_MAX, DOMID_SELF, atoi, check_domid
from . import wire
from .wire import Message, Perm, XsProtocolError, XsType

#: The one privileged domain ("tools" domain) of the emulation.
PRIVILEGED_DOMID = 0
#: Watch-only paths xenstored fires when domains come and go.
INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"

_NO_GENERATION = -1
#: ``struct xs_tdb_record_hdr`` (u64 generation, three u32 counts, padded) and one
#: ``struct xs_permissions`` (two u32) -- the record layout sizes are counted by.
_RECORD_HEADER = 24
_PERM_SIZE = 8
_VALID_PATH = re.compile(r"[A-Za-z0-9\-/_@]*\Z")
_LOCAL_PREFIX = re.compile(r"/local/domain/\d{1,5}/")


def domain_path(domid: int) -> str:
    """A domain's home, the base of its relative paths (GET_DOMAIN_PATH's answer)."""
    return f"/local/domain/{domid}"


def parent_of(path: str) -> str:
    """The parent of a node; ``/`` for top-level nodes and for ``@`` paths, as in xenstored."""
    cut = path.rfind("/", 1)
    return path[:cut] if cut > 0 else "/"


def _basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def _is_child(path: str, ancestor: str) -> bool:
    """True if ``path`` is ``ancestor`` or below it (everything is below ``/``)."""
    if ancestor == "/":
        return True
    return path == ancestor or path.startswith(ancestor + "/")


@dataclass
class Quotas:
    """Limits xenstored puts on each unprivileged domain (domain 0 is exempt), with Xen
    4.17's defaults.  docs/xenstore.md ("Quotas") says how each is counted and compared;
    the comparisons are xenstored's own, off-by-ones included, so that a guest meets a
    limit here exactly where it would on Xen.

    ``memory`` is 4.17's hard memory quota (0: none); ``connections`` is vchansim's own,
    since a guest of Xen has exactly one connection (its ring) and vchansim gives each
    process of a domain its own socket connection.
    """

    nodes: int = 1000
    watches: int = 128
    transactions: int = 10
    transaction_nodes: int = 1024
    permissions: int = 5
    path_length: int = wire.REL_PATH_MAX
    node_size: int = 2048
    memory: int = 2 * 1024 * 1024 + 512 * 1024
    connections: int = 64


class XsError(Exception):
    """An operation failed; ``name`` is the errno name xenstored sends (``ENOENT``...)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class Node:
    """One node: its value, its permission list (owner first) and its children, in order."""

    value: bytes
    perms: tuple[Perm, ...]
    children: list[str] = field(default_factory=list)
    generation: int = 0

    @property
    def owner(self) -> int:
        return self.perms[0].domid

    def copy(self) -> Node:
        """A copy the caller may change; stored nodes are never changed in place, because
        transactions hold references to them."""
        return Node(self.value, self.perms, list(self.children), self.generation)

    def record_size(self) -> int:
        """The size of xenstored's database record for the node: a 24-byte header, 8
        bytes per permission, the value, the child names with their NULs.  This is what
        the node-size quota limits and, with the key, what the memory quota counts."""
        names = sum(len(child) + 1 for child in self.children)
        return _RECORD_HEADER + _PERM_SIZE * len(self.perms) + len(self.value) + names


class _Access:
    """Access rights, as bits of a plain int: every request checks some, and enum flag
    arithmetic is slow enough to show in what each request costs."""

    READ = 1
    WRITE = 2
    OWNER = 8


_FULL = _Access.READ | _Access.WRITE | _Access.OWNER


def _letter_access(perm: Perm) -> int:
    return (_Access.READ if perm.can_read else 0) | (_Access.WRITE if perm.can_write else 0)


def _access(domid: int, perms: Sequence[Perm], target: int = -1) -> int:
    """What ``domid`` may do to a node with ``perms``: the owner and dom0 everything, a
    listed domain its own letter, anyone else the owner entry's letter.  A domain given a
    ``target`` (SET_TARGET, a device model's guest) is also treated as that domain."""
    owner = perms[0].domid
    if domid == PRIVILEGED_DOMID or owner in (domid, target):
        return _FULL
    for perm in perms[1:]:
        if perm.domid == domid or perm.domid == target:
            return _letter_access(perm)
    return _letter_access(perms[0])


# --- the tree and its transactional views -----------------------------------------------


_OldPerms = tuple[Perm, ...] | None
#: Delivers a watch event: path, exact-match only?, node (if known), permissions before.
_FireFn = Callable[[str, bool, Node | None, _OldPerms], None]


class _Tree:
    """The committed store: a flat map path -> node, plus each owner's node count and
    memory (record size plus path, as xenstored counts its database).

    Outside transactions, operations change it directly and their watch events go out at
    once through ``fire``.
    """

    def __init__(self, fire: _FireFn) -> None:
        self.notify = fire
        self.nodes: dict[str, Node] = {}
        self.owned: Counter[int] = Counter()
        self.memory: Counter[int] = Counter()
        self.generation = 0

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> None:
        """Store ``node`` (taking ownership of it) under a fresh generation number."""
        self.delete(path)
        self.generation += 1
        node.generation = self.generation
        self.nodes[path] = node
        self.owned[node.owner] += 1
        self.memory[node.owner] += node.record_size() + len(path)

    def delete(self, path: str) -> None:
        old = self.nodes.pop(path, None)
        if old is not None:
            self.owned[old.owner] -= 1
            self.memory[old.owner] -= old.record_size() + len(path)

    def owned_by(self, domid: int) -> int:
        return self.owned[domid]

    def charge(self, path: str, node: Node) -> tuple[int, int]:
        """Who pays for storing ``node`` at ``path`` (its owner) and how many bytes more."""
        old = self.nodes.get(path)
        refund = old.record_size() + len(path) if old is not None and old.owner == node.owner else 0
        return node.owner, node.record_size() + len(path) - refund


class _Transaction:
    """One open transaction: a private overlay on the tree, validated at commit.

    Like xenstored, conflicts are detected per node: the generation of every node the
    transaction *read* (including absent ones and the ancestors consulted for permission
    checks) must be unchanged at commit, or the commit fails with EAGAIN.  A node is read
    once; later reads in the transaction see that first copy or the transaction's own
    change.  Watch events are held back and fire on a successful commit.
    """

    def __init__(self, tree: _Tree, tx_id: int, domid: int, quotas: Quotas) -> None:
        self.tree = tree
        self.id = tx_id
        #: xenstored keys a transaction's copies ``<generation>/<path>``.
        self.key_prefix = len(f"{tree.generation}/")
        #: Bytes of the copies this transaction holds (charged to its domain).
        self.memory = 0
        self.costs: dict[str, int] = {}
        self.domid = domid
        self.quotas = quotas
        self.local: dict[str, Node | None] = {}
        self.seen: dict[str, int] = {}
        self.modified: dict[str, None] = {}
        self.original_perms: dict[str, tuple[Perm, ...]] = {}
        self.owned_delta: Counter[int] = Counter()
        self.events: dict[str, bool] = {}
        self.created = False
        self.failed = False

    def _first_access(self, path: str) -> Node | None:
        """Record a path touched for the first time; xenstored caps how many per transaction
        (and then dooms the transaction: its commit answers ENOMEM)."""
        unprivileged = self.domid != PRIVILEGED_DOMID
        if unprivileged and len(self.local) + 1 > self.quotas.transaction_nodes:
            self.failed = True
            raise XsError("ENOSPC")
        node = self.tree.get(path)
        if node is not None:
            self.original_perms[path] = node.perms
            self._set_cost(path, node)  # xenstored copies even what it only reads
        self.local[path] = node
        return node

    def _set_cost(self, path: str, node: Node | None) -> None:
        cost = self.cost(path, node)
        self.memory += cost - self.costs.pop(path, 0)
        if cost:
            self.costs[path] = cost

    def cost(self, path: str, node: Node | None) -> int:
        return 0 if node is None else node.record_size() + self.key_prefix + len(path)

    def charge(self, path: str, node: Node) -> tuple[int, int]:
        """Who pays for the transaction's copy of ``node`` (its domain), how much more."""
        return self.domid, self.cost(path, node) - self.costs.get(path, 0)

    def get(self, path: str) -> Node | None:
        if path in self.local:
            return self.local[path]
        node = self._first_access(path)
        self.seen[path] = node.generation if node is not None else _NO_GENERATION
        return node

    def put(self, path: str, node: Node) -> None:
        self._replace(path, node)

    def delete(self, path: str) -> None:
        self._replace(path, None)

    def _replace(self, path: str, node: Node | None) -> None:
        previous = self.local[path] if path in self.local else self._first_access(path)
        if previous is not None:
            self.owned_delta[previous.owner] -= 1
        if node is not None:
            self.owned_delta[node.owner] += 1
        self.local[path] = node
        self.modified[path] = None
        self._set_cost(path, node)

    def owned_by(self, domid: int) -> int:
        return self.tree.owned_by(domid) + self.owned_delta[domid]

    def notify(self, path: str, exact: bool, node: Node | None, old_perms: _OldPerms) -> None:
        """Queue an event; a subtree event for a path replaces an exact-match one."""
        self.events[path] = self.events.get(path, True) and exact

    def check_commit(self) -> None:
        """Raise the error xenstored gives for this commit, in its order of checks."""
        if self.failed:
            raise XsError("ENOMEM")
        if self.created and self.domid != PRIVILEGED_DOMID:
            for domid in self.owned_delta:
                if domid != PRIVILEGED_DOMID and self.owned_by(domid) >= self.quotas.nodes:
                    raise XsError("ENOSPC")
        for path, generation in self.seen.items():
            current = self.tree.get(path)
            if (current.generation if current is not None else _NO_GENERATION) != generation:
                raise XsError("EAGAIN")

    def apply(self) -> None:
        for path in self.modified:
            node = self.local[path]
            if node is None:
                self.tree.delete(path)
            else:
                self.tree.put(path, node.copy())


_View = _Tree | _Transaction


# --- operations on paths ----------------------------------------------------------------

#: What we answer where xenstored 4.17 replies with whatever errno an earlier failure
#: left behind (docs/xenstore.md lists each case).
_STALE_ERRNO = "EINVAL"


class _Actor:
    """Performs path operations for one domain against one view (tree or transaction),
    applying Xen's permission rules and quotas."""

    def __init__(self, store: Xenstored, domid: int, view: _View) -> None:
        self.store = store
        self.domid = domid
        self.view = view
        self.unprivileged = domid != PRIVILEGED_DOMID
        self.target = store.target_of(domid)

    def absolute(self, raw: bytes) -> str:
        """A request path made absolute, unchecked (4.17's ``canonicalize``): a path not
        starting with ``/`` or ``@`` is relative to the domain's home."""
        text = raw.decode("latin-1")
        return text if text[:1] in ("/", "@") else f"{domain_path(self.domid)}/{text}"

    def canonical(self, raw: bytes | None) -> str:
        """A node's path, absolute and valid as 4.17's ``is_valid_nodename`` wants it, for
        every domain: it starts with ``/`` (so no ``@`` path is a node), has no empty
        component or trailing ``/``, only the characters ``A-Za-z0-9-/_@``, and at most
        ``path_length`` characters after ``/local/domain/<up to 5 digits>/`` (the whole
        path elsewhere, e.g. below ``/local/domain/123456``).  Otherwise EINVAL."""
        if raw is None:
            raise XsError("EINVAL")
        name = self.absolute(raw)
        if not name.startswith("/") or not _VALID_PATH.match(name):
            raise XsError("EINVAL")
        if (name.endswith("/") and name != "/") or "//" in name:
            raise XsError("EINVAL")
        local = _LOCAL_PREFIX.match(name)
        if len(name) - (local.end() if local else 0) > self.store.quotas.path_length:
            raise XsError("EINVAL")
        return name

    def lookup(self, path: str, need: int) -> Node:
        """The node, if it exists and we may do ``need`` to it.  Otherwise ENOENT or EACCES,
        chosen as xenstored does so as not to reveal nodes we could not see anyway: ENOENT
        only if the nearest existing ancestor grants us ``need``."""
        node = self.view.get(path)
        if node is not None and _access(self.domid, node.perms, self.target) & need == need:
            return node
        error = "ENOENT" if node is None else "EACCES"
        ancestor = path
        while True:
            ancestor = parent_of(ancestor)
            found = self.view.get(ancestor)
            if found is not None or ancestor == "/":
                break
        if found is not None and _access(self.domid, found.perms, self.target) & need:
            raise XsError(error)
        raise XsError("EACCES")

    def _store_node(self, path: str, node: Node, memory_error: str) -> None:
        """Store ``node`` as xenstored writes a node: an unprivileged writer's record must
        stay under the node-size quota (ENOSPC), and whoever pays for it -- the owner, or
        the domain of the transaction -- must stay under its memory quota.  4.17's error
        for the latter depends on the caller (``memory_error``).  In a transaction any
        failure here dooms the transaction, as xenstored cannot undo a half-done write."""
        quotas = self.store.quotas
        error = None
        if self.unprivileged and node.record_size() >= quotas.node_size:
            error = "ENOSPC"
        else:
            payer, more = self.view.charge(path, node)
            if self.store._over_memory_quota(payer, more):
                error = memory_error
        if error is not None:
            if isinstance(self.view, _Transaction):
                self.view.failed = True
            raise XsError(error)
        self.view.put(path, node)

    def _create(self, path: str, value: bytes) -> Node:
        """Create ``path`` and any missing ancestors, bottom up as xenstored does: each new
        node passes the node-count quota (counted on committed nodes only, so a
        transaction is checked again at commit) and :meth:`_store_node`, then the
        existing parent takes its new child.  New nodes inherit their parent's
        permissions, except that a node an unprivileged domain creates is owned by it.
        A failure removes the nodes already written."""
        missing = [path]
        top_path = parent_of(path)
        top = self.view.get(top_path)
        while top is None:
            missing.append(top_path)
            top_path = parent_of(top_path)
            top = self.view.get(top_path)
        parent = top.copy()
        parent.children.append(_basename(missing[-1]))
        perms = parent.perms
        if self.unprivileged:
            perms = (Perm(perms[0].access, self.domid), *perms[1:])
        created = [Node(value, perms)]
        created += [Node(b"", perms, [_basename(below)]) for below in missing[:-1]]
        written: list[str] = []
        try:
            for new_path, node in zip(missing, created, strict=True):
                if self.unprivileged and self.store._tree.owned_by(self.domid) >= (
                    self.store.quotas.nodes
                ):
                    raise XsError("ENOSPC")
                self._store_node(new_path, node, "EIO")
                written.append(new_path)
            self._store_node(top_path, parent, "EIO")
        except XsError:
            for new_path in written:
                self.view.delete(new_path)
            if written and isinstance(self.view, _Transaction):
                self.view.failed = True
            raise
        if isinstance(self.view, _Transaction):
            self.view.created = True
        return created[0]

    def write(self, path: str, value: bytes) -> None:
        try:
            node = self.lookup(path, _Access.WRITE)
        except XsError as err:
            if err.name != "ENOENT":
                raise
            node = self._create(path, value)
        else:
            node = node.copy()
            node.value = value
            self._store_node(path, node, _STALE_ERRNO)
        self.view.notify(path, False, node, None)

    def mkdir(self, path: str) -> None:
        try:
            self.lookup(path, _Access.WRITE)
        except XsError as err:
            if err.name != "ENOENT":
                raise
            self.view.notify(path, False, self._create(path, b""), None)

    def rm(self, path: str) -> None:
        """Remove a subtree.  A missing node is fine if its parent exists (xenstored)."""
        try:
            node = self.lookup(path, _Access.WRITE)
        except XsError as err:
            if err.name == "ENOENT" and self.view.get(parent_of(path)) is not None:
                return
            raise
        if path == "/":
            raise XsError("EINVAL")
        parent = self.view.get(parent_of(path))
        assert parent is not None, f"{path} exists without its parent"
        for sub_path, sub_node in self._postorder(path, node):
            self.view.notify(sub_path, sub_path != path, sub_node, sub_node.perms)
            self.view.delete(sub_path)
        parent = parent.copy()
        parent.children.remove(_basename(path))
        self.view.put(parent_of(path), parent)

    def _postorder(self, path: str, node: Node) -> Iterator[tuple[str, Node]]:
        """The subtree below and including ``path``, children before parents."""
        base = "" if path == "/" else path
        for child in node.children:
            child_path = f"{base}/{child}"
            child_node = self.view.get(child_path)
            if child_node is not None:
                yield from self._postorder(child_path, child_node)
        yield path, node

    def directory(self, path: str) -> list[str]:
        return list(self.lookup(path, _Access.READ).children)

    def directory_part(self, path: str, offset: int) -> bytes:
        """One chunk of a long child list: generation, then as many names as fit in a
        reply; the last chunk ends with an extra NUL (xenstored's XS_DIRECTORY_PART)."""
        node = self.lookup(path, _Access.READ)
        generation = f"{node.generation}\0".encode()
        names = wire.join_strings(node.children)
        if offset >= len(names):
            return generation + b"\0"
        room = wire.PAYLOAD_MAX - len(generation) - 1
        length = 0
        while True:
            start = offset + length
            name_length = names.index(b"\0", start) - start
            if length + name_length >= room:
                break
            length += name_length + 1
            if offset + length == len(names):
                break
        chunk = generation + names[offset : offset + length]
        return chunk + b"\0" if offset + length == len(names) else chunk

    def get_perms(self, path: str) -> tuple[Perm, ...]:
        return self.lookup(path, _Access.READ).perms

    def set_perms(self, path: str, perms: Sequence[Perm]) -> None:
        """Only the owner (or dom0) may change permissions; only dom0 may change the owner."""
        node = self.lookup(path, _Access.WRITE | _Access.OWNER)
        if self.unprivileged and perms[0].domid != node.owner:
            raise XsError("EPERM")
        changed = node.copy()
        changed.perms = tuple(perms)
        self._store_node(path, changed, _STALE_ERRNO)
        self.view.notify(path, False, changed, node.perms)


# --- the store ----------------------------------------------------------------------------


class Xenstored:
    """The whole emulated XenStore: one tree shared by every connection of every domain.

    Not thread-safe: drive it and its connections from one thread (the event loop's).
    """

    def __init__(
        self, quotas: Quotas | None = None, on_release: Callable[[int], None] | None = None
    ) -> None:
        self.quotas = quotas if quotas is not None else Quotas()
        #: Told of every released domain, after the store is done with it: the
        #: hypervisor's part of a domain's death (its event channels) lives elsewhere.
        self._on_release = on_release
        #: Domains the toolstack introduced (INTRODUCE), not merely found in use.
        self._created: set[int] = set()
        self._tree = _Tree(self._fire)
        self._connections: list[XsConnection] = []
        self._introduced: set[int] = {PRIVILEGED_DOMID}
        self._targets: dict[int, int] = {}
        none0 = (Perm("n", PRIVILEGED_DOMID),)
        for path, children in (("/", ["tool"]), ("/tool", ["xenstored"]), ("/tool/xenstored", [])):
            self._tree.put(path, Node(b"", none0, children))
        #: The permissions of the ``@`` paths, which are not nodes.
        self._special: dict[str, tuple[Perm, ...]] = {
            INTRODUCE_DOMAIN: none0,
            RELEASE_DOMAIN: none0,
        }

    # -- domains (the toolstack's operations; the wire's INTRODUCE, RELEASE... call these) --

    def ensure_domain(self, domid: int) -> str:
        """Give ``domid`` the home libxl creates, if it lacks it, and introduce it.

        ``/local/domain/N`` and ``.../domid`` are dom0's, readable by N (``n0 rN``);
        ``.../data`` belongs to N (``nN``).  Existing nodes are left alone, and so is a
        domain already introduced.  Returns the home path.
        """
        check_domid(domid)
        home = domain_path(domid)
        readable = (Perm("n", PRIVILEGED_DOMID), Perm("r", domid))
        tools = _Actor(self, PRIVILEGED_DOMID, self._tree)
        for path, value, perms in (
            (home, b"", readable),
            (f"{home}/domid", str(domid).encode(), readable),
            (f"{home}/data", b"", (Perm("n", domid),)),
        ):
            if self._tree.get(path) is None:
                tools.write(path, value)
                tools.set_perms(path, perms)
        if domid not in self._introduced:
            self.introduce_domain(domid)
        return home

    def introduce_domain(self, domid: int) -> None:
        """INTRODUCE: start serving ``domid``.  A new guest fires ``@introduceDomain``; a
        domain introduced already keeps its place, but its connections lose every watch
        and transaction, as xenstored resets a ring it is handed again."""
        check_domid(domid)
        if domid in self._introduced:
            for conn in self._connections_of(domid):
                conn._reset()
            return
        self._introduced.add(domid)
        if domid != PRIVILEGED_DOMID:
            self._fire(INTRODUCE_DOMAIN, True, None, None)

    def release_domain(self, domid: int) -> None:
        """RELEASE: forget ``domid`` as xenstored does when the toolstack destroys it.

        Its connections end, every node it owns is removed with its subtree (firing
        those nodes' watches), it loses its entries on the ``@`` paths, and
        ``@releaseDomain`` fires.  The home nodes libxl created are dom0's and stay: the
        toolstack removes them, as libxl does.  Raises XsError EINVAL for domain 0 and
        ENOENT for a domain that is not introduced (xenstored's answers).
        """
        self._check_introduced(domid)
        self._introduced.discard(domid)
        self._targets.pop(domid, None)
        for conn in self._connections_of(domid):
            conn._end(f"domain {domid} released")
        self._remove_owned_by(domid)
        for special, perms in self._special.items():
            self._special[special] = _without(perms, domid)
        self._fire(RELEASE_DOMAIN, True, None, None)
        self._created.discard(domid)
        if self._on_release is not None:
            self._on_release(domid)

    def resume_domain(self, domid: int) -> None:
        """RESUME: xenstored clears the domain's "shut down" mark; nothing here depends
        on it, so only the checks (EINVAL for domain 0, ENOENT if not introduced) remain."""
        self._check_introduced(domid)

    def set_target(self, domid: int, target: int) -> None:
        """SET_TARGET: from now on ``domid`` (a device model, a stub domain) has the
        rights of ``target`` too: everything ``target`` owns, and ``target``'s entries in
        permission lists.  Both must be introduced (else XsError ENOENT)."""
        for which in (domid, target):
            if which not in self._introduced:
                raise XsError("ENOENT")
        self._targets[domid] = target

    def target_of(self, domid: int) -> int:
        """The domain ``domid`` acts for besides itself (SET_TARGET), or -1."""
        return self._targets.get(domid, -1)

    def is_introduced(self, domid: int) -> bool:
        return domid in self._introduced

    def created_domains(self) -> set[int]:
        """The domains introduced by the toolstack's INTRODUCE and not released since
        (those a process merely acted as are introduced too, but not listed here)."""
        return set(self._created)

    def note_created(self, domid: int) -> None:
        """Record that the toolstack introduced ``domid`` (the wire's INTRODUCE)."""
        if domid != PRIVILEGED_DOMID:
            self._created.add(domid)

    def _check_introduced(self, domid: int) -> None:
        """The checks RELEASE and RESUME share: domain 0 is EINVAL, an unknown one ENOENT."""
        if domid == PRIVILEGED_DOMID:
            raise XsError("EINVAL")
        if domid not in self._introduced:
            raise XsError("ENOENT")

    def _connections_of(self, domid: int) -> list[XsConnection]:
        return [conn for conn in self._connections if conn.domid == domid]

    def _remove_owned_by(self, domid: int) -> None:
        """Remove every subtree whose top node ``domid`` owns, in tree order, as
        xenstored does for a domain that is gone (it keeps no orphans by default)."""
        tools = _Actor(self, PRIVILEGED_DOMID, self._tree)
        pending = ["/"]
        while pending and self._tree.owned_by(domid):
            path = pending.pop()
            node = self._tree.get(path)
            if node is None:
                continue
            if node.owner == domid:
                tools.rm(path)
                continue
            base = "" if path == "/" else path
            pending += [f"{base}/{child}" for child in reversed(node.children)]

    # -- the special paths --

    def special_perms(self, path: str) -> tuple[Perm, ...] | None:
        """The permissions of ``@introduceDomain`` or ``@releaseDomain``; None for any
        other path."""
        return self._special.get(path)

    def _set_special_perms(self, domid: int, path: str, perms: Sequence[Perm]) -> None:
        """SET_PERMS on an ``@`` path: only those two exist (EINVAL), the caller needs
        write and owner rights (EACCES), and, as in 4.17, no watch fires."""
        current = self._special.get(path)
        if current is None:
            raise XsError("EINVAL")
        need = _Access.WRITE | _Access.OWNER
        if _access(domid, current, self.target_of(domid)) & need != need:
            raise XsError("EACCES")
        self._special[path] = tuple(perms)

    # -- inspection (leak checks, tests) --

    def paths(self) -> list[str]:
        """Every node of the tree, sorted (the ``@`` watch paths are not part of it)."""
        return sorted(path for path in self._tree.nodes if path.startswith("/"))

    def nodes_owned_by(self, domid: int) -> list[str]:
        """Paths of the tree nodes whose owner is ``domid``, sorted."""
        return [path for path in self.paths() if self._tree.nodes[path].owner == domid]

    def node(self, path: str) -> Node | None:
        """A copy of the committed node at ``path``, bypassing permissions."""
        node = self._tree.get(path)
        return node.copy() if node is not None else None

    # -- connections --

    def _attach(self, conn: XsConnection) -> None:
        self._connections.append(conn)

    def _detach(self, conn: XsConnection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)

    def _count(self, domid: int, what: Callable[[XsConnection], int]) -> int:
        return sum(what(conn) for conn in self._connections if conn.domid == domid)

    def admission(self, domid: int) -> str | None:
        """Why a new connection of ``domid`` must be refused, or None to accept it: the
        domain is not introduced, or it has its quota of connections already."""
        if domid not in self._introduced:
            return "domain not introduced"
        limit = self.quotas.connections
        if domid != PRIVILEGED_DOMID and self._count(domid, lambda conn: 1) >= limit:
            return f"domain has its quota of {limit} connections"
        return None

    def memory_of(self, domid: int) -> int:
        """The bytes xenstored's memory quota counts for ``domid``: the nodes it owns,
        its transactions' copies of nodes, and its watches."""
        held = self._count(domid, lambda conn: conn.memory)
        return self._tree.memory[domid] + held

    def _over_memory_quota(self, domid: int, more: int) -> bool:
        """Would ``more`` bytes take ``domid`` to its memory quota?  (4.17 refuses at
        ``>=``; domain 0 has no quota, nor has anyone if the quota is 0.)"""
        quota = self.quotas.memory
        if domid == PRIVILEGED_DOMID or not quota or more <= 0:
            return False
        return self.memory_of(domid) + more >= quota

    def _fire(self, path: str, exact: bool, node: Node | None, old_perms: _OldPerms) -> None:
        """Deliver an event for ``path`` to every matching watch whose domain may see it."""
        special = self._special.get(path)
        for conn in list(self._connections):
            if not conn.watch_count:
                continue
            if special is not None:
                target = self.target_of(conn.domid)
                permitted = bool(_access(conn.domid, special, target) & _Access.READ)
            else:
                permitted = self._watch_permitted(conn.domid, path, node, old_perms)
            if permitted:
                conn._fire(path, exact)

    def _watch_permitted(self, domid: int, path: str, node: Node | None, old: _OldPerms) -> bool:
        """xenstored's rule: the watcher may read the node, or its parent, or could read it
        before a permission change or removal."""
        target = self.target_of(domid)
        if old is not None and _access(domid, old, target) & _Access.READ:
            return True
        node = node if node is not None else self._tree.get(path)
        if node is None:
            return False
        if _access(domid, node.perms, target) & _Access.READ:
            return True
        parent = self._tree.get(parent_of(path))
        return parent is not None and bool(_access(domid, parent.perms, target) & _Access.READ)

    def _commit(self, tx: _Transaction) -> None:
        """Apply a transaction, then fire its events in the order the transaction first
        touched their nodes (4.17 walks its list of accessed nodes)."""
        tx.check_commit()
        tx.apply()
        for path in tx.local:
            if path in tx.events:
                self._fire(path, tx.events[path], None, tx.original_perms.get(path))


# --- one client connection ----------------------------------------------------------------


@dataclass(frozen=True)
class _Watch:
    path: str
    token: bytes
    prefix: int  # characters stripped from event paths (relative watches)


@dataclass(frozen=True)
class _Reply:
    payload: bytes
    #: The outcome for the log: text, or a node's value, shown only when the line is.
    summary: str | bytes
    followup: bytes = b""  # sent after the reply (the initial event of a WATCH)


_PRIVILEGED_TYPES = frozenset(
    {
        XsType.CONTROL,
        XsType.INTRODUCE,
        XsType.RELEASE,
        XsType.IS_DOMAIN_INTRODUCED,
        XsType.RESUME,
        XsType.SET_TARGET,
    }
)
_TX_IGNORED_TYPES = frozenset({XsType.WATCH, XsType.UNWATCH})
_OK = b"OK\0"


def _show(value: bytes) -> str:
    """A value for log lines: quoted text if printable, else Python's bytes repr."""
    text = value.decode("ascii", "replace")
    return repr(text) if text.isprintable() and "\ufffd" not in text else repr(value)


def _describe(msg: Message) -> str:
    if msg.type == XsType.WRITE:
        path, _, value = msg.payload.partition(b"\0")
        return f"{path.decode('latin-1')} = {_show(value)}"
    fields = msg.payload.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    return " ".join(field.decode("latin-1") for field in fields)


class RequestLine:
    """One request's log line, formatted only when somebody reads it (``str()``): the
    daemon answers first and writes its log when it has nothing else to do, so a client
    waiting for its reply does not wait for the line's formatting either."""

    __slots__ = ("domid", "msg", "summary")

    def __init__(self, domid: int, msg: Message, summary: str | bytes) -> None:
        self.domid = domid
        self.msg = msg
        self.summary = summary

    def __str__(self) -> str:
        msg = self.msg
        tx = f" tx{msg.tx_id}" if msg.tx_id else ""
        described = _describe(msg)
        described = f" {described}" if described else ""
        summary = self.summary if isinstance(self.summary, str) else _show(self.summary)
        return f"dom{self.domid}{tx} {msg.type_name}{described} -> {summary}"


#: What the store logs: a plain line, or a request's (formatted when written).
LogLine = str | RequestLine
Log = Callable[[LogLine], None]


class XsConnection:
    """One client of the store, acting as domain ``domid``.  Sans-IO.

    Feed it the raw bytes the client sent with :meth:`receive`; every complete request is
    executed and its reply -- and any watch event for this client, whoever caused it -- is
    passed to ``send`` as one encoded message.  A stream that cannot be framed (a header
    announcing more than 4096 bytes) raises :class:`~vchansim.xenstore.wire.XsProtocolError`
    from :meth:`receive`: xenstored drops such a client, and so should the caller.
    ``log`` gets one line per request.  :meth:`close` aborts the client's transactions and
    removes its watches.  When the store ends the connection itself (its domain was
    released) it closes it and calls ``on_end`` with the reason, so that the caller can
    hang up on the client.
    """

    def __init__(
        self,
        store: Xenstored,
        domid: int,
        send: Callable[[bytes], None],
        log: Log | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.domid = check_domid(domid)
        self._store = store
        self._send = send
        self._log = log
        self._on_end = on_end
        self._decoder = wire.Decoder()
        self._watches: list[_Watch] = []
        self._transactions: dict[int, _Transaction] = {}
        self._next_tx = 1
        self._closed = False
        self._handlers: dict[int, Callable[[bytes, _Transaction | None], _Reply]] = {
            XsType.READ: self._read,
            XsType.WRITE: self._write,
            XsType.MKDIR: self._mkdir,
            XsType.RM: self._rm,
            XsType.DIRECTORY: self._directory,
            XsType.DIRECTORY_PART: self._directory_part,
            XsType.GET_PERMS: self._get_perms,
            XsType.SET_PERMS: self._set_perms,
            XsType.WATCH: self._watch,
            XsType.UNWATCH: self._unwatch,
            XsType.TRANSACTION_START: self._transaction_start,
            XsType.TRANSACTION_END: self._transaction_end,
            XsType.GET_DOMAIN_PATH: self._get_domain_path,
            XsType.RESET_WATCHES: self._reset_watches,
            XsType.IS_DOMAIN_INTRODUCED: self._is_domain_introduced,
            XsType.CONTROL: self._control,
            XsType.INTRODUCE: self._introduce,
            XsType.RELEASE: self._release,
            XsType.RESUME: self._resume,
            XsType.SET_TARGET: self._set_target,
        }
        store._attach(self)

    @property
    def privileged(self) -> bool:
        return self.domid == PRIVILEGED_DOMID

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    @property
    def transaction_count(self) -> int:
        return len(self._transactions)

    @property
    def memory(self) -> int:
        """What this connection holds for its domain's memory quota: each watch's path and
        token, and the node copies of its open transactions."""
        watches = sum(len(watch.path) + len(watch.token) for watch in self._watches)
        return watches + sum(tx.memory for tx in self._transactions.values())

    def receive(self, data: bytes) -> None:
        """Process bytes from the client; raises XsProtocolError if the stream is broken."""
        if self._closed:
            raise XsProtocolError("receive() on a closed connection")
        for msg in self._decoder.feed(data):
            self._handle(msg)

    def close(self) -> None:
        """Forget the client: its open transactions are aborted and its watches removed."""
        self._closed = True
        self._reset()
        self._store._detach(self)

    def _reset(self) -> None:
        """Drop every watch and transaction (RESET_WATCHES, a domain introduced again)."""
        self._transactions.clear()
        self._watches.clear()

    def _end(self, reason: str) -> None:
        """The store ends this connection: close it and tell the owner of the transport."""
        self.close()
        if self._on_end is not None:
            self._on_end(reason)

    # -- plumbing --

    def _handle(self, msg: Message) -> None:
        try:
            reply = self._dispatch(msg)
            if len(reply.payload) > wire.PAYLOAD_MAX:
                raise XsError("E2BIG")
        except XsError as err:
            reply = _Reply(err.name.encode() + b"\0", err.name)
            out_type = int(XsType.ERROR)
        else:
            out_type = msg.type
        self._send(Message(out_type, reply.payload, msg.req_id, msg.tx_id).encode())
        if reply.followup:
            self._send(reply.followup)
        if self._log is not None:
            self._log(RequestLine(self.domid, msg, reply.summary))

    def _dispatch(self, msg: Message) -> _Reply:
        """Xenstored's order of checks: unknown type, privilege, transaction id, request."""
        handler = self._handlers.get(msg.type)
        privileged_only = msg.type in _PRIVILEGED_TYPES
        if privileged_only and not self.privileged:
            raise XsError("EACCES")
        if handler is None:
            raise XsError("ENOSYS")
        tx = None
        if msg.tx_id and msg.type not in _TX_IGNORED_TYPES:
            tx = self._transactions.get(msg.tx_id)
            if tx is None:
                raise XsError("ENOENT")
        return handler(msg.payload, tx)

    def _actor(self, tx: _Transaction | None) -> _Actor:
        return _Actor(self._store, self.domid, tx if tx is not None else self._store._tree)

    def _fire(self, path: str, exact: bool) -> None:
        """Send an event to each of our watches that ``path`` matches, in the order the
        watches were set.  Two watches with the same token that yield the same event
        bytes (``/a`` and ``/a/b`` for a write of ``/a/b``) send it once: 4.17 drops an
        event identical to one still queued for the connection."""
        sent: set[bytes] = set()
        for watch in self._watches:
            if path == watch.path if exact else _is_child(path, watch.path):
                event = self._event(path[watch.prefix :], watch.token)
                if event not in sent:
                    sent.add(event)
                    self._send(event)

    def _event(self, path: str, token: bytes) -> bytes:
        payload = path.encode("latin-1") + b"\0" + token + b"\0"
        if len(payload) > wire.PAYLOAD_MAX:
            return b""  # xenstored silently skips events it could not send
        return Message(XsType.WATCH_EVENT, payload).encode()

    # -- node operations --

    def _read(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        actor = self._actor(tx)
        node = actor.lookup(actor.canonical(wire.one_arg(payload)), _Access.READ)
        return _Reply(node.value, node.value)

    def _write(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        if b"\0" not in payload:
            raise XsError("EINVAL")
        raw_path, _, value = payload.partition(b"\0")
        actor = self._actor(tx)
        actor.write(actor.canonical(raw_path), value)
        return _Reply(_OK, "OK")

    def _mkdir(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        actor = self._actor(tx)
        actor.mkdir(actor.canonical(wire.one_arg(payload)))
        return _Reply(_OK, "OK")

    def _rm(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        actor = self._actor(tx)
        actor.rm(actor.canonical(wire.one_arg(payload)))
        return _Reply(_OK, "OK")

    def _directory(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        actor = self._actor(tx)
        children = actor.directory(actor.canonical(wire.one_arg(payload)))
        return _Reply(wire.join_strings(children), f"[{', '.join(children)}]")

    def _directory_part(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        if payload.count(b"\0") != 2:
            raise XsError("EINVAL")
        raw_path, raw_offset = wire.split_strings(payload)
        actor = self._actor(tx)
        chunk = actor.directory_part(actor.canonical(raw_path), atoi(raw_offset))
        return _Reply(chunk, f"{len(chunk)} bytes")

    def _get_perms(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """GET_PERMS of a node.  The ``@`` paths are no nodes: 4.17 answers EINVAL there,
        as for any path that does not start with ``/``."""
        actor = self._actor(tx)
        perms = actor.get_perms(actor.canonical(wire.one_arg(payload)))
        shown = [f"{perm.access}{_c_int(perm.domid)}" for perm in perms]
        return _Reply(wire.join_strings(shown), " ".join(shown))

    def _set_perms(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """SET_PERMS, checked in 4.17's order: count, quota, parse, owner, then the path
        (an ``@`` path's permissions are set without validating or canonicalising it)."""
        fields = wire.split_strings(payload)
        if len(fields) < 2:
            raise XsError("EINVAL")
        if self.domid != PRIVILEGED_DOMID and len(fields) - 1 > self._store.quotas.permissions:
            raise XsError("ENOSPC")
        try:
            perms = wire.parse_request_perms(fields[1:])
        except ValueError:
            raise XsError("EINVAL") from None
        if perms[0].domid > DOMID_MAX:
            raise XsError("ENOENT")  # xenstored: the owner must be an existing domain
        if fields[0][:1] == b"@":
            self._store._set_special_perms(self.domid, fields[0].decode("latin-1"), perms)
            return _Reply(_OK, "OK")
        actor = self._actor(tx)
        actor.set_perms(actor.canonical(fields[0]), perms)
        return _Reply(_OK, "OK")

    # -- watches --

    def _watch_args(self, payload: bytes) -> tuple[bytes, bytes]:
        """WATCH's and UNWATCH's two strings (EINVAL unless exactly two)."""
        fields = wire.split_strings(payload)
        if len(fields) != 2:
            raise XsError("EINVAL")
        return fields[0], fields[1]

    def _watch(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """WATCH: an ``@`` path may be any text of up to 2048 bytes (4.17 checks nothing
        else); any other path must be a valid node path, though the node need not exist."""
        raw, token = self._watch_args(payload)
        relative = raw[:1] not in (b"/", b"@")
        if raw[:1] != b"@":
            path = self._actor(None).canonical(raw)
        elif len(raw) > wire.REL_PATH_MAX:
            raise XsError("EINVAL")
        else:
            path = raw.decode("latin-1")
        if any(w.path == path and w.token == token for w in self._watches):
            raise XsError("EEXIST")
        if not self.privileged and (
            self._store._count(self.domid, lambda c: c.watch_count) > self._store.quotas.watches
        ):
            raise XsError("E2BIG")
        if self._store._over_memory_quota(self.domid, len(path) + len(token)):
            raise XsError("ENOMEM")
        watch = _Watch(path, token, len(domain_path(self.domid)) + 1 if relative else 0)
        self._watches.append(watch)
        return _Reply(_OK, "OK", followup=self._event(path[watch.prefix :], token))

    def _unwatch(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """UNWATCH: 4.17 makes the path absolute but does not validate it, so a path no
        watch could have is simply not found (ENOENT)."""
        raw, token = self._watch_args(payload)
        path = self._actor(None).absolute(raw)
        for watch in self._watches:
            if watch.path == path and watch.token == token:
                self._watches.remove(watch)
                return _Reply(_OK, "OK")
        raise XsError("ENOENT")

    def _reset_watches(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """Drop every watch *and* transaction of this client, as xenstored does."""
        self._reset()
        return _Reply(_OK, "OK")

    # -- transactions --

    def _transaction_start(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        if tx is not None:
            raise XsError("EBUSY")  # no nested transactions
        # Per connection, as Xen 4.17's xenstored (what Debian ships) counts them; later
        # releases count per domain.
        if not self.privileged and self.transaction_count > self._store.quotas.transactions:
            raise XsError("ENOSPC")
        tx_id = self._allocate_tx_id()
        self._transactions[tx_id] = _Transaction(
            self._store._tree, tx_id, self.domid, self._store.quotas
        )
        return _Reply(f"{tx_id}\0".encode(), str(tx_id))

    def _allocate_tx_id(self) -> int:
        """Per connection, counting up from 1 and skipping 0 and ids still in use."""
        while True:
            tx_id = self._next_tx
            self._next_tx = (self._next_tx + 1) & U32
            if tx_id and tx_id not in self._transactions:
                return tx_id

    def _transaction_end(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        arg = wire.one_arg(payload)
        if arg not in (b"T", b"F"):
            raise XsError("EINVAL")
        if tx is None:
            raise XsError("ENOENT")
        del self._transactions[tx.id]
        if arg == b"T":
            self._store._commit(tx)
        return _Reply(_OK, "OK" if arg == b"T" else "OK (aborted)")

    # -- domains --

    def _get_domain_path(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        arg = wire.one_arg(payload)
        if arg is None:
            raise XsError("EINVAL")
        path = domain_path(atoi(arg) & U32)
        return _Reply(path.encode() + b"\0", path)

    def _is_domain_introduced(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        arg = wire.one_arg(payload)
        if arg is None:
            raise XsError("EINVAL")
        domid = atoi(arg) & U32
        answer = "T" if domid == DOMID_SELF or self._store.is_introduced(domid) else "F"
        return _Reply(answer.encode() + b"\0", answer)

    # -- the toolstack's operations (domain 0 only; the dispatcher checks) --

    def _control(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """CONTROL: xenstored's ``check``, ``log``, ``print`` and ``help``; any other
        command (and an empty one) is EINVAL, as xenstored answers commands it lacks."""
        fields = wire.split_strings(payload)
        if not fields or fields[0] not in _CONTROL_COMMANDS:
            raise XsError("EINVAL")
        command, args = fields[0], fields[1:]
        if len(args) != len(_CONTROL_COMMANDS[command].split()):
            raise XsError("EINVAL")
        if command == b"log" and args[0] not in (b"on", b"off"):
            raise XsError("EINVAL")
        if command == b"help":
            lines = (
                name + b"\t" + usage.encode() + b"\n" for name, usage in _CONTROL_COMMANDS.items()
            )
            return _Reply(b"".join(lines) + b"\0", "help")
        if command == b"print" and self._log is not None:
            self._log(f"control: {args[0].decode('latin-1')}")
        return _Reply(_OK, "OK")

    def _introduce(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        """INTRODUCE domid, ring frame, event channel (the frame is not needed here)."""
        fields = wire.split_strings(payload)
        if len(fields) < 3 or atoi(fields[2]) & U32 == 0:
            raise XsError("EINVAL")
        domid = _known_domid(fields[0])
        self._store.introduce_domain(domid)
        self._store.note_created(domid)
        return _Reply(_OK, "OK")

    def _release(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        self._store.release_domain(_domid_arg(payload))
        return _Reply(_OK, "OK")

    def _resume(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        self._store.resume_domain(_domid_arg(payload))
        return _Reply(_OK, "OK")

    def _set_target(self, payload: bytes, tx: _Transaction | None) -> _Reply:
        fields = wire.split_strings(payload)
        if len(fields) < 2:
            raise XsError("EINVAL")
        domid, target = (atoi(field) & U32 for field in fields[:2])
        self._store.set_target(domid, target)
        return _Reply(_OK, "OK")


#: The CONTROL commands served and their arguments (as ``help`` lists them; one word each).
_CONTROL_COMMANDS = {b"check": "", b"log": "on|off", b"print": "<string>", b"help": ""}


def _c_int(domid: int) -> int:
    """A u32 domain id as 4.17 prints it in GET_PERMS (``%i`` of an int: 0xFFFFFFFF is -1)."""
    return domid - (1 << 32) if domid >= 1 << 31 else domid


def _without(perms: tuple[Perm, ...], domid: int) -> tuple[Perm, ...]:
    """``perms`` with ``domid`` gone: its entries dropped, an owner entry given to dom0."""
    owner, *rest = perms
    if owner.domid == domid:
        owner = Perm(owner.access, PRIVILEGED_DOMID)
    return (owner, *(perm for perm in rest if perm.domid != domid))


def _domid_arg(payload: bytes) -> int:
    """The one domain-id argument of RELEASE and RESUME (C ``atoi``); EINVAL if absent."""
    arg = wire.one_arg(payload)
    if arg is None:
        raise XsError("EINVAL")
    return atoi(arg) & U32


def _known_domid(raw: bytes) -> int:
    """INTRODUCE's domain id; one Xen could not have given is EINVAL (xenstored fails
    to map such a domain's ring and passes on whatever the mapping left in errno)."""
    domid = atoi(raw) & U32
    if domid > DOMID_MAX:
        raise XsError("EINVAL")
    return domid
