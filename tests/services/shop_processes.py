"""The shop's services as plain local processes: ``Service`` (a process with a log file,
stopped by SIGTERM then SIGKILL) and how each one is started against its backing services
(``start_catalogue``, ``start_carts``, ``start_orders``, ``start_frontend``; the frontend's
upstreams file by ``write_upstreams``). The fixtures that build and spawn them are in
conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ROOT, free_port, wait_for

IMAGES = ROOT / "images"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
JDBC = Path("/usr/share/java/postgresql.jar")


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} missing: apt-get install {package}")
    return path


class Service:
    """One local process with a log file; stopped by SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log
        self.port = int(env.get("PORT", "0"))
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd,
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30) -> Service:
        def ok() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log}")
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        wait_for(ok, timeout=timeout, interval=0.1, message=f"{self.name} /health")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def start_catalogue(spawn: Any, binary: Path) -> Service:
    port = free_port()
    return spawn("catalogue", [str(binary)], {
        "PORT": str(port), "BIND": "127.0.0.1",
        "CATALOGUE_DATA": str(IMAGES / "catalogue" / "products.json")}).wait_healthy()


def start_carts(spawn: Any, redis_port: int) -> Service:
    port = free_port()
    return spawn("carts", [sys.executable, "-m", "shop"], {
        "PORT": str(port), "BIND": "127.0.0.1", "PYTHONPATH": str(IMAGES / "app"),
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
        "REDIS_SETTINGS_FILE": "/nonexistent"}).wait_healthy()


def start_orders(spawn: Any, classes: Path, pg: dict[str, str], db_file: Path | None = None
                 ) -> Service:
    port = free_port()
    env = {k: v for k, v in pg.items() if not k.startswith("_")}
    env.update(PORT=str(port), BIND="127.0.0.1", ORDERS_DRAIN_SECONDS="1")
    if db_file is not None:
        env["ORDERS_DB_FILE"] = str(db_file)
    return spawn("orders", ["java", "-cp", f"{classes}:{JDBC}", "Orders"], env).wait_healthy(60)


def write_upstreams(path: Path, **services: list[Service]) -> None:
    doc = {name: [{"Address": "127.0.0.1", "Port": s.port} for s in lst]
           for name, lst in services.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # atomically, as autopilot's templates do


def start_frontend(spawn: Any, upstreams: Path) -> Service:
    need("node", "nodejs")
    port = free_port()
    return spawn("frontend", ["node", str(IMAGES / "frontend" / "server.js")], {
        "PORT": str(port), "BIND": "127.0.0.1", "FRONTEND_UPSTREAMS": str(upstreams),
        "FRONTEND_DRAIN_MS": "1000"}).wait_healthy()
