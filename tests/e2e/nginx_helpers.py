"""A real nginx running the nginx image's config, and the catalog-side helpers its tests
share: ``render`` (`autopilot template` against a catalog) and ``register`` (a service
instance with a TTL check). Used by tests/e2e/test_image_templates.py and the services'
tests (test_nginx_routes.py, test_image_configs.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, CatalogProcess, autopilot_cmd, free_port, wait_for

NGINX_DIR = ROOT / "images" / "nginx"
needs_nginx = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed")


def render(catalog: CatalogProcess, template: Path) -> str:
    out = subprocess.run(autopilot_cmd("template", str(template), "--consul", catalog.address),
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def register(catalog: CatalogProcess, name: str, sid: str, port: int, tags: list[str] = (),
             address: str = "127.0.0.1", passing: bool = True) -> None:
    body = {"ID": sid, "Name": name, "Address": address, "Port": port, "Tags": list(tags),
            "Check": {"CheckID": f"service:{sid}", "TTL": "60s"}}
    requests.put(f"{catalog.url}/v1/agent/service/register", json=body, timeout=5
                 ).raise_for_status()
    if passing:
        requests.put(f"{catalog.url}/v1/agent/check/pass/service:{sid}", timeout=5
                     ).raise_for_status()


class Nginx:
    """A real nginx running the image's nginx.conf, moved into a temp prefix."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "nginx"
        (self.root / "shop").mkdir(parents=True)
        (self.root / "html").mkdir()
        shutil.copy(NGINX_DIR / "503.html", self.root / "html" / "503.html")
        self.port = free_port()
        conf = (NGINX_DIR / "nginx.conf").read_text()
        conf = conf.replace("/tmp/nginx", str(self.root)).replace(
            "/etc/nginx/shop/", f"{self.root}/shop/")
        # root runs the tests: keep the workers root so they can read the temp dir
        (self.root / "nginx.conf").write_text("user root root;\n" + conf)
        self.proc: subprocess.Popen | None = None

    def install(self, site: str) -> None:
        site = site.replace("listen 8080", f"listen 127.0.0.1:{self.port}").replace(
            "/usr/share/nginx/shop", str(self.root / "html"))
        (self.root / "shop" / "shop.conf").write_text(site)

    def cmd(self, *args: str) -> list[str]:
        return ["nginx", "-e", "stderr", "-p", str(self.root), "-c",
                str(self.root / "nginx.conf"), *args]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=10)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd("-g", "daemon off;"),
                                     stdout=(self.root / "out.log").open("wb"),
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: requests.get(self.url + "/nginx-health", timeout=1).ok, timeout=10,
                 message="nginx up")

    def reload(self) -> None:
        subprocess.run(self.cmd("-s", "reload"), check=True, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
