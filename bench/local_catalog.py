"""The embedded catalog as a subprocess on a free loopback port, for the benchmarks.

A benchmark stands on its own: it must not import the test suite (tests/ may change shape
at any time, and a bench run must not depend on pytest's helpers). Use as a context manager:

    with LocalCatalog(tmp) as cat:
        requests.get(cat.url + "/v1/catalog/services")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCatalog:
    """`python -m autopilot catalog` on 127.0.0.1; its output goes to a log in ``tmp``."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = Path(tmp) / f"catalog-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> LocalCatalog:
        """Start it and wait until it answers (a deadline, then an error with the log)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autopilot", "catalog", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "/v1/status/leader", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the catalog did not answer on {self.url} within "
                                   f"{timeout:g}s; its log: {self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> LocalCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
