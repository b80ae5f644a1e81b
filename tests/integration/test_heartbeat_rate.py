"""TTL heartbeats go out as often as the TTL needs, not after every check (issue 12), while a
change of status still goes out at once. Against the real `autopilot catalog`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from autopilot import events as ev
from autopilot.discovery import ServiceRegistration
from autopilot.events import Event
from tests.integration.discovery_helpers import (
    HOST,
    Forwarder,
    agent_check,
    job,
    make_ctx,
    until,
)

SID = f"web-{HOST}"


@pytest.fixture
def wire(catalog) -> Iterator[Forwarder]:
    """A front for the catalog that sees every request the registration sends."""
    fwd = Forwarder(None, catalog.port).start()
    yield fwd
    fwd.stop()


def check_updates(fwd: Forwarder, since: int) -> list[tuple[float, str]]:
    """The check updates that went through ``fwd`` from its request number ``since`` on, as
    (when, status): what the registration sent, counted on the wire."""
    return [(t, json.loads(body)["Status"]) for t, method, path, body in fwd.requests[since:]
            if method == "PUT" and path.startswith(f"/v1/agent/check/update/service:{SID}")]


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_heartbeats_follow_the_ttl_and_status_changes_go_out_at_once(catalog, wire) -> None:
    fwd = wire  # the check updates are counted on the wire
    seen_from = [0]

    def sent() -> list[tuple[float, str]]:
        return check_updates(fwd, seen_from[0])

    async def scenario() -> None:
        ctx = make_ctx(fwd.address, jobs=[job(interval=0.2, ttl=2)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="0"))
            await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                        and c["Status"] == "passing", 5, message="registration")
            seen_from[0] = len(fwd.requests)
            t0 = time.monotonic()
            checks = 0
            while time.monotonic() - t0 < 3.0:  # a passing check every 0.2 s for 3 s
                await asyncio.sleep(0.2)
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail=str(checks)))
                checks += 1
            # ttl/2 = 1 s: one heartbeat a second or so, not one per check
            beats_sent = sent()
            assert 1 <= len(beats_sent) <= checks // 3, (len(beats_sent), checks)
            beats = [t0] + [t for t, _ in beats_sent]
            assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 2.0  # < ttl

            t1 = time.monotonic()
            ctx.bus.publish(Event(ev.UNHEALTHY, "web", detail="refused"))
            await until(lambda: agent_check(catalog.url, f"service:{SID}")["Status"]
                        == "critical", 3, message="critical")
            assert time.monotonic() - t1 < 1.0  # a change of status: at once
            # the critical update is the last one sent
            await until(lambda: (s := sent()) and s[-1][1] == "critical", 1.0,
                        message="the critical update is the last one sent")
        finally:
            await reg.stop()
            ctx.consul.close()

    asyncio.run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_job_with_an_election_beats_after_every_check(catalog, wire) -> None:
    """The leader's local lease is ``ttl - interval`` and a failover's detection is the check's
    TTL minus the gap between heartbeats: both count on one heartbeat per passing check, so a
    job with an election is not thinned to one every ttl/2 (with a 2 s TTL and checks every
    0.2 s it would beat every ~1 s, and its check could lapse 1 s after a renew, not 1.8 s)."""
    from autopilot.config.model import ElectionConfig

    fwd = wire  # the check updates are counted on the wire
    seen_from = [0]

    def sent() -> list[float]:
        return [t for t, _ in check_updates(fwd, seen_from[0])]

    async def scenario() -> None:
        ctx = make_ctx(fwd.address,
                       jobs=[job(interval=0.2, ttl=2, election=ElectionConfig())])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="0"))
            await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                        and c["Status"] == "passing", 5, message="registration")
            await asyncio.sleep(0.1)
            seen_from[0] = len(fwd.requests)
            checks = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:  # a passing check every 0.2 s for 2 s
                await asyncio.sleep(0.2)
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail=str(checks)))
                checks += 1
            await until(lambda: len(sent()) >= checks - 1, 2, message="a beat per check")
            beats = [t0, *sent()]
            # one per check: never a gap of two check intervals (0.4 s) plus scheduling
            assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 0.4 + 0.25
        finally:
            await reg.stop()
            ctx.consul.close()

    asyncio.run(scenario())
