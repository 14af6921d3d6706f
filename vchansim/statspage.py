"""The wait words of a channel's statistics page: what each end is blocked in, and since when.

Only the ends know whether they are asleep, and a stalled channel is exactly one whose
ends wait for each other.  So each end writes one u64 of the statistics page when it
starts and stops sleeping on its event channel (docs/hub-protocol.md):

- byte 16 + 8 * side: the wait word of that side (side 0 bound the port unbound);
- its low 8 bits: :class:`Blocked`; bits 8..63: ``CLOCK_MONOTONIC`` in microseconds when
  the wait began (a clock every process on the machine shares, so an observer can age it).

A word is one aligned 8-byte store, so a reader never sees half of one.  Writing it costs
a clock read and two stores per sleep -- never on the path that does not sleep -- and
``VCHANSIM_WAIT_STATE=off`` turns it off for a process (Python endpoints and the drop-in C
library alike), leaving the word 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum

from .errors import ConfigError

#: Size of a channel's statistics page: u64 events sent by side 0, then by side 1, then
#: the two wait words.
STATS_SIZE = 4096
#: u64 index of side 0's wait word in the page (after the two event counters).
FIRST_WAIT_WORD = 2
#: u64 words of the page that have a meaning: two event counters, two wait words.
WORDS = 4
#: The environment variable that turns the wait words off ("off") or on ("on", default).
ENV = "VCHANSIM_WAIT_STATE"

_US = 1_000_000


class Blocked(IntEnum):
    """What an end is asleep in."""

    NONE = 0
    #: Reading: waiting for data (it asked the peer for a WRITE event).
    READ = 1
    #: Writing: waiting for space (it asked the peer for a READ event).
    WRITE = 2
    #: Waiting for an event, for a reason only the caller knows (the C library, or an
    #: application's own ``wait``); its notify requests tell which way.
    EVENT = 3


@dataclass(frozen=True)
class Wait:
    """One end's wait word, decoded."""

    blocked: Blocked
    #: ``CLOCK_MONOTONIC`` seconds (``time.monotonic()``) when the wait began.
    since: float


def encode(blocked: Blocked, since_us: int) -> int:
    """The wait word for ``blocked`` since ``since_us`` (CLOCK_MONOTONIC microseconds)."""
    return 0 if blocked is Blocked.NONE else (since_us << 8) | int(blocked)


def decode(word: int) -> Wait | None:
    """The wait a word says, or None when the end is not asleep (or says nonsense: a
    kind this version does not know is shown as not waiting rather than guessed at)."""
    kind = word & 0xFF
    if kind == Blocked.NONE or kind > max(Blocked):
        return None
    return Wait(Blocked(kind), (word >> 8) / _US)


def enabled() -> bool:
    """Whether this process writes its wait words; ConfigError for a value that is
    neither ``on`` nor ``off``."""
    value = os.environ.get(ENV, "on")
    if value not in ("on", "off"):
        raise ConfigError(f"{ENV} must be 'on' or 'off', not {value!r}")
    return value == "on"
