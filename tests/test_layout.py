"""The control-page layout, order selection and validation against docs/protocol.md §2 and the
real libxenvchan header."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchansim import layout
from vchansim.errors import ConfigError, ProtocolError

# docs/protocol.md §2.3's worked table: (left_min, right_min) -> (left order, right order, grants)
WORKED = [
    (0, 0, 10, 11, (0, 0)),
    (1024, 2048, 10, 11, (0, 0)),
    (1025, 1024, 11, 10, (0, 0)),
    (1500, 1500, 11, 12, (0, 1)),
    (100, 3000, 11, 12, (0, 1)),
    (3000, 100, 12, 11, (1, 0)),
    (4096, 4096, 12, 12, (1, 1)),
    (4097, 0, 13, 11, (2, 0)),
    (65536, 1, 16, 11, (16, 0)),
    (1 << 20, 1 << 20, 20, 20, (256, 256)),
]


@pytest.mark.parametrize(("left_min", "right_min", "lo", "ro", "grants"), WORKED)
def test_worked_order_table(left_min, right_min, lo, ro, grants):
    assert layout.choose_orders(left_min, right_min) == (lo, ro)
    geometry = layout.Geometry.for_orders(lo, ro)
    assert (geometry.left.pages, geometry.right.pages) == grants


@pytest.mark.parametrize("sizes", [((1 << 20) + 1, 0), (0, (1 << 20) + 1), (-1, 0)])
def test_oversized_or_negative_sizes_are_refused_naming_the_value(sizes):
    with pytest.raises(ConfigError) as info:
        layout.choose_orders(*sizes)
    assert str(max(sizes, key=abs)) in str(info.value)


@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_chosen_orders_fit_requests_and_never_collide(left_min, right_min):
    lo, ro = layout.choose_orders(left_min, right_min)
    assert layout.ring_size(lo) >= left_min
    assert layout.ring_size(ro) >= right_min
    geometry = layout.Geometry.for_orders(lo, ro)  # the client would accept it
    in_page = [p for p in (geometry.left, geometry.right) if p.in_page_offset is not None]
    # grants[] must end before any in-page ring data starts
    for placement in in_page:
        assert geometry.grants_end <= placement.in_page_offset
    assert geometry.grants_end <= layout.PAGE_SIZE


@pytest.mark.parametrize(
    ("left", "right"), [(9, 11), (10, 21), (0, 0), (10, 10), (11, 11), (65535, 12)]
)
def test_client_refuses_orders_the_c_client_refuses(left, right):
    with pytest.raises(ProtocolError) as info:
        layout.validate_orders(left, right)
    assert "order" in str(info.value)


@pytest.mark.parametrize(("left", "right"), [(10, 11), (11, 10), (12, 12), (10, 20), (20, 11)])
def test_client_accepts_what_the_c_client_accepts(left, right):
    layout.validate_orders(left, right)


def test_key_paths_are_cut_at_63_bytes_like_libxenvchan():
    short = "data/vchan/0/5"
    assert layout.key_path(short, "ring-ref") == "data/vchan/0/5/ring-ref"
    long49 = "a" * 49
    assert layout.key_path(long49, "event-channel") == long49 + "/event-channel"
    long55 = "b" * 55
    assert layout.key_path(long55, "ring-ref") == long55 + "/ring-re"
    assert len(layout.key_path(long55, "event-channel")) == 63


def test_paths_whose_keys_would_collide_are_refused_with_the_limit():
    layout.check_xs_path("x" * 61)
    with pytest.raises(ConfigError) as info:
        layout.check_xs_path("x" * 62)
    assert "62 bytes" in str(info.value)
    assert "61" in str(info.value)
    with pytest.raises(ConfigError):
        layout.check_xs_path("")


PROBE = r"""
#include <stddef.h>
#include <stdio.h>
#include <xen/io/libxenvchan.h>
#define F(field) printf(#field " %zu %zu\n", offsetof(struct vchan_interface, field), \
                        sizeof(((struct vchan_interface *)0)->field))
int main(void) {
    F(left.cons); F(left.prod); F(right.cons); F(right.prod);
    F(left_order); F(right_order); F(cli_live); F(srv_live); F(cli_notify); F(srv_notify);
    printf("grants %zu 4\n", offsetof(struct vchan_interface, grants));
    printf("sizeof %zu 0\n", sizeof(struct vchan_interface));
    printf("VCHAN_NOTIFY_WRITE %d 0\nVCHAN_NOTIFY_READ %d 0\n", VCHAN_NOTIFY_WRITE,
           VCHAN_NOTIFY_READ);
    return 0;
}
"""


def test_offsets_match_the_real_libxenvchan_header(tmp_path: Path):
    header = Path("/usr/include/xen/io/libxenvchan.h")
    assert header.exists(), "libxen-dev is not installed (apt-get install libxen-dev)"
    assert shutil.which("gcc"), "gcc is not installed"
    src = tmp_path / "probe.c"
    src.write_text(PROBE)
    exe = tmp_path / "probe"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    got = {
        name: (int(a), int(b))
        for name, a, b in (
            line.split() for line in subprocess.check_output([exe], text=True).splitlines()
        )
    }
    expected = {
        **layout.FIELDS,
        "grants": (layout.GRANTS, 4),
        "sizeof": (layout.HEADER_SIZE, 0),
        "VCHAN_NOTIFY_WRITE": (layout.NOTIFY_WRITE, 0),
        "VCHAN_NOTIFY_READ": (layout.NOTIFY_READ, 0),
    }
    assert got == expected


def test_page_state_decodes_a_fresh_page_and_flags_corruption():
    page = bytearray(layout.PAGE_SIZE)
    page[16:24] = bytes([10, 0, 11, 0, 2, 1, 1, 0])
    state = layout.PageState.decode(page)
    assert (state.left_order, state.right_order, state.cli_live, state.srv_live) == (10, 11, 2, 1)
    assert state.cli_notify == layout.NOTIFY_WRITE and state.problems() == []
    page[4:8] = (5000).to_bytes(4, "little")  # left.prod 5000 bytes ahead of cons: > 1024
    page[18] = 10  # (10, 10): two in-page rings on one offset
    page[21] = 7
    problems = layout.PageState.decode(page).problems()
    assert any("left ring" in p and "5000" in p for p in problems)
    assert any("right_order=10" in p for p in problems)
    assert any("srv_live = 7" in p for p in problems)
