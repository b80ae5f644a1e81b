"""Telemetry's HTTP endpoints and probe rules, with a real server on loopback and the
supervisor stand-in of test_control_server (the integration tests use a real autopilot)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from autopilot import telemetry
from autopilot.config.model import (
    Config,
    ConfigError,
    HealthConfig,
    JobConfig,
    MetricConfig,
    ReadinessConfig,
    TelemetryConfig,
    WatchConfig,
)
from autopilot.context import Context
from autopilot.events import Event, EventBus
from autopilot.telemetry import Telemetry, readiness, rename_counters
from tests.helpers import free_port, wait_for
from tests.unit.control_standins import LoopThread, StandInJob, StandInSupervisor

pytestmark = pytest.mark.timeout(30)


class FakeWatch:
    """What telemetry reads from a discovery watch component: cfg.name and instances."""

    def __init__(self, name: str, instances: int) -> None:
        self.cfg = WatchConfig(name=name, interval=1)
        self.instances = instances


def build(ready: ReadinessConfig | None = None, metrics: list[MetricConfig] | None = None
          ) -> StandInSupervisor:
    port = free_port()
    config = Config(
        jobs=[JobConfig(name="db", exec=["x"], port=5432,
                        health=HealthConfig(exec=["true"], interval=1, ttl=5)),
              JobConfig(name="web", exec=["x"], port=80,
                        health=HealthConfig(exec=["true"], interval=1, ttl=5)),
              JobConfig(name="sidecar", exec=["x"])],
        watches=[WatchConfig(name="upstream", interval=1)],
        telemetry=TelemetryConfig(port=port, interfaces=["static:127.0.0.1"],
                                  ready=ready or ReadinessConfig(), metrics=metrics or []),
    )
    ctx = Context(config, EventBus())
    sup = StandInSupervisor(ctx)
    for j in config.jobs:
        sup.jobs[j.name] = StandInJob(j.name, j, status="healthy", pid=42)
    sup.components = [FakeWatch("upstream", 3)]  # type: ignore[attr-defined]
    ctx.facts["db"] = {"registered": True, "address": "10.1.1.1", "port": 5432,
                       "service_id": "db-h", "role": "replica"}
    return sup


@pytest.fixture
def running() -> Iterator[tuple[LoopThread, StandInSupervisor, str]]:
    lt = LoopThread()
    sup = build(metrics=[MetricConfig(namespace="app", name="hits", type="counter"),
                         MetricConfig(name="lat", type="summary")])
    tel = Telemetry(sup.ctx, sup)
    sup.telemetry = tel
    lt.run(tel.start())
    yield lt, sup, f"http://127.0.0.1:{tel.port}"
    lt.run(tel.stop())
    lt.close()


def test_metrics_endpoint(running: tuple[LoopThread, StandInSupervisor, str]) -> None:
    lt, sup, url = running
    sup.put_metric("app__hits", 40)  # ContainerPilot's key, empty subsystem included
    sup.put_metric("app_hits", 2)  # the exposed name is accepted too
    sup.put_metric("lat", 0.25)

    async def publish() -> None:  # the bus is published on from the loop thread only
        sup.ctx.bus.publish(Event("exitFailed", "web"))
        sup.ctx.bus.publish(Event("metric", "x|1"))

    lt.run(publish())
    r = requests.get(url + "/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert "\napp_hits 42.0\n" in text and "# TYPE app_hits counter" in text
    assert "lat_count 1.0" in text and "lat_sum 0.25" in text
    assert 'containerpilot_events{code="ExitFailed",source="web"} 1.0' in text
    assert 'code="Metric"' not in text  # as ContainerPilot: metric events are not counted
    assert 'containerpilot_watch_instances{service="upstream"} 3.0' in text
    assert "process_resident_memory_bytes" in text
    assert "_created" not in text


def test_status_endpoint(running: tuple[LoopThread, StandInSupervisor, str]) -> None:
    _, sup, url = running
    body = requests.get(url + "/status", timeout=5).json()
    assert {"Version", "Jobs", "Services", "Watches"} <= set(body)
    assert {"Name": "sidecar", "Status": "healthy", "Pid": 42} in body["Jobs"]
    db = next(s for s in body["Services"] if s["Name"] == "db")
    assert db["Address"] == "10.1.1.1" and db["Port"] == 5432 and db["Role"] == "replica"
    assert body["Watches"] == ["upstream"]
    assert requests.post(url + "/status", timeout=5).status_code == 405


def test_health_and_ready_endpoints(running: tuple[LoopThread, StandInSupervisor, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lt, sup, url = running
    r = requests.get(url + "/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert requests.get(url + "/ready", timeout=5).status_code == 200
    sup.jobs["web"].status = "unhealthy"
    r = requests.get(url + "/ready", timeout=5)
    assert r.status_code == 503 and "web (unhealthy)" in r.json()["reason"]
    sup.jobs["web"].status = "healthy"
    assert requests.get(url + "/ready", timeout=5).status_code == 200
    # the loop misses its beats: the next beat comes a minute late, and 0.5 s is the limit
    monkeypatch.setattr(telemetry, "HEARTBEAT", 60.0)
    monkeypatch.setattr(telemetry, "STALE_AFTER", 0.5)
    wait_for(lambda: requests.get(url + "/health", timeout=5).status_code == 503, timeout=5,
             message="/health to notice the missed beats")
    r = requests.get(url + "/health", timeout=5)
    assert r.status_code == 503 and "heartbeat" in r.json()["reason"]


def test_heartbeat_keeps_health_fresh(running: tuple[LoopThread, StandInSupervisor, str]) -> None:
    """/health's heartbeat_age grows between beats and drops back at each beat."""
    _, _, url = running
    last = [requests.get(url + "/health", timeout=5).json()["heartbeat_age"]]

    def beat_seen() -> bool:
        age = requests.get(url + "/health", timeout=5).json()["heartbeat_age"]
        dropped, last[0] = age < last[0], age
        return dropped

    wait_for(beat_seen, timeout=5, message="a heartbeat")


def test_ready_rules() -> None:
    sup = build()
    ok, body = readiness(sup, "all", None, None)
    assert ok and body["jobs"] == {"db": "healthy", "web": "healthy"}  # sidecar has no check
    sup.jobs["sidecar"].status = "unhealthy"
    assert readiness(sup, "all", None, None)[0]
    sup.maintenance = True
    ok, body = readiness(sup, "all", None, None)
    assert not ok and "maintenance" in body["reason"]
    sup.maintenance = False
    sup.shutting_down = True  # type: ignore[attr-defined]
    ok, body = readiness(sup, "all", None, None)
    assert not ok and "shutting down" in body["reason"]
    sup.shutting_down = False  # type: ignore[attr-defined]
    ok, body = readiness(sup, "job", "sidecar", None)
    assert ok  # no health check: running is enough
    sup.jobs["sidecar"].pid = None
    assert not readiness(sup, "job", "sidecar", None)[0]
    assert not readiness(sup, "job", "nope", None)[0]
    ok, body = readiness(sup, "role", "db", "primary")
    assert not ok and "current role: replica" in body["reason"]
    sup.ctx.facts["db"]["role"] = "primary"
    assert readiness(sup, "role", "db", "primary")[0]
    assert readiness(sup, "role", None, "primary")[1]["holders"] == ["db"]


def test_bad_metrics_config_is_a_config_error() -> None:
    sup = build(metrics=[MetricConfig(name="bad-name", type="counter")])
    with pytest.raises(ConfigError, match="bad-name"):
        Telemetry(sup.ctx, sup)
    sup = build(metrics=[MetricConfig(name="a", type="gauge"), MetricConfig(name="a", type="gauge")])
    with pytest.raises(ConfigError):
        Telemetry(sup.ctx, sup)


def test_rename_counters() -> None:
    text = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"1\"} 2.0\na_totalx 1\n"
    assert rename_counters(text, {"a_total": "a"}) == (
        "# HELP a x\n# TYPE a counter\na{l=\"1\"} 2.0\na_totalx 1\n")


def test_busy_port_fails_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the retries start() fails; the component says it is fatal, so at startup the
    supervisor exits (an autopilot without its telemetry port must not run)."""
    import socket

    import autopilot.telemetry as telemetry_mod

    monkeypatch.setattr(telemetry_mod, "BIND_ATTEMPTS", 2)
    monkeypatch.setattr(telemetry_mod, "BIND_PAUSE", 0.01)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    lt = LoopThread()
    try:
        sup = build()
        sup.ctx.config.telemetry.port = holder.getsockname()[1]
        tel = Telemetry(sup.ctx, sup)
        assert tel.fatal is True
        with pytest.raises(OSError, match="cannot listen"):
            lt.run(tel.start())
    finally:
        holder.close()
        lt.close()
