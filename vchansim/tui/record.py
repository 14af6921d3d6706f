"""Recording a live channel: the samples the live view takes, written as a trace.

A recording is a trace like ``vchansim run --trace`` writes, through the same
:class:`~vchansim.trace.TraceWriter` and the same ring-record encoding, so
``vchansim inspect --replay`` plays it through the same code as a scenario's: one
``ring`` record per sample the view took (25 a second), on the channel's clock (seconds
since its server granted the control page), as the live view counts.  A recording has no
verdicts: its end record says ``passed: null``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..trace import RingSample, TraceWriter, ring_fields
from .live import ChannelInfo

#: The file a recording goes to when none is named (``--record FILE`` names one).
DEFAULT_NAME = "vchansim-recording.jsonl"


def recording_header(info: ChannelInfo) -> dict[str, Any]:
    """The trace header of a recording of ``info``: its domains, path, grant and port, as
    the replay's title and identity read them."""
    page = info.page
    return {
        "source": "vchansim inspect --record",
        "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "channel": {
            "server_domain": info.server,
            "client_domain": info.client,
            "path": info.path,
            "ring_ref": info.ring_ref,
            "port": info.port,
            "left_order": page.left_order if page is not None else None,
            "right_order": page.right_order if page is not None else None,
        },
    }


class Recording:
    """One recording under way; :meth:`add` each sample, :meth:`stop` at the end.

    Opening the file and every write raise :class:`~vchansim.trace.TraceError` in one
    line naming the file and why (a directory that does not exist, a full disk).
    """

    def __init__(self, path: Path, info: ChannelInfo) -> None:
        self.path = path
        self.samples = 0
        self._last_t = 0.0
        self._writer = TraceWriter(path, recording_header(info))

    def add(self, sample: RingSample) -> None:
        self._writer.record("ring", sample.t, **ring_fields(sample))
        self.samples += 1
        self._last_t = sample.t

    def stop(self) -> str:
        """Write the end record and close the file; says what was recorded where."""
        self._writer.close(self._last_t, passed=None)
        return f"recorded {self.samples} samples to {self.path}"


class Recordings:
    """The recordings of one inspector session: where each goes, whether the first
    channel view starts one at once (``--record FILE``), and what each wrote.

    Files: the one named (written over, as ``--trace`` is) or :data:`DEFAULT_NAME`,
    then ``NAME-2``, ``NAME-3``... -- never an existing file other than the one named,
    so no recording is lost to the next.
    """

    def __init__(self, named: Path | None = None) -> None:
        self.named = named
        self.at_once = named is not None
        #: One line per recording stopped ("recorded N samples to FILE").
        self.done: list[str] = []
        self._base = named if named is not None else Path(DEFAULT_NAME)
        self._number = 0

    def next_path(self) -> Path:
        while True:
            self._number += 1
            path = self._base
            if self._number > 1:
                path = path.with_name(f"{path.stem}-{self._number}{path.suffix}")
            if path == self.named or not path.exists():
                return path

    def start(self, info: ChannelInfo) -> Recording:
        """A recording of ``info`` to the next file (TraceError if it cannot be written)."""
        self.at_once = False
        return Recording(self.next_path(), info)

    def stop(self, recording: Recording) -> str:
        line = recording.stop()
        self.done.append(line)
        return line
