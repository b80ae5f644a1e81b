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


def test_a_scenario_left_running_by_a_failed_test_is_stopped_at_teardown(tmp_path) -> None:
    """A test that fails before `finish` leaves its client and watcher threads running; the
    chaos fixture's `stop_scenarios` ends them, so they cannot write into the next test's
    lab (which usually gets the same lab network and addresses)."""
    import threading

    from autopilot.lab.cluster import Lab, Node
    from tests.chaos.harness import Scenario, stop_scenarios
    from tests.helpers import free_port, wait_for

    lab = Lab(tmp_path / "lab")  # no processes: every status is empty, every write refused
    lab.state.nodes["1"] = Node(n=1, ip="127.0.0.1", port=free_port(), dir=str(tmp_path))
    before = set(threading.enumerate())
    sc = Scenario(lab).start()
    started = [t for t in threading.enumerate() if t not in before]
    assert len(started) == 3, started  # the watcher, the writer, the prober
    workload = sc.workload
    assert workload is not None
    wait_for(lambda: workload.results.failures > 0, 5, message="the client writing")
    del sc  # what a failed test leaves: nothing refers to it but its threads
    stop_scenarios()
    assert not [t for t in started if t.is_alive()]
