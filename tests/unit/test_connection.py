"""The `consul` config plus Consul's env conventions, and the client's worker threads."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest
import requests

from autopilot.config.model import ConfigError, ConsulConfig, TLSConfig
from autopilot.discovery.client import ConsulClient, DaemonPool, connect
from autopilot.discovery.connection import (
    ServerNameAdapter,
    build_client,
    resolve,
    split_address,
)
from autopilot.logs import capture as capture_logs
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(20)


def test_discovery_off():
    assert connect(None, {}) is None


@pytest.mark.parametrize("address, expected", [
    ("consul:8500", ("http", "consul", 8500)),
    ("http://10.0.0.1:8600", ("http", "10.0.0.1", 8600)),
    ("https://consul.example:8501", ("https", "consul.example", 8501)),
    ("https://consul.example", ("https", "consul.example", 8501)),
    ("consul", ("http", "consul", 8500)),
    ("[::1]:8500", ("http", "::1", 8500)),
])
def test_split_address(address, expected):
    assert split_address(address) == expected


@pytest.mark.parametrize("bad", ["", "ftp://x:1", "http://:8500", "x:notaport"])
def test_split_address_errors(bad):
    with pytest.raises(ConfigError):
        split_address(bad)


def test_config_wins_over_consul_http_addr():
    cfg = ConsulConfig(address="consul.service:8500")
    out = resolve(cfg, {"CONSUL_HTTP_ADDR": "https://other:9999"})
    assert (out.scheme, out.address) == ("http", "consul.service:8500")
    assert cfg.address == "consul.service:8500"  # the input is not modified


def test_consul_http_addr_fills_the_default():
    out = resolve(ConsulConfig(), {"CONSUL_HTTP_ADDR": "https://other:9999"})
    assert (out.scheme, out.address) == ("https", "other:9999")
    out = resolve(ConsulConfig(), {"CONSUL_HTTP_ADDR": "other:9999"})
    assert (out.scheme, out.address) == ("http", "other:9999")


def test_url_in_address_is_normalised():
    out = resolve(ConsulConfig(address="https://c.example:8501"), {})
    assert (out.scheme, out.address) == ("https", "c.example:8501")


def test_consul_http_ssl_overrides_scheme():
    assert resolve(ConsulConfig(), {"CONSUL_HTTP_SSL": "true"}).scheme == "https"
    assert resolve(ConsulConfig(scheme="https"), {"CONSUL_HTTP_SSL": "0"}).scheme == "http"
    with pytest.raises(ConfigError, match="CONSUL_HTTP_SSL"):
        resolve(ConsulConfig(), {"CONSUL_HTTP_SSL": "maybe"})


def test_token_env_overrides_config():
    assert resolve(ConsulConfig(token="cfg"), {"CONSUL_HTTP_TOKEN": "env"}).token == "env"
    assert resolve(ConsulConfig(token="cfg"), {"CONSUL_HTTP_TOKEN": ""}).token == "cfg"
    assert resolve(ConsulConfig(token="cfg"), {}).token == "cfg"


def test_tls_env_overrides_config():
    cfg = ConsulConfig(scheme="https", tls=TLSConfig(cafile="/cfg/ca.pem", servername="cfg"))
    out = resolve(cfg, {
        "CONSUL_CACERT": "/env/ca.pem", "CONSUL_CAPATH": "/env/cas",
        "CONSUL_CLIENT_CERT": "/env/c.pem", "CONSUL_CLIENT_KEY": "/env/k.pem",
        "CONSUL_TLS_SERVER_NAME": "consul.env", "CONSUL_HTTP_SSL_VERIFY": "false",
    })
    t = out.tls
    assert (t.cafile, t.capath, t.clientcert, t.clientkey, t.servername, t.verify) == (
        "/env/ca.pem", "/env/cas", "/env/c.pem", "/env/k.pem", "consul.env", False)
    assert resolve(cfg, {}).tls.verify is True  # verification on by default
    with pytest.raises(ConfigError, match="CONSUL_HTTP_SSL_VERIFY"):
        resolve(cfg, {"CONSUL_HTTP_SSL_VERIFY": "yes please"})


def test_build_client_passes_everything_explicitly(monkeypatch):
    # py-consul reads these itself; our resolved values must win, not be applied twice
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-process-env")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "https://elsewhere:1")
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    cfg = resolve(ConsulConfig(address="10.0.0.5:8600", token="cfg-token", tls=TLSConfig(
        cafile="/ca.pem", clientcert="/c.pem", clientkey="/k.pem")), environ={})
    c = build_client(cfg)
    assert c.token == "cfg-token"
    assert c.http.base_uri == "http://10.0.0.5:8600"
    assert c.http.verify == "/ca.pem"
    assert c.http.cert == ("/c.pem", "/k.pem")


def test_build_client_ipv6():
    c = build_client(ConsulConfig(address="[::1]:8500"))
    assert c.http.base_uri == "http://[::1]:8500"


def test_build_client_tls_options():
    cfg = ConsulConfig(address="127.0.0.1:8501", scheme="https",
                       tls=TLSConfig(verify=False, clientcert="/both.pem", servername="consul"))
    c = build_client(cfg)
    assert c.http.base_uri == "https://127.0.0.1:8501"
    assert c.http.verify is False
    assert c.http.cert == "/both.pem"
    assert isinstance(c.http.session.get_adapter("https://127.0.0.1:8501"), ServerNameAdapter)


def test_daemon_pool_runs_concurrently_and_grows():
    pool = DaemonPool(8, "t")
    gate = threading.Event()
    started = threading.Semaphore(0)

    def work(i):
        started.release()
        gate.wait(5)
        return i

    futs = [pool.submit(work, i) for i in range(5)]
    for _ in range(5):  # all five run at once: none is queued behind a blocked one
        assert started.acquire(timeout=5)
    gate.set()
    assert [f.result(5) for f in futs] == list(range(5))
    assert all(t.daemon for t in pool.threads)
    pool.shutdown()


def test_daemon_pool_never_loses_work_under_contention():
    pool = DaemonPool(4, "t")
    futs = []
    barrier = threading.Barrier(8)

    def submitter(k):
        barrier.wait(5)
        for i in range(250):
            futs.append(pool.submit(lambda k=k, i=i: (k, i)))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(futs) == 2000
    assert sorted(f.result(5) for f in futs) == [(k, i) for k in range(8) for i in range(250)]
    assert len(pool.threads) <= 4
    pool.shutdown(wait=True)


class _Leader(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b'"127.0.0.1:8300"'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_reachability_is_logged_once_per_change():
    port = free_port()
    client = ConsulClient(ConsulConfig(address=f"127.0.0.1:{port}"))
    reconnects: list[int] = []
    client.on_reconnect(lambda: reconnects.append(1))

    async def scenario():
        for _ in range(3):
            with pytest.raises(requests.ConnectionError):
                await client.run(lambda c: c.status.leader(), timeout=5)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Leader)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for _ in range(3):
                assert await client.run(lambda c: c.status.leader(), timeout=5)
        finally:
            server.shutdown()
            server.server_close()

    with capture_logs() as logs:
        asyncio.run(scenario())
    events = [e["event"] for e in logs]
    assert events.count("consul unreachable") == 1
    assert events.count("consul reachable again") == 1
    assert reconnects == [1] and client.reachable
    client.close()


def test_run_gives_up_at_its_deadline():
    client = ConsulClient(ConsulConfig())

    async def scenario():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.run(lambda c: time.sleep(2), timeout=0.2)
        return time.monotonic() - t0

    assert asyncio.run(scenario()) < 1.0
    assert not client.reachable  # a timeout counts as unreachable
    client.close()
