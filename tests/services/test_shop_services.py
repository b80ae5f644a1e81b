"""Each shop service built from images/ and run as a plain process (no Docker), then the
whole purchase through the Node.js front-end: browse (Go catalogue), add to the cart (the
Python app on Redis), order (Java orders in PostgreSQL). Each one is configured only from its
environment, logs one line per request to stdout, answers /health and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import wait_for
from tests.services.shop_processes import (
    start_carts,
    start_catalogue,
    start_frontend,
    start_orders,
    write_upstreams,
)

pytestmark = pytest.mark.timeout(300)
JSON = {"Accept": "application/json"}


def test_catalogue_is_read_only_product_data(spawn: Any, catalogue_bin: Path) -> None:
    cat = start_catalogue(spawn, catalogue_bin)
    products = requests.get(cat.url + "/catalogue", timeout=5).json()["products"]
    assert {p["id"] for p in products} >= {"argyle", "dots"}
    assert requests.get(cat.url + "/catalogue/dots", timeout=5).json()["price"] == 8.25
    assert requests.get(cat.url + "/catalogue/nope", timeout=5).status_code == 404
    assert requests.post(cat.url + "/catalogue", timeout=5).status_code == 405
    assert "GET /catalogue/dots 200" in cat.log  # one line per request, on stdout
    assert cat.stop() == 0 and "catalogue: stopped" in cat.log  # SIGTERM: a clean stop


def test_catalogue_refuses_to_start_without_its_data(spawn: Any, catalogue_bin: Path) -> None:
    s = spawn("catalogue", [str(catalogue_bin)], {"PORT": "1", "CATALOGUE_DATA": "/nonexistent"})
    assert s.proc.wait(10) != 0
    assert "cannot load products" in s.log and "/nonexistent" in s.log


def test_orders_in_postgres_idempotent_and_env_configured(
        spawn: Any, orders_classes: Path, postgres: dict[str, str], tmp_path: Path) -> None:
    orders = start_orders(spawn, orders_classes, postgres)
    body = {"id": "o-1", "customer": "ann", "items": [{"id": "dots", "qty": 2}], "total": 16.5}
    first = requests.post(orders.url + "/orders", json=body, timeout=10)
    assert first.status_code == 201 and first.json()["id"] == "o-1"
    again = requests.post(orders.url + "/orders", json=body, timeout=10)
    assert again.status_code == 200  # the same id: stored once, answered again
    listed = requests.get(orders.url + "/orders?customer=ann", timeout=10).json()["orders"]
    assert [o["id"] for o in listed] == ["o-1"]
    assert requests.get(orders.url + "/orders/missing", timeout=10).status_code == 404
    assert requests.post(orders.url + "/orders", json={"customer": "x"},
                         timeout=10).status_code == 400
    assert "POST /orders 201" in orders.log
    assert orders.stop() in (0, 143) and "orders: stopped" in orders.log


def test_orders_follow_the_rendered_database_file(
        spawn: Any, orders_classes: Path, postgres: dict[str, str], tmp_path: Path) -> None:
    """The file autopilot renders wins over PGHOST/PGPORT and is re-read when replaced."""
    db_file = tmp_path / "db.properties"
    db_file.write_text("host=127.0.0.1\nport=1\n")  # nothing listens on port 1
    wrong = {**postgres, "PGPORT": "1"}
    orders = start_orders(spawn, orders_classes, wrong, db_file)
    order = {"id": "o-2", "customer": "bo", "items": [], "total": 0}
    assert requests.post(orders.url + "/orders", json=order, timeout=20).status_code == 503
    tmp = tmp_path / "db.tmp"
    tmp.write_text(f"host=127.0.0.1\nport={postgres['PGPORT']}\n")
    tmp.replace(db_file)
    assert requests.post(orders.url + "/orders", json=order, timeout=20).status_code == 201
    assert f"database is 127.0.0.1:{postgres['PGPORT']}" in orders.log


def test_a_purchase_through_the_frontend(
        spawn: Any, catalogue_bin: Path, orders_classes: Path, postgres: dict[str, str],
        redis_server: Any, tmp_path: Path) -> None:
    cat = start_catalogue(spawn, catalogue_bin)
    carts = start_carts(spawn, redis_server.port)
    orders = start_orders(spawn, orders_classes, postgres)
    upstreams = tmp_path / "upstreams.json"
    write_upstreams(upstreams, catalogue=[cat], carts=[carts], orders=[orders])
    front = start_frontend(spawn, upstreams)
    # people get HTML, clients JSON
    html = requests.get(front.url + "/", timeout=10)
    assert html.headers["Content-Type"].startswith("text/html")
    assert "Polka-dot socks" in html.text and "<form" in html.text
    shop = requests.get(front.url + "/", headers=JSON, timeout=10).json()
    assert any(p["id"] == "hiking" for p in shop["products"])
    # add to the cart, twice, then order
    for item, qty in (("hiking", 1), ("dots", 2)):
        r = requests.post(f"{front.url}/api/cart/ann/items/{item}?qty={qty}", headers=JSON,
                          timeout=10)
        assert r.status_code == 200, r.text
    assert requests.get(front.url + "/api/cart/ann", headers=JSON,
                        timeout=10).json()["cart"] == {"dots": 2, "hiking": 1}
    placed = requests.post(front.url + "/api/orders/ann?id=buy-1", headers=JSON, timeout=30)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["id"] == "buy-1" and order["total"] == 14.0 + 2 * 8.25
    # the order is in PostgreSQL, the cart is empty, a retry of the same order is safe
    stored = requests.get(front.url + "/api/orders/buy-1", headers=JSON, timeout=10).json()
    assert stored["customer"] == "ann" and len(stored["items"]) == 2
    assert requests.get(front.url + "/api/cart/ann", headers=JSON,
                        timeout=10).json()["cart"] == {}
    retry = requests.post(front.url + "/api/orders/ann?id=buy-1", headers=JSON, timeout=30)
    assert retry.status_code == 200 and retry.json()["id"] == "buy-1"
    # a browser's form post is redirected back to the page
    form = requests.post(front.url + "/api/cart/bob/items/dots", allow_redirects=False,
                         headers={"Accept": "text/html"}, timeout=10)
    assert form.status_code == 303 and form.headers["Location"] == "/"
    # each service logged its requests on stdout
    for svc, line in ((cat, "GET /catalogue 200"), (carts, "POST /cart/ann/items/hiking"),
                      (orders, "POST /orders 201"), (front, "POST /api/orders/ann?id=buy-1 201")):
        assert line in svc.log, (svc.name, svc.log[-2000:])


def test_frontend_follows_the_rendered_upstreams(
        spawn: Any, catalogue_bin: Path, tmp_path: Path) -> None:
    """A second catalogue appears in the file, the first goes away: no failed request."""
    one = start_catalogue(spawn, catalogue_bin)
    upstreams = tmp_path / "upstreams.json"
    write_upstreams(upstreams, catalogue=[one])
    front = start_frontend(spawn, upstreams)
    assert requests.get(front.url + "/api/catalogue", timeout=10).status_code == 200
    two = start_catalogue(spawn, catalogue_bin)
    write_upstreams(upstreams, catalogue=[one, two])
    # the file is re-read (a stat per request) on the next request that needs it
    wait_for(lambda: requests.get(front.url + "/api/catalogue", timeout=10).ok
             and "catalogue=2" in front.log, message="frontend re-read the file")
    one.stop(signal.SIGKILL)  # gone before the file says so: the retry goes to the other
    codes = [requests.get(front.url + "/api/catalogue", timeout=10).status_code
             for _ in range(10)]
    assert codes == [200] * 10
    write_upstreams(upstreams, catalogue=[two])
    assert requests.get(front.url + "/api/catalogue", timeout=10).status_code == 200
    assert front.log.count("upstreams from") == 3
    assert front.stop() == 0 and "finishing requests in flight" in front.log
    assert json.loads(upstreams.read_text())["catalogue"][0]["Port"] == two.port
