"""A killed primary restarted at once (issue 16, case 1) at the election level, with real
supervisors: three `autopilot run` processes in their own UTS namespaces, each with an
`identity` hook (a file the test rewrites: the service's data incarnation). The primary's
supervisor is SIGKILLed and started again within milliseconds, as a restart policy does.
Same incarnation: it resumes its leadership (no failover). A new, empty incarnation: it
never resumes; its old session is destroyed and the most advanced replica wins."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import CatalogProcess, holds, wait_for
from tests.integration.election_supervisors import Node, holder, timeline

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (own hostname per supervisor)")



def start_all(cat: CatalogProcess, nodes: list[Node]) -> tuple[dict, Node]:
    """Start every node; the first promoted holder's lock value and its node."""
    for n in nodes:
        n.start()
    first = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted") else None,
                     30, message="a first primary")
    return first, next(n for n in nodes if n.node == first["node"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("same_data", [True, False])
def test_primary_killed_and_restarted_at_once(tmp_path: Path, env_clean: dict, same_data: bool):
    cat = CatalogProcess(tmp_path).start()
    extra = f' identity: ["cat", "{tmp_path}/{{node}}.identity"],'
    nodes = []
    for i in range(3):
        node = f"node{i}"
        (tmp_path / f"{node}.identity").write_text(f"{node}-run-1\n")
        # check ttl 10 s: a restarted supervisor (Python start, job start, first check) must
        # come back before its check lapses, or there is nothing left to adopt
        nodes.append(Node(cat, tmp_path, node, 7850 + i, env_clean, position=100,
                          extra=extra.replace("{node}", node), ttl=10))
    try:
        first, primary = start_all(cat, nodes)
        others = [n for n in nodes if n is not primary]
        assert first["identity"] == f"{primary.node}-run-1"  # recorded at promotion
        wait_for(lambda: all(n.lines("follow") for n in others), 15, message="replicas")
        # the replicas hold more data than a restarted, empty primary would
        for n in others:
            (tmp_path / f"{n.node}.position").write_text("900\n")
        best = max(others, key=lambda n: n.node)
        (tmp_path / f"{best.node}.position").write_text("1000\n")
        killed = time.time()
        primary.signal(signal.SIGKILL)
        assert primary.proc is not None
        primary.proc.wait(5)
        if not same_data:
            (tmp_path / f"{primary.node}.identity").write_text(f"{primary.node}-run-2\n")
            (tmp_path / f"{primary.node}.position").write_text("0\n")
        primary.start()  # at once, as a restart policy would
        if same_data:
            wait_for(lambda: [r for r in primary.lines("promote") if float(r[1]) >= killed],
                     30, message="the restarted primary to resume")
            after = holder(cat)
            assert after is not None and after["node"] == primary.node
            assert after["epoch"] == first["epoch"], "adoption keeps the epoch"
            assert not [r for n in others for r in n.lines("promote")], \
                "a needless failover"
            print(f"FIGURE restart, same data: resumed at epoch {after['epoch']} "
                  f"{primary.times('promote')[-1] - killed:.2f}s after the kill")
            return
        after = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted")
                         and holder(cat)["node"] != primary.node else None, 30,
                         message="another primary")
        assert after["node"] == best.node, "not the most advanced replica\n" + \
            timeline(nodes, killed)
        assert after["epoch"] > first["epoch"]
        resumed = [r for r in primary.lines("promote") if float(r[1]) >= killed]
        assert not resumed, "the restarted, empty primary resumed its leadership\n" + \
            timeline(nodes, killed)
        took = best.times("promote")[-1] - killed
        print(f"FIGURE restart, new data: {best.node} promoted {took:.2f}s after the kill "
              f"at epoch {after['epoch']}; the restarted node never promoted")
    finally:
        for n in nodes:
            n.cleanup()
        cat.kill()


@pytest.mark.timeout(120)
def test_whole_cluster_killed_a_member_back_before_the_old_checks_lapse(tmp_path: Path,
                                                                        env_clean: dict):
    """Every supervisor is SIGKILLed; the stalest member is started again at once, while
    the dead primary's session still holds the lock (its check passes until its TTL), so
    it follows that holder. When the old checks lapse it must not win alone: it saw no
    leader alive since it started, so the round is a restart round, and the old primary,
    started again 1.5 s after the lock went free with the most data (with the third
    member), wins. Before, having
    followed a holder, the stalest member kept the ordinary rules and won at once."""
    cat = CatalogProcess(tmp_path).start()
    nodes = [Node(cat, tmp_path, f"node{i}", 7880 + i, env_clean, position=100)
             for i in range(3)]
    try:
        first, primary = start_all(cat, nodes)
        stalest, other = sorted((n for n in nodes if n is not primary), key=lambda n: n.node)
        wait_for(lambda: stalest.lines("follow") and other.lines("follow"), 15,
                 message="replicas")
        for n, pos in ((primary, 9000), (other, 500), (stalest, 100)):
            (tmp_path / f"{n.node}.position").write_text(f"{pos}\n")
        killed = time.time()
        for n in nodes:  # the whole node: supervisor and job
            n.signal(signal.SIGKILL)
            assert n.proc is not None
            n.proc.wait(5)
            n.cleanup()
        stalest.start()
        wait_for(lambda: [r for r in stalest.lines("follow") if float(r[1]) >= killed
                          and r[2] == f"x{primary.node}"], 10,
                 message="the stalest member to follow the dead primary's stale session")
        wait_for(lambda: holder(cat) is None, 15, message="the old checks to lapse")
        freed = time.time()
        holds(lambda: not [r for r in stalest.lines("promote") if float(r[1]) >= killed],
              1.5, interval=0.1, message="the stalest member not winning alone")
        primary.start()
        other.start()
        after = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted") else None,
                         30, message="a primary after the restart")
        assert after["node"] == primary.node, "the stalest member won\n" + \
            timeline(nodes, killed)
        assert not [r for n in (stalest, other) for r in n.lines("promote")
                    if float(r[1]) >= killed]
        print(f"FIGURE stale-holder order: {primary.node} (most data) promoted "
              f"{primary.times('promote')[-1] - freed:.2f}s after the lock went free")
    finally:
        for n in nodes:
            n.cleanup()
        cat.kill()
