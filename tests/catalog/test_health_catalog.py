"""Contract: /v1/health/* and /v1/catalog/* reads, ?passing/?tag, catalog writes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(30)


def _ids(entries):
    return sorted(e["Service"]["ID"] for e in entries)


def test_health_service_passing_and_tag(api, cc, name):
    api.register(name, name + "-ok", Tags=["primary"], Port=1,
                 Check={"TTL": "30s", "Status": "passing"})
    api.register(name, name + "-warn", Tags=["replica"], Port=2,
                 Check={"TTL": "30s", "Status": "warning"})
    api.register(name, name + "-crit", Tags=["replica", "x"], Port=3, Check={"TTL": "30s"})
    r = api.get(f"/v1/health/service/{name}")
    assert r.status_code == 200 and int(r.headers["X-Consul-Index"]) > 0
    assert _ids(r.json()) == [name + "-crit", name + "-ok", name + "-warn"]
    entry = next(e for e in r.json() if e["Service"]["ID"] == name + "-ok")
    assert entry["Node"]["Address"] == "127.0.0.1" and entry["Service"]["Port"] == 1
    assert [c["CheckID"] for c in entry["Checks"]] == ["serfHealth", f"service:{name}-ok"]
    # ?passing leaves out warning as well as critical (observed on Consul)
    assert _ids(api.get(f"/v1/health/service/{name}?passing").json()) == [name + "-ok"]
    assert _ids(cc.health.service(name, passing=True)[1]) == [name + "-ok"]
    assert _ids(api.get(f"/v1/health/service/{name}?tag=replica").json()) == [
        name + "-crit", name + "-warn"]
    assert _ids(api.get(f"/v1/health/service/{name}?tag=replica&tag=x").json()) == [
        name + "-crit"]
    assert _ids(cc.health.service(name, tag="primary", passing=True)[1]) == [name + "-ok"]
    assert api.get("/v1/health/service/none-such").json() == []
    # unknown query parameters are ignored, as Consul does
    assert len(api.get(f"/v1/health/service/{name}?stale&cached&near=_agent&x=1").json()) == 3


def test_health_checks_state_node(api, cc, name):
    api.register(name, Check={"TTL": "30s", "Status": "warning"})
    checks = api.get(f"/v1/health/checks/{name}").json()
    assert [(c["CheckID"], c["Status"]) for c in checks] == [(f"service:{name}", "warning")]
    warn = api.get("/v1/health/state/warning").json()
    assert f"service:{name}" in [c["CheckID"] for c in warn]
    assert all(c["Status"] == "warning" for c in warn)
    anyc = cc.health.state("any")[1]
    assert {"serfHealth", f"service:{name}"} <= {c["CheckID"] for c in anyc}
    bad = api.get("/v1/health/state/bogus")  # Consul 1.10: matches nothing, no error
    assert bad.status_code == 200 and bad.json() == []
    node = api.get("/v1/agent/self").json()["Config"]["NodeName"]
    assert f"service:{name}" in [c["CheckID"] for c in cc.health.node(node)[1]]


def test_catalog_services_service_nodes_node(api, cc, name):
    api.register(name, name + "-1", Tags=["a"], Port=10, Address="10.1.1.1", Meta={"k": "v"})
    api.register(name, name + "-2", Tags=["b"], Port=11)
    services = cc.catalog.services()[1]
    assert sorted(services[name]) == ["a", "b"]
    # like a dev agent, the server itself is in the catalog, but not an agent service
    assert services["consul"] == [] and "consul" not in cc.agent.services()
    [me] = cc.health.service("consul", passing=True)[1]
    assert me["Service"]["Port"] == 8300
    entries = api.get(f"/v1/catalog/service/{name}").json()
    assert [e["ServiceID"] for e in entries] == [name + "-1", name + "-2"]
    e = entries[0]
    assert (e["ServiceName"], e["ServiceAddress"], e["ServicePort"], e["ServiceMeta"]) == (
        name, "10.1.1.1", 10, {"k": "v"})
    assert e["Address"] == "127.0.0.1" and e["ServiceTags"] == ["a"]
    assert [x["ServiceID"] for x in cc.catalog.service(name, tag="b")[1]] == [name + "-2"]
    node = api.get("/v1/agent/self").json()["Config"]["NodeName"]
    assert node in [n["Node"] for n in cc.catalog.nodes()[1]]
    mine = cc.catalog.node(node)[1]
    assert mine["Node"]["Node"] == node and name + "-1" in mine["Services"]
    assert api.get("/v1/catalog/node/nope").json() is None
    assert cc.catalog.datacenters() == ["dc1"]


def test_catalog_register_and_deregister_external_node(api, cc, name):
    body = {"Node": name + "-node", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "Service": {"Service": name, "ID": name + "-ext", "Port": 5000, "Tags": ["ext"]},
            "Check": {"CheckID": "ext-check", "Name": "ext", "Status": "passing",
                      "ServiceID": name + "-ext"}}
    r = api.put("/v1/catalog/register", json=body)
    assert r.status_code == 200 and r.json() is True
    entries = cc.health.service(name, passing=True)[1]
    assert len(entries) == 1 and entries[0]["Node"]["Address"] == "192.0.2.10"
    assert entries[0]["Node"]["Meta"] == {"rack": "r1"}
    assert [c["CheckID"] for c in entries[0]["Checks"]] == ["ext-check"]
    assert name + "-node" in [n["Node"] for n in cc.catalog.nodes()[1]]
    # a critical node-level check hides the node's services from ?passing
    api.put("/v1/catalog/register", json={"Node": name + "-node", "Address": "192.0.2.10",
                                          "Check": {"CheckID": "node-down",
                                                    "Status": "critical"}})
    assert cc.health.service(name, passing=True)[1] == []
    assert api.put("/v1/catalog/deregister",
                   json={"Node": name + "-node", "CheckID": "node-down"}).json() is True
    assert len(cc.health.service(name, passing=True)[1]) == 1
    assert api.put("/v1/catalog/deregister",
                   json={"Node": name + "-node", "ServiceID": name + "-ext"}).json() is True
    assert cc.catalog.service(name)[1] == []
    assert cc.catalog.deregister(name + "-node") is True
    assert name + "-node" not in [n["Node"] for n in cc.catalog.nodes()[1]]


def test_catalog_register_validation(api):
    r = api.put("/v1/catalog/register", json={"Node": "n"})
    assert r.status_code == 500 and r.text == "Must provide address if SkipNodeUpdate is not set"
    r = api.put("/v1/catalog/register", json={"Address": "10.0.0.1"})
    assert r.status_code == 500 and r.text == "Must provide node"
    r = api.put("/v1/catalog/register", json={"Node": "n", "Adress": "x"})
    assert r.status_code == 400 and r.text == (
        'Request decode failed: json: unknown field "Adress"')


def test_other_datacenter_has_no_path(api):
    r = api.get("/v1/catalog/services?dc=elsewhere")
    assert r.status_code == 500 and r.text == "No path to datacenter"
    assert api.get("/v1/catalog/services?dc=dc1").status_code == 200


def test_filter_expressions(api, cc, name):
    api.register(name, name + "-1", Tags=["primary"], Port=1, Meta={"zone": "a"},
                 Check={"TTL": "30s", "Status": "passing"})
    api.register(name, name + "-2", Tags=["replica"], Port=2, Meta={"zone": "b"},
                 Check={"TTL": "30s", "Status": "warning"})

    def ids(expr: str, path: str = f"/v1/health/service/{name}") -> list[str]:
        r = api.get(path, params={"filter": expr})
        assert r.status_code == 200, r.text
        return sorted(e["Service"]["ID"] for e in r.json())

    assert ids('"primary" in Service.Tags') == [name + "-1"]
    assert ids("Service.Meta.zone == b") == [name + "-2"]
    assert ids("Checks.Status == warning") == [name + "-2"]
    assert ids('Service.Port != 1 or Service.ID matches "-1$"') == [name + "-1", name + "-2"]
    assert ids("not (Service.Tags contains replica) and Service.Meta is not empty") == [
        name + "-1"]
    assert cc.health.service(name, filter_expr="Service.Port == 2")[1][0]["Service"]["Port"] == 2
    cat = api.get(f"/v1/catalog/service/{name}", params={"filter": "ServicePort == 1"}).json()
    assert [e["ServiceID"] for e in cat] == [name + "-1"]
    svcs = api.get("/v1/agent/services", params={"filter": f'Service == "{name}"'}).json()
    assert sorted(svcs) == [name + "-1", name + "-2"]
    bad = api.get(f"/v1/health/service/{name}", params={"filter": "Service.ID =="})
    assert bad.status_code == 500  # Consul 1.10: the RPC's error, not a 400
    assert bad.text.startswith("Failed to create boolean expression evaluator")
