"""The catalog loses its state (issue 16, cases 3 and 4), with real supervisors: three
`autopilot run` processes in their own UTS namespaces against the real catalog, which is
SIGKILLed and started again EMPTY on the same port. The epoch must keep growing (every
member keeps the highest one on disk), the primary must re-win through candidacy (it has
the highest position: no needless failover), and the cluster must converge within a few
seconds (blocking queries start over instead of waiting out their old index)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, wait_for
from tests.integration.election_supervisors import Node, holder, timeline

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (own hostname per supervisor)")

def follows(n: Node, leader: str, epoch: int, since: float) -> bool:
    return any(r[0] == "follow" and float(r[1]) >= since and r[2] == f"x{leader}"
               and int(r[3]) == epoch for r in n.lines())


@pytest.mark.timing
@pytest.mark.timeout(120)
def test_catalog_wipe_keeps_the_primary_and_the_epoch_grows(tmp_path: Path, env_clean: dict):
    cat = CatalogProcess(tmp_path).start()
    nodes = [Node(cat, tmp_path, f"node{i}", 7800 + i, env_clean, position=100)
             for i in range(3)]
    try:
        for n in nodes:
            n.start()
        first = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted") else None,
                         20, message="a first primary")
        # a hand-over raises the epoch to 2 (the catalog's LockIndex follows it so far),
        # once every member runs (a session each)
        wait_for(lambda: len(requests.get(cat.url + "/v1/session/list", timeout=2).json())
                 == 3, 20, message="three sessions")
        old = next(n for n in nodes if n.node == first["node"])
        old.signal(signal.SIGTERM)
        assert old.proc is not None
        old.proc.wait(15)
        second = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted")
                          and holder(cat)["node"] != first["node"] else None,
                          10, message="a second primary")
        successor = next(n for n in nodes if n.node == second["node"])
        gap = successor.times("promote")[-1] - old.times("demote")[-1]
        print(f"FIGURE SIGTERM hand-over with detach+position hooks: demote -> promote "
              f"{gap * 1000:.0f} ms")
        old.start()
        epoch = second["epoch"]
        assert epoch >= 2
        primary = next(n for n in nodes if n.node == second["node"])
        others = [n for n in nodes if n is not primary]
        wait_for(lambda: all(follows(n, primary.node, epoch, 0) for n in others), 15,
                 message="both replicas following the second primary")
        # the primary's data is the most recent, as it would be
        (tmp_path / f"{primary.node}.position").write_text("1000\n")
        time.sleep(1.5)  # renewals and check passes flowing against the first catalog
        # the catalog loses everything: killed, started again empty on the same port
        wiped = time.time()
        cat.kill()
        cat.start()
        back = time.time()  # starting the catalog's Python process takes a while under load
        after = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted") else None,
                         15, message="a primary after the wipe")
        elected_after = time.time() - back
        assert after["node"] == primary.node, \
            f"needless failover to {after['node']}\n" + timeline(nodes, wiped)
        assert after["epoch"] > epoch, "the epoch went backwards with the catalog"
        assert after["LockIndex"] == 1  # the catalog itself did start again from scratch
        wait_for(lambda: all(follows(n, primary.node, after["epoch"], wiped) for n in others),
                 10, message="both replicas following the primary at the new epoch")
        converged = max(float(r[1]) for n in others for r in n.lines()
                        if r[0] == "follow" and r[2] == f"x{primary.node}") - back
        # no other node promoted itself meanwhile
        assert not [r for n in others for r in n.lines("promote") if float(r[1]) >= wiped]
        print(f"FIGURE catalog wipe: primary {primary.node} re-won at epoch {after['epoch']} "
              f"{elected_after:.2f}s after the catalog answered again "
              f"({back - wiped:.2f}s after the wipe); replicas following at {converged:.2f}s")
        assert converged < 5.0, timeline(nodes, wiped)
    finally:
        for n in nodes:
            n.cleanup()
        cat.kill()
