"""Real processes for the shop-app tests: redis-server and `python -m shop` on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers import ROOT, free_port, wait_for

APP_DIR = ROOT / "images" / "app"


class Redis:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Redis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--repl-diskless-sync", "yes",
             "--repl-diskless-sync-delay", "0"],
            stdout=(self.dir / "log").open("wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.cli("PING") == "PONG", timeout=10, message="redis-server up")
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Shop:
    """The app as a subprocess; ``env`` adds to a clean environment."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.settings_file = tmp / f"redis-{self.port}.json"
        self.log = tmp / f"shop-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("REDIS_", "SHOP_", "PORT"))}
        self.env.update(PYTHONPATH=str(APP_DIR), PYTHONUNBUFFERED="1", PORT=str(self.port),
                        BIND="127.0.0.1", REDIS_SETTINGS_FILE=str(self.settings_file),
                        INSTANCE_NAME="test-shop")
        self.env.update(env)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Shop:
        self.proc = subprocess.Popen([sys.executable, "-m", "shop"], env=self.env,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: requests.get(self.url + "/health", timeout=1).ok, timeout=10,
                 message="shop to answer /health")
        return self

    def point_at(self, primaries: list[tuple[str, int]], leader: str | None = None) -> None:
        """Write the settings file the way autopilot's template does: atomically."""
        doc = {"primaries": [{"ID": f"redis-{p}", "Address": h, "Port": p} for h, p in primaries],
               "leader": {"service_id": leader} if leader else None}
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.settings_file)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def have_redis() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))
