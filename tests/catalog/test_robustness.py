"""Contract: ACL token, persistence across restarts with --data-dir, and hostile input that
must not kill the catalog."""

from __future__ import annotations

import resource
import signal
import socket

import consul
import pytest
import requests

from tests.catalog.api import Api
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.timeout(60)


def test_acl_token(catalog_factory):
    cat = catalog_factory("--token", "s3cret")
    url = cat.url
    r = requests.put(f"{url}/v1/kv/k", data=b"v", timeout=5)
    assert r.status_code == 403 and r.text == "Permission denied"
    # listing reads without a token are filtered (nothing visible), not refused
    r = requests.get(f"{url}/v1/catalog/services", timeout=5)
    assert r.status_code == 200 and r.json() == {}
    assert requests.get(f"{url}/v1/kv/k", timeout=5).status_code == 403
    r = requests.get(f"{url}/v1/kv/k", headers={"X-Consul-Token": "wrong"}, timeout=5)
    assert r.status_code == 403 and r.text == "ACL not found"
    assert requests.put(f"{url}/v1/kv/k", data=b"v", headers={"X-Consul-Token": "s3cret"},
                        timeout=5).json() is True
    assert requests.get(f"{url}/v1/kv/k?token=s3cret", timeout=5).status_code == 200
    r = requests.get(f"{url}/v1/kv/k", headers={"Authorization": "Bearer s3cret"}, timeout=5)
    assert r.status_code == 200 and r.headers["X-Consul-Default-Acl-Policy"] == "deny"
    assert requests.get(f"{url}/v1/status/leader", timeout=5).status_code == 200
    with pytest.raises(consul.ACLPermissionDenied):
        consul.Consul(port=cat.port).kv.put("k", "v")
    c = consul.Consul(port=cat.port, token="s3cret")
    c.agent.service.register("web", check=consul.Check.ttl("10s"))
    assert "web" in c.agent.services()


def test_no_token_means_allow(api):
    r = api.get("/v1/catalog/services")
    assert r.status_code == 200 and r.headers["X-Consul-Default-Acl-Policy"] == "allow"


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_persistence_across_restart(catalog_factory, tmp_path, how):
    data = tmp_path / f"data-{how}"
    port = free_port()
    cat = catalog_factory("--data-dir", str(data), port=port)
    api = Api(cat.url)
    api.put("/v1/kv/app/config?flags=7", data=b"v1")
    sid = api.put("/v1/session/create", json={"Name": "leader", "LockDelay": "0s"}).json()["ID"]
    assert api.put(f"/v1/kv/app/leader?acquire={sid}", data=b"me").json() is True
    index_before = int(api.get("/v1/kv/app/config").headers["X-Consul-Index"])
    if how == "kill":
        cat.proc.send_signal(signal.SIGKILL)
        cat.proc.wait(5)
    else:
        cat.stop()
    cat2 = catalog_factory("--data-dir", str(data), port=port)
    api2 = Api(cat2.url)
    [cfg] = api2.get("/v1/kv/app/config").json()
    assert cfg["Flags"] == 7 and cfg["ModifyIndex"] == index_before
    [lead] = api2.get("/v1/kv/app/leader").json()
    assert lead["Session"] == sid and lead["LockIndex"] == 1
    assert api2.get(f"/v1/session/info/{sid}").json()[0]["Name"] == "leader"
    # the index keeps moving forward from where it was
    api2.put("/v1/kv/app/new", data=b"x")
    assert api2.get("/v1/kv/app/new").json()[0]["ModifyIndex"] > index_before
    assert not list(data.glob(".state-*.tmp")), "no temp files left behind"


def test_without_data_dir_state_is_memory_only(catalog_factory):
    port = free_port()
    cat = catalog_factory(port=port)
    requests.put(f"{cat.url}/v1/kv/x", data=b"1", timeout=5)
    cat.stop()
    cat2 = catalog_factory(port=port)
    assert requests.get(f"{cat2.url}/v1/kv/x", timeout=5).status_code == 404


def _alive(api: Api) -> bool:
    return api.get("/v1/status/leader", timeout=5).status_code == 200


def test_oversized_bodies(api):
    big = b"x" * (5 * 1024 * 1024)
    r = api.put("/v1/agent/service/register", data=big)
    assert r.status_code == 413
    r = api.put("/v1/kv/big", data=big)
    assert r.status_code == 413 and "too large, max size: 524288 bytes" in r.text
    assert api.get("/v1/kv/big?index=18446744073709551616").status_code == 400

    def chunks():
        for _ in range(80):
            yield b"y" * 65536

    r = api.put("/v1/kv/chunked", data=chunks())  # no Content-Length
    assert r.status_code == 413
    assert _alive(api)


@pytest.mark.parametrize("body", [
    b"\xff\xfe\xfd", b'{"Name": "\xc3\x28"}', b"{", b"[1,2,3]", b'"str"', b"nul",
    b"[" * 100000, b'{"Name": 5}', b'{"Name": "x", "Check": []}',
])
def test_malformed_json_bodies(api, body):
    r = api.put("/v1/agent/service/register", data=body)
    assert r.status_code == 400 and r.text.startswith("Request decode failed"), r.text
    r = api.put("/v1/session/create", data=body)
    assert r.status_code == 400
    assert _alive(api)


def test_bad_paths_and_raw_garbage(shared, api):
    assert api.get("/v1/kv/%ff%fe").status_code in (200, 404)
    assert api.put("/v1/kv/%ff%fe", data=b"v").status_code == 200
    for payload in (b"\x00\x01\x02garbage\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                    b"PUT /v1/kv/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"GET /v1/kv/x HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n"):
        with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert _alive(api)


@pytest.mark.timeout(60)
def test_thousand_idle_connections(shared, api):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:  # this test process needs the descriptors too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", shared.port), timeout=5))
        # half-written requests on some of them
        for s in socks[:100]:
            s.sendall(b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\n")
        wait_for(lambda: _alive(api), timeout=10, message="catalog answering with 1000 idle")
        r = api.put("/v1/kv/idle-test", data=b"ok")
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()
    assert _alive(api)


def test_unreadable_state_file_is_moved_aside(catalog_factory, tmp_path):
    data = tmp_path / "broken"
    data.mkdir()
    (data / "catalog-state.json").write_text("{not json")
    cat = catalog_factory("--data-dir", str(data))
    assert requests.put(f"{cat.url}/v1/kv/k", data=b"v", timeout=5).json() is True
    assert list(data.glob("catalog-state.json.unreadable-*"))
    assert (data / "catalog-state.json").exists()
