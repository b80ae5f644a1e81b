"""Contract: /v1/kv — values, flags, cas, recurse, keys/separator, raw, deletes, 404s."""

from __future__ import annotations

import base64
import threading

import pytest
import requests

pytestmark = pytest.mark.timeout(30)


def test_put_get_roundtrip_and_metadata(api, cc, name):
    r = api.put(f"/v1/kv/{name}/a?flags=42", data=b"hello")
    assert r.status_code == 200 and r.json() is True
    g = api.get(f"/v1/kv/{name}/a")
    assert g.status_code == 200
    [ent] = g.json()
    assert ent["Key"] == f"{name}/a" and base64.b64decode(ent["Value"]) == b"hello"
    assert ent["Flags"] == 42 and ent["LockIndex"] == 0 and "Session" not in ent
    assert ent["CreateIndex"] == ent["ModifyIndex"] == int(g.headers["X-Consul-Index"])
    assert g.headers["X-Consul-KnownLeader"] == "true"
    assert g.headers["X-Consul-LastContact"] == "0"
    idx, got = cc.kv.get(f"{name}/a")
    assert got["Value"] == b"hello" and int(idx) == ent["ModifyIndex"]
    # an overwrite keeps CreateIndex and moves ModifyIndex; flags reset unless given
    api.put(f"/v1/kv/{name}/a", data=b"v2")
    [ent2] = api.get(f"/v1/kv/{name}/a").json()
    assert ent2["CreateIndex"] == ent["CreateIndex"] and ent2["ModifyIndex"] > ent["ModifyIndex"]
    assert ent2["Flags"] == 0


def test_missing_key_404_with_index(api):
    r = api.get("/v1/kv/definitely/missing")
    assert r.status_code == 404 and r.text == ""
    assert int(r.headers["X-Consul-Index"]) > 0


def test_empty_value_is_null_vs_empty(api, cc, name):
    api.put(f"/v1/kv/{name}", data=b"")
    [ent] = api.get(f"/v1/kv/{name}").json()
    assert ent["Value"] is None
    assert cc.kv.get(name)[1]["Value"] is None


def test_raw(api, name):
    api.put(f"/v1/kv/{name}", data=b"\x00\xffbinary")
    r = api.get(f"/v1/kv/{name}?raw")
    assert r.status_code == 200 and r.content == b"\x00\xffbinary"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Consul-Index" in r.headers


def test_cas(api, cc, name):
    key = f"/v1/kv/{name}"
    assert api.put(key + "?cas=0", data=b"first").json() is True
    assert api.put(key + "?cas=0", data=b"again").json() is False
    [ent] = api.get(key).json()
    assert api.put(key + f"?cas={ent['ModifyIndex'] + 1}", data=b"x").json() is False
    assert api.put(key + f"?cas={ent['ModifyIndex']}", data=b"second").json() is True
    assert cc.kv.get(name)[1]["Value"] == b"second"
    assert cc.kv.put(name, "third", cas=ent["ModifyIndex"]) is False


def test_ten_concurrent_cas_writers_one_winner(shared, api, name):
    api.put(f"/v1/kv/{name}", data=b"0")
    idx = api.get(f"/v1/kv/{name}").json()[0]["ModifyIndex"]
    barrier = threading.Barrier(10)
    results: list[bool] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        s = requests.Session()
        barrier.wait(5)
        ok = s.put(f"{shared.url}/v1/kv/{name}?cas={idx}", data=str(i), timeout=10).json()
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results) == 10 and results.count(True) == 1


def test_recurse_keys_separator(api, cc, name):
    for k in ("a", "b/c", "b/d/e", "f"):
        api.put(f"/v1/kv/{name}/{k}", data=k.encode())
    api.put(f"/v1/kv/{name}x/other", data=b"no")
    rec = api.get(f"/v1/kv/{name}/?recurse")
    assert [e["Key"] for e in rec.json()] == [f"{name}/{k}" for k in ("a", "b/c", "b/d/e", "f")]
    assert int(rec.headers["X-Consul-Index"]) == max(e["ModifyIndex"] for e in rec.json())
    keys = api.get(f"/v1/kv/{name}/?keys").json()
    assert keys == [f"{name}/a", f"{name}/b/c", f"{name}/b/d/e", f"{name}/f"]
    sep = api.get(f"/v1/kv/{name}/?keys&separator=/").json()
    assert sep == [f"{name}/a", f"{name}/b/", f"{name}/f"]
    assert cc.kv.get(f"{name}/", keys=True, separator="/")[1] == sep
    _, ents = cc.kv.get(f"{name}/", recurse=True)
    assert [e["Value"] for e in ents] == [b"a", b"b/c", b"b/d/e", b"f"]
    assert api.get(f"/v1/kv/{name}-none/?recurse").status_code == 404
    assert api.get(f"/v1/kv/{name}-none/?keys").status_code == 404


def test_delete_single_recurse_cas(api, cc, name):
    for k in ("a", "b", "c/d"):
        api.put(f"/v1/kv/{name}/{k}", data=b"1")
    assert api.delete(f"/v1/kv/{name}/a").json() is True
    assert api.get(f"/v1/kv/{name}/a").status_code == 404
    [ent] = api.get(f"/v1/kv/{name}/b").json()
    assert api.delete(f"/v1/kv/{name}/b?cas={ent['ModifyIndex'] - 1}").json() is False
    assert api.delete(f"/v1/kv/{name}/b?cas={ent['ModifyIndex']}").json() is True
    assert api.delete(f"/v1/kv/{name}/gone?cas=5").json() is True
    assert cc.kv.delete(f"{name}/", recurse=True) is True
    assert api.get(f"/v1/kv/{name}/?recurse").status_code == 404


def test_kv_bad_requests(api, name):
    r = api.put("/v1/kv/", data=b"x")
    assert r.status_code == 400 and r.text == "Missing key name"
    assert api.get("/v1/kv/").status_code == 400
    assert api.delete("/v1/kv/").status_code == 400
    r = api.put(f"/v1/kv/{name}?flags=abc", data=b"x")
    assert r.status_code == 500 and r.text == 'strconv.ParseUint: parsing "abc": invalid syntax'
    r = api.put(f"/v1/kv/{name}?cas=-1", data=b"x")
    assert r.status_code == 500 and "invalid syntax" in r.text
    r = api.put(f"/v1/kv/{name}?cas=0&acquire=x", data=b"x")
    assert r.status_code == 400 and r.text.startswith("Conflicting flags: acquire=x&cas=0")
    r = api.delete(f"/v1/kv/{name}?cas=1&recurse")
    assert r.status_code == 400 and r.text.startswith("Conflicting flags:")
    r = api.get(f"/v1/kv/{name}?index=abc")
    assert r.status_code == 400 and r.text == "Invalid index"
    r = api.get(f"/v1/kv/{name}?index=1&wait=forever")
    assert r.status_code == 400 and r.text == "Invalid wait time"
    r = api.put(f"/v1/kv/{name}", data=b"x" * (512 * 1024 + 1))
    assert r.status_code == 413
    assert r.text.startswith("Request body(524289 bytes) too large, max size: 524288 bytes.")
    assert api.put(f"/v1/kv/{name}", data=b"x" * (512 * 1024)).json() is True


def test_keys_at_root_is_a_list(api):
    r = api.get("/v1/kv/?keys")
    assert r.status_code == 200 and isinstance(r.json(), list)


def _op(verb, key, value=None, **kw):  # type: ignore[no-untyped-def]
    op = {"Verb": verb, "Key": key, **kw}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode()
    return {"KV": op}


def test_txn_all_or_nothing(api, cc, name):
    api.put(f"/v1/kv/{name}/b", data=b"old")
    [b] = api.get(f"/v1/kv/{name}/b").json()
    r = api.put("/v1/txn", json=[_op("set", f"{name}/a", b"1"),
                                 _op("cas", f"{name}/b", b"new", Index=b["ModifyIndex"]),
                                 _op("get", f"{name}/b")])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["Errors"] is None and len(res["Results"]) == 3
    assert base64.b64decode(res["Results"][2]["KV"]["Value"]) == b"new"
    before = api.get(f"/v1/kv/{name}/?recurse").json()
    r = api.put("/v1/txn", json=[_op("set", f"{name}/c", b"x"), _op("delete", f"{name}/a"),
                                 _op("cas", f"{name}/b", b"z", Index=1)])
    assert r.status_code == 409
    assert r.json()["Errors"] == [{"OpIndex": 2,
                                   "What": f'failed to set key "{name}/b", index is stale'}]
    assert api.get(f"/v1/kv/{name}/?recurse").json() == before, "rolled back"
    r = api.put("/v1/txn", json=[_op("check-not-exists", f"{name}/a")])
    assert r.status_code == 409
    r = api.put("/v1/txn", json=[_op("set", f"{name}/{i}", b"x") for i in range(65)])
    assert r.status_code == 413
    r = api.put("/v1/txn", json=[{"KV": {"Verb": "explode", "Key": "k"}}])
    assert r.status_code == 409 and r.json()["Errors"] == [
        {"OpIndex": 0, "What": 'unknown KV verb "explode"'}]
    ok = cc.txn.put([_op("get-tree", f"{name}/")])
    assert [x["KV"]["Key"] for x in ok["Results"]] == [f"{name}/a", f"{name}/b"]


def test_txn_locks(api, name):
    sid = api.put("/v1/session/create", json={"LockDelay": "0s"}).json()["ID"]
    r = api.put("/v1/txn", json=[_op("lock", f"{name}/l", b"me", Session=sid),
                                 _op("check-session", f"{name}/l", Session=sid)])
    assert r.status_code == 200, r.text
    assert r.json()["Results"][0]["KV"]["LockIndex"] == 1
    r = api.put("/v1/txn", json=[_op("unlock", f"{name}/l", Session=sid)])
    assert r.status_code == 200
    assert "Session" not in api.get(f"/v1/kv/{name}/l").json()[0]
