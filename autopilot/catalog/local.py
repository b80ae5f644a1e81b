"""The embedded catalog as a child process: start it, wait until it answers, stop it.

The lab, the tests and the benchmarks all run `autopilot catalog` beside what they measure
or break; this is the one place that starts it, so a change to how the catalog comes up
(its flags, its readiness) is made once. Nothing here runs inside a supervisor.

    with LocalCatalog(Path("/tmp/cat.log")) as cat:
        print(cat.url)
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path


class CatalogNotReady(RuntimeError):
    """The catalog exited or did not answer in time; the message names its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def answers(address: str, timeout: float = 1.0) -> bool:
    """Whether a catalog (or a Consul agent) at ``host:port`` answers /v1/status/leader."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/v1/status/leader")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class LocalCatalog:
    """`python -m autopilot catalog` on ``host:port`` (a free port unless given), with its
    output appended to ``log``. ``args`` go to the catalog's command line."""

    def __init__(self, log: Path, *args: str, host: str = "127.0.0.1",
                 port: int | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, new_session: bool = False) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log = Path(log)
        self.args = args
        self.env = env
        self.cwd = cwd
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (the lab records its PID first)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autopilot", "catalog", "--bind", self.host,
                 "--port", str(self.port), *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                start_new_session=self.new_session)
        return self.proc

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Return once it answers; raise CatalogNotReady if it exits or the deadline passes."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CatalogNotReady(f"the catalog exited ({self.proc.returncode}); "
                                      f"see {self.log}")
            if answers(self.address):
                return
            if time.monotonic() > deadline:
                raise CatalogNotReady(f"the catalog did not answer on {self.address} within "
                                      f"{timeout:g} s; see {self.log}")
            time.sleep(0.05)

    def start(self, timeout: float = 15.0) -> LocalCatalog:
        """Spawn it and wait until it answers; a catalog that does not is stopped."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except CatalogNotReady:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL at once (a test's crash of the catalog)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> LocalCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
