"""The new images' autopilot configs load from their environment alone, and their templates
render from a real catalog into what the services read (orders: the PostgreSQL primary;
frontend: catalogue, carts and orders instances)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from autopilot.config import load
from tests.e2e.nginx_helpers import register
from tests.helpers import ROOT, CatalogProcess, autopilot_cmd

pytestmark = pytest.mark.timeout(60)
IMAGES = ROOT / "images"


def render(catalog: CatalogProcess, template: Path) -> str:
    out = subprocess.run(autopilot_cmd("template", str(template), "--consul", catalog.address),
                         capture_output=True, text=True, timeout=30, cwd=ROOT, env=os.environ)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("image, exec0", [("catalogue", "/usr/local/bin/catalogue"),
                                          ("orders", "java"), ("frontend", "node")])
def test_configs_come_from_the_environment(image: str, exec0: str) -> None:
    path = str(IMAGES / image / "autopilot.json5")
    cfg = load(path, {})
    job = cfg.jobs[0]
    assert cfg.warnings == [] and job.name == image and job.exec[0] == exec0
    assert job.port == 8080 and cfg.consul.address == "catalog:8500"
    k8s = load(path, {"CONSUL": "consul.shop:8500", "POD_IP": "10.1.2.3", "PORT": "9000"})
    assert k8s.jobs[0].port == 9000 and k8s.jobs[0].interfaces[0] == "static:10.1.2.3"
    assert k8s.consul.address == "consul.shop:8500"


def test_orders_database_file_names_the_primary(catalog: CatalogProcess) -> None:
    template = IMAGES / "orders" / "db.properties.tmpl"
    assert "host=" not in render(catalog, template)  # no primary: no host
    register(catalog, "postgres", "postgres-b", 5432, tags=["replica"], address="10.0.0.2")
    register(catalog, "postgres", "postgres-a", 5432, tags=["primary"], address="10.0.0.1")
    text = render(catalog, template)
    assert "host=10.0.0.1\nport=5432" in text and "10.0.0.2" not in text
    # two tagged primaries (a failover in progress): the election's holder wins
    register(catalog, "postgres", "postgres-c", 5433, tags=["primary"], address="10.0.0.3")
    sid = requests.put(f"{catalog.url}/v1/session/create", json={"TTL": "30s"},
                       timeout=5).json()["ID"]
    assert requests.put(f"{catalog.url}/v1/kv/service/postgres/leader?acquire={sid}",
                        data=json.dumps({"service_id": "postgres-c", "address": "10.0.0.3",
                                         "port": 5433}), timeout=5).json() is True
    assert "host=10.0.0.3\nport=5433" in render(catalog, template)


def test_frontend_upstreams_list_every_passing_instance(catalog: CatalogProcess) -> None:
    template = IMAGES / "frontend" / "upstreams.json.tmpl"
    assert json.loads(render(catalog, template)) == {"catalogue": [], "carts": [], "orders": []}
    register(catalog, "catalogue", "catalogue-2", 8080, address="10.0.1.2")
    register(catalog, "catalogue", "catalogue-1", 8080, address="10.0.1.1")
    register(catalog, "app", "app-1", 8000, address="10.0.2.1")
    register(catalog, "orders", "orders-1", 8080, address="10.0.3.1", passing=False)
    doc = json.loads(render(catalog, template))
    assert [c["Address"] for c in doc["catalogue"]] == ["10.0.1.1", "10.0.1.2"]
    assert doc["carts"][0]["Port"] == 8000 and doc["orders"] == []  # not passing: left out
