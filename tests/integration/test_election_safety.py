"""Data safety at the election level (issue 16, docs/stateful.md#data-safety), driven
in-process against the real catalog process, with real hook processes: identity-checked
adoption, detach before any promotion, candidacy by position, an epoch that survives a
catalog wipe, and Consul leader elections (the catalog's no-leader fault switch)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from autopilot.aio import cancel_all
from tests.helpers import CatalogProcess
from tests.integration.test_election import (
    Member,
    hook_lines,
    key_holder,
    leaders,
    lock_value,
    run,
    until,
)


@pytest.fixture
def catalog(tmp_path: Path):
    cat = CatalogProcess(tmp_path).start()
    yield cat
    cat.kill()


def ident_hook(tmp: Path, node: str) -> list[str]:
    """Prints the node's current "data incarnation" (a file the test rewrites)."""
    return ["sh", "-c", f"cat {tmp}/ident-{node}"]


def sessions(cat: CatalogProcess) -> set[str]:
    return {s["ID"] for s in requests.get(cat.url + "/v1/session/list", timeout=5).json() or []}


def kill_election(m: Member) -> None:
    """What a SIGKILL of the supervisor leaves: nothing released, nothing destroyed."""
    m.election.closed = True


async def sigkill(m: Member) -> None:
    kill_election(m)
    await cancel_all([*m.election._tasks, m.election._keeper, m.election._main_task,
                      m.election._cleaner])


async def restart_scenario(catalog: CatalogProcess, tmp: Path, *, same_data: bool) -> None:
    for node in ("n0", "n1"):
        (tmp / f"ident-{node}").write_text(f"{node}-incarnation-1\n")
    members = [Member(catalog, node, tmp, port=7600 + i, identity=ident_hook(tmp, node))
               for i, node in enumerate(("n0", "n1"))]
    restarted: Member | None = None
    lead: Member | None = None
    try:
        for m in members:
            m.register()
            await m.start()
        for m in members:
            m.healthy()
        (lead,) = await until(lambda: leaders(members), 10, "a leader")
        other = next(m for m in members if m is not lead)
        await until(lambda: other.ctx.facts["db"].get("role") == "replica", 5, "a replica")
        held = key_holder(catalog)
        assert held is not None
        # the winner recorded its data incarnation in the lock value at promotion
        assert lock_value(held)["identity"] == f"{lead.node}-incarnation-1"
        epoch = lock_value(held)["epoch"]
        old_session = lead.election.session
        await sigkill(lead)
        if not same_data:  # the service restarted empty: a new incarnation
            (tmp / f"ident-{lead.node}").write_text(f"{lead.node}-incarnation-2\n")
        restarted = Member(catalog, lead.node, tmp, port=lead.job.port,
                           identity=ident_hook(tmp, lead.node))
        t0, wall0 = time.monotonic(), time.time()
        await restarted.start()
        restarted.healthy()
        if same_data:
            await until(lambda: restarted.election.primary, 5, "the restarted member to lead")
            assert restarted.election.session == old_session
            assert restarted.ctx.facts["db"]["epoch"] == epoch
            assert not other.codes("elected")
            return
        # a different incarnation: the old session is destroyed at once, never adopted
        await until(lambda: old_session not in sessions(catalog), 3,
                    "the old session to be destroyed")
        destroyed_after = time.monotonic() - t0
        await until(lambda: other.election.primary or restarted.election.primary, 6,
                    "a new leader")
        winner = other if other.election.primary else restarted
        assert not restarted.election.session == old_session
        new_epoch = lock_value(key_holder(catalog))["epoch"]
        assert new_epoch > epoch
        # the restarted member never resumed leadership with its old session and epoch
        # (the hook log is the node's: the killed incarnation's lines come first)
        since = [ln for ln in hook_lines(restarted.hooks) if float(ln[1]) >= wall0]
        assert all(int(ln[3]) > epoch for ln in since if ln[0] == "promote"), since
        if winner is other:
            await until(lambda: restarted.ctx.child_env.get("AUTOPILOT_LEADER_NODE")
                        == other.node, 3, "the restarted member to follow")
            # its job may still act as the old primary: fenced (the hook runs right after
            # the role is published)
            await until(lambda: [ln[0] for ln in hook_lines(restarted.hooks)
                                 if float(ln[1]) >= wall0] == ["demote"], 3,
                        "the restarted member's demote hook, and no promote")
        print(f"FIGURE identity mismatch: old session destroyed {destroyed_after:.2f}s after "
              f"the restart; new leader {winner.node} at epoch {new_epoch}")
    finally:
        for m in members:
            if m is not lead:
                await m.stop()
        if restarted is not None:
            await restarted.stop()
        if lead is not None and lead.ctx.consul is not None:
            lead.ctx.consul.close()


@pytest.mark.timeout(40)
def test_restart_with_the_same_data_resumes_leadership(catalog: CatalogProcess, tmp_path: Path):
    run(lambda: restart_scenario(catalog, tmp_path, same_data=True))


@pytest.mark.timeout(40)
def test_restart_with_lost_data_never_resumes_leadership(catalog: CatalogProcess,
                                                         tmp_path: Path):
    """Issue 16 case 1 at the election level: a killed primary restarted at once (empty)."""
    run(lambda: restart_scenario(catalog, tmp_path, same_data=False))


@pytest.mark.timeout(40)
def test_failing_identity_hook_means_no_adoption(catalog: CatalogProcess, tmp_path: Path):
    """A hook that cannot tell (service not answering) counts as a different incarnation."""
    async def scenario() -> None:
        (tmp_path / "ident-n0").write_text("a\n")
        lead = Member(catalog, "n0", tmp_path, port=7650, identity=ident_hook(tmp_path, "n0"))
        restarted: Member | None = None
        try:
            lead.register()
            await lead.start()
            lead.healthy()
            await until(lambda: lead.election.primary, 10, "a leader")
            old = lead.election.session
            await sigkill(lead)
            (tmp_path / "ident-n0").unlink()  # the hook now fails
            restarted = Member(catalog, "n0", tmp_path, port=7650,
                               identity=ident_hook(tmp_path, "n0"))
            await restarted.start()
            restarted.healthy()
            await until(lambda: old not in sessions(catalog), 3, "the old session to go")
            assert restarted.election.session != old
        finally:
            if restarted is not None:
                await restarted.stop()
            if lead.ctx.consul is not None:
                lead.ctx.consul.close()

    run(scenario)
