"""A small fixed trace of a faulty run, for the replay tests and the inspector's
snapshots: a client streaming into a 1 KiB ring, one corrupted index at FAULT_T."""

from __future__ import annotations

from pathlib import Path

from vchansim.trace import TraceWriter

#: Trace time of the injected fault, and the record index that shows its damage.
FAULT_T = 0.55
RECORDS = 12


def ring(t: float, i: int) -> dict[str, object]:
    """Record ``i`` of the fixed trace: the client streams 200 bytes per record into the
    1 KiB left ring, the server answers 50 bytes per record; record 6 shows a corrupted
    left.prod (the fault); the bits change so that some are lit."""
    lp = 200 * i
    lc = max(lp - 450, 0)
    rp = 50 * i
    if i == 6:
        lp = lc + 5000
    return {
        "left": {"cons": lc, "prod": lp},
        "right": {"cons": rp, "prod": rp},
        "orders": [10, 11],
        "cli_live": 2 if i == 0 else 1,
        "srv_live": 1,
        "cli_notify": 0x1 if i % 2 else 0,
        "srv_notify": 0x2 if i >= 6 else 0x1,
        "events": {"srv_to_cli": i, "cli_to_srv": 2 * i},
    }


def write_trace(path: Path) -> Path:
    """The fixed trace, written at ``path``."""
    header = {
        "scenario": "demo",
        "channel": {"server_domain": 1, "client_domain": 2, "path": "data/vchan/demo"},
    }
    writer = TraceWriter(path, header)
    writer.record("endpoint", 0.0, endpoint="server", instance=1, event="listening", port=1)
    for i in range(RECORDS):
        t = 0.1 * i
        if i == 1:
            writer.record("endpoint", t, endpoint="client", event="connected")
        writer.record("endpoint", t, endpoint="client", event="progress")  # not a mark
        writer.record("ring", t, **ring(t, i))
        if i == 5:
            writer.record(
                "fault",
                FAULT_T,
                endpoint="client",
                instance=1,
                fault="corrupt left.prod += 5000",  # the runner's own words
                kind="corrupt",
                field="left.prod",
            )
    writer.close(0.1 * RECORDS, passed=False)
    return path
