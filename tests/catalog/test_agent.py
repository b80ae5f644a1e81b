"""Contract: /v1/status/*, /v1/agent/* — registration, TTL checks, maintenance, reaping,
active HTTP/TCP checks and Consul's answers to bad requests."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import consul
import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


def test_status_leader_and_peers(api):
    r = api.get("/v1/status/leader")
    assert r.status_code == 200 and r.json() == "127.0.0.1:8300"
    assert api.get("/v1/status/peers").json() == ["127.0.0.1:8300"]


def test_agent_self_members_and_node(api, cc):
    me = api.get("/v1/agent/self").json()
    assert me["Config"]["Datacenter"] == "dc1"
    node = me["Config"]["NodeName"]
    assert node == socket.gethostname()
    members = cc.agent.members()
    assert members[0]["Name"] == node and members[0]["Status"] == 1
    # the node has a passing serfHealth check, as a dev agent does
    checks = api.get(f"/v1/health/node/{node}").json()
    assert [(c["CheckID"], c["Status"]) for c in checks if not c["ServiceID"]] == [
        ("serfHealth", "passing")]


def test_register_list_get_deregister(api, cc, name):
    body = {"Name": name, "ID": name + "-1", "Tags": ["a", "b"], "Address": "10.0.0.5",
            "Port": 8080, "Meta": {"v": "1"}, "EnableTagOverride": True}
    assert api.put("/v1/agent/service/register", json=body).status_code == 200
    svc = cc.agent.services()[name + "-1"]
    assert svc["Service"] == name and svc["Tags"] == ["a", "b"] and svc["Port"] == 8080
    assert svc["Address"] == "10.0.0.5" and svc["Meta"] == {"v": "1"}
    assert svc["EnableTagOverride"] is True
    one = api.get(f"/v1/agent/service/{name}-1")
    assert one.status_code == 200 and one.json()["ID"] == name + "-1"
    assert one.headers["X-Consul-ContentHash"] == one.json()["ContentHash"]
    assert cc.agent.service.deregister(name + "-1") is True
    assert name + "-1" not in cc.agent.services()
    missing = api.get(f"/v1/agent/service/{name}-1")
    assert missing.status_code == 404 and "unknown service ID" in missing.text


def test_missing_id_defaults_to_name_and_reregister_replaces(api, cc, name):
    api.put("/v1/agent/service/register", json={"Name": name, "Port": 1})
    api.put("/v1/agent/service/register", json={"Name": name, "Port": 2, "Tags": ["x"]})
    svc = cc.agent.services()[name]
    assert svc["ID"] == name and svc["Port"] == 2 and svc["Tags"] == ["x"]


def test_deregister_unknown_is_200_like_consul_1_10(api):
    assert api.put("/v1/agent/service/deregister/nope-nope").status_code == 200


def test_py_consul_register_with_ttl_check_and_ttl_calls(cc, api, name):
    cc.agent.service.register(name, service_id=name, port=9, tags=["t"],
                              check=consul.Check.ttl("10s"))
    cid = f"service:{name}"
    chk = cc.agent.checks()[cid]
    assert chk["Status"] == "critical" and chk["ServiceID"] == name
    assert chk["Type"] == "ttl" and chk["Name"] == f"Service '{name}' check"
    cc.agent.check.ttl_pass(cid, "all good")
    assert cc.agent.checks()[cid]["Status"] == "passing"
    assert cc.agent.checks()[cid]["Output"] == "all good"
    cc.agent.check.ttl_warn(cid)
    assert cc.agent.checks()[cid]["Status"] == "warning"
    cc.agent.check.ttl_fail(cid, "boom")
    assert cc.agent.checks()[cid]["Status"] == "critical"
    r = api.put(f"/v1/agent/check/update/{cid}", json={"Status": "passing", "Output": "ok"})
    assert r.status_code == 200
    chk = cc.agent.checks()[cid]
    assert (chk["Status"], chk["Output"]) == ("passing", "ok")


def test_check_status_given_and_several_checks_numbered(api, cc, name):
    api.register(name, Checks=[{"TTL": "30s", "Status": "passing"},
                               {"TTL": "30s", "Name": "second", "Notes": "n"}])
    checks = cc.agent.checks()
    first, second = checks[f"service:{name}:1"], checks[f"service:{name}:2"]
    assert first["Status"] == "passing" and second["Status"] == "critical"
    assert second["Name"] == "second" and second["Notes"] == "n"


def test_reregister_keeps_check_state_and_replace_existing_checks(api, cc, name):
    api.register(name, Check={"CheckID": "c1", "TTL": "30s"})
    api.put("/v1/agent/check/pass/c1")
    api.register(name, Checks=[{"CheckID": "c1", "TTL": "30s"}, {"CheckID": "c2", "TTL": "30s"}])
    checks = cc.agent.checks()
    assert checks["c1"]["Status"] == "passing", "re-registration must not flap a check"
    r = api.put("/v1/agent/service/register?replace-existing-checks=true",
                json={"Name": name, "ID": name, "Check": {"CheckID": "c2", "TTL": "30s"}})
    assert r.status_code == 200
    checks = cc.agent.checks()
    assert "c1" not in checks and "c2" in checks


@pytest.mark.timing
def test_ttl_lapses_to_critical(api, cc, name):
    api.register(name, Check={"TTL": "1s", "Status": "passing"})
    cid = f"service:{name}"
    t0 = time.monotonic()
    chk = wait_for(lambda: cc.agent.checks()[cid]["Status"] == "critical"
                   and cc.agent.checks()[cid], timeout=5, message="TTL lapse")
    assert chk["Output"] == "TTL expired"
    assert time.monotonic() - t0 >= 0.8


def test_heartbeats_keep_ttl_check_passing(api, cc, name):
    api.register(name, Check={"TTL": "1.5s", "Status": "passing"})
    cid = f"service:{name}"
    deadline = time.monotonic() + 3.2
    while time.monotonic() < deadline:
        assert api.put(f"/v1/agent/check/pass/{cid}").status_code == 200
        assert cc.agent.checks()[cid]["Status"] == "passing"
        time.sleep(0.3)


def test_deregister_critical_service_after(api, cc, name):
    api.register(name, Check={"TTL": "1s", "Status": "passing",
                              "DeregisterCriticalServiceAfter": "1s"})
    wait_for(lambda: name not in cc.agent.services(), timeout=6,
             message="service reaped after staying critical")
    assert f"service:{name}" not in cc.agent.checks()


def test_service_maintenance(api, cc, name):
    api.register(name, Check={"TTL": "30s", "Status": "passing"})
    r = api.put(f"/v1/agent/service/maintenance/{name}?enable=true&reason=upgrading")
    assert r.status_code == 200
    chk = cc.agent.checks()[f"_service_maintenance:{name}"]
    assert chk["Status"] == "critical" and chk["Notes"] == "upgrading"
    assert chk["ServiceID"] == name
    assert cc.health.service(name, passing=True)[1] == []
    api.put(f"/v1/agent/service/maintenance/{name}?enable=false")
    assert f"_service_maintenance:{name}" not in cc.agent.checks()
    assert len(cc.health.service(name, passing=True)[1]) == 1
    bad = api.put(f"/v1/agent/service/maintenance/{name}")
    assert bad.status_code == 400 and bad.text == "Missing value for enable"
    unknown = api.put("/v1/agent/service/maintenance/nope?enable=true")
    assert unknown.status_code == 404


def test_check_register_and_deregister(api, cc, name):
    r = api.put("/v1/agent/check/register",
                json={"Name": name, "TTL": "30s", "Status": "warning"})
    assert r.status_code == 200
    assert cc.agent.checks()[name]["Status"] == "warning"
    assert cc.agent.check.register(name + "b", consul.Check.ttl("5s"), check_id=name + "b")
    assert name + "b" in cc.agent.checks()
    assert api.put(f"/v1/agent/check/deregister/{name}").status_code == 200
    assert cc.agent.check.deregister(name + "b") is True
    assert name not in cc.agent.checks() and name + "b" not in cc.agent.checks()


def _http_server(status: int):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_http_and_tcp_checks_run(api, cc, name):
    ok, bad = _http_server(200), _http_server(503)
    try:
        api.register(name + "h", Check={"HTTP": f"http://127.0.0.1:{ok.server_port}/",
                                        "Interval": "200ms"})
        api.register(name + "x", Check={"HTTP": f"http://127.0.0.1:{bad.server_port}/",
                                        "Interval": "200ms", "Status": "passing"})
        api.register(name + "t", Check={"TCP": f"127.0.0.1:{ok.server_port}",
                                        "Interval": "200ms"})
        wait_for(lambda: cc.agent.checks()[f"service:{name}h"]["Status"] == "passing", 5)
        wait_for(lambda: cc.agent.checks()[f"service:{name}x"]["Status"] == "critical", 5)
        wait_for(lambda: cc.agent.checks()[f"service:{name}t"]["Status"] == "passing", 5)
    finally:
        for srv in (ok, bad):
            srv.shutdown()
            srv.server_close()
    wait_for(lambda: cc.agent.checks()[f"service:{name}t"]["Status"] == "critical", 5,
             message="TCP check fails once the port is closed")


@pytest.mark.parametrize("body,status,text", [
    ({"Nme": "web"}, 400, 'Request decode failed: json: unknown field "Nme"'),
    ({"ID": "x"}, 400, "Missing service name"),
    ({"Name": "w", "Port": "80"}, 400, "Request decode failed: json: cannot unmarshal string"),
    ({"Name": "w", "Check": {"TTL": "abc"}}, 400,
     'Request decode failed: time: invalid duration "abc"'),
    ({"Name": "w", "Check": {"Interval": "10s"}}, 400, "Invalid check: TTL must be > 0"),
    ({"Name": "w", "Check": {"TTL": "1s", "Status": "bogus"}}, 400, "Status for checks must"),
    ({"Name": "w", "Check": {"TTL": "1s", "Output": "x"}}, 400,
     'Request decode failed: json: unknown field "Output"'),
    ({"Name": "w", "Weights": [1]}, 400, "Request decode failed: json: cannot unmarshal array"),
])
def test_register_validation(api, body, status, text):
    r = api.put("/v1/agent/service/register", json=body)
    assert r.status_code == status and r.text.startswith(text), r.text


def test_bad_requests_on_agent_endpoints(api):
    r = api.put("/v1/agent/service/register", data=b"{not json")
    assert r.status_code == 400 and r.text.startswith("Request decode failed")
    r = api.put("/v1/agent/check/pass/does-not-exist")
    assert r.status_code == 500 and "does not have associated TTL" in r.text
    r = api.put("/v1/agent/check/update/x", json={"Status": "meh"})
    assert r.status_code == 400 and "Invalid check status" in r.text
    r = api.get("/v1/agent/service/register")
    assert r.status_code == 405
    r = api.get("/v1/nothing/here")
    assert r.status_code == 404 and r.text == ""  # Consul 1.10: an empty body


def test_snake_and_lower_case_fields_accepted(api, cc, name):
    body = {"name": name, "id": name, "port": 7, "enable_tag_override": True,
            "check": {"ttl": "10s", "deregister_critical_service_after": "1m"}}
    assert api.put("/v1/agent/service/register", json=body).status_code == 200
    assert cc.agent.services()[name]["EnableTagOverride"] is True
    chk = cc.agent.checks()[f"service:{name}"]
    # Consul 1.10 shows no definition for agent checks: an empty object
    assert (chk["Type"], chk["Definition"]) == ("ttl", {})


def test_node_maintenance(api, cc, name):
    api.register(name, Check={"TTL": "30s", "Status": "passing"})
    assert len(cc.health.service(name, passing=True)[1]) == 1
    assert api.put("/v1/agent/maintenance?enable=true").status_code == 200
    try:
        chk = cc.agent.checks()["_node_maintenance"]
        assert chk["Status"] == "critical" and chk["ServiceID"] == ""
        assert "no reason was provided" in chk["Notes"]
        assert cc.health.service(name, passing=True)[1] == []
    finally:
        api.put("/v1/agent/maintenance?enable=false")
    assert "_node_maintenance" not in cc.agent.checks()
    assert len(cc.health.service(name, passing=True)[1]) == 1


def test_wan_members_raft_and_coordinates(api, cc):
    """What py-consul's status/operator/coordinate tests read from a dev agent."""
    node = cc.agent.self()["Config"]["NodeName"]
    assert cc.agent.self()["Member"] in cc.agent.members()
    assert [m["Name"] for m in cc.agent.members(wan=True)] == [f"{node}.dc1"]
    [server] = cc.operator.raft_config()["Servers"]
    assert server["Leader"] and server["Voter"] and server["Node"] == node
    [dc] = cc.coordinate.datacenters()
    assert set(dc) == {"Datacenter", "Coordinates", "AreaID"}
    assert cc.coordinate.nodes()[1] == []


def test_user_events(api, cc, name):
    ev = cc.event.fire(name, "payload")
    assert ev["Name"] == name and ev["Version"] == 1
    _, events = cc.event.list(name=name)
    assert [(e["ID"], e["Payload"]) for e in events] == [(ev["ID"], b"payload")]
    assert cc.event.list(name=name + "-other")[1] == []


def test_tagged_addresses_any_case(api, cc, name):
    tagged = {"lan": {"address": "10.10.10.1", "port": 8080}}
    assert cc.agent.service.register(name, tagged_addresses=tagged)
    assert cc.agent.services()[name]["TaggedAddresses"] == {
        "lan": {"Address": "10.10.10.1", "Port": 8080}}
