"""bench/failover's harness: every side is closed whatever ends the run (a failed trial, an
exception, SIGTERM), trials record the load average, and the table shows the spread."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from bench.failover import harness

pytestmark = pytest.mark.timeout(20)


class Side:
    """The smallest side the plan runner drives: counts what was done to it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_failing_trial_is_recorded_and_the_side_closed() -> None:
    side = Side("a")

    def trial(s: Any) -> dict[str, Any]:
        raise RuntimeError("no primary")

    results: dict[str, Any] = {}
    harness.run_plan([(side, [("kill", 2, trial)])], {"kill"}, results)
    data = results["kill"]["a"]
    assert data["errors"] == 2
    assert all("no primary" in t["error"] and t["load1"] >= 0 for t in data["trials"])
    assert side.closed >= 1


def test_every_side_is_closed_when_sigterm_ends_the_run() -> None:
    first, second = Side("first"), Side("second")

    def trial(s: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler turns it into KeyboardInterrupt
        raise AssertionError("not reached")

    results: dict[str, Any] = {}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        harness.run_plan([(first, [("kill", 1, trial)]), (second, [("kill", 1, trial)])],
                         {"kill"}, results)
    assert first.closed >= 1 and second.closed >= 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_groups_not_asked_for_do_not_run() -> None:
    side = Side("a")
    ran = []
    harness.run_plan([(side, [("cpu", 3, lambda s: ran.append(1) or {})])], {"kill"}, {})
    assert ran == [] and side.closed >= 1


def test_table_shows_median_spread_and_load() -> None:
    results: dict[str, Any] = {}
    values = iter([1.0, 3.0, 2.0])
    harness.run_plan([(Side("x"), [("kill", 3, lambda s: {
        "failover_s": next(values), "write_gap_s": 1.0, "lost": 0, "load1": 4.5})])],
        {"kill"}, results)
    summary = results["kill"]["x"]["summary"]
    assert summary["failover_s"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3,
                                     "missing": 0}
    text = harness.table(results)
    assert "failover 2.00 s (1.00-3.00, n=3)" in text
    assert "4.5-4.5" in text


def test_markdown_puts_peers_side_by_side_with_the_load() -> None:
    from bench.failover.markdown import render

    def side(median: float, load: float) -> dict[str, Any]:
        return {"errors": 0, "summary": {
            "failover_s": {"median": median, "min": median, "max": median, "n": 10,
                           "missing": 0},
            "load1": {"median": load, "min": load, "max": load, "n": 10, "missing": 0}}}

    text = render({"kill": {"patroni ttl 5/loop 1 sync": side(4.9, 3.0),
                            "autopilot default async": side(3.5, 4.0),
                            "autopilot fast sync": side(2.0, 5.0)}})
    header = text.splitlines()[0]
    assert header.index("autopilot fast sync") < header.index("patroni ttl 5/loop 1 sync") \
        < header.index("autopilot default async")
    assert "| kill | failover | 2.00 s (2.00–2.00) | 4.90 s (4.90–4.90) | 3.50 s" in text
    assert "| kill | load average (1 min) | 5.0–5.0 | 3.0–3.0 | 4.0–4.0 |" in text


class Cycle(Side):
    """A side whose lease cycle is 0.2 s (autopilot fast's health-check interval)."""

    def jitter(self) -> float:
        import random
        return random.uniform(0, 0.2)


def test_the_fault_waits_the_settle_plus_a_jitter_within_the_cycle() -> None:
    import time
    side = Cycle("c")
    for settle in (0.0, 0.3):
        t0 = time.monotonic()
        jitter = harness.fault_delay(side, settle)
        waited = time.monotonic() - t0
        assert 0 <= jitter <= 0.2
        assert waited >= settle + jitter


def test_autopilot_jitter_is_the_health_check_interval_of_its_profile() -> None:
    from bench.failover.sides import AutopilotSide
    fast = [AutopilotSide("fast", True, "postgres").jitter() for _ in range(50)]
    default = [AutopilotSide("default", False, "postgres").jitter() for _ in range(50)]
    assert 0 <= min(fast) and max(fast) <= 0.2  # 200ms
    assert 0 <= min(default) and max(default) <= 1.0 and max(default) > 0.2


def test_postgres_plan_measures_the_graceful_path_in_both_modes() -> None:
    import argparse

    from bench.failover import pg
    args = argparse.Namespace(trials=10, cpu_trials=5, cpu_seconds=15.0,
                              patroni_default_trials=3, pg_sides="autopilot fast,patroni ttl 5")
    cells = {(side.label, label) for side, groups in pg.plan(args) for label, n, _ in groups
             if n}
    for label in ("autopilot fast async", "autopilot fast sync",
                  "patroni ttl 5/loop 1 async", "patroni ttl 5/loop 1 sync"):
        assert (label, "kill") in cells and (label, "term") in cells, label


class KeepingSide(Side):
    """A side with a directory: a log, a big data file and a socket, as a lab has."""

    def __init__(self, label: str, src: Any, durable: bool = False) -> None:
        super().__init__(label)
        self.src, self.durable = src, durable

    def keep(self, dest: Any) -> None:
        harness.copy_small_files(self.src, dest, max_bytes=1000)


def test_a_failed_trial_keeps_the_sides_logs_but_not_its_big_files_or_sockets(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    src = tmp_path / "lab"
    (src / "node-2").mkdir(parents=True)
    (src / "node-2" / "autopilot.log").write_text("did not re-register\n")
    (src / "node-2" / "wal").write_bytes(b"x" * 5000)
    pgdata = src / "node-2" / "pgdata"
    for sub in ("base/5", "global", "pg_wal"):
        (pgdata / sub).mkdir(parents=True)
    for f in ("PG_VERSION", "base/5/1259", "global/pg_control", "global/1262",
              "pg_wal/00000002.history", "pg_wal/000000020000000000000003"):
        (pgdata / f).write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "node-2" / "s"))
    monkeypatch.setattr(harness, "KEEP_DIR", tmp_path / "kept")
    side = KeepingSide("autopilot fast sync", src, durable=True)
    outcomes = iter([RuntimeError("node-2 absent"), {"failover_s": 1.0, "lost": 0},
                     {"failover_s": 1.0, "lost": 2}, {"failover_s": None, "lost": None}])

    def trial(s: Any) -> dict[str, Any]:
        got = next(outcomes)
        if isinstance(got, Exception):
            raise got
        return dict(got)

    results: dict[str, Any] = {}
    try:
        harness.run_plan([(side, [("term", 4, trial)])], {"term"}, results)
    finally:
        sock.close()
    trials = results["term"]["autopilot fast sync"]["trials"]
    assert [("kept" in t) for t in trials] == [True, False, True, True]
    kept = tmp_path / "kept" / os.path.basename(trials[0]["kept"])
    assert (kept / "node-2" / "autopilot.log").read_text() == "did not re-register\n"
    assert not (kept / "node-2" / "wal").exists() and not (kept / "node-2" / "s").exists()
    copied = {str(p.relative_to(kept / "node-2" / "pgdata"))
              for p in (kept / "node-2" / "pgdata").rglob("*") if p.is_file()}
    assert copied == {"PG_VERSION", "global/pg_control", "pg_wal/00000002.history"}
