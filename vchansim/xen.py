"""Facts about Xen that every layer shares: the range of domain ids, how Xen's C code
reads a number, and what a refused request carries.

Written once here so that the channel, the backends, the hub and xenstored agree on
them (docs/protocol.md).
"""

from __future__ import annotations

import re

from .errors import ConfigError

#: Highest domain id Xen gives a domain (``DOMID_FIRST_RESERVED - 1``).
DOMID_MAX = 0x7FEF
#: ``DOMID_SELF``: "the calling domain" wherever Xen takes a domain id.
DOMID_SELF = 0x7FF0
#: Pages one grant share or map may span: a vchan ring of the largest order (2**20
#: bytes).  The hub protocol's message sizes, the model and both backends bound by it.
MAX_GRANT_PAGES = 256

_ATOI = re.compile(rb"\s*([+-]?\d+)")


def check_domid(domid: int, what: str = "domain id") -> int:
    """Return ``domid`` if Xen could have a domain by that number, else raise ConfigError."""
    if isinstance(domid, bool) or not isinstance(domid, int):
        raise ConfigError(f"{what} must be an integer, not {domid!r}")
    if not 0 <= domid <= DOMID_MAX:
        raise ConfigError(f"{what} {domid} is outside Xen's range 0..{DOMID_MAX}")
    return domid


def atoi(raw: bytes) -> int:
    """C ``atoi``, as libxenvchan and xenstored read numbers: leading blanks, an optional
    sign, digits; anything that does not start so counts as 0."""
    match = _ATOI.match(raw)
    return int(match.group(1)) if match else 0


class RequestError(Exception):
    """A request to the hypervisor refused, as Xen refuses it: an errno and why.

    The grant and event-channel rules (:mod:`vchansim.xenmodel`) raise it; the hub
    answers it as an error reply, a backend turns it into its own exception.
    """

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.err = err
        self.message = message
