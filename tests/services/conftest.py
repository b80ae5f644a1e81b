"""Fixtures: the shop's services built from images/ and run as plain local processes, with
their real backing services (redis-server, a PostgreSQL 15 cluster run as user postgres).

Builds happen once per session into a temporary directory (go build, javac); a missing
toolchain skips with the apt package to install (CI installs them: .ci/run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for
from tests.services.shop_processes import IMAGES, JDBC, PG_BIN, Service, need


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
