"""The lab's and the harness' pure logic: I1 from acks, convergence, the status table, and
the `lab` CLI's refusals (no namespaces needed)."""

from __future__ import annotations

import subprocess
import sys

from autopilot.lab.cluster import converged, format_table
from autopilot.lab.workload import interleavings
from tests.helpers import ROOT


def row(node: str, role: str, tag: str, detail: str = "", catalog: str = "passing",
        sup: str = "running") -> dict:
    return {"node": node, "supervisor": sup, "role": role, "catalog": catalog, "tag": tag,
            "address": f"10.0.0.{node[-1]}:6379", "offset": 1, "detail": detail,
            "partitioned": False}


def test_interleaved_writers_break_i1_but_a_handover_does_not() -> None:
    handover = [(0.0, "a"), (0.1, "a"), (1.2, "b"), (1.3, "b")]
    assert interleavings(handover) == []
    back_and_forth = [(0.0, "a"), (0.1, "b"), (0.2, "a"), (0.3, "b")]
    assert interleavings(back_and_forth)


def test_converged_needs_one_tagged_primary_and_replicas_following_it() -> None:
    ok = [row("node-1", "primary", "primary", "2 replicas"),
          row("node-2", "replica", "replica", "of 10.0.0.1:6379 link up"),
          row("node-3", "replica", "replica", "of 10.0.0.1:6379 link up")]
    assert converged(ok)
    assert converged(ok[:2] + [row("node-3", "down", "-", sup="dead")])  # dead nodes aside
    # a node just restarted, its launcher not yet the supervisor, has yet to follow
    assert not converged(ok[:2] + [row("node-3", "down", "-", sup="starting")])
    two = ok[:2] + [row("node-3", "primary", "primary")]
    assert not converged(two)
    stale_tag = [row("node-1", "primary", "replica")] + ok[1:]
    assert not converged(stale_tag)
    lagging = ok[:2] + [row("node-3", "replica", "replica", "of 10.0.0.1:6379 link down")]
    assert not converged(lagging)
    assert "node-2" in format_table(ok)


def test_lab_cli_without_a_lab_says_what_to_do(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "autopilot", "lab", "status",
                           "--dir", str(tmp_path / "none")], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    assert proc.returncode != 0
    assert "autopilot lab up redis" in proc.stderr


def test_lab_up_names_the_packages_it_misses(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "autopilot", "lab", "up", "redis",
                           "--dir", str(tmp_path / "lab")], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, env={"PATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "apt-get install -y" in proc.stderr and "redis-server" in proc.stderr
    assert not (tmp_path / "lab" / "state.json").exists()
