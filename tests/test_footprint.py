"""What an endpoint process loads: only the channel, its backend and the hub's client.

A process that imports vchansim and opens one shm channel must not pull in the
faces (textual, rich), the harness's process tools (multiprocess), plotting
(matplotlib), the installed-distributions scan (importlib.metadata), the hub's
daemon side, or the standard modules it has no use for.  This pins which modules load,
not how long they take: the times and the memory are figures of ``vchansim bench``
(docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import procs

from vchansim.core import NAME
from vchansim.hub.launcher import ensure_hub
from vchansim.rundir import RunDir

#: Packages an endpoint never needs.
FOREIGN = ("textual", "rich", "multiprocess", "matplotlib", "importlib.metadata")
#: vchansim's daemon side: the hub itself and the store it serves.
DAEMON = ("vchansim.hub.server", "vchansim.xenstore.store", "vchansim.xenstore.server")
#: Standard modules a channel does without: ``socket`` builds its enums at import (a
#: third of the first ``get_backend``), where the ``_socket`` extension underneath it
#: has all an endpoint uses; ``fcntl`` is for starting a hub only; ``ctypes`` (a
#: millisecond of the first ``get_backend``) only the Python core is built on -- the C
#: one hands out buffer addresses and fixed mappings itself.
UNUSED_STDLIB = ("socket", "selectors", "array", "fcntl", *(("ctypes",) if NAME == "c" else ()))

ENDPOINT = """
import json, sys
import vchansim
server = vchansim.Vchan.server(vchansim.get_backend("shm", domid=1), 0, "data/fp")
client = vchansim.Vchan.client(vchansim.get_backend("shm", domid=0), 1, "/local/domain/1/data/fp")
client.write(b"x")
assert server.read(1) == b"x"
client.close()
server.close()
print(json.dumps(sorted(sys.modules)))
"""


def _endpoint_modules(rundir: RunDir) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", ENDPOINT],
        env=procs.child_env(rundir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(out.stdout)
    return modules


def _under(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_an_endpoint_loads_neither_foreign_packages_nor_the_daemon(rundir: RunDir) -> None:
    ensure_hub(rundir)
    modules = _endpoint_modules(rundir)
    assert "vchansim.backends.shm" in modules  # the endpoint did run
    assert _under(modules, FOREIGN + DAEMON) == []
    assert [m for m in UNUSED_STDLIB if m in modules] == []


def test_an_endpoint_starting_the_hub_still_loads_no_foreign_package(rundir: RunDir) -> None:
    modules = _endpoint_modules(rundir)
    assert "vchansim.hub.launcher" in modules
    assert _under(modules, FOREIGN) == []
    assert "vchansim.hub.server" not in modules  # the hub runs in its own process
