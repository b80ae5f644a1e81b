"""The images' autopilot templates rendered from a real catalog, then used for real.

No Docker: `autopilot template` renders images/nginx/shop.conf.tmpl and
images/app/redis.json.tmpl against `autopilot catalog`; the nginx config is checked with
`nginx -t` and served by a real nginx in front of a real shop app, with and without
instances (the 503 page); the Redis document is read by the app's own primary chooser.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.nginx_helpers import NGINX_DIR, Nginx, needs_nginx, register, render
from tests.e2e.shop_helpers import APP_DIR, Redis, Shop, have_redis
from tests.helpers import CatalogProcess, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    n = Nginx(tmp_path)
    yield n
    n.stop()


def test_empty_app_set_renders_a_valid_503_site(catalog: CatalogProcess) -> None:
    site = render(catalog, NGINX_DIR / "shop.conf.tmpl")
    assert "0 app instance(s)" in site
    assert "upstream" not in site and "return 503;" in site


@needs_nginx
def test_nginx_accepts_both_renderings_and_the_shipped_default(
        catalog: CatalogProcess, nginx: Nginx) -> None:
    nginx.install((NGINX_DIR / "shop-empty.conf").read_text())
    assert nginx.check().returncode == 0, nginx.check().stderr
    nginx.install(render(catalog, NGINX_DIR / "shop.conf.tmpl"))
    assert nginx.check().returncode == 0, nginx.check().stderr
    register(catalog, "app", "app-b", 8001)
    register(catalog, "app", "app-a", 8000)
    register(catalog, "app", "app-sick", 8002, passing=False)
    site = render(catalog, NGINX_DIR / "shop.conf.tmpl")
    servers = [line.split()[1] for line in site.splitlines() if line.strip().startswith("server 1")]
    assert servers == ["127.0.0.1:8000", "127.0.0.1:8001"], site  # sorted by ID, passing only
    nginx.install(site)
    assert nginx.check().returncode == 0, nginx.check().stderr


@needs_nginx
@pytest.mark.skipif(not have_redis(), reason="redis-server not installed")
def test_real_nginx_serves_503_page_then_proxies_to_the_app(
        catalog: CatalogProcess, nginx: Nginx, tmp_path: Path) -> None:
    nginx.install(render(catalog, NGINX_DIR / "shop.conf.tmpl"))
    nginx.start()
    resp = requests.get(nginx.url + "/count", timeout=5)
    assert resp.status_code == 503 and "No instance of the shop app" in resp.text
    redis = Redis(tmp_path).start()
    shop = Shop(tmp_path, REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis.port)).start()
    try:
        register(catalog, "app", "app-1", shop.port)
        nginx.install(render(catalog, NGINX_DIR / "shop.conf.tmpl"))
        nginx.reload()
        # old workers keep accepting until they have handled the reload's QUIT: wait until
        # every answer comes from the new configuration
        wait_for(lambda: all(requests.post(nginx.url + "/visit", timeout=2).status_code == 200
                             for _ in range(5)),
                 timeout=20, interval=0.2, message="nginx to proxy to the app")
        resp = requests.post(nginx.url + "/visit", timeout=5)
        assert resp.headers.get("Content-Type") == "application/json", (resp.status_code, resp.text)
        body = resp.json()
        assert body["instance"] == "test-shop" and body["count"] >= 2
        # the app's own 503 (here: Redis gone) reaches the client unchanged, as JSON
        redis.stop()
        resp = requests.post(nginx.url + "/visit", timeout=5)
        assert resp.headers.get("Content-Type") == "application/json", (resp.status_code, resp.text)
        assert resp.status_code == 503 and "unreachable" in resp.json()["error"]
    finally:
        shop.stop()
        redis.stop()


def test_redis_document_names_the_elected_primary(catalog: CatalogProcess) -> None:
    empty = json.loads(render(catalog, APP_DIR / "redis.json.tmpl"))
    assert empty == {"primaries": [], "leader": None}
    register(catalog, "redis", "redis-redis-1", 6379, ["primary"], address="10.0.0.1")
    register(catalog, "redis", "redis-redis-2", 6379, ["primary"], address="10.0.0.2")
    register(catalog, "redis", "redis-redis-3", 6379, ["replica"], address="10.0.0.3")
    sid = requests.put(f"{catalog.url}/v1/session/create", json={"TTL": "30s"},
                       timeout=5).json()["ID"]
    holder = {"node": "redis-2", "address": "10.0.0.2", "port": 6379,
              "service_id": "redis-redis-2"}
    assert requests.put(f"{catalog.url}/v1/kv/service/redis/leader?acquire={sid}",
                        data=json.dumps(holder), timeout=5).json() is True
    doc = json.loads(render(catalog, APP_DIR / "redis.json.tmpl"))
    assert sorted(p["ID"] for p in doc["primaries"]) == ["redis-redis-1", "redis-redis-2"]
    code = ("import json, sys; from shop.primary import choose; "
            "p = choose(json.load(sys.stdin)); print(p.host, p.port, p.epoch)")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(doc), text=True,
                         capture_output=True, timeout=10, cwd=APP_DIR)
    assert out.returncode == 0, out.stderr
    host, port, epoch = out.stdout.split()
    assert (host, port) == ("10.0.0.2", "6379") and int(epoch) >= 1
