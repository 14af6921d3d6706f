"""Xen's grant table: per-domain refs, the limit on them, and the rules for mapping.

The table knows nothing of memory.  :meth:`GrantTable.share` asks its *page
allocator* for a run of pages (a shm object in the hub, an anonymous mapping in the
memory backend) and records which of the domain's refs name which page of it; mapping
checks the rules and hands back the entries, whose pages the caller maps its own way.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..xen import MAX_GRANT_PAGES, RequestError

#: Grants one domain may have outstanding (Linux gntalloc's default ``limit``).
GRANTS_PER_DOMAIN = 1024

#: What the page allocator returns: one run of pages, shared by the grants made from it.
P = TypeVar("P")


@dataclass(eq=False)
class Grant(Generic[P]):
    """One grant-table entry: page ``page`` of ``pages``, granted by ``domid`` to
    ``grantee``."""

    domid: int
    ref: int
    grantee: int
    writable: bool
    pages: P
    page: int
    #: ``time.monotonic()`` when it was granted (the inspector dates a vchan by its
    #: control page's grant).
    since: float = field(default_factory=time.monotonic)


def check_page_count(count: int) -> int:
    """``count`` if one share or map may span that many pages, else EINVAL."""
    if not 1 <= count <= MAX_GRANT_PAGES:
        raise RequestError(errno.EINVAL, f"page count {count} is outside 1..{MAX_GRANT_PAGES}")
    return count


class GrantTable(Generic[P]):
    """Every domain's grant table.

    ``allocate(count)`` makes ``count`` fresh zeroed pages; it is called only once the
    refs are known to be free, so a full table costs no memory.
    """

    def __init__(self, allocate: Callable[[int], P], limit: int = GRANTS_PER_DOMAIN) -> None:
        self.limit = limit
        self._allocate = allocate
        self._tables: dict[int, dict[int, Grant[P]]] = {}

    def _free_refs(self, domid: int, count: int) -> list[int]:
        table = self._tables.get(domid, {})
        if len(table) + count > self.limit:
            raise RequestError(
                errno.ENOSPC,
                f"grant table of domain {domid} is full: {len(table)} of {self.limit} grants "
                f"in use, {count} more asked for",
            )
        free = (ref for ref in itertools.count(1) if ref not in table)
        return list(itertools.islice(free, count))

    def share(self, domid: int, peer: int, count: int, writable: bool) -> list[Grant[P]]:
        """Grant ``count`` fresh pages of ``domid`` to ``peer``, lowest free refs first."""
        refs = self._free_refs(domid, check_page_count(count))
        pages = self._allocate(count)
        grants = [Grant(domid, ref, peer, writable, pages, page) for page, ref in enumerate(refs)]
        table = self._tables.setdefault(domid, {})
        for grant in grants:
            table[grant.ref] = grant
        return grants

    def lookup(self, domid: int, ref: int) -> Grant[P]:
        """The live grant ``ref`` of ``domid``; EINVAL if unknown or revoked."""
        grant = self._tables.get(domid, {}).get(ref)
        if grant is None:
            raise RequestError(errno.EINVAL, f"domain {domid} has no grant ref {ref}")
        return grant

    def map(self, mapper: int, granter: int, refs: Sequence[int], writable: bool) -> list[Grant[P]]:
        """The entries ``mapper`` may map: ``granter``'s ``refs``, each granted to
        ``mapper`` (else EPERM) and writable if asked so (else EACCES)."""
        check_page_count(len(refs))
        grants = [self.lookup(granter, ref) for ref in refs]
        for grant in grants:
            if grant.grantee != mapper:
                raise RequestError(
                    errno.EPERM,
                    f"grant ref {grant.ref} of domain {granter} is for domain "
                    f"{grant.grantee}, not {mapper}",
                )
            if writable and not grant.writable:
                raise RequestError(
                    errno.EACCES,
                    f"grant ref {grant.ref} of domain {granter} is read-only; map it read-only",
                )
        return grants

    def revoke(self, grants: Sequence[Grant[P]]) -> None:
        """End ``grants`` (a share's); mappings already made stay valid, as on Xen."""
        for grant in grants:
            table = self._tables.get(grant.domid, {})
            if table.get(grant.ref) is grant:
                del table[grant.ref]
            if not table:
                self._tables.pop(grant.domid, None)

    def domains(self) -> set[int]:
        """Domains with at least one grant."""
        return set(self._tables)

    def __iter__(self) -> Iterator[Grant[P]]:
        """Every live grant, by domain and ref."""
        for domid in sorted(self._tables):
            for _, grant in sorted(self._tables[domid].items()):
                yield grant
