"""Telemetry end to end: a real `python -m autopilot run` with telemetry on loopback —
/metrics after putmetric, /status, and the Kubernetes probes following a job's health."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from autopilot.control.client import ControlError
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.timeout(60)

CONFIG = """
{
  control: {socket: "@DIR@/cp.sock"},
  jobs: [
    {name: "app", exec: ["sleep", "300"], port: 8080,
     health: {exec: ["test", "-f", "@DIR@/healthy"], interval: "300ms", ttl: 5}},
    {name: "db", exec: ["sleep", "300"],
     health: {exec: ["test", "-f", "@DIR@/db-healthy"], interval: "300ms", ttl: 5}},
  ],
  telemetry: {
    port: @PORT@, interfaces: ["static:127.0.0.1"], @READY@
    metrics: [
      {namespace: "app", subsystem: "queue", name: "depth", type: "gauge", help: "queued"},
      {name: "served", type: "counter"},
      {namespace: "app", name: "latency", type: "histogram"},
      {namespace: "app", name: "size", type: "summary"},
    ],
  },
}
"""


def start(launch: Any, ready: str = "") -> tuple[Any, str]:  # noqa: F811
    port = free_port()
    ap = launch(CONFIG.replace("@PORT@", str(port)).replace("@READY@", ready))
    url = f"http://127.0.0.1:{port}"
    ap.wait_until(lambda: requests.get(url + "/health", timeout=2).ok, message="telemetry")
    return ap, url


def code(url: str) -> int:
    return requests.get(url, timeout=5).status_code


def test_ready_follows_health_all(launch: Any, workdir: Path) -> None:  # noqa: F811
    ap, url = start(launch)
    assert code(url + "/ready") == 503  # no check has passed yet
    (workdir / "healthy").touch()
    wait_for(lambda: ap.job("app")["status"] == "healthy", message="app healthy")
    r = requests.get(url + "/ready", timeout=5)
    assert r.status_code == 503 and "db" in r.json()["reason"]  # db still unhealthy
    (workdir / "db-healthy").touch()
    wait_for(lambda: code(url + "/ready") == 200, message="ready")
    assert requests.get(url + "/ready", timeout=5).json()["jobs"] == {"app": "healthy",
                                                                       "db": "healthy"}
    (workdir / "healthy").unlink()
    wait_for(lambda: code(url + "/ready") == 503, message="not ready after app fails")
    assert code(url + "/health") == 200  # liveness does not follow the jobs
    (workdir / "healthy").touch()
    wait_for(lambda: code(url + "/ready") == 200, message="ready again")
    # maintenance drains: not ready, still alive
    ap.client().maintenance(True)
    r = requests.get(url + "/ready", timeout=5)
    assert r.status_code == 503 and "maintenance" in r.json()["reason"]
    assert code(url + "/health") == 200
    ap.client().maintenance(False)
    wait_for(lambda: code(url + "/ready") == 200, message="ready after maintenance")


def test_ready_single_job(launch: Any, workdir: Path) -> None:  # noqa: F811
    _, url = start(launch, ready='ready: {job: "db"},')
    (workdir / "healthy").touch()  # app healthy does not matter
    r = requests.get(url + "/ready", timeout=5)
    assert r.status_code == 503 and r.json()["job"] == "db"
    (workdir / "db-healthy").touch()
    wait_for(lambda: code(url + "/ready") == 200, message="db ready")


def test_health_fails_when_the_loop_stalls(launch: Any) -> None:  # noqa: F811
    ap, url = start(launch)
    ap.proc.send_signal(signal.SIGSTOP)  # the whole supervisor freezes
    try:
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(url + "/health", timeout=1)
    finally:
        ap.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: code(url + "/health") == 200, message="alive again")


def test_metrics_and_status(launch: Any, workdir: Path) -> None:  # noqa: F811
    ap, url = start(launch)
    out = ap.ctl("putmetric", "app_queue_depth=17", "__served=3", "app_latency=0.2",
                 "app_size=512")
    assert out.returncode == 0, out.stderr
    ap.client().putmetric({"served": 2})
    out = ap.ctl("putmetric", "served=-1")
    assert out.returncode == 1 and "counter" in out.stderr
    with pytest.raises(ControlError, match="unknown metric"):
        ap.client().putmetric({"unknown_thing": 1})
    text = requests.get(url + "/metrics", timeout=5).text
    for line in ("app_queue_depth 17.0", "served 5.0", "app_latency_count 1.0",
                 'app_latency_bucket{le="0.25"} 1.0', "app_size_sum 512.0",
                 "# TYPE served counter"):
        assert f"\n{line}\n" in text, line
    assert 'containerpilot_events{code="Startup",source="global"} 1.0' in text
    assert 'containerpilot_control_http_requests{code="400",path="/v3/metric"} 2.0' in text
    assert "process_resident_memory_bytes" in text
    (workdir / "healthy").touch()
    wait_for(lambda: 'containerpilot_events{code="StatusHealthy",source="app"}'
             in requests.get(url + "/metrics", timeout=5).text, message="healthy event counted")
    status = requests.get(url + "/status", timeout=5).json()
    assert list(status)[:4] == ["Version", "Jobs", "Services", "Watches"]  # CP's shape first
    assert {j["Name"]: j["Status"] for j in status["Jobs"]}["app"] == "healthy"
    assert status["Services"][0]["Name"] == "app" and status["Services"][0]["Port"] == 8080
    assert status["Pid"] == ap.proc.pid and status["Version"]
    assert requests.post(url + "/metrics", timeout=5).status_code == 405
    assert code(url + "/nothing") == 404
    # a reload that leaves telemetry alone keeps the values
    cfg = ap.config_path.read_text()
    ap.config_path.write_text(cfg.replace('"300"], port', '"301"], port'))
    ap.client().reload()
    assert "\nserved 5.0\n" in requests.get(url + "/metrics", timeout=5).text


def test_port_busy_at_start_is_retried(launch: Any, workdir: Path) -> None:  # noqa: F811
    """As ContainerPilot: the port of a predecessor still closing is waited for."""
    import socket
    import threading

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    release = threading.Timer(1.0, holder.close)
    release.start()
    try:
        ap = launch(CONFIG.replace("@PORT@", str(port)).replace("@READY@", ""), start=False)
        ap.start(wait=False)
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok,
                 timeout=15, message="telemetry after the port was freed")
        assert ap.answers()
    finally:
        release.cancel()
        holder.close()


def test_with_discovery(catalog: Any, launch: Any, workdir: Path) -> None:  # noqa: F811
    """Registrations and watches show up in /status, `ctl status` and the watch gauge.
    (`catalog` comes first so that it is torn down after autopilot has deregistered.)"""
    port = free_port()
    ap = launch(f"""
    {{
      consul: "{catalog.address}",
      control: {{socket: "@DIR@/cp.sock"}},
      jobs: [{{name: "app", exec: ["sleep", "300"], port: 8080,
               interfaces: ["static:127.0.0.1"],
               health: {{exec: ["true"], interval: "300ms", ttl: 5}}}}],
      watches: [{{name: "app", interval: 1}}],
      telemetry: {{port: {port}, interfaces: ["static:127.0.0.1"]}},
    }}
    """)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: 'containerpilot_watch_instances{service="app"} 1.0'
             in requests.get(url + "/metrics", timeout=5).text, timeout=20,
             message="the watch to see the registered app")
    services = {s["Name"]: s for s in requests.get(url + "/status", timeout=5).json()["Services"]}
    assert services["app"]["Registered"] and services["app"]["Address"] == "127.0.0.1"
    assert services["app"]["Status"] == "healthy"
    wait_for(lambda: "containerpilot" in {s["Name"] for s in
                                          requests.get(url + "/status", timeout=5).json()["Services"]},
             message="the hidden telemetry service")
    app = ap.job("app")
    assert app["registered"] is True and app["facts"]["address"] == "127.0.0.1"
    # (no keep-alive: an idle connection would hold up the catalog's shutdown)
    assert requests.get(catalog.url + "/v1/health/service/app?passing=1", timeout=5,
                        headers={"Connection": "close"}).json()


def test_ready_follows_role(catalog: Any, launch: Any, workdir: Path) -> None:  # noqa: F811
    """`ready: {role: "primary", job: "db"}`: ready once elected, not ready after stepping
    down (its health check fails), ready again when re-elected."""
    port = free_port()
    (workdir / "healthy").touch()
    ap = launch(f"""
    {{
      consul: "{catalog.address}",
      control: {{socket: "@DIR@/cp.sock"}},
      jobs: [{{name: "db", exec: ["sleep", "300"], port: 6379,
               interfaces: ["static:127.0.0.1"],
               health: {{exec: ["test", "-f", "@DIR@/healthy"], interval: "300ms", ttl: 5}},
               election: {{lockDelay: "1s"}}}}],
      telemetry: {{port: {port}, interfaces: ["static:127.0.0.1"],
                  ready: {{role: "primary", job: "db"}}}},
    }}
    """)
    url = f"http://127.0.0.1:{port}/ready"
    ap.wait_until(lambda: code(url) == 200, timeout=20, message="db elected primary: ready")
    assert requests.get(url, timeout=5).json()["holders"] == ["db"]
    assert ap.job("db")["role"] == "primary"
    (workdir / "healthy").unlink()
    ap.wait_until(lambda: code(url) == 503, timeout=20, message="not ready after stepping down")
    assert "does not hold role 'primary'" in requests.get(url, timeout=5).json()["reason"]
    assert code(url.replace("/ready", "/health")) == 200
    (workdir / "healthy").touch()
    ap.wait_until(lambda: code(url) == 200, timeout=20, message="re-elected: ready again")
