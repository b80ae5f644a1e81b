"""Fixtures: the shop's services built from images/ and run as plain local processes, with
their real backing services (redis-server, a PostgreSQL 15 cluster run as user postgres).

Builds happen once per session into a temporary directory (go build, javac); a missing
toolchain skips with the apt package to install (CI installs them: .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def build_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="shop-build-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def catalogue_bin(build_dir: Path) -> Path:
    go = need("go", "golang")
    out = build_dir / "catalogue"
    env = {**os.environ, "GOCACHE": str(build_dir / "gocache"), "GOPATH": str(build_dir / "gopath"),
           "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(out), "."], cwd=IMAGES / "catalogue", env=env,
                   check=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def orders_classes(build_dir: Path) -> Path:
    javac = need("javac", "default-jdk-headless")
    if not JDBC.exists():
        pytest.skip("no JDBC driver: apt-get install libpostgresql-jdbc-java")
    out = build_dir / "orders"
    subprocess.run([javac, "-d", str(out), str(IMAGES / "orders" / "src" / "Orders.java")],
                   check=True, timeout=300)
    return out


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def make(name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
             ) -> Service:
        s = Service(name, argv, env, tmp_path / f"{name}-{len(started)}.log", cwd)
        started.append(s)
        return s

    yield make
    for s in reversed(started):
        s.stop(signal.SIGKILL)


@pytest.fixture
def redis_server(tmp_path: Path, spawn: Any) -> Service:
    need("redis-server", "redis-server")
    port = free_port()
    s = spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
              {"PORT": str(port)})
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                    text=True).stdout.strip() == "PONG",
             timeout=15, message="redis-server")
    return s


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL 15 cluster (user postgres, trust on loopback); yields PG* env."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 missing: apt-get install postgresql-15")
    data = Path(tempfile.mkdtemp(prefix="shop-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data / "db"), "-A", "trust",
                    "-U", "postgres"], check=True, capture_output=True, timeout=120)
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-w", "-t", "60",
                    "-l", str(data / "pg.log"), "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start"], check=True, capture_output=True, timeout=90)
    try:
        yield {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres",
               "PGDATABASE": "postgres", "_DATA": str(data / "db")}
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


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
