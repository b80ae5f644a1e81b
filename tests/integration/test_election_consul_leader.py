"""Consul electing a raft leader (issue 16, case 6), approximated in CI by the embedded
catalog's test-only switch: for N seconds every KV/session/health request answers 500
"No cluster leader" while the agent endpoints (check passes) still answer. Real catalog
process, in-process members with their check heartbeats, real hook processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests

from autopilot.config.model import HealthConfig
from tests.helpers import CatalogProcess, stays, until
from tests.integration.election_members import (
    Member,
    converged,
    hook_lines,
    key_holder,
    leaders,
    run,
)

HEALTH = HealthConfig(interval=1.0, ttl=4.0)  # lease 3 s - 0.6 s margin: 2.4 s after a renew


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AUTOPILOT_CATALOG_FAULTS", "1")
    cat = CatalogProcess(tmp_path).start()
    yield cat
    cat.kill()


def no_leader(cat: CatalogProcess, seconds: float) -> float:
    requests.put(f"{cat.url}/v1/autopilot-fault/no-leader?seconds={seconds}",
                 timeout=5).raise_for_status()
    return time.time()


async def trio(catalog: CatalogProcess, tmp: Path, **election) -> tuple[list[Member],
                                                                         list[asyncio.Task]]:
    members = [Member(catalog, f"n{i}", tmp, port=7900 + i, check_ttl="4s", health=HEALTH,
                      **election) for i in range(3)]
    beats = []
    for m in members:
        m.register()
        await m.start()
        beats.append(asyncio.create_task(m.heartbeat(1.0)))
    await converged(members)
    await asyncio.sleep(1.2)  # renewals flowing
    return members, beats


async def teardown(members: list[Member], beats: list[asyncio.Task]) -> None:
    for t in beats:
        t.cancel()
    for m in members:
        await m.stop()


@pytest.mark.timing
def test_the_fault_switch_answers_like_consul_without_a_leader(catalog: CatalogProcess):
    """The switch itself: KV and sessions refuse, the agent still answers, then all is back."""
    sid = requests.put(catalog.url + "/v1/session/create", json={"TTL": "10s"},
                       timeout=5).json()["ID"]
    no_leader(catalog, 1.0)
    r = requests.put(f"{catalog.url}/v1/session/renew/{sid}", timeout=5)
    assert (r.status_code, r.text) == (500, "No cluster leader")
    assert requests.get(catalog.url + "/v1/kv/x", timeout=5).status_code == 500
    assert requests.get(catalog.url + "/v1/agent/services", timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while requests.get(catalog.url + "/v1/kv/x", timeout=5).status_code == 500:
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.05)
    assert requests.put(f"{catalog.url}/v1/session/renew/{sid}", timeout=5).status_code == 200


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_short_consul_election_does_not_depose_a_healthy_primary(catalog: CatalogProcess,
                                                                   tmp_path: Path):
    """4 s without a Consul leader is longer than the primary's ordinary lease (2.4 s after
    its last renew) but shorter than what the session TTL guarantees (noLeaderTolerance,
    default sessionTTL - margin = 8 s): the primary stays, nobody else is promoted."""
    async def scenario() -> None:
        members, beats = await trio(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            session = lead.election.session
            t0 = no_leader(catalog, 4.0)
            # the window, then renewals flowing again: the primary holds throughout
            await stays(lambda: lead.election.primary and not lead.codes("demoted"),
                        4.0 + 2.5, "the primary stays through a short Consul election")
            assert lead.election.primary and not lead.codes("demoted"), \
                "the primary stepped down during a short Consul election"
            assert lead.election.session == session
            assert key_holder(catalog)["Session"] == session
            assert all(not m.codes("elected") or m is lead for m in members)
            assert [ln[0] for ln in hook_lines(lead.hooks)] == ["promote"]
            renewed = lead.election.lease.granted_at
            assert renewed is not None and renewed > time.monotonic() - 2.0
            print(f"FIGURE no-leader 4 s: primary {lead.node} kept its session and role "
                  f"(checked {time.time() - t0 - 4.0:.1f}s after the window)")
        finally:
            await teardown(members, beats)

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_past_its_tolerance_a_primary_steps_down_and_frees_the_lock_when_consul_is_back(
        catalog: CatalogProcess, tmp_path: Path):
    """noLeaderTolerance 3 s, 5 s without a leader: the primary fences (demote) within its
    tolerance; its release fails (no leader) and is retried, so when Consul answers again
    the lock is released at once (no lock-delay, no waiting for the old session's 2xTTL)
    and a primary is back within about a second."""
    async def scenario() -> None:
        members, beats = await trio(catalog, tmp_path, no_leader_tolerance=3.0)
        try:
            (lead,) = leaders(members)
            old = lead.election.session
            t0 = no_leader(catalog, 5.0)
            await until(lambda: lead.codes("demoted"), 5, "the primary to step down")
            demoted = lead.codes("demoted")[0] - t0
            assert demoted < 3.5, f"stepped down {demoted:.2f}s into the window"
            await until(lambda: any(m.election.primary for m in members), 10,
                        "a primary after the Consul election")
            back = time.time() - (t0 + 5.0)
            sessions = {s["ID"] for s in requests.get(catalog.url + "/v1/session/list",
                                                      timeout=5).json() or []}
            assert old not in sessions, "the stepped-down primary's session still lives"
            (new,) = leaders(members)
            promote = [float(ln[1]) for ln in hook_lines(new.hooks) if ln[0] == "promote"][-1]
            demote = [float(ln[1]) for ln in hook_lines(lead.hooks) if ln[0] == "demote"][0]
            assert demote < promote
            print(f"FIGURE no-leader 5 s, tolerance 3 s: demoted {demoted:.2f}s into the "
                  f"window, a primary ({new.node}) {back:.2f}s after Consul answered again")
            assert back < 2.5, f"no primary for {back:.2f}s after Consul answered again"
        finally:
            await teardown(members, beats)

    run(scenario)
