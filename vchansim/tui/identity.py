"""Who a channel's ends are -- domain, event-channel port, process -- and where the
channel is: its XenStore path and keys, its grant references.

Live, the hub's STATE says it: the port the server published and the one bound to it,
the connection that bound each (its pid, which the hub took from the socket's
credentials), the nodes under the channel's path; the command comes from ``/proc`` (the
ends run on this machine).  A replay shows what the trace recorded: the domains and path
of its header, the pids of its ``started`` records, the ref and port of ``listening``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Characters of a command line shown (the rest is cut with an ellipsis).
COMMAND_WIDTH = 160


@dataclass(frozen=True)
class EndIdentity:
    """One end of a channel."""

    role: str
    domain: int
    port: int | None = None
    pid: int | None = None
    #: Its command line, or what the source knows it as; "" when unknown.
    command: str = ""

    def line(self) -> str:
        port = "?" if self.port is None else str(self.port)
        pid = "?" if self.pid is None else str(self.pid)
        return f"{self.role:<6} dom{self.domain:<5} port {port:<5} pid {pid:<8} {self.command}"


@dataclass(frozen=True)
class Identity:
    """A channel's ends and its names in XenStore and the grant table."""

    path: str
    server: EndIdentity
    client: EndIdentity
    #: (key, value) of the XenStore nodes directly under ``path``.
    keys: tuple[tuple[str, str], ...] = ()
    #: The control page's grant ref, and the data pages' refs (None: unknown).
    ring_ref: int | None = None
    data_refs: tuple[int, ...] | None = None

    def lines(self) -> list[str]:
        keys = "  ".join(f"{key}={value}" for key, value in self.keys) or "?"
        control = "?" if self.ring_ref is None else str(self.ring_ref)
        data = "?" if self.data_refs is None else (ref_ranges(self.data_refs) or "none: in page")
        return [
            self.server.line(),
            self.client.line(),
            f"xenstore {self.path}  {keys}",
            f"grants   control page ref {control} · data pages {data}",
        ]


def ref_ranges(refs: tuple[int, ...]) -> str:
    """``8 9 10 11 13`` as ``8-11 13``: a large ring lists hundreds of consecutive refs."""
    runs: list[list[int]] = []
    for ref in refs:
        if runs and ref == runs[-1][1] + 1:
            runs[-1][1] = ref
        else:
            runs.append([ref, ref])
    return " ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def command_of(pid: int | None) -> str:
    """The command line of process ``pid``, or "" if it is gone or not ours to read."""
    if pid is None:
        return ""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # One line: an argument may hold newlines (``python -c`` code).
    text = " ".join(raw.decode("utf-8", "replace").replace("\0", " ").split())
    return text if len(text) <= COMMAND_WIDTH else text[: COMMAND_WIDTH - 1] + "…"


def replay_identity(header: dict[str, Any], records: list[dict[str, Any]]) -> Identity:
    """The identity a trace recorded: its header's channel, the endpoints' last
    ``started`` pids, the server's ``listening`` ref and port."""
    found = header.get("channel")
    channel: dict[str, Any] = found if isinstance(found, dict) else {}
    names = {channel.get("server"): "server", channel.get("client"): "client"}
    kinds = {
        e.get("name"): f"{e.get('kind', '?')} endpoint {e.get('name')!r} on {e.get('backend', '?')}"
        for e in header.get("endpoints", [])
        if isinstance(e, dict)
    }
    pids: dict[str, int] = {}
    ring_ref = port = None
    for record in records:
        role = names.get(record.get("endpoint"))
        if record.get("type") != "endpoint" or role is None:
            continue
        if record.get("event") == "started" and isinstance(record.get("pid"), int):
            pids[role] = record["pid"]
        if record.get("event") == "listening":
            ring_ref, port = record.get("ring_ref"), record.get("port")

    def end(role: str) -> EndIdentity:
        domain = channel.get(f"{role}_domain")
        return EndIdentity(
            role,
            domain if isinstance(domain, int) else -1,
            port if role == "server" else None,
            pids.get(role),
            kinds.get(channel.get(role), ""),
        )

    return Identity(str(channel.get("path", "?")), end("server"), end("client"), (), ring_ref)


def _connection_pid(state: dict[str, Any], conn: int | None) -> int | None:
    for connection in state["connections"]:
        if connection["id"] == conn:
            pid = connection.get("pid")
            return pid if isinstance(pid, int) else None
    return None


def live_identity(
    state: dict[str, Any], path: str, ends: tuple[int, int], port: int, ring_ref: int
) -> Identity:
    """The identity of the channel at ``path`` between domains ``ends`` (server, client),
    whose server published ``port`` and ``ring_ref``, from a STATE reply."""
    server, client = ends
    ports = {(p["domid"], p["port"]): p for p in state["ports"]}
    ours = ports.get((server, port), {})
    theirs = ports.get((client, ours.get("remote_port")), {})
    nodes: dict[str, str] = state["xenstore"]["nodes"]
    prefix = path.rstrip("/") + "/"
    keys = tuple(
        (node[len(prefix) :], value)
        for node, value in sorted(nodes.items())
        if node.startswith(prefix) and "/" not in node[len(prefix) :]
    )
    server_pid = _connection_pid(state, ours.get("conn"))
    client_pid = _connection_pid(state, theirs.get("conn"))
    return Identity(
        path,
        EndIdentity("server", server, port, server_pid, command_of(server_pid)),
        EndIdentity("client", client, theirs.get("port"), client_pid, command_of(client_pid)),
        keys,
        ring_ref,
    )
