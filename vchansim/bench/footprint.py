"""What a small endpoint costs: start-up time, memory, and memory per idle channel.

Each figure comes from a fresh interpreter, because what is measured is the start of a
process: ``import vchansim``, the first ``get_backend("shm")``, one channel set up, then
``channels`` more idle servers (in-page rings, the smallest), with ``VmHWM`` and
``VmRSS`` read from ``/proc/self/status`` along the way.  A bare interpreter started the
same way gives the baseline.  The interpreters keep their compiled bytecode in a private
cache (written by a first, discarded run), as an installed package has it, even where
the environment says not to write bytecode: a figure that includes compiling vchansim's
sources every time says nothing about a deployed endpoint.

The idle channels all belong to one domain, so they need more than Xen's default
XenStore quotas (1000 nodes, 2048-byte directories per guest): the caller runs this on a
hub whose limits :func:`limits_for` raised, and reports the raise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..hub.limits import HubLimits
from ..rundir import RUNDIR_ENV
from .results import Footprint
from .transports import BenchError

#: XenStore nodes each idle server channel adds: its directory, ring-ref, event-channel.
NODES_PER_CHANNEL = 3

#: The endpoint: times its import and first backend, opens one channel, then idle ones.
_ENDPOINT = """
import json, sys, time
def status():
    with open("/proc/self/status", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}
start = time.perf_counter()
import vchansim
imported = time.perf_counter()
backend = vchansim.get_backend("shm", domid=1)
got = time.perf_counter()
peer = vchansim.get_backend("shm", domid=2)
server = vchansim.Vchan.server(backend, 2, "data/fp/0")
client = vchansim.Vchan.client(peer, 1, "/local/domain/1/data/fp/0")
client.write(b"x")
assert server.read(1) == b"x"
one = status()
idle = [vchansim.Vchan.server(backend, 2, f"data/fp/i{i}") for i in range(int(sys.argv[1]))]
many = status()
print(json.dumps({"import_s": imported - start, "backend_s": got - imported,
                  "one": one, "many": many}))
"""
_BARE = """
import json
with open("/proc/self/status", encoding="ascii") as f:
    fields = dict(line.split(":", 1) for line in f)
print(json.dumps({k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}))
"""


def limits_for(channels: int) -> tuple[HubLimits, list[str]]:
    """Limits under which one guest domain can hold ``channels`` idle servers, and a
    line for each one raised above Xen's default."""
    default = HubLimits()
    quotas = default.xenstore
    nodes = max(quotas.nodes, NODES_PER_CHANNEL * (channels + 2) + 10)
    # The parent directory lists every channel's name: about 6 bytes each.
    node_size = max(quotas.node_size, 8 * (channels + 2) + 64)
    limits = dataclasses.replace(
        default,
        grants=max(default.grants, channels + 16),
        xenstore=dataclasses.replace(quotas, nodes=nodes, node_size=node_size),
    )
    raised = [
        f"{name} {default_value} -> {value}"
        for name, (default_value, value) in {
            "grant entries": (default.grants, limits.grants),
            "xenstore nodes": (quotas.nodes, nodes),
            "xenstore node size": (quotas.node_size, node_size),
        }.items()
        if value != default_value
    ]
    return limits, raised


@contextmanager
def _bytecode_cache() -> Iterator[dict[str, str]]:
    """An environment whose interpreters cache bytecode in a private directory."""
    with tempfile.TemporaryDirectory(prefix="vsb-pyc-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        yield env


def _python(code: str, env: dict[str, str], *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-6:])
        raise BenchError(f"the footprint endpoint failed:\n{tail}")
    return json.loads(out.stdout)


def _raise_open_files(needed: int) -> str | None:
    """Lift our soft descriptor limit (inherited by the endpoint) to cover ``needed``;
    a line saying so, or None when it already did."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return f"open files {soft} -> {new}"


def measure(rundir: Path, channels: int, repeats: int) -> Footprint:
    """The footprint figures on ``rundir``'s hub (running, with limits the caller
    raised as :func:`limits_for` says), from ``repeats`` fresh endpoints."""
    row = Footprint(channels=channels)
    raised_files = _raise_open_files(4 * channels + 64)  # hub sockets, eventfd, memory
    if raised_files:
        row.raised.append(raised_files)
    with _bytecode_cache() as env:
        env[RUNDIR_ENV] = os.fspath(rundir)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        _python(_ENDPOINT, env, "0")  # writes the bytecode cache
        for _ in range(repeats):
            bare = _python(_BARE, env)
            ep = _python(_ENDPOINT, env, str(channels))
            row.import_s.append(float(ep["import_s"]))
            row.backend_s.append(float(ep["backend_s"]))
            row.bare_rss.append(int(bare["VmHWM"]))
            row.endpoint_rss.append(int(ep["one"]["VmHWM"]))
            grown = int(ep["many"]["VmRSS"]) - int(ep["one"]["VmRSS"])
            row.per_channel.append(grown / max(channels, 1))
    return row
