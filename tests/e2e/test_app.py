"""The shop app (images/app) against real redis-server processes: no Docker needed.

Covers the twelve-factor behaviour the images rely on: config from the environment, the
rendered primary file followed on change (failover), no-loss mode refusing unacknowledged
writes, clear 503s, graceful SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.shop_helpers import APP_DIR, Redis, Shop, have_redis
from tests.helpers import wait_for

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not have_redis(), reason="redis-server/redis-cli not installed")]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator:
    started: list[Redis] = []

    def make() -> Redis:
        r = Redis(tmp_path).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def shop_factory(tmp_path: Path) -> Iterator:
    started: list[Shop] = []

    def make(**env: str) -> Shop:
        s = Shop(tmp_path, **env).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def visit(shop: Shop) -> requests.Response:
    return requests.post(shop.url + "/visit", timeout=5)


def test_counts_visits_and_carts_with_redis_from_env(redis_factory, shop_factory) -> None:
    r = redis_factory()
    shop = shop_factory(REDIS_HOST="127.0.0.1", REDIS_PORT=str(r.port))
    counts = [visit(shop).json()["count"] for _ in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    body = requests.get(shop.url + "/count", timeout=5).json()
    assert body["count"] == 5 and body["instance"] == "test-shop"
    assert body["redis"] == f"127.0.0.1:{r.port}"
    requests.post(shop.url + "/cart/ann/items/apple?qty=2", timeout=5).raise_for_status()
    cart = requests.post(shop.url + "/cart/ann/items/pear", timeout=5).json()["cart"]
    assert cart == {"apple": 2, "pear": 1}
    assert requests.delete(shop.url + "/cart/ann", timeout=5).json()["cart"] == {}
    assert r.cli("HGETALL", "shop:cart:ann") == ""
    assert requests.get(shop.url + "/visit", timeout=5).status_code == 405
    assert requests.get(shop.url + "/nope", timeout=5).status_code == 404
    assert requests.post(shop.url + "/cart/ann/items/x?qty=lots", timeout=5).status_code == 400


def test_follows_the_rendered_primary_across_a_failover(redis_factory, shop_factory) -> None:
    a, b = redis_factory(), redis_factory()
    b.cli("REPLICAOF", "127.0.0.1", str(a.port))
    shop = shop_factory()
    shop.point_at([("127.0.0.1", a.port)])
    last = 0
    for _ in range(3):
        resp = visit(shop)
        assert resp.status_code == 200, resp.text
        assert resp.json()["redis"] == f"127.0.0.1:{a.port}"
        last = resp.json()["count"]
    wait_for(lambda: b.cli("GET", "shop:visits") == str(last), timeout=5, message="replication")
    # failover: b promoted, a demoted; autopilot re-renders the file
    b.cli("REPLICAOF", "NO", "ONE")
    a.cli("REPLICAOF", "127.0.0.1", str(b.port))
    shop.point_at([("127.0.0.1", b.port)])
    resp = visit(shop)
    assert resp.status_code == 200, resp.text
    assert resp.json() == resp.json() | {"redis": f"127.0.0.1:{b.port}", "count": last + 1}


def test_prefers_the_primary_holding_the_election_lock(redis_factory, shop_factory) -> None:
    a, b = redis_factory(), redis_factory()
    shop = shop_factory()
    shop.point_at([("127.0.0.1", a.port), ("127.0.0.1", b.port)], leader=f"redis-{b.port}")
    assert visit(shop).json()["redis"] == f"127.0.0.1:{b.port}"


def test_a_demoted_node_or_no_primary_gives_503(redis_factory, shop_factory) -> None:
    a, b = redis_factory(), redis_factory()
    b.cli("REPLICAOF", "127.0.0.1", str(a.port))
    shop = shop_factory()
    shop.point_at([])
    resp = visit(shop)
    assert resp.status_code == 503 and "no Redis primary" in resp.json()["error"]
    shop.point_at([("127.0.0.1", b.port)])  # stale file still naming a replica
    resp = visit(shop)
    assert resp.status_code == 503 and "no longer the primary" in resp.json()["error"]
    # a fenced primary (min-replicas-to-write, as the Redis hooks do) refuses too
    a.cli("CONFIG", "SET", "min-replicas-to-write", "10")
    shop.point_at([("127.0.0.1", a.port)])
    resp = visit(shop)
    assert resp.status_code == 503 and "refused" in resp.json()["error"], resp.text


def test_no_loss_mode_refuses_a_write_no_replica_acknowledged(redis_factory, shop_factory) -> None:
    a, b = redis_factory(), redis_factory()
    shop = shop_factory(REDIS_HOST="127.0.0.1", REDIS_PORT=str(a.port), SHOP_NO_LOSS="1",
                        SHOP_WAIT_MS="100")
    resp = visit(shop)
    assert resp.status_code == 503
    assert "not acknowledged by a replica" in resp.json()["error"]
    b.cli("REPLICAOF", "127.0.0.1", str(a.port))
    wait_for(lambda: "connected_slaves:1" in a.cli("INFO", "replication"), timeout=10,
             message="replica attached")
    wait_for(lambda: visit(shop).status_code == 200, timeout=10, message="acknowledged write")
    assert int(b.cli("GET", "shop:visits")) >= 2


@pytest.mark.timing
def test_sigterm_stops_gracefully_and_fast(redis_factory, shop_factory) -> None:
    r = redis_factory()
    shop = shop_factory(REDIS_HOST="127.0.0.1", REDIS_PORT=str(r.port))
    assert visit(shop).status_code == 200
    t0 = time.monotonic()
    shop.proc.send_signal(signal.SIGTERM)
    assert shop.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0
    assert "shop: stopped" in shop.log.read_text()


def test_a_bad_setting_fails_fast_naming_the_variable() -> None:
    out = subprocess.run([sys.executable, "-m", "shop"], cwd=APP_DIR, capture_output=True,
                         text=True, timeout=10, env={"PORT": "eighty", "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "PORT='eighty'" in out.stderr


@pytest.mark.timing
def test_a_frozen_primary_costs_one_timeout_and_no_double_write(redis_factory,
                                                                 shop_factory) -> None:
    r = redis_factory()
    shop = shop_factory(REDIS_HOST="127.0.0.1", REDIS_PORT=str(r.port), REDIS_TIMEOUT="0.5")
    assert visit(shop).json()["count"] == 1
    r.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        resp = visit(shop)
        took = time.monotonic() - t0
    finally:
        r.proc.send_signal(signal.SIGCONT)
    assert resp.status_code == 503 and "unreachable" in resp.json()["error"]
    assert took < 1.5, f"{took:.2f}s: the client retried instead of failing fast"
    # the INCR sent to the frozen server ran once when it thawed; never twice
    wait_for(lambda: r.cli("GET", "shop:visits") == "2", timeout=5, message="thawed INCR")
    assert visit(shop).json()["count"] == 3


def run_client(url: str, seconds: str = "1") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shop.client", url, "--seconds", seconds],
                          cwd=APP_DIR, capture_output=True, text=True, timeout=30)


def test_workshop_client_counts_and_flags_a_lost_increment(redis_factory,
                                                           shop_factory) -> None:
    r = redis_factory()
    shop = shop_factory(REDIS_HOST="127.0.0.1", REDIS_PORT=str(r.port))
    out = run_client(shop.url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "acknowledged counts strictly increasing: yes" in out.stdout
    assert f"127.0.0.1:{r.port}" in out.stdout
    # a failover that lost data: the counter steps back while the client writes
    r.cli("SET", "shop:visits", "1000000")
    proc = subprocess.Popen([sys.executable, "-m", "shop.client", shop.url, "--seconds", "3"],
                            cwd=APP_DIR, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: int(r.cli("GET", "shop:visits")) > 1000010, timeout=10,
             message="client writing")
    r.cli("SET", "shop:visits", "5")
    stdout, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "acknowledged counts strictly increasing: no" in stdout
