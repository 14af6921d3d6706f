"""The xen backend's device ABI against Linux's own headers, compiled with gcc.

Every ioctl number, struct size and member offset in ``vchansim.backends.xen_abi`` is
printed by a C program built against ``<xen/evtchn.h>``, ``<xen/gntalloc.h>`` and
``<xen/gntdev.h>`` (linux-libc-dev) and compared with the Python value.  A wrong number
here would be an ENOTTY or a corrupted argument on a real hypervisor.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vchansim.backends import xen_abi
from vchansim.backends.xen_abi import CStruct

HEADERS = ("xen/evtchn.h", "xen/gntalloc.h", "xen/gntdev.h")


def python_facts() -> dict[str, int]:
    """C expression -> the value xen_abi claims for it."""
    facts = dict(xen_abi.CONSTANTS)
    for cs in xen_abi.STRUCTS:
        facts[f"sizeof(struct {cs.c_name})"] = cs.size
        for member, offset in cs.offsets.items():
            facts[f"offsetof(struct {cs.c_name}, {member})"] = offset
            facts[f"sizeof(((struct {cs.c_name} *)0)->{member})"] = _member_size(cs, member)
    return facts


def _member_size(cs: CStruct, member: str) -> int:
    if cs.array is not None and member == cs.array[0]:
        return struct.calcsize("<" + cs.array[1])
    code = {name: code for name, code in cs.fields if name is not None}[member]
    return struct.calcsize("<" + code)


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required for the ABI check (apt-get install gcc)")
    missing = [h for h in HEADERS if not Path("/usr/include", h).exists()]
    if missing:
        pytest.fail(f"Linux UAPI headers missing: {missing} (apt-get install linux-libc-dev)")
    work = tmp_path_factory.mktemp("xenabi")
    exprs = list(python_facts())
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <stdint.h>",
        "#include <sys/ioctl.h>",
        # gntdev.h expects the two types from Xen's public headers (its grant-copy part).
        "typedef uint16_t domid_t;",
        "typedef uint32_t grant_ref_t;",
        *(f"#include <{h}>" for h in HEADERS),
        "int main(void) {",
        *(f'    printf("%lu\\n", (unsigned long)({expr}));' for expr in exprs),
        "    return 0;",
        "}",
    ]
    source = work / "abi.c"
    source.write_text("\n".join(lines) + "\n")
    binary = work / "abi"
    build = subprocess.run(
        ["gcc", "-Wall", "-Werror", "-o", binary, source], capture_output=True, text=True
    )
    assert build.returncode == 0, f"the ABI probe did not compile:\n{build.stderr}"
    out = subprocess.run([binary], check=True, capture_output=True, text=True).stdout
    return dict(zip(exprs, map(int, out.split()), strict=True))


def test_every_number_size_and_offset_matches_the_c_headers(c_facts: dict[str, int]) -> None:
    expected = python_facts()
    wrong = {k: (v, c_facts[k]) for k, v in expected.items() if c_facts[k] != v}
    assert not wrong, "python value vs C value: " + repr(wrong)


def test_the_numbers_are_protocol_md_table_values() -> None:
    # docs/protocol.md §6.1, as verified on x86-64: the values themselves, not recomputed.
    assert xen_abi.IOCTL_GNTALLOC_ALLOC_GREF == 0x00184705
    assert xen_abi.IOCTL_GNTDEV_MAP_GRANT_REF == 0x00184700
    assert xen_abi.IOCTL_EVTCHN_BIND_UNBOUND_PORT == 0x00044502
    assert xen_abi.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY == xen_abi.IOCTL_GNTDEV_SET_UNMAP_NOTIFY


@pytest.mark.parametrize(("count", "length"), [(1, 24), (2, 24), (3, 28), (256, 16 + 4 * 256)])
def test_alloc_buffer_holds_every_grant_ref_the_kernel_writes(count: int, length: int) -> None:
    # The kernel copies sizeof (24) back, then 4*count bytes at offset 16.
    cs = xen_abi.GNTALLOC_ALLOC_GREF
    buf = cs.pack(1, xen_abi.GNTALLOC_FLAG_WRITABLE, count, 0, extra=4 * count)
    assert len(buf) == length
    assert cs.unpack(buf) == (1, 1, count, 0)


@pytest.mark.parametrize(("count", "length"), [(1, 24), (2, 32), (256, 16 + 8 * 256)])
def test_map_buffer_holds_every_grant_ref(count: int, length: int) -> None:
    cs = xen_abi.GNTDEV_MAP_GRANT_REF
    assert len(cs.pack(count, 0, 0, extra=8 * count)) == length
