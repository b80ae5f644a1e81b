"""Leader election with real supervisors: three `autopilot run` processes, each in its own
UTS namespace (its own hostname, so its own service ID), against the real catalog.
Hook invocations are recorded with wall-clock timestamps in one file per node."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, holds, wait_for
from tests.integration.election_supervisors import HEALTH_TTL, LOCK_DELAY, Supervisor

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (own hostname per supervisor)")

def timeline(sups: list[Supervisor]) -> str:
    """The election-related log lines of every node, for a failure message."""
    keep = ("elected", "stepping", "released", "hook", "leader changed", "signal", "session",
            "acquired")
    out = []
    for s in sups:
        if s.log.exists():
            out += [f"{s.node}: {ln}" for ln in s.log.read_text().splitlines()
                    if any(k in ln for k in keep)]
        out += [f"{s.node} hooks: {' '.join(r)}" for r in s.lines()]
    return "\n".join(sorted(out, key=lambda ln: ln.split(" ", 1)[1]))


def tags(cat: CatalogProcess) -> dict[str, list[str]]:
    """service ID -> tags, for the passing instances of `db`."""
    entries = requests.get(cat.url + "/v1/health/service/db?passing=1", timeout=5).json()
    return {e["Service"]["ID"]: e["Service"]["Tags"] for e in entries}


def sessions(cat: CatalogProcess) -> int:
    return len(requests.get(cat.url + "/v1/session/list", timeout=5).json() or [])


def promoted(sups: list[Supervisor]) -> list[Supervisor]:
    return [s for s in sups if s.lines("promote")]


@pytest.fixture
def trio(catalog: CatalogProcess, tmp_path: Path, env_clean: dict):
    sups = [Supervisor(catalog, tmp_path, f"node{i}", 7300 + i, env_clean) for i in range(3)]
    yield sups
    for s in sups:
        s.cleanup()


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_start_together_one_leader_then_handover_then_sigkill(catalog, trio):
    sups: list[Supervisor] = trio
    for s in sups:  # the same instant
        s.start()
    # S1: exactly one primary; the catalog shows one primary and two replica tags
    wait_for(lambda: sorted(map(tuple, tags(catalog).values())) ==
             [("primary",), ("replica",), ("replica",)], timeout=20, message="role tags")
    # a second promotion would show up now
    holds(lambda: len(promoted(sups)) == 1 and len(promoted(sups)[0].lines("promote")) == 1,
          0.5, message="one promotion, once")
    (lead,) = promoted(sups)
    assert len(lead.lines("promote")) == 1
    wait_for(lambda: lead.lines("elected-job"), timeout=5, message="the job hooked on elected")
    assert lead.lines("elected-job")[0][2:] == ["primary", lead.node]
    assert tags(catalog)[f"db-{lead.node}"] == ["primary"]
    wait_for(lambda: sessions(catalog) == 3, timeout=5, message="every member a candidate")

    # S5: SIGTERM the primary: a replica is promoted in under 500 ms
    t0 = time.time()
    lead.signal(signal.SIGTERM)
    new = wait_for(lambda: next((s for s in sups if s is not lead and s.lines("promote")), None),
                   timeout=5, message="a new primary after SIGTERM")
    handover = new.times("promote")[0] - t0
    print(f"FIGURE sigterm-handover {handover * 1000:.0f} ms")
    assert handover < 0.5, f"hand-over took {handover:.3f}s\n{timeline(sups)}"
    assert lead.times("demote")[0] < new.times("promote")[0]  # fenced before
    assert int(new.lines("promote")[0][3]) > int(lead.lines("promote")[0][3])  # epoch grew
    assert lead.proc is not None and lead.proc.wait(10) == 0
    wait_for(lambda: tags(catalog).get(f"db-{new.node}") == ["primary"], timeout=5,
             message="the new primary's tag")

    # S4: SIGKILL the new primary's supervisor: the last one takes over once the dead
    # node's check turned critical (HEALTH_TTL) and the lock-delay passed
    last = next(s for s in sups if s not in (lead, new))
    t1 = time.time()
    new.signal(signal.SIGKILL)
    wait_for(lambda: last.lines("promote"), timeout=HEALTH_TTL + LOCK_DELAY + 6,
             message="failover after SIGKILL")
    failover = last.times("promote")[0] - t1
    print(f"FIGURE sigkill-failover {failover:.2f} s (check ttl {HEALTH_TTL}s, lock-delay "
          f"{LOCK_DELAY}s)")
    assert LOCK_DELAY <= failover < HEALTH_TTL + LOCK_DELAY + 3, f"failover {failover:.2f}s"
    wait_for(lambda: tags(catalog).get(f"db-{last.node}") == ["primary"], timeout=5,
             message="the last primary's tag")


@pytest.mark.timeout(90)
def test_check_stall_shorter_than_ttl_then_frozen_leader_demotes_on_resume(catalog, trio):
    sups: list[Supervisor] = trio
    for s in sups:
        s.start()
    wait_for(lambda: sorted(map(tuple, tags(catalog).values())) ==
             [("primary",), ("replica",), ("replica",)], timeout=20, message="role tags")
    (lead,) = promoted(sups)

    # S13: the leader's health check hangs for less than the check TTL: nothing happens
    stall = lead.tmp / f"{lead.node}.stall"
    stall.touch()
    time.sleep(HEALTH_TTL - 1.5)
    stall.unlink()
    # long enough for a (wrong) failover to show
    holds(lambda: promoted(sups) == [lead] and not lead.lines("demote"), LOCK_DELAY + 1.5,
          interval=0.1, message="the leader stays promoted, nobody demotes")
    assert promoted(sups) == [lead] and not lead.lines("demote")
    assert tags(catalog)[f"db-{lead.node}"] == ["primary"]

    # S7-like: freeze the leader's supervisor (SIGSTOP). Its check goes critical, its
    # session is invalidated, a replica is promoted. On SIGCONT its monotonic clock says
    # the lease is over: it demotes before doing anything as a leader.
    lead.signal(signal.SIGSTOP)
    frozen = time.time()
    new = wait_for(lambda: next((s for s in sups if s is not lead and s.lines("promote")), None),
                   timeout=HEALTH_TTL + LOCK_DELAY + 6, message="a replica promoted")
    assert not lead.lines("demote")  # it is frozen: it cannot have done anything yet
    # frozen far past its local lease (check ttl - interval - margin = 2.4 s): its session
    # is gone (check lapsed) and another member leads
    time.sleep(max(0.0, frozen + HEALTH_TTL + LOCK_DELAY + 1.0 - time.time()))
    resumed = time.time()
    lead.signal(signal.SIGCONT)
    wait_for(lambda: lead.lines("demote"), timeout=10, message="demote after resume")
    after = [r for r in lead.lines() if float(r[1]) >= resumed]
    print(f"FIGURE resume-to-demote {(float(after[0][1]) - resumed) * 1000:.0f} ms")
    assert after and after[0][0] == "demote", after  # demote first, no promote
    assert not [r for r in after if r[0] in ("promote", "elected-job")]
    assert len(promoted(sups)) == 2 and len(new.lines("promote")) == 1
    # it rejoins as a replica; the new primary keeps its tag
    wait_for(lambda: tags(catalog).get(f"db-{lead.node}") == ["replica"], timeout=15,
             message="the old primary back as replica")
    assert tags(catalog)[f"db-{new.node}"] == ["primary"]
