"""``vchansim bench``: vchansim against the transports users would pick instead.

Between two processes, in one run: stream and packet throughput over ring and message
sizes, one-byte round trips, channel set-up, concurrent pairs and peak memory, for the
Python vchan (spin off and on), ``os.pipe``, ``socket.socketpair`` and Debian's C
libxenvchan on the emulator.  :func:`run` measures, :mod:`.report` prints, writes JSON
and plots.  docs/performance.md has the method and the figures.
"""

from .results import Results
from .runner import Plan, run
from .transports import TRANSPORTS, BenchError

__all__ = ["TRANSPORTS", "BenchError", "Plan", "Results", "run"]
