"""``vchansim bench``: vchansim against the transports users would pick instead.

Between two processes, in one run: stream and packet throughput over ring and message
sizes, one-byte round trips, channel set-up (one at a time and many at once), concurrent
pairs with their CPU cost, the hub's XenStore request rate and a small endpoint's
footprint, for the Python vchan (spin off and on), ``os.pipe``, ``socket.socketpair``
and Debian's C libxenvchan on the emulator.  :func:`.runner.run` measures,
:mod:`.report` prints, writes JSON and plots.  docs/performance.md has the method and
the figures.

Nothing is imported here: the benchmark's endpoint processes run
``python -m vchansim.bench.worker``, and loading the runner with them would make every
endpoint carry the whole harness (and its memory figure with it).
"""
