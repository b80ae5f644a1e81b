"""Fixtures for running a real ``python -m autopilot run CONFIG`` subprocess: ``autopilot``
(below) and, for the control and telemetry tests, ``workdir`` and ``launch``
(`tests.integration.control_helpers.Autopilot`).

Usage::

    def test_x(autopilot):
        ap = autopilot({"jobs": [{"name": "app", "exec": ["sleep", "30"]}]})
        ap.wait_log(r"event code=startup")
        ap.terminate()
        assert ap.wait() == 0

A dict config is written as JSON with a control socket in the test's tmp dir and DEBUG
logging (every bus event is logged as ``event code=<code> source=<source>``); a string is
written as is. Every process is killed (as a group) at teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import ROOT, wait_for
from tests.integration.control_helpers import Autopilot


def autopilot_run_cmd(config: str | Path) -> list[str]:
    """``python -m autopilot run CONFIG``."""
    return [sys.executable, "-m", "autopilot", "run", str(config)]


class AutopilotProcess:
    """One autopilot under test: its config file, its log, its exit status."""

    def __init__(self, tmp: Path, config: str | dict[str, Any], *, env: dict[str, str],
                 prefix: list[str] | None = None, name: str = "autopilot") -> None:
        self.tmp = tmp
        self.name = name
        self.config_path = tmp / f"{name}.json5"
        self.socket = str(tmp / f"{name}.sock")
        self.log_path = tmp / f"{name}.log"
        self.err_path = tmp / f"{name}.err"
        self.env = env
        self.prefix = prefix or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    def write_config(self, config: str | dict[str, Any]) -> None:
        if isinstance(config, dict):
            config = dict(config)
            config.setdefault("control", {"socket": self.socket})
            config.setdefault("logging", {"level": "DEBUG"})
            config = json.dumps(config, indent=2)
        self.config_path.write_text(config)

    def start(self) -> AutopilotProcess:
        self.proc = subprocess.Popen(
            [*self.prefix, *autopilot_run_cmd(self.config_path)], cwd=ROOT, env=self.env,
            stdout=self.log_path.open("ab"), stderr=self.err_path.open("ab"),
            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """Wait until ``pattern`` (regex) matched ``count`` times in the log."""
        rx = re.compile(pattern)

        def found() -> list[str] | None:
            hits = rx.findall(self.log)
            if len(hits) >= count:
                return hits
            if self.proc is not None and self.proc.poll() is not None and len(
                    rx.findall(self.log)) < count:
                raise AssertionError(f"autopilot exited ({self.proc.returncode}) before "
                                     f"{pattern!r}:\n{self.tail()}")
            return None

        try:
            return wait_for(found, timeout=timeout, message=f"log {pattern!r} x{count}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log tail ---\n{self.tail()}") from None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log))

    def tail(self, n: int = 40) -> str:
        lines = (self.log + self.stderr).splitlines()
        return "\n".join(lines[-n:])

    def ctl(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """``autopilot ctl --socket <this autopilot's socket> ARGS…`` (output as text)."""
        return subprocess.run([sys.executable, "-m", "autopilot", "ctl", "--socket",
                               self.socket, *args], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, timeout=timeout)

    def wait_socket(self, timeout: float = 15.0) -> None:
        """Until the control socket answers a ping."""
        wait_for(lambda: self.ctl("ping", timeout=5).returncode == 0, timeout,
                 message="control socket ping")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"autopilot did not exit within {timeout}s:\n"
                                 f"{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL autopilot and everything below it (jobs live in their own groups)."""
        if self.proc is None:
            return
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in family:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def autopilot(tmp_path: Path, env_clean: dict[str, str]
              ) -> Iterator[Callable[..., AutopilotProcess]]:
    """Factory: ``autopilot(config, start=True, env=None, prefix=None, name="autopilot")``."""
    started: list[AutopilotProcess] = []

    def make(config: str | dict[str, Any], *, start: bool = True,
             env: dict[str, str] | None = None, prefix: list[str] | None = None,
             name: str = "autopilot") -> AutopilotProcess:
        ap = AutopilotProcess(tmp_path, config, env={**env_clean, **(env or {})},
                              prefix=prefix, name=name)
        started.append(ap)
        return ap.start() if start else ap

    yield make
    for ap in started:
        ap.kill()


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="apc", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def launch(workdir: Path, env_clean: dict[str, str]) -> Iterator[Callable[..., Autopilot]]:
    started: list[Autopilot] = []

    def make(config: str, sub: str = "", start: bool = True) -> Autopilot:
        where = workdir / sub if sub else workdir
        where.mkdir(exist_ok=True)
        ap = Autopilot(where, config.replace("@DIR@", str(workdir)), env_clean)
        started.append(ap)
        return ap.start() if start else ap

    yield make
    for ap in started:
        ap.stop()
