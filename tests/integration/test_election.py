"""Leader election driven in-process: real catalog process, real EventBus/Context, real
hook processes; the job's health is published on the bus as the job would."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from autopilot import events as ev
from autopilot.config.model import HealthConfig, JobConfig
from tests.helpers import CatalogProcess, stays, until
from tests.integration.election_members import (
    Member,
    alive,
    cluster,
    hook_lines,
    key_holder,
    leaders,
    lock_value,
    run,
    stop_all,
)


@pytest.mark.timeout(40)
def test_three_members_elect_exactly_one(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        members = await cluster(catalog, tmp_path)
        try:
            await until(lambda: leaders(members), 10, "a leader")
            await until(lambda: all(m.ctx.facts["db"].get("role") for m in members), 5, "roles")
            # nobody else may follow
            await stays(lambda: len(leaders(members)) == 1
                        and sum(len(m.codes("elected")) for m in members) == 1, 0.5,
                        "one leader, elected once")
            (lead,) = leaders(members)
            others = [m for m in members if m is not lead]
            assert len(lead.codes("elected")) == 1
            assert all(not m.codes("elected") for m in others)
            # the key names the holder and the epoch everybody sees (1: a fresh cluster)
            held = key_holder(catalog)
            assert held is not None and held["Session"] == lead.election.session
            epoch = lock_value(held)["epoch"]
            assert epoch == 1
            for m in members:
                facts = m.ctx.facts["db"]
                assert facts["role"] == ("primary" if m is lead else "replica")
                assert facts["epoch"] == epoch
                assert facts["leader"]["node"] == lead.node
                assert facts["leader"]["port"] == lead.job.port
                assert m.ctx.child_env["AUTOPILOT_ROLE"] == facts["role"]
                assert m.ctx.child_env["AUTOPILOT_LEADER_NODE"] == lead.node
                assert m.ctx.child_env["AUTOPILOT_LEADER_PORT"] == str(lead.job.port)
                assert m.ctx.child_env["AUTOPILOT_LEADER_ADDRESS"] == "127.0.0.1"
                assert m.ctx.child_env["AUTOPILOT_LEADER_EPOCH"] == str(epoch)
            for m in others:
                assert len(m.codes("leaderChanged")) == 1
            # the promote hook ran once, on the leader only, with the primary's env
            assert [ln[0] for ln in hook_lines(lead.hooks)] == ["promote"]
            assert hook_lines(lead.hooks)[0][2:] == ["primary", str(epoch), lead.node]
            assert all(not hook_lines(m.hooks) for m in others)
            # the session is bound to the service's check only: failing it invalidates it
            info = requests.get(f"{catalog.url}/v1/session/info/{lead.election.session}",
                                timeout=5).json()[0]
            assert info.get("ServiceChecks") == [{"ID": f"service:{lead.sid}", "Namespace": ""}] \
                or [c["ID"] for c in info.get("ServiceChecks") or []] == [f"service:{lead.sid}"]
            assert not info.get("NodeChecks")
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_handover_on_shutdown_under_500ms(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        members = await cluster(catalog, tmp_path)
        try:
            await until(lambda: leaders(members), 10, "a leader")
            await until(lambda: all(m.ctx.facts["db"].get("role") for m in members), 5, "roles")
            (old,) = leaders(members)
            t0 = time.time()
            await old.election.before_shutdown()  # what the supervisor awaits on SIGTERM
            new = await until(lambda: next((m for m in members if m is not old
                                            and m.codes("elected")), None), 5, "a new leader")
            took = new.codes("elected")[0] - t0
            assert took < 0.5, f"hand-over took {took:.3f}s"
            assert old.codes("demoted") and not old.election.primary
            assert old.ctx.facts["db"]["role"] == "replica"
            # fencing order: the old primary's demote hook finished before the new promote
            demote = [float(ln[1]) for ln in hook_lines(old.hooks) if ln[0] == "demote"]
            promote = [float(ln[1]) for ln in hook_lines(new.hooks) if ln[0] == "promote"]
            assert demote and promote and demote[0] < promote[0]
            # the epoch grew; the third member follows the new leader
            third = next(m for m in members if m not in (old, new))
            await until(lambda: third.ctx.child_env.get("AUTOPILOT_LEADER_NODE") == new.node,
                        2, "the replica to follow")
            assert int(third.ctx.child_env["AUTOPILOT_LEADER_EPOCH"]) > \
                int(hook_lines(old.hooks)[0][3])
            assert old.election.session is None  # destroyed
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_unhealthy_leader_steps_down_and_replica_takes_over(catalog: CatalogProcess,
                                                             tmp_path: Path):
    async def scenario() -> None:
        members = await cluster(catalog, tmp_path, n=2)
        try:
            (lead,) = await until(lambda: leaders(members), 10, "a leader")
            other = next(m for m in members if m is not lead)
            t0 = time.time()
            lead.unhealthy()
            await until(lambda: other.election.primary, 5, "the replica to take over")
            assert lead.codes("demoted") and lead.codes("demoted")[0] >= t0
            assert not lead.election.primary and lead.election.session is None
            # the invalidated session's lock-delay applies (1 s), unless released first
            demote = [float(ln[1]) for ln in hook_lines(lead.hooks) if ln[0] == "demote"]
            promote = [float(ln[1]) for ln in hook_lines(other.hooks) if ln[0] == "promote"]
            assert demote[0] < promote[0]
            # an unhealthy member does not run: it stays replica while its check fails
            await stays(lambda: not lead.election.primary and lead.election.session is None, 1.5,
                        "nothing changed")
            # healthy again: it becomes a candidate (a session) but the lock stays put
            lead.check("pass")
            lead.healthy()
            await until(lambda: lead.election.session, 5, "a new session")
            await stays(lambda: other.election.primary and not lead.election.primary, 0.5,
                        "nothing changed")
            assert lead.ctx.facts["db"]["role"] == "replica"
        finally:
            for m in members:
                await m.stop()

    run(scenario)


@pytest.mark.timeout(40)
def test_promote_failure_releases_and_another_wins(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        bad = Member(catalog, "bad", tmp_path, port=7100, hook_timeout=1.0,
                     promote=["sh", "-c", f"sleep 30 & echo $! > {tmp_path}/bad-promote; wait"])
        good = Member(catalog, "good", tmp_path, port=7101)
        try:
            bad.register()
            await bad.start()
            bad.healthy()
            # bad wins alone; its hanging promote hook is killed at hook_timeout
            await until(lambda: (tmp_path / "bad-promote").exists()
                        and (tmp_path / "bad-promote").read_text().strip(), 5, "bad's promote")
            good.register()
            await good.start()
            good.healthy()
            await until(lambda: good.election.primary, 8, "good to win after bad steps down")
            assert not bad.codes("elected") and not bad.election.primary
            # the hook's process group is gone (killed), not left acting as primary
            orphan = int((tmp_path / "bad-promote").read_text())
            await until(lambda: not alive(orphan), 3, "the hook's child to be killed")
            assert [ln[0] for ln in hook_lines(bad.hooks)] == ["demote"]
        finally:
            for m in (bad, good):
                await m.stop()

    run(scenario)


@pytest.mark.timeout(40)
def test_restarted_supervisor_resumes_its_leadership(catalog: CatalogProcess, tmp_path: Path):
    """S14: the supervisor dies (no hand-over) and comes back while its job and check live
    on: it adopts its previous session (same epoch) instead of causing a failover."""
    async def scenario() -> None:
        members = await cluster(catalog, tmp_path, n=2)
        restarted: Member | None = None
        try:
            (lead,) = await until(lambda: leaders(members), 10, "a leader")
            other = next(m for m in members if m is not lead)
            await until(lambda: other.ctx.facts["db"].get("role") == "replica", 5, "replica")
            epoch = lead.ctx.facts["db"]["epoch"]
            old_session = lead.election.session
            lead.crash()  # "SIGKILL": nothing is released or destroyed
            restarted = Member(catalog, lead.node, tmp_path, port=lead.job.port)
            await restarted.start()
            restarted.healthy()
            await until(lambda: restarted.election.primary, 5, "the restarted member to lead")
            assert restarted.election.session == old_session
            assert restarted.ctx.facts["db"]["epoch"] == epoch
            assert not restarted.codes("leaderChanged")  # never announced itself a replica
            await stays(lambda: not other.codes("elected")
                        and len(other.codes("leaderChanged")) == 1, 0.3, "nothing changed")
            assert key_holder(catalog)["Session"] == old_session
            # the adopted session is renewed by its new owner
            first = restarted.election.lease.deadline
            await until(lambda: restarted.election.lease.deadline != first,
                        restarted.election.renew_interval + 2, "a renewal")
            assert restarted.election.primary
        finally:
            await stop_all(*members, restarted)

    run(scenario)


class Blackhole:
    """A TCP proxy to the catalog that can be cut: afterwards nothing gets through in
    either direction (connections hang, like packets dropped by a partition)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut_event = threading.Event()
        self.closed = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        socks: list[socket.socket] = [self.listener]
        while not self.closed.is_set():
            for key, _ in self.sel.select(timeout=0.05):
                if key.data is None:
                    client, _ = self.listener.accept()
                    socks.append(client)
                    if self.cut_event.is_set():
                        continue  # accepted, never answered
                    upstream = socket.create_connection(self.target)
                    socks.append(upstream)
                    self.sel.register(client, selectors.EVENT_READ, upstream)
                    self.sel.register(upstream, selectors.EVENT_READ, client)
                    continue
                src, dst = key.fileobj, key.data
                try:
                    data = src.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if self.cut_event.is_set():
                    continue  # dropped
                if not data:
                    for sk in (src, dst):
                        try:
                            self.sel.unregister(sk)
                        except (KeyError, ValueError):
                            pass
                        sk.close()  # type: ignore[union-attr]
                    continue
                try:
                    dst.sendall(data)
                except OSError:
                    pass
        for sk in socks:
            sk.close()

    def cut(self) -> None:
        self.cut_event.set()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)


@pytest.mark.timeout(60)
def test_partitioned_leader_demotes_before_anyone_else_is_promoted(catalog: CatalogProcess,
                                                                   tmp_path: Path):
    """S7: the primary loses the catalog (its heartbeats and renews stop getting through);
    its check lapses after the check TTL, its session goes, and after the lock-delay a
    replica may win. The primary's local lease (shortened to the check TTL) ends first, so
    its demote hook has finished before the replica's promote hook starts (I1)."""
    async def scenario() -> None:
        health = HealthConfig(interval=1.0, ttl=4.0)
        proxy = Blackhole(("127.0.0.1", catalog.port))
        lead = Member(catalog, "cut", tmp_path, port=7200, check_ttl="4s",
                      address=proxy.address, health=health)
        other = Member(catalog, "ok", tmp_path, port=7201, check_ttl="4s", health=health)
        beats: list[asyncio.Task] = []
        try:
            lead.register()
            await lead.start()
            beats.append(asyncio.create_task(lead.heartbeat(1.0)))
            await until(lambda: lead.election.primary, 10, "the first leader")
            other.register()
            await other.start()
            beats.append(asyncio.create_task(other.heartbeat(1.0)))
            await until(lambda: other.ctx.facts["db"].get("role") == "replica", 5, "replica")
            await asyncio.sleep(1.5)  # renews and passes flowing
            cut_at = time.time()
            proxy.cut()
            await until(lambda: other.election.primary, 15, "the replica to take over")
            demote = [float(ln[1]) for ln in hook_lines(lead.hooks) if ln[0] == "demote"]
            promote = [float(ln[1]) for ln in hook_lines(other.hooks) if ln[0] == "promote"]
            print(f"FIGURE partition: demoted after {demote[0] - cut_at:.2f}s, "
                  f"replica promoted after {promote[0] - cut_at:.2f}s")
            assert lead.codes("demoted") and demote[0] < promote[0]
            assert not lead.election.primary
        finally:
            for t in beats:
                t.cancel()
            proxy.close()
            for m in (lead, other):
                await m.stop()

    run(scenario)


def test_lease_arithmetic_and_late_renewals():
    """The local lease: from the moment a renew was sent; a late answer revives nothing."""
    from autopilot.election.election import lease_length
    from autopilot.election.lease import Lease

    now = [100.0]
    lease = Lease(10.0, margin=2.0, clock=lambda: now[0])
    assert not lease.valid() and lease.remaining() == 0.0
    assert lease.start(sent_at=99.5)
    assert lease.deadline == 107.5 and lease.valid()
    now[0] = 103.0
    assert lease.grant(sent_at=102.0) and lease.deadline == 110.0
    now[0] = 110.0  # the deadline passes (a freeze, a hung renew)...
    assert not lease.valid()
    assert not lease.grant(sent_at=104.0)  # ...an answer arriving now does not count
    # the check's TTL shortens the lease: the catalog drops the session with the check
    job = JobConfig(name="db", health=HealthConfig(interval=1.0, ttl=4.0))
    assert lease_length(10.0, job) == 3.0
    assert lease_length(10.0, JobConfig(name="db")) == 10.0
    assert lease_length(10.0, JobConfig(name="db", health=HealthConfig(interval=2, ttl=30))) == 10


@pytest.mark.timeout(40)
def test_no_election_without_catalog_then_one_when_it_is_back(tmp_path: Path):
    """S9: with the catalog down nobody is promoted (and nothing crashes); once it is back,
    the members elect one leader by themselves."""
    async def scenario() -> None:
        cat = CatalogProcess(tmp_path)  # its port, not listening yet
        members = [Member(cat, f"n{i}", tmp_path, port=7400 + i) for i in range(2)]
        try:
            for m in members:
                await m.start()
                m.healthy()  # the job is healthy; the catalog is not there
            await stays(lambda: not leaders(members)
                        and not any(m.codes("elected") for m in members), 1.5, "no leader")
            assert all(m.election.session is None for m in members)
            await asyncio.to_thread(cat.start)
            for m in members:
                m.register()
                m.healthy()
            await until(lambda: leaders(members), 10, "a leader once the catalog is back")
            await stays(lambda: len(leaders(members)) == 1, 0.3, "nothing changed")
        finally:
            for m in members:
                await m.stop()
            cat.kill()

    run(scenario)


@pytest.mark.timeout(40)
def test_restarted_former_primary_fences_when_another_member_wins(catalog: CatalogProcess,
                                                                 tmp_path: Path):
    """S11/S14: a supervisor comes back unhealthy after a crash; its previous session goes
    and another member wins. Its job may still act as the old primary: it runs `demote`
    before following the new leader."""
    async def scenario() -> None:
        members = await cluster(catalog, tmp_path, n=2)
        restarted: Member | None = None
        try:
            (lead,) = await until(lambda: leaders(members), 10, "a leader")
            other = next(m for m in members if m is not lead)
            old_session = lead.election.session
            lead.crash()  # "SIGKILL"
            restarted = Member(catalog, lead.node, tmp_path, port=lead.job.port)
            await restarted.start()
            restarted.ctx.bus.publish(ev.Event(ev.UNHEALTHY, "db"))  # not fit to adopt
            await until(lambda: restarted.election.watch_ok, 5, "the restarted member's watch")
            await stays(lambda: not restarted.election.primary, 0.3, "nothing changed")
            requests.put(f"{catalog.url}/v1/session/destroy/{old_session}", timeout=5)
            await until(lambda: other.election.primary, 5, "the other member to win")
            await until(lambda: [ln for ln in hook_lines(restarted.hooks) if ln[0] == "demote"],
                        5, "the restarted member's demote hook")
            assert restarted.ctx.facts["db"]["role"] == "replica"
            assert restarted.ctx.child_env["AUTOPILOT_LEADER_NODE"] == other.node
            demote = [float(ln[1]) for ln in hook_lines(restarted.hooks) if ln[0] == "demote"]
            assert len(demote) == 1 and not restarted.codes("elected")
        finally:
            await stop_all(*members, restarted)

    run(scenario)
