"""Watches against the real `autopilot catalog`: blocking queries, edge semantics, KV, errors."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator

import pytest
import requests

from autopilot import events as ev
from autopilot.config.model import WatchConfig
from autopilot.context import Context
from autopilot.discovery import Watch, components
from tests.helpers import stays
from tests.integration.discovery_helpers import (
    Recorder,
    deregister,
    make_ctx,
    put_service,
    set_check,
    until,
)


def run(coro):
    return asyncio.run(coro)


#: a short blocking wait in tests: the catalog's shutdown waits for parked queries
TEST_WAIT = 1.0


async def started(watch: Watch) -> None:
    """The watch has had its first answer (and is now parked in a blocking query)."""
    await until(lambda: watch.index > 0, 5, message="first answer")


@contextlib.asynccontextmanager
async def running_watch(ctx: Context) -> AsyncIterator[tuple[Watch, Recorder, Context]]:
    """Start the context's one watch with a recorder on the bus; past its first answer."""
    [watch] = components(ctx)
    watch.wait = TEST_WAIT
    rec = Recorder(ctx.bus)
    await watch.start()
    try:
        await started(watch)
        yield watch, rec, ctx
    finally:
        rec.close()
        await watch.stop()
        ctx.consul.close()


@pytest.mark.timeout(40)
def test_service_watch_reacts_within_100ms_with_cp_edge_semantics(catalog_factory):
    # output-only check updates reach the catalog at once (Consul defers them by its
    # check_update_interval), so the heartbeat below bumps the index
    catalog = catalog_factory("--check-update-interval", "0s")
    url = catalog.url

    async def scenario():
        cfg = WatchConfig(name="db", interval=10)
        async with running_watch(make_ctx(catalog.address, watches=[cfg])) as (watch, rec, ctx):
            await stays(lambda: rec.codes("watch.db") == [], 0.2,
                        "a first answer with 0 instances: no change")

            delays = []
            for i in range(5):
                t0 = time.monotonic()
                await asyncio.to_thread(put_service, url, "db", f"db{i}", 5000 + i)
                t = await until(lambda t0=t0: rec.first(ev.CHANGED, "watch.db", t0), 2,
                                interval=0.005, message="changed")
                delays.append(t - t0)
                assert watch.instances == i + 1
            t0 = time.monotonic()
            await asyncio.to_thread(set_check, url, "db0", "critical", "down")
            t = await until(lambda: rec.first(ev.CHANGED, "watch.db", t0), 2, interval=0.005,
                            message="changed on critical")
            delays.append(t - t0)
            assert watch.instances == 4
            assert statistics.median(delays) < 0.1, delays
            assert max(delays) < 0.5, delays
            assert rec.codes("watch.db") == [ev.CHANGED, ev.HEALTHY] * 6

            # a heartbeat (same status, new output) changes the index, not the instances
            n = len(rec.events)
            index = watch.index
            await asyncio.to_thread(set_check, url, "db1", "passing", "new output")
            await until(lambda: watch.index > index, 2, message="woken by the index")
            await stays(lambda: len(rec.events) == n, 0.1, "nothing changed")

            for i in range(5):
                await asyncio.to_thread(deregister, url, f"db{i}")
            await until(lambda: rec.codes("watch.db")[-2:] == [ev.CHANGED, ev.UNHEALTHY], 2,
                        message="unhealthy when empty")
            assert watch.instances == 0

    run(scenario())


@pytest.mark.timeout(30)
def test_tag_filter(catalog):
    url = catalog.url

    async def scenario():
        cfg = WatchConfig(name="pg", interval=10, tag="primary")
        async with running_watch(make_ctx(catalog.address, watches=[cfg])) as (watch, rec, ctx):
            await asyncio.to_thread(put_service, url, "pg", "pg1", 5432, tags=["replica"])
            await asyncio.to_thread(put_service, url, "other", "o1", 1, tags=["primary"])
            await until(lambda: watch.index > 0 and requests.get(
                url + "/v1/health/service/pg", timeout=2).json(), 2, message="pg1 listed")
            await stays(lambda: rec.codes("watch.pg") == [], 0.2, "nothing changed")
            await asyncio.to_thread(put_service, url, "pg", "pg2", 5432, tags=["primary"],
                                    address="127.0.0.2")
            await until(lambda: rec.codes("watch.pg") == [ev.CHANGED, ev.HEALTHY], 2,
                        message="tagged instance")
            assert [e["Service"]["ID"] for e in watch.entries] == ["pg2"]

    run(scenario())


@pytest.mark.timeout(30)
def test_address_change_is_a_change_but_the_same_instances_are_not(catalog):
    url = catalog.url

    async def scenario():
        cfg = WatchConfig(name="app", interval=10)
        async with running_watch(make_ctx(catalog.address, watches=[cfg])) as (watch, rec, ctx):
            await asyncio.to_thread(put_service, url, "app", "a1", 80, address="10.0.0.1")
            await until(lambda: rec.codes("watch.app") == [ev.CHANGED, ev.HEALTHY], 2,
                        message="first instance")
            # re-registering the same definition: new index, same (address, port)
            index = watch.index
            await asyncio.to_thread(put_service, url, "app", "a1", 80, address="10.0.0.1",
                                    tags=["x"])
            await until(lambda: watch.index > index, 2, message="woken")
            await stays(lambda: len(rec.codes("watch.app")) == 2, 0.1, "nothing changed")
            await asyncio.to_thread(put_service, url, "app", "a1", 80, address="10.0.0.2")
            await until(lambda: len(rec.codes("watch.app")) == 4, 2, message="address change")

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_kv_key_watch(catalog):
    url = catalog.url

    async def scenario():
        cfg = WatchConfig(name="flag", interval=10, kind="key", key="config/flag")
        async with running_watch(make_ctx(catalog.address, watches=[cfg])) as (watch, rec, ctx):
            await stays(lambda: rec.codes("watch.flag") == [], 0.1, "absent at first: no change")

            async def put(value: str) -> float:
                t0 = time.monotonic()
                await asyncio.to_thread(lambda: requests.put(
                    url + "/v1/kv/config/flag", data=value, timeout=2).raise_for_status())
                return t0

            t0 = await put("on")
            t = await until(lambda: rec.first(ev.CHANGED, "watch.flag", t0), 2, interval=0.005,
                            message="created")
            assert t - t0 < 0.2
            assert rec.codes("watch.flag") == [ev.CHANGED, ev.HEALTHY]
            assert watch.instances == 1
            await put("off")  # new value
            await until(lambda: len(rec.codes("watch.flag")) == 4, 2, message="modified")
            await put("off")  # same value, new ModifyIndex: still a change
            await until(lambda: len(rec.codes("watch.flag")) == 6, 2, message="rewritten")
            # a write elsewhere wakes nothing here
            await asyncio.to_thread(lambda: requests.put(
                url + "/v1/kv/config/other", data="x", timeout=2).raise_for_status())
            await stays(lambda: len(rec.codes("watch.flag")) == 6, 0.2, "nothing changed")
            await asyncio.to_thread(lambda: requests.delete(
                url + "/v1/kv/config/flag", timeout=2).raise_for_status())
            await until(lambda: rec.codes("watch.flag")[-2:] == [ev.CHANGED, ev.UNHEALTHY], 2,
                        message="deleted")
            assert watch.instances == 0

    run(scenario())


@pytest.mark.timeout(30)
def test_kv_prefix_watch(catalog):
    url = catalog.url

    async def scenario():
        cfg = WatchConfig(name="members", interval=10, kind="keyprefix", key="cluster/")
        async with running_watch(make_ctx(catalog.address, watches=[cfg])) as (watch, rec, ctx):
            for k in ("cluster/a", "cluster/b"):
                await asyncio.to_thread(lambda k=k: requests.put(
                    url + "/v1/kv/" + k, data="1", timeout=2).raise_for_status())
            await until(lambda: watch.instances == 2, 2, message="two keys")
            assert rec.codes("watch.members")[:2] == [ev.CHANGED, ev.HEALTHY]
            n = len(rec.codes("watch.members"))
            await asyncio.to_thread(lambda: requests.put(
                url + "/v1/kv/cluster/a", data="2", timeout=2).raise_for_status())
            await until(lambda: len(rec.codes("watch.members")) == n + 2, 2,
                        message="value change under the prefix")
            await asyncio.to_thread(lambda: requests.delete(
                url + "/v1/kv/cluster/?recurse", timeout=2).raise_for_status())
            await until(lambda: rec.codes("watch.members")[-2:] == [ev.CHANGED, ev.UNHEALTHY],
                        2, message="all gone")

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_errors_emit_nothing_then_polling_recovers(catalog_factory):
    cat = catalog_factory()

    async def scenario():
        cfg = WatchConfig(name="db", interval=1)
        async with running_watch(make_ctx(cat.address, watches=[cfg])) as (watch, rec, ctx):
            await asyncio.to_thread(put_service, cat.url, "db", "db1", 1)
            await until(lambda: watch.instances == 1, 2, message="one instance")
            n = len(rec.events)
            await asyncio.to_thread(cat.kill)
            await until(lambda: watch.failing, 10, message="the failure noticed")
            await stays(lambda: len(rec.events) == n, 1.5, "errors publish nothing")
            await asyncio.to_thread(cat.start)  # back, empty: db1 is gone
            await until(lambda: not watch.failing, 5, message="recovered by polling")
            await until(lambda: rec.codes("watch.db")[-2:] == [ev.CHANGED, ev.UNHEALTHY], 2,
                        message="the outage's change")
            # and blocking queries again: a change shows up fast
            t0 = time.monotonic()
            await asyncio.to_thread(put_service, cat.url, "db", "db2", 2)
            t = await until(lambda: rec.first(ev.HEALTHY, "watch.db", t0), 3, interval=0.005,
                            message="change after recovery")
            assert t - t0 < 0.5

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_polling_mode_is_containerpilots_model(catalog):
    """blocking=False: the first poll after one interval, changes seen only on polls."""
    url = catalog.url

    async def scenario():
        ctx = make_ctx(catalog.address, watches=[WatchConfig(name="db", interval=1)])
        watch = Watch(ctx, ctx.config.watches[0], blocking=False)
        rec = Recorder(ctx.bus)
        await asyncio.to_thread(put_service, url, "db", "db1", 1)
        t0 = time.monotonic()
        await watch.start()
        try:
            t = await until(lambda: rec.first(ev.CHANGED, "watch.db"), 3, message="first poll")
            assert 0.9 < t - t0 < 2.0
        finally:
            rec.close()
            await watch.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_dc_is_passed_to_consul(catalog):
    url = catalog.url

    async def scenario():
        ctx = make_ctx(catalog.address, watches=[
            WatchConfig(name="db", interval=1, dc="dc1"),
            WatchConfig(name="db", interval=1, dc="nowhere")])
        here, there = components(ctx)
        rec = Recorder(ctx.bus)
        for w in (here, there):
            w.wait = TEST_WAIT
            await w.start()
        try:
            await started(here)
            await asyncio.to_thread(put_service, url, "db", "db1", 1)
            await until(lambda: here.instances == 1, 2, message="the local datacenter")
            await until(lambda: there.failing, 3, message="an unknown datacenter fails")
            assert there.instances == 0 and there.index == 0
        finally:
            rec.close()
            for w in (here, there):
                await w.stop()
            ctx.consul.close()

    run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(40)
def test_long_poll_is_abandoned_when_consul_goes_silent(catalog, monkeypatch):
    """A partition that drops packets: the watch's long poll would hang until its timeout
    (wait + wait/16 + 5 s). As soon as any call finds Consul unreachable (here a heartbeat
    timing out), the watch leaves the long poll and polls at `interval`; after the partition
    it publishes what changed meanwhile."""
    from autopilot import events
    from autopilot.discovery import ServiceRegistration, registration
    from tests.integration.discovery_helpers import Forwarder, job

    monkeypatch.setattr(registration, "CALL_TIMEOUT", 1.0)
    fwd = Forwarder(None, catalog.port).start()

    async def scenario():
        ctx = make_ctx(fwd.address, jobs=[job()],
                       watches=[WatchConfig(name="db", interval=1)])
        reg = ServiceRegistration(ctx, ctx.config.jobs[0])
        watch = Watch(ctx, ctx.config.watches[0])  # production wait: 30 s
        rec = Recorder(ctx.bus)
        await reg.start()
        await watch.start()
        try:
            await started(watch)
            ctx.bus.publish(events.Event(ev.HEALTHY, "web"))
            await until(lambda: reg.registered, 3, message="registered")
            fwd.freeze()
            t0 = time.monotonic()
            ctx.bus.publish(events.Event(ev.HEALTHY, "web"))  # this heartbeat times out
            await until(lambda: watch.failing, 5, message="the watch leaves its long poll")
            assert time.monotonic() - t0 < 4.0
            watch.wait = TEST_WAIT  # for the polls after the partition (faster teardown)
            await asyncio.to_thread(put_service, catalog.url, "db", "db1", 1)  # behind the cut
            await stays(lambda: rec.codes("watch.db") == [], 0.5, "nothing changed")
            fwd.thaw()
            await until(lambda: rec.codes("watch.db") == [ev.CHANGED, ev.HEALTHY], 8,
                        message="the change made during the partition")
            await until(lambda: not watch.failing, 5, message="recovered")
        finally:
            rec.close()
            await watch.stop()
            await reg.stop()
            ctx.consul.close()
            fwd.stop()

    run(scenario())
