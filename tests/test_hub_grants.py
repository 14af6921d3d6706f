"""Grant tables through the hub: Xen's rules, limits and contiguous multi-page maps."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from helpers import procs

from vchansim.backends.base import UnmapNotify
from vchansim.backends.shm import ShmBackend, ShmGrants
from vchansim.errors import BackendError, ConfigError, GrantError
from vchansim.hub import Op, open_hub
from vchansim.layout import PAGE_SIZE
from vchansim.leaks import assert_no_leaks
from vchansim.rundir import RunDir

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


@pytest.fixture
def handles(rundir: RunDir) -> Iterator[tuple[ShmGrants, ShmGrants]]:
    """Grant handles of domain 1 (the sharer) and domain 2 (the grantee)."""
    one, two = ShmBackend(1).grants(), ShmBackend(2).grants()
    yield one, two
    one.close()
    two.close()


def _shm_maps() -> dict[tuple[int, int], str]:
    """Address ranges of this process that map hub shared memory, with their permissions."""
    found = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/dev/shm/vchansim-"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found[(start, end)] = fields[1]
    return found


def test_share_then_map_sees_the_same_memory(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    shared = one.share(2, 2)
    mapped = two.map(1, shared.refs)
    shared.buf[5000:5005] = b"hello"
    assert bytes(mapped.buf[5000:5005]) == b"hello"
    mapped.buf[0] = 0x7F
    assert shared.buf[0] == 0x7F
    assert len(mapped.buf) == 2 * PAGE_SIZE


def test_share_map_unmap_cycles_recycle_every_ref(handles: tuple[ShmGrants, ShmGrants]) -> None:
    """Many cycles leave nothing behind: the next share gets the lowest ref again.
    (How long a cycle takes is reported by ``vchansim bench --only setup``.)"""
    one, two = handles
    for _ in range(200):
        shared = one.share(2, 1)
        mapped = two.map(1, shared.refs)
        assert shared.refs == (1,)
        mapped.close()
        shared.close()
    assert one.share(2, 1).refs == (1,)


def test_refs_are_small_nonzero_lowest_free_first(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, _ = handles
    first = one.share(2, 3)
    second = one.share(2, 1)
    assert first.refs == (1, 2, 3) and second.refs == (4,)
    first.close()
    assert one.share(2, 2).refs == (1, 2)
    other_domain = ShmBackend(3).grants()
    try:
        assert other_domain.share(2, 1).refs == (1,)  # refs are per granting domain
    finally:
        other_domain.close()


def test_only_the_grantee_may_map(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, _ = handles
    shared = one.share(2, 1)
    intruder = ShmBackend(3).grants()
    try:
        with pytest.raises(GrantError, match="is for domain 2, not 3") as info:
            intruder.map(1, shared.refs)
        assert info.value.errno == errno.EPERM
    finally:
        intruder.close()


def test_read_only_grant_cannot_be_mapped_writable(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    shared = one.share(2, 1, writable=False)
    with pytest.raises(GrantError, match="read-only") as info:
        two.map(1, shared.refs, writable=True)
    assert info.value.errno == errno.EACCES


def test_read_only_map_really_is_read_only(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    shared = one.share(2, 2, writable=False)
    shared.buf[0:3] = b"abc"  # the owner's own mapping stays writable
    before = _shm_maps()
    mapped = two.map(1, shared.refs, writable=False)
    ranges = {r: p for r, p in _shm_maps().items() if r not in before}
    assert bytes(mapped.buf[0:3]) == b"abc"
    assert mapped.buf.readonly
    with pytest.raises(TypeError):
        mapped.buf[0] = 1
    assert ranges and all(perms == "r--s" for perms in ranges.values())
    for start, end in ranges:
        # The kernel itself refuses: the descriptor behind the mapping is read-only.
        assert _libc.mprotect(start, end - start, mmap.PROT_READ | mmap.PROT_WRITE) == -1
        assert ctypes.get_errno() == errno.EACCES


def test_unknown_and_revoked_refs_fail(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    with pytest.raises(GrantError, match="no grant ref 77") as info:
        two.map(1, [77])
    assert info.value.errno == errno.EINVAL
    shared = one.share(2, 1)
    mapped = two.map(1, shared.refs)
    shared.buf[10] = 42
    shared.close()
    with pytest.raises(GrantError, match="no grant ref 1") as info:
        two.map(1, shared.refs)
    assert info.value.errno == errno.EINVAL
    assert mapped.buf[10] == 42  # an existing mapping of a revoked grant stays valid
    mapped.buf[10] = 43
    assert mapped.buf[10] == 43


def test_grant_table_limit_is_1024(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    for _ in range(4):
        one.share(2, 256)
    with pytest.raises(GrantError, match=r"grant table of domain 1 is full: 1024 of 1024") as info:
        one.share(2, 1)
    assert info.value.errno == errno.ENOSPC
    assert two.share(1, 1).refs == (1,)  # other domains are unaffected


def _fill_pages(buf: memoryview, count: int) -> None:
    for page in range(count):
        buf[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] = bytes([page + 1]) * PAGE_SIZE


def _page_markers(buf: memoryview) -> list[int]:
    """The marker byte of each page, after checking each page is uniformly filled."""
    markers = []
    for page in range(len(buf) // PAGE_SIZE):
        chunk = bytes(buf[page * PAGE_SIZE : (page + 1) * PAGE_SIZE])
        assert chunk == chunk[:1] * PAGE_SIZE
        markers.append(chunk[0])
    return markers


def test_multi_page_map_is_contiguous(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    shared = one.share(2, 4)
    _fill_pages(shared.buf, 4)
    assert _page_markers(two.map(1, shared.refs).buf) == [1, 2, 3, 4]


def test_non_consecutive_refs_are_stitched_contiguously(
    handles: tuple[ShmGrants, ShmGrants],
) -> None:
    one, two = handles
    first, second = one.share(2, 4), one.share(2, 2)
    _fill_pages(first.buf, 4)
    second.buf[:] = bytes([9]) * PAGE_SIZE + bytes([8]) * PAGE_SIZE
    refs = [first.refs[2], second.refs[1], first.refs[0], first.refs[3], second.refs[0]]
    mapped = two.map(1, refs)
    assert _page_markers(mapped.buf) == [3, 8, 1, 4, 9]
    mapped.buf[PAGE_SIZE : PAGE_SIZE + 2] = b"xy"  # page 2 of the stitch is second's page 1
    assert bytes(second.buf[PAGE_SIZE : PAGE_SIZE + 2]) == b"xy"
    mapped.close()
    assert _page_markers(first.buf) == [1, 2, 3, 4]


def test_strict_refuses_loopback(rundir: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    strict = ShmBackend(1, strict=True)
    assert not strict.supports_loopback
    grants = strict.grants()
    try:
        with pytest.raises(GrantError, match="loopback") as info:
            grants.share(1, 1)
        assert info.value.errno == errno.EPERM
    finally:
        grants.close()
    monkeypatch.setenv("VCHANSIM_STRICT", "1")
    assert ShmBackend(1).strict
    monkeypatch.delenv("VCHANSIM_STRICT")
    relaxed = ShmBackend(1)
    assert relaxed.supports_loopback
    grants = relaxed.grants()
    try:
        shared = grants.share(1, 1)
        mapped = grants.map(1, shared.refs)
        shared.buf[0] = 5
        assert mapped.buf[0] == 5
    finally:
        grants.close()


def test_bad_arguments_are_refused_clearly(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    with pytest.raises(ConfigError, match=r"1\.\.256"):
        one.share(2, 0)
    with pytest.raises(ConfigError, match=r"1\.\.256"):
        one.share(2, 257)
    with pytest.raises(ConfigError, match="outside Xen's range"):
        one.share(0x8000, 1)
    with pytest.raises(ConfigError, match="not a u32"):
        two.map(1, [-1])


def test_unmap_notify_arguments_are_checked(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    events = ShmBackend(2).events()
    try:
        port = events.bind_unbound(1)
        shared = one.share(2, 1, writable=False)
        mapped = two.map(1, shared.refs, writable=False)
        with pytest.raises(GrantError, match="read-only mapping") as info:
            two.set_unmap_notify(mapped, 0, port)
        assert info.value.errno == errno.EINVAL
        writable = two.map(1, one.share(2, 1).refs)
        with pytest.raises(GrantError, match="outside the 1-page mapping"):
            two.set_unmap_notify(writable, PAGE_SIZE, port)
        with pytest.raises(GrantError, match="domain 2 has no port 99"):
            two.set_unmap_notify(writable, 0, 99)
        with pytest.raises(GrantError, match="not opened through this handle"):
            one.set_unmap_notify(writable, 0, port)
    finally:
        events.close()


def test_sharer_may_notify_on_its_read_only_grant(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    events = ShmBackend(1).events()
    try:
        port = events.bind_unbound(2)
        shared = one.share(2, 1, writable=False)
        one.set_unmap_notify(shared, 21, port)
        shared.buf[21] = 1
        watcher = two.map(1, shared.refs, writable=False)
        assert watcher.buf[21] == 1
        shared.close()
        assert watcher.buf[21] == 0
    finally:
        events.close()


def test_share_and_map_set_their_unmap_notify_in_the_same_call(
    handles: tuple[ShmGrants, ShmGrants],
) -> None:
    one, two = handles
    sharer, mapper = ShmBackend(1).events(), ShmBackend(2).events()
    try:
        sharer_port = sharer.bind_unbound(2)
        mapper_port = mapper.bind_interdomain(1, sharer_port)
        shared = one.share(2, 1, notify=UnmapNotify(21, sharer_port))
        mapped = two.map(1, shared.refs, notify=UnmapNotify(20, mapper_port))
        watcher = two.map(1, shared.refs, writable=False)
        shared.buf[20] = shared.buf[21] = 1
        mapped.close()
        assert (watcher.buf[20], watcher.buf[21]) == (0, 1)
        assert sharer.pending(procs.DEADLINE) == sharer_port
        shared.close()
        assert watcher.buf[21] == 0
        assert mapper.pending(procs.DEADLINE) == mapper_port
    finally:
        sharer.close()
        mapper.close()


def test_a_refused_notify_shares_and_maps_nothing(handles: tuple[ShmGrants, ShmGrants]) -> None:
    one, two = handles
    with pytest.raises(GrantError, match="domain 1 has no port 99") as info:
        one.share(2, 1, notify=UnmapNotify(0, 99))
    assert info.value.errno == errno.EINVAL
    shared = one.share(2, 1)
    assert shared.refs == (1,)  # the refused share kept no ref
    with pytest.raises(GrantError, match="domain 2 has no port 99"):
        two.map(1, shared.refs, notify=UnmapNotify(0, 99))
    assert len(_shm_maps()) == 1  # only the share: the refused map mapped nothing
    with pytest.raises(ConfigError, match="offset -1"):
        two.map(1, shared.refs, notify=UnmapNotify(-1, 1))


def test_inspect_gives_a_read_only_descriptor(
    rundir: RunDir, handles: tuple[ShmGrants, ShmGrants]
) -> None:
    one, _ = handles
    shared = one.share(2, 3)
    shared.buf[2 * PAGE_SIZE + 7] = 0x55
    with open_hub(rundir, 0) as conn:
        reply = conn.call(Op.INSPECT, 1, shared.refs[2])
    try:
        assert reply.values == (2,)  # the page number within the object
        [fd] = reply.fds
        assert os.pread(fd, 1, 2 * PAGE_SIZE + 7) == b"\x55"
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x", 0)
        assert info.value.errno == errno.EBADF
    finally:
        reply.close_fds()


def test_closing_a_mapping_with_live_views_is_refused(
    handles: tuple[ShmGrants, ShmGrants],
) -> None:
    one, _ = handles
    shared = one.share(2, 1)
    view = shared.buf[0:16]
    with pytest.raises(BackendError, match="still in use") as info:
        shared.close()
    assert info.value.errno == errno.EBUSY
    shared.buf[0] = 1  # still mapped and usable
    view.release()
    shared.close()
    assert shared.closed


def test_everything_is_released_after_close(rundir: RunDir) -> None:
    one, two = ShmBackend(1).grants(), ShmBackend(2).grants()
    shared = one.share(2, 3)
    two.map(1, shared.refs[::-1])
    one.close()
    two.close()
    assert_no_leaks(rundir)


def test_a_failing_unmap_notify_still_releases_everything(
    rundir: RunDir, handles: tuple[ShmGrants, ShmGrants]
) -> None:
    """The event of an unmap-notify cannot be sent (a hostile peer saturated its eventfd):
    the byte is still cleared, the refs revoked and the pages closed, and the failure is
    reported, not swallowed."""
    one, two = handles
    sharer, mapper = ShmBackend(1).events(), ShmBackend(2).events()
    try:
        sharer_port = sharer.bind_unbound(2)
        mapper_port = mapper.bind_interdomain(1, sharer_port)
        shared = one.share(2, 1, notify=UnmapNotify(21, sharer_port))
        watcher = two.map(1, shared.refs, writable=False)
        shared.buf[21] = 1
        incoming = mapper._ports[mapper_port].incoming
        assert os.eventfd_read(incoming) == 1  # the bind's own pending event, as on Xen
        os.eventfd_write(incoming, 2**64 - 2)  # full: the next write is EAGAIN
        with pytest.raises(GrantError, match=f"the event on port {sharer_port} failed") as info:
            shared.close()
        assert info.value.errno == errno.EIO
        assert "cleared byte 21" in str(info.value)
        assert watcher.buf[21] == 0
        assert one.share(2, 1).refs == shared.refs  # the ref was revoked: free again
        watcher.close()
    finally:
        sharer.close()
        mapper.close()
    one.close()
    two.close()
    assert_no_leaks(rundir)


_FULL_DEV_SHM = "mount -t tmpfs -o size=64k vchansim-test /dev/shm && exec {}"


def _in_tiny_dev_shm(rundir: RunDir, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (and the hub it starts) in a private mount namespace whose
    /dev/shm is a 64 KiB tmpfs: the real one is never touched."""
    script = _FULL_DEV_SHM.format(" ".join(map(shlex.quote, command)))
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env=procs.child_env(rundir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _private_mounts_allowed() -> bool:
    """Whether this machine lets us mount a tmpfs in a mount namespace of our own: root
    in a container without CAP_SYS_ADMIN, or under a seccomp policy, is refused."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = "mount -t tmpfs -o size=4k vchansim-probe /dev/shm"
    tried = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", probe],
        capture_output=True,
        timeout=60,
    )
    return tried.returncode == 0


needs_private_mounts = pytest.mark.skipif(
    not _private_mounts_allowed(),
    reason="a private /dev/shm needs root, unshare(1) and leave to mount in a namespace",
)


@needs_private_mounts
def test_full_dev_shm_is_an_enospc_error_at_share_time(rundir: RunDir) -> None:
    """Without reserving the pages at creation, the first touch of a page the tmpfs
    cannot supply kills the endpoint with SIGBUS."""
    code = textwrap.dedent(
        """
        import errno
        from vchansim.backends.shm import ShmBackend
        from vchansim.errors import GrantError
        grants = ShmBackend(1).grants()
        try:
            grants.share(2, 64)
        except GrantError as exc:
            print(errno.errorcode[exc.errno], exc)
        small = grants.share(2, 1)
        small.buf[:] = b"x" * len(small.buf)  # what fits is usable
        grants.close()
        """
    )
    done = _in_tiny_dev_shm(rundir, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "ENOSPC GNT_SHARE: cannot reserve 262144 bytes of shared memory in /dev/shm: No space left"
    ), done.stdout


@needs_private_mounts
def test_serve_on_a_full_dev_shm_says_so_in_one_line(rundir: RunDir) -> None:
    done = _in_tiny_dev_shm(
        rundir, "vchansim", "serve", "--domid", "1", "--read-min", "1M", "0", "data/full"
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith("vchansim serve: ")
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
