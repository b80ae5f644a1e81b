"""nginx's shop template (images/nginx/shop.conf.tmpl) routes /function/<name>/ to a real
function job and / to the frontend, rendered from a real catalog and served by real nginx."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.nginx_helpers import NGINX_DIR, Nginx, needs_nginx, register
from tests.helpers import ROOT, CatalogProcess, autopilot_cmd, free_port, wait_for

pytestmark = [pytest.mark.timeout(120), needs_nginx]
HANDLER = str(ROOT / "autopilot" / "lab" / "examples" / "functions" / "hello.py")


def render(catalog: CatalogProcess, functions: str) -> str:
    out = subprocess.run(autopilot_cmd("template", str(NGINX_DIR / "shop.conf.tmpl"), "--consul",
                                       catalog.address), capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env={**os.environ, "NGINX_FUNCTIONS": functions})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_function_route_through_nginx_scales_from_zero(
        catalog: CatalogProcess, tmp_path: Path, autopilot: Any) -> None:
    nginx = Nginx(tmp_path)
    site = render(catalog, "hello, absent")
    assert "location /function/hello/" in site and "return 503;" in site  # nothing yet
    port = free_port()
    ap = autopilot({"consul": catalog.address, "jobs": [{
        "name": "hello", "exec": ["python3", HANDLER], "port": port, "tags": ["function"],
        "interfaces": ["static:127.0.0.1"],
        "function": {"idleTimeout": "1s", "bind": "127.0.0.1"}}]})
    wait_for(lambda: requests.get(f"{catalog.url}/v1/health/service/hello?passing",
                                  timeout=5).json(), timeout=20, message="hello registered")
    site = render(catalog, "hello, absent")
    assert f"server 127.0.0.1:{port}" in site
    nginx.install(site)
    assert nginx.check().returncode == 0, nginx.check().stderr
    nginx.start()
    try:
        for round_ in range(2):  # the second round comes after the scale to zero
            r = requests.get(nginx.url + "/function/hello/?name=nginx", timeout=20)
            assert r.status_code == 200, r.text
            assert r.json()["hello"] == "nginx" and r.json()["listen_fds"] == "1"
            if round_ == 0:
                ap.wait_log(r"idle: stopping the handler", timeout=15)
        assert ap.count("cold start cold_starts") == 2
        assert requests.get(nginx.url + "/function/absent/", timeout=5).status_code == 503
    finally:
        nginx.stop()


def test_root_goes_to_the_frontend_and_the_carts_api_to_the_app(
        catalog: CatalogProcess, tmp_path: Path) -> None:
    """Two stand-in HTTP servers tell which one nginx chose."""
    servers = {}
    for name in ("frontend", "app"):
        port = free_port()
        d = tmp_path / name
        (d / "visit").mkdir(parents=True)
        (d / "index.html").write_text(name)
        (d / "visit" / "index.html").write_text(name)
        servers[name] = subprocess.Popen([sys.executable, "-m", "http.server", str(port),
                                          "--bind", "127.0.0.1", "-d", str(d)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        register(catalog, name, f"{name}-1", port)
    nginx = Nginx(tmp_path)
    try:
        site = render(catalog, "")
        assert "upstream shop_frontend" in site and "upstream shop_app" in site
        nginx.install(site)
        assert nginx.check().returncode == 0, nginx.check().stderr
        nginx.start()
        wait_for(lambda: requests.get(nginx.url + "/", timeout=2).text == "frontend",
                 message="/ to the frontend")
        assert requests.get(nginx.url + "/visit/", timeout=5).text == "app"
    finally:
        nginx.stop()
        for p in servers.values():
            p.kill()
            p.wait(5)
