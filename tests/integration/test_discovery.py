"""Service registration against the real `autopilot catalog` over HTTP.

Each test drives a ServiceRegistration in-process with a real EventBus and Context and
publishes the events a job would publish."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from autopilot import events as ev
from autopilot.config.model import ElectionConfig, JobConsulConfig, TelemetryConfig
from autopilot.discovery import ServiceRegistration, components, registration
from autopilot.discovery.registration import ConsulRefused
from autopilot.events import Event
from autopilot.logs import capture as capture_logs
from tests.helpers import stays
from tests.integration.discovery_helpers import (
    HOST,
    Recorder,
    agent_check,
    agent_services,
    job,
    make_ctx,
    until,
)

SID = f"web-{HOST}"


def run(coro):
    return asyncio.run(coro)


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_registers_on_first_healthy_then_heartbeats_and_fails_explicitly(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job(tags=["a"], meta={"v": "1"})])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            # the IP is resolved and handed to children before anything is registered
            assert ctx.child_env["CONTAINERPILOT_WEB_IP"] == "127.0.0.1"
            assert ctx.child_env["AUTOPILOT_WEB_IP"] == "127.0.0.1"
            await stays(lambda: SID not in agent_services(catalog.url), 0.3,
                        "nothing registered before the first healthy", in_thread=True)

            t0 = time.monotonic()
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="all good"))
            svc = (await until(lambda: agent_services(catalog.url).get(SID), 3,
                               message="registration"))
            took = time.monotonic() - t0
            assert took < 1.0, took
            assert (svc["Service"], svc["Address"], svc["Port"]) == ("web", "127.0.0.1", 8080)
            assert svc["Tags"] == ["a"] and svc["Meta"] == {"v": "1"}
            chk = await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                              and c["Output"] == "all good" and c, 3, message="output")
            assert chk["Status"] == "passing"
            assert ctx.facts["web"] == {"registered": True, "service_id": SID,
                                        "address": "127.0.0.1", "port": 8080}

            # a failing check turns the service critical at once (no TTL wait)
            t0 = time.monotonic()
            ctx.bus.publish(Event(ev.UNHEALTHY, "web", detail="connection refused"))
            chk = await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                              and c["Status"] == "critical" and c, 3, message="critical")
            assert time.monotonic() - t0 < 1.0
            assert chk["Output"] == "connection refused"

            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="back"))
            await until(lambda: agent_check(catalog.url, f"service:{SID}")["Status"]
                        == "passing", 3, message="passing again")

            ctx.bus.publish(Event(ev.STOPPING, "web"))
            await until(lambda: SID not in agent_services(catalog.url), 3,
                        message="deregistration")
            await until(lambda: ctx.facts["web"]["registered"] is False, 2, message="facts")
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_heartbeats_keep_the_ttl_alive_and_silence_lets_it_expire(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job(ttl=1)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            end = time.monotonic() + 2.5  # 2.5 TTLs of heartbeats every 0.3 s
            while time.monotonic() < end:
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail="ok"))
                await asyncio.sleep(0.3)
                chk = await asyncio.to_thread(agent_check, catalog.url, f"service:{SID}")
                assert chk is None or chk["Status"] == "passing"
            assert chk is not None
            t0 = time.monotonic()
            await until(lambda: agent_check(catalog.url, f"service:{SID}")["Status"]
                        == "critical", 4, message="TTL expiry")
            assert 0.3 < time.monotonic() - t0 + 0.3 < 3.5
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_initial_status_registers_at_once(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job(initial_status="warning", consul=JobConsulConfig(
            enable_tag_override=True, deregister_critical_service_after="10m"))])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            svc = await until(lambda: agent_services(catalog.url).get(SID), 3,
                              message="registration")
            assert svc["EnableTagOverride"] is True
            chk = await asyncio.to_thread(agent_check, catalog.url, f"service:{SID}")
            assert chk["Status"] == "warning"
        finally:
            await reg.stop()
        # stop() deregisters
        assert SID not in await asyncio.to_thread(agent_services, catalog.url)
        ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_catalog_restart_leads_to_reregistration(catalog_factory):
    cat = catalog_factory()

    async def scenario():
        ctx = make_ctx(cat.address, jobs=[job(ttl=10, interval=5)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="ok"))
            await until(lambda: SID in agent_services(cat.url), 3, message="registration")
            with capture_logs() as logs:
                await asyncio.to_thread(cat.kill)
                await asyncio.sleep(0.5)  # down for a moment: nothing is published
                await asyncio.to_thread(cat.start)  # same port, empty state
                t0 = time.monotonic()
                # no health event arrives in between: the periodic verification notices
                await until(lambda: SID in agent_services(cat.url), 8,
                            message="re-registration")
                took = time.monotonic() - t0
            assert took < 6.0, took
            assert any(e["event"] == "consul lost the service; registering it again"
                       for e in logs) or any(e["event"] == "consul reachable again" for e in logs)
            chk = await asyncio.to_thread(agent_check, cat.url, f"service:{SID}")
            assert chk["Status"] == "passing"  # the last known status came back with it
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_a_check_outlives_a_catalog_restart_after_a_long_outage(catalog_factory, tmp_path):
    """The catalog, down for 3.5 s, restarts with its state (the service, its check passing)
    and gives the TTL check a full TTL from then. The heartbeats must reach it within that
    TTL: a retry delay grown during the outage (it doubled up to 5 s) used to hold them
    back, the check lapsed and every session bound to it went (chaos S9: an elected
    primary deposed right after the catalog came back). The delay is now at most half
    the TTL, and ends when Consul answers again."""
    cat = catalog_factory("--data-dir", str(tmp_path / "catalog-data"))

    async def scenario():
        ctx = make_ctx(cat.address, jobs=[job(ttl=1, interval=0.2)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()

        async def checks() -> None:  # a passing health check every 0.2 s, throughout
            while True:
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail="ok"))
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(checks())
        try:
            await until(lambda: (agent_check(cat.url, f"service:{SID}") or {})
                        .get("Status") == "passing", 3, message="registration")
            await asyncio.to_thread(cat.kill)
            await asyncio.sleep(3.5)  # the converger's retries fail meanwhile
            await asyncio.to_thread(cat.start)  # same port, same state
            await stays(lambda: (agent_check(cat.url, f"service:{SID}") or {})
                        .get("Status") == "passing", 2, in_thread=True,
                        message="the check passing after the catalog came back (TTL 1 s)")
        finally:
            beating.cancel()
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_heartbeat_after_catalog_restart_reregisters_at_once(catalog_factory):
    cat = catalog_factory()

    async def scenario():
        ctx = make_ctx(cat.address, jobs=[job(ttl=30, interval=10)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        reg.verify_period = 60  # only the heartbeat can notice here
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="ok"))
            await until(lambda: SID in agent_services(cat.url), 3, message="registration")
            await asyncio.to_thread(cat.kill)
            await asyncio.to_thread(cat.start)
            t0 = time.monotonic()
            ctx.bus.publish(Event(ev.UNHEALTHY, "web", detail="still failing"))
            await until(lambda: agent_check(cat.url, f"service:{SID}"), 3,
                              message="re-registration on the failed TTL update")
            assert time.monotonic() - t0 < 2.0
            await until(lambda: agent_check(cat.url, f"service:{SID}")["Output"]
                        == "still failing", 3, message="the status sent again")
            assert agent_check(cat.url, f"service:{SID}")["Status"] == "critical"
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_maintenance_deregisters_and_next_healthy_registers_again(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job()])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web"))
            await until(lambda: SID in agent_services(catalog.url), 3, message="registration")
            ctx.bus.publish(Event(ev.ENTER_MAINTENANCE, ev.GLOBAL))
            await until(lambda: SID not in agent_services(catalog.url), 3,
                        message="deregistered in maintenance")
            ctx.bus.publish(Event(ev.HEALTHY, "web"))  # ignored while in maintenance
            await stays(lambda: SID not in agent_services(catalog.url), 0.3,
                        "nothing changed", in_thread=True)
            ctx.bus.publish(Event(ev.EXIT_MAINTENANCE, ev.GLOBAL))
            await stays(lambda: SID not in agent_services(catalog.url), 0.3,
                        "nothing changed", in_thread=True)
            ctx.bus.publish(Event(ev.HEALTHY, "web"))
            await until(lambda: SID in agent_services(catalog.url), 3,
                        message="registered after maintenance")
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_role_tags_follow_election_events(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job("db", tags=["pg"], election=ElectionConfig())])
        sid = f"db-{HOST}"
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "db"))
            await until(lambda: agent_services(catalog.url).get(sid, {}).get("Tags") == ["pg"],
                        3, message="registered without a role")
            ctx.facts["db"]["role"] = "primary"
            ctx.bus.publish(Event(ev.ELECTED, "db"))
            await until(lambda: agent_services(catalog.url)[sid]["Tags"] == ["pg", "primary"],
                        3, message="primary tag")
            ctx.facts["db"]["role"] = "replica"
            ctx.bus.publish(Event(ev.DEMOTED, "db"))
            await until(lambda: agent_services(catalog.url)[sid]["Tags"] == ["pg", "replica"],
                        3, message="replica tag")
            chk = await asyncio.to_thread(agent_check, catalog.url, f"service:{sid}")
            assert chk["Status"] == "passing"  # re-registration keeps the status
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(20)
def test_no_matching_interface_is_an_error_event_not_a_crash(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job(interfaces=["eth97", "eth98:inet6"])])
        rec = Recorder(ctx.bus)
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        with capture_logs() as logs:
            await reg.start()
            for _ in range(3):
                ctx.bus.publish(Event(ev.HEALTHY, "web"))
            await until(lambda: rec.codes("web").count(ev.ERROR) >= 1, 3, message="error event")
            await stays(lambda: rec.codes("web").count(ev.ERROR) == 1, 0.2,
                        "one error event, not one per heartbeat")
        try:
            assert rec.codes("web").count(ev.ERROR) == 1  # once, not once per heartbeat
            assert sum(e["event"].startswith("cannot advertise") for e in logs) == 1
            assert "CONTAINERPILOT_WEB_IP" not in ctx.child_env
            assert SID not in await asyncio.to_thread(agent_services, catalog.url)
            assert reg.running  # the converger is alive
        finally:
            rec.close()
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_consul_hanging_never_holds_up_events(monkeypatch):
    """A Consul that accepts connections and never answers: the bus and the desired state
    keep moving; the outage is logged once."""
    monkeypatch.setattr(registration, "CALL_TIMEOUT", 1.0)  # 5 s in production
    monkeypatch.setattr(registration, "STOP_TIMEOUT", 0.5)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    address = f"127.0.0.1:{hole.getsockname()[1]}"

    async def scenario():
        ctx = make_ctx(address, jobs=[job()])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        with capture_logs() as logs:
            await reg.start()
            t0 = time.monotonic()
            for i in range(200):
                ctx.bus.publish(Event(ev.HEALTHY if i % 2 else ev.UNHEALTHY, "web",
                                      detail=str(i)))
                await asyncio.sleep(0)
            await until(lambda: reg.wanted == ("passing", "199"), 1.0, message="the last event")
            assert reg.wanted == ("passing", "199")
            assert time.monotonic() - t0 < 1.0
            await until(lambda: not ctx.consul.reachable, 5, message="timeout noticed")
            await stays(lambda: [e["event"] for e in logs].count("consul unreachable") == 1,
                        1.0, "the outage logged once")
            await reg.stop()
        assert [e["event"] for e in logs].count("consul unreachable") == 1
        ctx.consul.close()

    try:
        run(scenario())
    finally:
        hole.close()


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_registration_waits_for_a_catalog_that_starts_late(catalog_factory, tmp_path):
    from tests.helpers import free_port

    port = free_port()

    async def scenario():
        ctx = make_ctx(f"127.0.0.1:{port}", jobs=[job()])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web"))
            await asyncio.sleep(1.0)  # refused for a while: retries back off
            cat = await asyncio.to_thread(catalog_factory, port=port)
            t0 = time.monotonic()
            await until(lambda: SID in agent_services(cat.url), 8, message="late registration")
            assert time.monotonic() - t0 < 6.0  # the backoff is capped at 5 s
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_telemetry_service_registers_itself(catalog):
    async def scenario():
        ctx = make_ctx(catalog.address, telemetry=TelemetryConfig(port=9191, interfaces=["lo"],
                                                                   tags=["t"]))
        comps = components(ctx)
        assert [c.key for c in comps] == ["service.containerpilot"]
        reg = comps[0]
        reg.heartbeat = 0.3  # 5 s in production; faster here to see heartbeats
        await reg.start()
        sid = f"containerpilot-{HOST}"
        try:
            svc = await until(lambda: agent_services(catalog.url).get(sid), 3,
                              message="telemetry service")
            from autopilot import __version__
            assert svc["Port"] == 9191 and svc["Tags"] == ["t", __version__]
            chk = await until(lambda: (c := agent_check(catalog.url, f"service:{sid}"))
                              and c["Output"] == "ok" and c, 3, message="heartbeat")
            assert chk["Status"] == "passing"
            assert reg.ttl == 15.0
        finally:
            await reg.stop()
        assert sid not in await asyncio.to_thread(agent_services, catalog.url)
        ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_acl_token(catalog_factory):
    cat = catalog_factory("--token", "s3cret")

    async def scenario():
        # the token from the environment (CONSUL_HTTP_TOKEN) overrides the config's
        ctx = make_ctx(cat.address, jobs=[job()], token="wrong",
                       environ={"CONSUL_HTTP_TOKEN": "s3cret"})
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        bad = make_ctx(cat.address, jobs=[job("other")], token="wrong")
        other = ServiceRegistration(bad, bad.config.jobs[0])
        with capture_logs() as logs:
            await other.start()
            try:
                ctx.bus.publish(Event(ev.HEALTHY, "web"))
                bad.bus.publish(Event(ev.HEALTHY, "other"))
                await until(lambda: SID in agent_services(cat.url, token="s3cret"), 3,
                            message="registration with the token")
                await until(lambda: any(e["event"] == "consul refused a service update"
                                        for e in logs), 3, message="refusal logged")
                assert f"other-{HOST}" not in await asyncio.to_thread(
                    agent_services, cat.url, "s3cret")
            finally:
                await other.stop()
                await reg.stop()
                ctx.consul.close()
                bad.consul.close()
        refusals = [e for e in logs if e["event"] == "consul refused a service update"]
        assert len(refusals) == 1 and "403" in refusals[0]["error"]

    run(scenario())


def test_consul_refused_message():
    assert str(ConsulRefused("register", 403, "Permission denied\n")) == \
        "register: 403 Permission denied"


@pytest.mark.timeout(30)
def test_heartbeat_sent_from_the_listener_that_finds_its_check_gone_reregisters(catalog):
    """A heartbeat that is only a heartbeat leaves from the bus listener (no converger
    wake-up); when Consul answers that the check is gone (404), the converger takes it
    back: it registers the service again and the heartbeat's output arrives."""
    from tests.integration.discovery_helpers import deregister

    async def scenario():
        ctx = make_ctx(catalog.address, jobs=[job(ttl=10, interval=5)])  # beat every check
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        reg.verify_period = 60  # only the heartbeat can notice here
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="ok"))
            await until(lambda: (agent_check(catalog.url, f"service:{SID}") or {})
                        .get("Output") == "ok", 3, message="registration and first output")
            await until(lambda: reg._parked is not None and reg._inflight is None, 3,
                        message="the converger parked")
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="beat 1"))
            assert reg._inflight is not None  # sent from the listener, at once
            await until(lambda: agent_check(catalog.url, f"service:{SID}")["Output"]
                        == "beat 1", 3, message="the fast heartbeat")
            await until(lambda: reg._inflight is None and reg._parked is not None, 3,
                        message="the answer taken")
            await asyncio.to_thread(deregister, catalog.url, SID)  # behind its back
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="beat 2"))
            await until(lambda: (agent_check(catalog.url, f"service:{SID}") or {})
                        .get("Output") == "beat 2", 3, message="re-registered after the 404")
            assert SID in agent_services(catalog.url)
        finally:
            await reg.stop()
            ctx.consul.close()

    run(scenario())
