"""Contract: /v1/session/* and locks — TTL limits, check binding, invalidation, behaviours,
lock-delay and LockIndex."""

from __future__ import annotations

import time

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


def _create(api, **body) -> str:  # type: ignore[no-untyped-def]
    r = api.put("/v1/session/create", json=body)
    assert r.status_code == 200, r.text
    return r.json()["ID"]


def test_create_info_list_node_renew_destroy(api, cc, name):
    sid = _create(api, Name=name, TTL="15s")
    [info] = api.get(f"/v1/session/info/{sid}").json()
    node = api.get("/v1/agent/self").json()["Config"]["NodeName"]
    assert info["Name"] == name and info["Node"] == node and info["TTL"] == "15s"
    assert info["Behavior"] == "release" and info["LockDelay"] == 15_000_000_000
    assert info["NodeChecks"] == ["serfHealth"]
    assert sid in [s["ID"] for s in api.get("/v1/session/list").json()]
    assert sid in [s["ID"] for s in cc.session.node(node)[1]]
    renewed = api.put(f"/v1/session/renew/{sid}")
    assert renewed.status_code == 200 and renewed.json()[0]["ID"] == sid
    assert cc.session.renew(sid)["ID"] == sid
    assert api.put(f"/v1/session/destroy/{sid}").json() is True
    assert api.get(f"/v1/session/info/{sid}").json() == []
    assert cc.session.info(sid)[1] is None
    r = api.put(f"/v1/session/renew/{sid}")
    assert r.status_code == 404 and "not found" in r.text


def test_py_consul_session_create(cc, name):
    sid = cc.session.create(name=name, ttl=20, lock_delay=0, behavior="delete")
    info = cc.session.info(sid)[1]
    assert (info["TTL"], info["LockDelay"], info["Behavior"]) == ("20s", 0, "delete")


@pytest.mark.parametrize("ttl,ok", [("5s", False), ("9s", False), ("10s", True),
                                    ("24h", True), ("25h", False)])
def test_ttl_limits(api, ttl, ok):
    r = api.put("/v1/session/create", json={"TTL": ttl})
    if ok:
        assert r.status_code == 200
    else:
        assert r.status_code == 500
        assert r.text.startswith("Invalid Session TTL '")
        assert r.text.endswith("', must be between [10s=24h0m0s]")
    if ttl == "5s":
        assert r.text == "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"


def test_binding_errors(api, name):
    api.register(name, Check={"TTL": "30s"})  # critical
    r = api.put("/v1/session/create",
                json={"NodeChecks": [], "ServiceChecks": [{"ID": f"service:{name}"}]})
    assert r.status_code == 500 and r.text == (
        f"apply failed: Check 'service:{name}' is in critical state")
    r = api.put("/v1/session/create", json={"NodeChecks": [], "ServiceChecks": [{"ID": name}]})
    assert r.status_code == 500 and r.text == f"apply failed: Missing check '{name}' registration"
    r = api.put("/v1/session/create", json={"Behavior": "explode"})
    assert r.status_code == 500
    r = api.put("/v1/session/create", json={"Nmae": "x"})
    assert r.status_code == 400 and 'unknown field "Nmae"' in r.text


@pytest.mark.timing
def test_session_bound_to_service_check_invalidated_when_ttl_lapses(api, cc, name):
    api.register(name, Check={"TTL": "1s", "Status": "passing"})
    sid = _create(api, NodeChecks=[], ServiceChecks=[{"ID": f"service:{name}"}], LockDelay="0s")
    assert api.put(f"/v1/kv/{name}/leader?acquire={sid}", data=b"me").json() is True
    [info] = api.get(f"/v1/session/info/{sid}").json()
    assert info["ServiceChecks"] == [{"ID": f"service:{name}", "Namespace": ""}]
    assert info["NodeChecks"] == []
    t0 = time.monotonic()
    wait_for(lambda: api.get(f"/v1/session/info/{sid}").json() == [], timeout=5,
             message="session invalidated by the lapsed TTL check")
    assert time.monotonic() - t0 < 3
    [ent] = api.get(f"/v1/kv/{name}/leader").json()
    assert "Session" not in ent and ent["Value"] is not None  # release keeps the value


def test_check_failure_and_deregistration_invalidate(api, name):
    api.register(name, Check={"TTL": "30s", "Status": "passing"})
    sid1 = _create(api, Checks=["serfHealth", f"service:{name}"])
    api.put(f"/v1/agent/check/fail/service:{name}")
    assert api.get(f"/v1/session/info/{sid1}").json() == []
    api.put(f"/v1/agent/check/pass/service:{name}")
    sid2 = _create(api, NodeChecks=[], ServiceChecks=[{"ID": f"service:{name}"}])
    api.put(f"/v1/agent/check/warn/service:{name}")
    assert len(api.get(f"/v1/session/info/{sid2}").json()) == 1, "warning keeps the session"
    api.put(f"/v1/agent/service/deregister/{name}")
    assert api.get(f"/v1/session/info/{sid2}").json() == []


def test_unbound_session_survives_critical_checks(api, name):
    api.register(name, Check={"TTL": "30s", "Status": "passing"})
    sid = _create(api, NodeChecks=[])
    api.put(f"/v1/agent/check/fail/service:{name}")
    assert len(api.get(f"/v1/session/info/{sid}").json()) == 1


def test_locks_lockindex_release_and_contention(api, cc, name):
    a = _create(api, LockDelay="0s")
    b = _create(api, LockDelay="0s")
    key = f"/v1/kv/{name}"
    assert api.put(f"{key}?acquire={a}", data=b"a").json() is True
    [ent] = api.get(key).json()
    assert ent["Session"] == a and ent["LockIndex"] == 1
    assert api.put(f"{key}?acquire={b}", data=b"b").json() is False
    assert api.put(f"{key}?acquire={a}", data=b"a2").json() is True  # re-acquire by holder
    assert api.get(key).json()[0]["LockIndex"] == 1
    assert api.put(f"{key}?release={b}").json() is False
    assert api.put(f"{key}?release={a}", data=b"released").json() is True
    [ent] = api.get(key).json()
    assert "Session" not in ent and ent["LockIndex"] == 1
    assert cc.kv.put(name, "b", acquire=b) is True
    assert cc.kv.get(name)[1]["LockIndex"] == 2  # the fencing token moves on


def test_acquire_with_unknown_session(api, name):
    r = api.put(f"/v1/kv/{name}?acquire=00000000-0000-0000-0000-000000000000", data=b"x")
    assert r.status_code == 500
    assert 'invalid session "00000000-0000-0000-0000-000000000000"' in r.text


@pytest.mark.timing
def test_lock_delay_blocks_reacquisition(api, name):
    a = _create(api, LockDelay="2s")
    b = _create(api, LockDelay="0s")
    key = f"/v1/kv/{name}"
    assert api.put(f"{key}?acquire={a}", data=b"a").json() is True
    t0 = time.monotonic()
    api.put(f"/v1/session/destroy/{a}")
    assert api.put(f"{key}?acquire={b}", data=b"b").json() is False
    wait_for(lambda: api.put(f"{key}?acquire={b}", data=b"b").json(), timeout=8,
             interval=0.05, message="acquire after lock-delay")
    assert 1.8 <= time.monotonic() - t0 < 5


def test_explicit_release_has_no_lock_delay(api, name):
    a = _create(api)  # default 15s lock-delay applies only to invalidation
    b = _create(api)
    key = f"/v1/kv/{name}"
    assert api.put(f"{key}?acquire={a}").json() is True
    assert api.put(f"{key}?release={a}").json() is True
    assert api.put(f"{key}?acquire={b}").json() is True


def test_behavior_delete_removes_keys(api, name):
    sid = _create(api, Behavior="delete", LockDelay="0s")
    api.put(f"/v1/kv/{name}/x?acquire={sid}", data=b"1")
    api.put(f"/v1/kv/{name}/y", data=b"unlocked")
    api.put(f"/v1/session/destroy/{sid}")
    assert api.get(f"/v1/kv/{name}/x").status_code == 404
    assert api.get(f"/v1/kv/{name}/y").status_code == 200


@pytest.mark.timing
@pytest.mark.timeout(20)
def test_session_ttl_expiry_once(api, name):
    """One real 10 s session expiry (we invalidate at TTL; Consul may take up to 2×TTL)."""
    sid = _create(api, TTL="10s", LockDelay="0s")
    api.put(f"/v1/kv/{name}?acquire={sid}", data=b"x")
    t0 = time.monotonic()
    wait_for(lambda: api.get(f"/v1/session/info/{sid}").json() == [], timeout=15,
             interval=0.1, message="session TTL expiry")
    assert 9.5 <= time.monotonic() - t0 <= 14
    assert "Session" not in api.get(f"/v1/kv/{name}").json()[0]


def test_missing_ids_and_lock_delay_forms(api):
    assert api.put("/v1/session/destroy/").status_code == 400
    r = api.get("/v1/session/info/")
    assert r.status_code == 400 and r.text == "Missing session"
    for given, ns in (("5s", 5 * 10**9), (5, 5 * 10**9), (2_000_000_000, 2 * 10**9),
                      ("0s", 0), ("250ms", 250_000_000)):
        sid = _create(api, LockDelay=given)
        assert api.get(f"/v1/session/info/{sid}").json()[0]["LockDelay"] == ns, given
    r = api.put("/v1/session/create", json={"LockDelay": "soon"})
    assert r.status_code == 400 and r.text.startswith("Request decode failed")
