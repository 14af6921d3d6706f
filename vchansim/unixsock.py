"""The listening UNIX sockets of vchansim's servers: the hub's control socket and the
per-domain xenstored sockets.

A socket file outlives the server that bound it.  A new server may take the path over
only when nobody listens there any more (a connect is refused: its server was killed);
while another server is alive on it, or when the path is not a socket at all, it is
refused, so two servers never split one machine's clients between them.
"""

from __future__ import annotations

import errno
import os
import socket
import stat


def listen_unix(path: str, kind: int) -> socket.socket:
    """A non-blocking socket of type ``kind`` (with its flags) listening at ``path``,
    mode 0600 before any connection can come in, with the system's full backlog (many
    ends may start at once).  A dead server's socket file there is replaced;
    FileExistsError if the path is not a socket or a live server still serves it."""
    _remove_dead_socket(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_dead_socket(path: str, kind: int) -> None:
    """Unlink the socket file at ``path`` if nobody listens on it; refuse a live one and
    anything that is not a socket."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket")
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(path)
    except FileNotFoundError:  # gone meanwhile
        return
    except ConnectionRefusedError:  # nobody listens: left over from a killed server
        os.unlink(path)
        return
    finally:
        probe.close()
    raise FileExistsError(errno.EEXIST, f"{path} is already being served")
