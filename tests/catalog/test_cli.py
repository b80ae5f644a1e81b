"""The `autopilot catalog` command line: flags reach the API; a busy port is a clean error."""

from __future__ import annotations

import signal
import subprocess

import consul
import pytest
import requests

from tests.helpers import autopilot_cmd, wait_for

pytestmark = pytest.mark.timeout(30)


def test_node_and_datacenter_flags(catalog_factory):
    cat = catalog_factory("--node", "node-a", "--datacenter", "east")
    c = consul.Consul(port=cat.port)
    me = c.agent.self()
    assert me["Config"]["NodeName"] == "node-a" and me["Config"]["Datacenter"] == "east"
    assert c.catalog.datacenters() == ["east"]
    assert [n["Node"] for n in c.catalog.nodes()[1]] == ["node-a"]
    r = requests.get(f"{cat.url}/v1/catalog/nodes?dc=dc1", timeout=5)
    assert r.status_code == 500 and r.text == "No path to datacenter"
    sid = c.session.create()
    assert c.session.info(sid)[1]["Node"] == "node-a"


def test_busy_port_is_a_clean_error(catalog_factory):
    cat = catalog_factory()
    proc = subprocess.run(autopilot_cmd("catalog", "--port", str(cat.port)),
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
    assert "cannot serve on 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr
    assert requests.get(cat.url + "/v1/status/leader", timeout=5).ok


def test_index_starts_above_zero_and_only_grows(api, name):
    seen = []
    for i in range(5):
        api.put(f"/v1/kv/{name}/{i}", data=b"x")
        seen.append(int(api.get(f"/v1/kv/{name}/?recurse").headers["X-Consul-Index"]))
    assert seen[0] > 0 and seen == sorted(seen) and len(set(seen)) == 5


def test_sighup_does_not_kill_it(catalog_factory):
    cat = catalog_factory()
    cat.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP" in cat.log.read_text(), timeout=5, message="SIGHUP logged")
    assert requests.get(cat.url + "/v1/status/leader", timeout=5).ok
    assert cat.proc.poll() is None


@pytest.mark.timing
def test_sigterm_exits_promptly_with_a_parked_blocking_query(catalog_factory):
    """A long poll must not hold the catalog's exit for its whole wait."""
    import threading
    import time

    cat = catalog_factory()
    index = requests.get(f"{cat.url}/v1/kv/parked", timeout=5).headers["X-Consul-Index"]

    def park() -> None:
        try:
            requests.get(f"{cat.url}/v1/kv/parked?index={index}&wait=30s", timeout=40)
        except requests.RequestException:
            pass  # the catalog is going away: any answer or a dropped connection is fine

    threading.Thread(target=park, daemon=True).start()
    wait_for(lambda: int(requests.get(f"{cat.url}/v1/agent/self", timeout=2).json()
             ["Stats"]["catalog"]["blocked_queries"]) >= 1, timeout=5, message="a parked query")
    started = time.monotonic()
    cat.proc.send_signal(signal.SIGTERM)
    cat.proc.wait(10)
    assert time.monotonic() - started < 3
