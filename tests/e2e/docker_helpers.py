"""A docker-compose project driven from tests: the real engine, real images, real HTTP.

Everything goes through the `docker` and `docker-compose` clients with DOCKER_HOST from
the environment (.ci/e2e.sh starts its own dockerd and exports it). Published ports are
bound to 127.0.0.1 on free ports, so tests never clash with a user's stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.helpers import ROOT, free_port

BASE_IMAGE = "debian:bookworm-slim"


def run(*args: str, timeout: float = 120, check: bool = True, env: dict | None = None,
        ) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def engine_problem() -> str | None:
    """Why the e2e tests cannot run here, or None when a Docker engine answers."""
    if not shutil.which("docker"):
        return "no docker client installed (.ci/e2e.sh installs docker.io and starts dockerd)"
    if not shutil.which("docker-compose"):
        return "no docker-compose installed (apt-get install docker-compose)"
    try:
        out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer within 10 s"
    if out.returncode != 0:
        host = os.environ.get("DOCKER_HOST", "the default socket")
        return (f"no Docker engine reachable at {host} (run .ci/e2e.sh, or start dockerd and "
                "set DOCKER_HOST)")
    if run("docker", "image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        return (f"base image {BASE_IMAGE} missing and nothing can be pulled here: "
                "run images/base/build.sh")
    return None


@dataclass
class Stack:
    project: str
    shop_port: int = field(default_factory=free_port)
    catalog_port: int = field(default_factory=free_port)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {"SHOP_PORT": str(self.shop_port),
                             "CATALOG_PORT": str(self.catalog_port),
                             "SHOP_BIND": "127.0.0.1", "COMPOSE_PROJECT_NAME": self.project}

    @property
    def shop(self) -> str:
        return f"http://127.0.0.1:{self.shop_port}"

    @property
    def catalog(self) -> str:
        return f"http://127.0.0.1:{self.catalog_port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True,
                ) -> subprocess.CompletedProcess:
        return run("docker-compose", "-p", self.project, *args, timeout=timeout, check=check,
                   env=self.env)

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def docker(self, *args: str, timeout: float = 60, check: bool = True,
               ) -> subprocess.CompletedProcess:
        return run("docker", *args, timeout=timeout, check=check)

    def pause(self, container: str, attempts: int = 5) -> None:
        """`docker pause`, retried: runc's cgroup freezer sometimes gives up on a loaded
        host ("unable to freeze"); that is the tool failing, not the system under test."""
        for i in range(attempts):
            out = self.docker("pause", container, check=False)
            if out.returncode == 0:
                return
            if "unable to freeze" not in out.stderr or i == attempts - 1:
                raise AssertionError(f"docker pause {container}: {out.stderr}")
            time.sleep(0.5)

    def redis_role(self, node: str) -> str:
        """What redis-server itself says: master / slave (or an error text)."""
        out = self.docker("exec", self.container(node), "redis-cli", "role", check=False,
                          timeout=15)
        return out.stdout.split("\n", 1)[0].strip() if out.returncode == 0 else "down"

    def redis_nodes(self, passing: bool = True) -> list[dict]:
        url = self.catalog + "/v1/health/service/redis" + ("?passing" if passing else "")
        return requests.get(url, timeout=5).json()

    def primary(self) -> str | None:
        """The compose service (redis-N) of the passing instance tagged primary, if one."""
        nodes = [e for e in self.redis_nodes() if "primary" in e["Service"]["Tags"]]
        if len(nodes) != 1:
            return None
        return nodes[0]["Service"]["ID"].removeprefix("redis-")

    def app_ids(self) -> set[str]:
        out = self.compose("ps", "-q", "app")
        return {c[:12] for c in out.stdout.split()}

    def instances_behind_nginx(self, tries: int = 40) -> set[str]:
        seen = set()
        for _ in range(tries):
            r = requests.get(self.shop + "/health", timeout=5)
            if r.ok:
                seen.add(r.json()["instance"])
        return seen

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, args in {"containers": ["ps", "-a", "-q"], "networks": ["network", "ls", "-q"],
                           "volumes": ["volume", "ls", "-q"]}.items():
            found[kind] = self.docker(*args, "--filter", label).stdout.split()
        return found

    def volumes_in_use(self) -> set[str]:
        """Named and anonymous volumes mounted by the project's containers (anonymous ones
        carry no compose label, so `leftovers` alone would miss them)."""
        ids = self.docker("ps", "-aq", "--filter",
                          f"label=com.docker.compose.project={self.project}").stdout.split()
        if not ids:
            return set()
        out = self.docker("inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", *ids)
        return set(out.stdout.split())

    def save_logs(self) -> None:
        """Keep the containers' logs outside pytest's rotating basetemp (CI reads them);
        a no-op once the project is down."""
        if not self.compose("ps", "-q", check=False).stdout.split():
            return
        log_dir = Path(os.environ.get("AUTOPILOT_E2E_LOGS", "/tmp/autopilot-e2e-logs"))
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"{self.project}.log"
        out = self.compose("logs", "--no-color", "--timestamps", check=False, timeout=60)
        path.write_text(out.stdout + out.stderr)
        print(f"compose logs: {path}")

    def all_healthy(self) -> bool:
        ids = self.compose("ps", "-q").stdout.split()
        out = self.docker("inspect", "-f", "{{.State.Health.Status}}", *ids)
        return bool(ids) and set(out.stdout.split()) == {"healthy"}

    def record(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 3)
        report = os.environ.get("AUTOPILOT_E2E_REPORT")
        if report:  # several stacks (test modules) add to one report
            path = Path(report)
            try:
                merged = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                merged = {}
            path.write_text(json.dumps(merged | self.timings, indent=2) + "\n")


class Writer:
    """One sequential client counting visits through nginx: every 200 is an acknowledged
    increment, and in no-loss mode each must be larger than every earlier one."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.acked: list[tuple[float, int, str]] = []  # (t, count, redis address)
        self.errors: list[tuple[float, str]] = []

    def visit(self) -> bool:
        t = time.monotonic()
        try:
            r = requests.post(self.stack.shop + "/visit", timeout=5)
        except requests.RequestException as exc:
            self.errors.append((t, f"{type(exc).__name__}"))
            return False
        if r.status_code == 200:
            body = r.json()
            self.acked.append((t, body["count"], body["redis"]))
            return True
        self.errors.append((t, f"{r.status_code} {r.text[:120].strip()}"))
        return False

    def run_until(self, cond, deadline: float, pause: float = 0.02) -> bool:  # noqa: ANN001
        """Keep writing until ``cond()`` holds (checked every ~0.5 s) or the deadline."""
        next_check = 0.0
        while time.monotonic() < deadline:
            self.visit()
            if time.monotonic() >= next_check:
                if cond():
                    return True
                next_check = time.monotonic() + 0.5
            time.sleep(pause)
        return False

    def lost(self) -> list[tuple[int, int]]:
        """Pairs (earlier acked count, later acked count) that break monotonicity."""
        counts = [c for _, c, _ in self.acked]
        return [(a, b) for a, b in zip(counts, counts[1:], strict=False) if b <= a]

    def first_ok_after(self, t: float, not_on: str | None = None) -> float | None:
        for ts, _, addr in self.acked:
            if ts > t and addr != not_on:
                return ts
        return None
