"""TTL heartbeats go out as often as the TTL needs, not after every check (issue 12), while a
change of status still goes out at once. Against the real `autopilot catalog`."""

from __future__ import annotations

import asyncio
import time

import pytest

from autopilot import events as ev
from autopilot.discovery import ServiceRegistration
from autopilot.events import Event
from tests.integration.discovery_helpers import HOST, agent_check, job, make_ctx, until

SID = f"web-{HOST}"


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_heartbeats_follow_the_ttl_and_status_changes_go_out_at_once(catalog) -> None:
    async def scenario() -> None:
        ctx = make_ctx(catalog.address, jobs=[job(interval=0.2, ttl=2)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        sent: list[tuple[float, str]] = []
        update = reg._update

        async def counted(status: str, output: str) -> None:
            await update(status, output)
            sent.append((time.monotonic(), status))

        reg._update = counted  # type: ignore[method-assign]  # counts the real calls
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="0"))
            await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                        and c["Status"] == "passing", 5, message="registration")
            sent.clear()
            t0 = time.monotonic()
            checks = 0
            while time.monotonic() - t0 < 3.0:  # a passing check every 0.2 s for 3 s
                await asyncio.sleep(0.2)
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail=str(checks)))
                checks += 1
            # ttl/2 = 1 s: one heartbeat a second or so, not one per check
            assert 1 <= len(sent) <= checks // 3, (len(sent), checks)
            beats = [t0] + [t for t, _ in sent]
            assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 2.0  # < ttl

            t1 = time.monotonic()
            ctx.bus.publish(Event(ev.UNHEALTHY, "web", detail="refused"))
            await until(lambda: agent_check(catalog.url, f"service:{SID}")["Status"]
                        == "critical", 3, message="critical")
            assert time.monotonic() - t1 < 1.0  # a change of status: at once
            # the catalog can show the change before the converger resumes from its call
            # (and our wrapper records it): wait for that, then it must be the last update
            await until(lambda: sent and sent[-1][1] == "critical", 1.0,
                        message="the critical update is the last one sent")
        finally:
            await reg.stop()
            ctx.consul.close()

    asyncio.run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_a_job_with_an_election_beats_after_every_check(catalog) -> None:
    """The leader's local lease is ``ttl - interval`` and a failover's detection is the check's
    TTL minus the gap between heartbeats: both count on one heartbeat per passing check, so a
    job with an election is not thinned to one every ttl/2 (with a 2 s TTL and checks every
    0.2 s it would beat every ~1 s, and its check could lapse 1 s after a renew, not 1.8 s)."""
    from autopilot.config.model import ElectionConfig

    async def scenario() -> None:
        ctx = make_ctx(catalog.address,
                       jobs=[job(interval=0.2, ttl=2, election=ElectionConfig())])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        sent: list[float] = []
        update = reg._update

        async def counted(status: str, output: str) -> None:
            await update(status, output)
            sent.append(time.monotonic())

        reg._update = counted  # type: ignore[method-assign]  # counts the real calls
        await reg.start()
        try:
            ctx.bus.publish(Event(ev.HEALTHY, "web", detail="0"))
            await until(lambda: (c := agent_check(catalog.url, f"service:{SID}"))
                        and c["Status"] == "passing", 5, message="registration")
            await asyncio.sleep(0.1)
            sent.clear()
            checks = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:  # a passing check every 0.2 s for 2 s
                await asyncio.sleep(0.2)
                ctx.bus.publish(Event(ev.HEALTHY, "web", detail=str(checks)))
                checks += 1
            await until(lambda: len(sent) >= checks - 1, 2, message="a beat per check")
            beats = [t0, *sent]
            # one per check: never a gap of two check intervals (0.4 s) plus scheduling
            assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 0.4 + 0.25
        finally:
            await reg.stop()
            ctx.consul.close()

    asyncio.run(scenario())
