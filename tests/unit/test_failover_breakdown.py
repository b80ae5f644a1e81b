"""bench/failover's per-trial breakdown reads the election's steps from autopilot logs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.failover.breakdown import PHASES, breakdown

pytestmark = pytest.mark.timeout(10)


def stamp(t: float) -> str:
    whole = datetime.fromtimestamp(int(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{round((t - int(t)) * 1e9):09d}Z"


def test_phases_of_a_failover(tmp_path: Path) -> None:
    t0 = 1_796_000_000.0
    logs = {}
    lines = {
        "node-1": [(t0 - 1, "redis elected epoch=1")],  # before the fault: ignored
        "node-2": [(t0 + 1.20, "redis the lock left the leader we followed: detaching"),
                   (t0 + 1.35, "redis acquired the lock; promoting epoch=2"),
                   (t0 + 1.36, "redis running hook hook=promote"),
                   (t0 + 1.41, "redis running hook hook=identity"),
                   (t0 + 1.45, "redis elected epoch=2")],
        "node-3": [(t0 + 1.25, "redis the lock left the leader we followed: detaching"),
                   (t0 + 1.30, "redis candidacy run=False why=\"redis-node-2 is ahead\"")],
    }
    for name, evs in lines.items():
        path = tmp_path / f"{name}.log"
        path.write_text("".join(f"{stamp(t)} {msg}\n" for t, msg in evs) + "garbage line\n")
        logs[name] = path
    got = breakdown(logs, t0, "node-2", t0 + 1.50)
    assert list(got) == list(PHASES)
    assert got == pytest.approx({"detection": 1.20, "election": 0.15, "promote": 0.06,
                                 "client": 0.09, "announce": 0.04}, abs=2e-3)
    # a missing step leaves its phase (and the next one) unknown, not wrong
    (tmp_path / "node-2.log").write_text(f"{stamp(t0 + 1.2)} redis the lock left the leader\n")
    partial = breakdown(logs, t0, "node-2", t0 + 1.5)
    assert partial["detection"] == pytest.approx(1.2, abs=2e-3)
    assert partial["election"] is None and partial["promote"] is None
    # writes opened before the promote hook ended (async: it re-points replicas afterwards)
    (tmp_path / "node-2.log").write_text("".join(
        f"{stamp(t)} {msg}\n" for t, msg in lines["node-2"]))
    early = breakdown(logs, t0, "node-2", t0 + 1.38)
    assert early["promote"] == pytest.approx(0.03, abs=2e-3)
    assert early["client"] == pytest.approx(0.0, abs=1e-6)
