"""Linux's Xen device ABI, in one place: device paths, ioctl numbers, argument layouts.

The numbers are the fixed values of docs/protocol.md §6.1 as Linux's UAPI headers
(``<xen/evtchn.h>``, ``<xen/gntalloc.h>``, ``<xen/gntdev.h>``) define them on x86-64 and
Arm64.  They are written out, not computed from a buffer's length: a gntalloc or gntdev
argument is often longer than its ``sizeof`` (trailing arrays), and a number derived from
that length is one the kernel does not know (ENOTTY).  ``tests/test_xen_abi.py`` compiles
the headers with gcc and checks every number, size and offset here against them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

EVTCHN = "/dev/xen/evtchn"
GNTALLOC = "/dev/xen/gntalloc"
GNTDEV = "/dev/xen/gntdev"
XENBUS = "/dev/xen/xenbus"
PROC_XENBUS = "/proc/xen/xenbus"
#: Debian's and upstream's compiled-in XenStore run directory (``XEN_RUN_STORED``).
XENSTORED_RUNDIR = "/var/run/xenstored"

# /dev/xen/evtchn ('E')
IOCTL_EVTCHN_BIND_INTERDOMAIN = 0x00084501
IOCTL_EVTCHN_BIND_UNBOUND_PORT = 0x00044502
IOCTL_EVTCHN_UNBIND = 0x00044503
IOCTL_EVTCHN_NOTIFY = 0x00044504

# /dev/xen/gntalloc ('G')
IOCTL_GNTALLOC_ALLOC_GREF = 0x00184705
IOCTL_GNTALLOC_DEALLOC_GREF = 0x00104706
IOCTL_GNTALLOC_SET_UNMAP_NOTIFY = 0x00104707

# /dev/xen/gntdev ('G' too: the two devices share numbers, told apart by the fd)
IOCTL_GNTDEV_MAP_GRANT_REF = 0x00184700
IOCTL_GNTDEV_UNMAP_GRANT_REF = 0x00104701
IOCTL_GNTDEV_SET_UNMAP_NOTIFY = 0x00104707

GNTALLOC_FLAG_WRITABLE = 1
UNMAP_NOTIFY_CLEAR_BYTE = 0x1
UNMAP_NOTIFY_SEND_EVENT = 0x2

#: The most pages one gntalloc ALLOC_GREF may ask for in vchan use (a 1 MiB ring).
MAX_PAGES_PER_CALL = 256


@dataclass(frozen=True)
class CStruct:
    """A C argument struct: its little-endian layout and the C names the ABI test checks.

    ``fields`` are (C member name, struct code) in order; a ``None`` name is padding.
    ``array`` names a trailing ``[1]`` array member, which starts right after the fixed
    fields and whose one element ``size`` (the C ``sizeof``) includes.
    """

    c_name: str
    fields: tuple[tuple[str | None, str], ...]
    size: int
    array: tuple[str, str] | None = None

    @cached_property
    def packer(self) -> struct.Struct:
        return struct.Struct("<" + "".join(code for _, code in self.fields))

    @cached_property
    def offsets(self) -> dict[str, int]:
        """Byte offset of every named member, the trailing array included."""
        found: dict[str, int] = {}
        prefix = "<"
        for name, code in self.fields:
            if name is not None:
                found[name] = struct.calcsize(prefix)
            prefix += code
        if self.array is not None:
            found[self.array[0]] = self.packer.size
        return found

    def pack(self, *values: int, extra: int = 0) -> bytearray:
        """A zeroed argument buffer holding ``values``; ``extra`` bytes of array after the
        fixed fields (the buffer is never shorter than ``sizeof``, which the kernel copies)."""
        buf = bytearray(max(self.size, self.packer.size + extra))
        self.packer.pack_into(buf, 0, *values)
        return buf

    def unpack(self, buf: bytes | bytearray) -> tuple[int, ...]:
        return self.packer.unpack_from(buf, 0)


# One port number: bind_unbound_port {remote_domain}, unbind {port}, notify {port}.
EVTCHN_BIND_UNBOUND_PORT = CStruct("ioctl_evtchn_bind_unbound_port", (("remote_domain", "I"),), 4)
EVTCHN_BIND_INTERDOMAIN = CStruct(
    "ioctl_evtchn_bind_interdomain", (("remote_domain", "I"), ("remote_port", "I")), 8
)
EVTCHN_UNBIND = CStruct("ioctl_evtchn_unbind", (("port", "I"),), 4)
EVTCHN_NOTIFY = CStruct("ioctl_evtchn_notify", (("port", "I"),), 4)

GNTALLOC_ALLOC_GREF = CStruct(
    "ioctl_gntalloc_alloc_gref",
    (("domid", "H"), ("flags", "H"), ("count", "I"), ("index", "Q")),
    24,
    array=("gref_ids", "I"),
)
GNTALLOC_DEALLOC_GREF = CStruct(
    "ioctl_gntalloc_dealloc_gref", (("index", "Q"), ("count", "I"), (None, "4x")), 16
)
GNTALLOC_UNMAP_NOTIFY = CStruct(
    "ioctl_gntalloc_unmap_notify",
    (("index", "Q"), ("action", "I"), ("event_channel_port", "I")),
    16,
)

GNTDEV_GRANT_REF = CStruct("ioctl_gntdev_grant_ref", (("domid", "I"), ("ref", "I")), 8)
GNTDEV_MAP_GRANT_REF = CStruct(
    "ioctl_gntdev_map_grant_ref",
    (("count", "I"), ("pad", "I"), ("index", "Q")),
    24,
    array=("refs", "8s"),
)
GNTDEV_UNMAP_GRANT_REF = CStruct(
    "ioctl_gntdev_unmap_grant_ref", (("index", "Q"), ("count", "I"), ("pad", "I")), 16
)
GNTDEV_UNMAP_NOTIFY = CStruct(
    "ioctl_gntdev_unmap_notify",
    (("index", "Q"), ("action", "I"), ("event_channel_port", "I")),
    16,
)

#: Every struct the backend packs, for the ABI test.
STRUCTS = (
    EVTCHN_BIND_UNBOUND_PORT,
    EVTCHN_BIND_INTERDOMAIN,
    EVTCHN_UNBIND,
    EVTCHN_NOTIFY,
    GNTALLOC_ALLOC_GREF,
    GNTALLOC_DEALLOC_GREF,
    GNTALLOC_UNMAP_NOTIFY,
    GNTDEV_GRANT_REF,
    GNTDEV_MAP_GRANT_REF,
    GNTDEV_UNMAP_GRANT_REF,
    GNTDEV_UNMAP_NOTIFY,
)

#: Every constant the backend uses, by its C name, for the ABI test.
CONSTANTS = {
    name: value
    for name, value in globals().items()
    if name.startswith(("IOCTL_", "UNMAP_NOTIFY_", "GNTALLOC_FLAG_"))
}
