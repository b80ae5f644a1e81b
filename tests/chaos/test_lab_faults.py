"""The lab's faults on real processes, without namespaces: what `lab pause` leaves behind.

A node here is a stand-in supervisor (its command line says `autopilot run`, as the lab
finds a node's supervisor) that forks a short-lived child every few milliseconds, as a
supervisor forks health checks and hooks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from autopilot.lab.cluster import Lab, Node, start_ticks

#: forks `sleep 0.1` every 5 ms, forever; argv ends in "autopilot run" (lab.supervisor())
FORKER = ("import subprocess, time\n"
          "while True:\n"
          "    subprocess.Popen(['sleep', '0.1'])\n"
          "    time.sleep(0.005)\n")


@pytest.fixture
def forking_node(tmp_path: Path) -> Iterator[tuple[Lab, Node]]:
    lab = Lab(tmp_path / "lab")
    proc = subprocess.Popen([sys.executable, "-c", FORKER, "autopilot", "run"],
                            start_new_session=True)
    node = Node(n=1, ip="127.0.0.1", port=1, dir=str(tmp_path), pid=proc.pid,
                started=start_ticks(proc.pid))
    lab.state.nodes["1"] = node
    try:
        yield lab, node
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def running(lab: Lab, node: Node, stopped: bool = False) -> list[str]:
    """The node's processes that run (``stopped``: that are stopped), described."""
    out = []
    for p in lab.tree(node):
        try:
            is_stopped = p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
            if is_stopped == stopped:
                out.append(f"{p.pid} {p.status()} {p.cmdline()}")
        except psutil.Error:
            continue
    return out


@pytest.mark.timeout(60)
def test_pause_returns_with_every_process_of_the_node_stopped(forking_node) -> None:
    """`pause` used to signal the processes of one read of the tree and return: a child
    forked between that read and the supervisor's own stop ran on while the node was
    "paused" (here: nearly every time)."""
    lab, node = forking_node
    for attempt in range(5):
        lab.pause(node.name)
        assert lab.supervisor(node) is not None
        left = running(lab, node)
        assert not left, f"attempt {attempt}: still running after pause: {left}"
        lab.resume(node.name)
        assert not [d for d in running(lab, node, stopped=True) if " stopped " in d]
