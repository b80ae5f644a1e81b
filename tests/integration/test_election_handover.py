"""Hand-over to a named successor (docs/stateful.md#hand-over-to-a-named-successor): a
primary stopping on SIGTERM runs its `successor` hook after `demote` and releases the lock
naming who takes over; that member acquires without a candidacy round, the others neither
detach nor run; if it does not take over in time, a normal candidacy follows. Driven
in-process against the real catalog process, with real hook processes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess
from tests.integration.election_members import hook
from tests.integration.test_election import hook_lines, leaders, run, until
from tests.integration.test_election_safety import (
    positioned_cluster,
    rig_positions,
    times,
)


def successor_hook(tmp: Path) -> list[str]:
    """What the test wrote in `successor` (nothing: no successor named). `cat FILE` is read
    in-process (no process start); a hook of any other form is run."""
    return ["cat", f"{tmp}/successor"]


def successor_process(tmp: Path) -> list[str]:
    """The same, as a process (a hook the election cannot read in-process)."""
    return ["sh", "-c", f"cat {tmp}/successor 2>/dev/null"]


def demote_hook(log: Path) -> list[str]:
    """Logs `demote <time> <role> <reason>`: the reason tells a hand-over from a fence."""
    return ["sh", "-c", f'echo "demote $(date +%s.%N) $AUTOPILOT_ROLE '
                        f'$AUTOPILOT_STEP_DOWN_REASON" >> {log}']


def released_value(catalog: CatalogProcess) -> dict:
    entry = requests.get(f"{catalog.url}/v1/kv/service/db/leader", timeout=2).json()[0]
    return json.loads(base64.b64decode(entry["Value"]) or b"{}")


def promote_hook(log: Path) -> list[str]:
    """The usual promote line, then `handed <from> <lsn> <members>`: what the old primary
    handed over (AUTOPILOT_HANDOVER_*), "-" where nothing came."""
    return hook(log, "promote", extra=f'echo "handed ${{AUTOPILOT_HANDOVER_FROM:--}} '
                f'${{AUTOPILOT_HANDOVER_LSN:--}} ${{AUTOPILOT_HANDOVER_MEMBERS:--}}" >> {log}; ')


async def handover_cluster(catalog: CatalogProcess, tmp: Path):
    members = await positioned_cluster(
        catalog, tmp, successor=successor_hook(tmp), candidacy_timeout=1.0)
    for m in members:
        m.election.ecfg.demote = demote_hook(m.hooks)
        m.election.ecfg.promote = promote_hook(m.hooks)
    return members


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_the_named_successor_takes_over_without_a_candidacy(catalog: CatalogProcess,
                                                             tmp_path: Path):
    """The stopping primary names the member with the LOWER position (a candidacy would
    pick the other one): the named one is promoted, nobody detaches or posts, the other
    follows it, and the demote hook was told it is a hand-over."""
    async def scenario() -> None:
        members = await handover_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            # notes before the name: handed to the successor's promote hook, and to it only
            (tmp_path / "successor").write_text(
                f"lsn=0/3000028\nmembers=a 1;b 2\n{low.sid}\n")
            wall0 = time.time()
            await lead.election.before_shutdown()
            await until(lambda: low.election.primary or high.election.primary, 5,
                        "a new primary")
            assert low.election.primary and not high.election.primary
            handed = [ln for ln in hook_lines(low.hooks) if ln[0] == "handed"]
            assert handed[-1] == ["handed", lead.sid, "0/3000028", "a", "1;b", "2"], handed
            assert released_value(catalog).get("handover") is None  # the successor's own value
            demote = next(ln for ln in hook_lines(lead.hooks) if ln[0] == "demote")
            assert demote[2:] == ["replica", "shutdown"], demote
            promote = times(low, "promote", wall0)[0]
            for m in (low, high):
                assert not times(m, "detach", wall0), f"{m.node} detached"
            posts = requests.get(f"{catalog.url}/v1/kv/service/db/leader/candidates/"
                                 f"?recurse", timeout=2)
            live = [e for e in (posts.json() if posts.status_code == 200 else [])
                    if e.get("Session") and json.loads(base64.b64decode(
                        e["Value"]) or b"{}").get("eligible", True)]
            assert not live, f"an eligible candidacy was posted: {live}"
            await until(lambda: high.ctx.child_env.get("AUTOPILOT_LEADER_NODE") == low.node,
                        3, "the other replica to follow the successor")
            gap = promote - float(demote[1])
            print(f"FIGURE hand-over to a named successor: demote -> promote "
                  f"{gap * 1000:.0f} ms")
            assert gap < 0.3, f"hand-over took {gap:.3f}s"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(60)
def test_a_successor_by_address_and_port(catalog: CatalogProcess, tmp_path: Path):
    """The hook may name the member by the address:port it registered (what a database
    sees of its standbys), or by its node name."""
    async def scenario() -> None:
        members = await handover_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            low.ctx.facts.setdefault("db", {}).update(address="127.0.0.1", port=low.job.port)
            (tmp_path / "successor").write_text(f"127.0.0.1:{low.job.port}\n")
            await lead.election.before_shutdown()
            await until(lambda: low.election.primary or high.election.primary, 5,
                        "a new primary")
            assert low.election.primary, "the member named by address:port did not win"
            # and the released value carried it (then the successor re-acquired)
            assert not high.election.primary
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_successor_that_does_not_take_over_leaves_it_to_a_candidacy(
        catalog: CatalogProcess, tmp_path: Path):
    """A successor that never acquires (here: a member that does not exist): after
    candidacyTimeout the others run a normal candidacy and the most advanced one wins."""
    async def scenario() -> None:
        members = await handover_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            for m in members:
                m.election.ecfg.successor = successor_process(tmp_path)
            (tmp_path / "successor").write_text("lsn=0/1\ndb-nobody\n")
            wall0 = time.time()
            await lead.election.before_shutdown()
            released = released_value(catalog)
            assert released.get("successor") == "db-nobody", released
            assert released.get("handover") == {"LSN": "0/1"}, released
            await until(lambda: low.election.primary or high.election.primary, 6,
                        "a new primary")
            assert high.election.primary, "the most advanced member did not win"
            # a candidacy winner is no named successor: nothing handed to its promote hook
            handed = [ln for ln in hook_lines(high.hooks) if ln[0] == "handed"]
            assert handed[-1] == ["handed", "-", "-", "-"], handed
            took = times(high, "promote", wall0)[0] - wall0
            print(f"FIGURE hand-over whose successor never came: promoted after {took:.2f}s "
                  f"(candidacyTimeout 1s)")
            assert 1.0 <= took < 3.5, took
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(60)
def test_no_successor_named_is_the_usual_candidacy(catalog: CatalogProcess, tmp_path: Path):
    """A successor hook that prints nothing: the release carries no successor, the
    followers detach and the most advanced one wins, as without the hook."""
    async def scenario() -> None:
        members = await handover_cluster(catalog, tmp_path)
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            wall0 = time.time()
            await lead.election.before_shutdown()
            await until(lambda: low.election.primary or high.election.primary, 5,
                        "a new primary")
            assert high.election.primary
            assert all(times(m, "detach", wall0) for m in (low, high)), "no detach"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


def promote_failing_once(log: Path, flag: Path) -> list[str]:
    """The usual promote line, but while ``flag`` exists the hook removes it, logs
    ``promote-failed`` and exits 1: the named successor gives up right after it acquired
    (as when its check flaps during the promotion), once."""
    return hook(log, "promote", extra=f'if [ -f {flag} ]; then rm -f {flag}; '
                f'echo "promote-failed $(date +%s.%N)" >> {log}; exit 1; fi; ')


@pytest.mark.timing
@pytest.mark.timeout(60)
@pytest.mark.parametrize("winner", ["other", "successor"])
def test_a_successor_that_gives_up_is_not_followed_by_a_wait_for_the_old_primary(
        catalog: CatalogProcess, tmp_path: Path, winner: str):
    """The named successor acquires, its promote fails and it steps down at once. The old
    primary handed over and deregistered (its supervisor stopped): nobody may wait for it
    as for a last leader that a catalog wipe made absent (3 x candidacyTimeout = 3 s here).
    ``other``: the other follower (position 5000) wins, ~candidacyTimeout after the
    successor gave up (it waits that long for the successor's post while the successor
    backs off). ``successor``: the other follower abstains; the successor itself wins as
    soon as its 2 s back-off after the failed promote ends. Both used to wait 3 s more."""
    async def scenario() -> None:
        members = await handover_cluster(catalog, tmp_path)
        stopped: list = []
        try:
            (lead,) = leaders(members)
            low, high = rig_positions(tmp_path, members, lead)
            flag = tmp_path / "fail-once"
            flag.touch()
            low.election.ecfg.promote = promote_failing_once(low.hooks, flag)
            if winner == "successor":
                (tmp_path / f"pos-{high.node}").unlink()  # high abstains
            (tmp_path / "successor").write_text(f"{low.sid}\n")
            wall0 = time.time()
            await lead.election.before_shutdown()
            # what the stopping supervisor does next: deregister its service
            requests.put(f"{catalog.url}/v1/agent/service/deregister/{lead.sid}",
                         timeout=2).raise_for_status()
            await lead.stop()
            stopped.append(lead)
            await until(lambda: [ln for ln in hook_lines(low.hooks)
                                 if ln[0] == "promote-failed"], 5, "the successor to give up")
            gave_up = float(next(ln for ln in hook_lines(low.hooks)
                                 if ln[0] == "promote-failed")[1])
            await until(lambda: low.election.primary or high.election.primary, 12,
                        "a new primary")
            new = high if winner == "other" else low
            assert new.election.primary, f"{winner} did not win"
            promote = times(new, "promote", wall0)[0]
            demote = times(lead, "demote", wall0)[0]
            assert demote < gave_up < promote
            took = promote - gave_up
            print(f"FIGURE successor gave up ({winner} wins): promoted {took:.2f}s after the "
                  f"successor's failed promote; write gap (demote -> promote) "
                  f"{promote - demote:.2f}s (candidacyTimeout 1s)")
            # other: ~1 s (the wait for the successor's post); successor: its 2 s back-off
            assert took < (2.0 if winner == "other" else 3.5), took
        finally:
            for m in members:
                if m not in stopped:
                    await m.stop()

    run(scenario)
