"""`python -m autopilot run CONFIG` as a subprocess under test (fixtures ``autopilot`` in
tests/conftest.py and ``launch`` in tests/integration/conftest.py): its config file, log
and stderr, control socket and client, and exit status. Every process is killed (as a
group) or stopped at teardown by its fixture."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil

from autopilot.control.client import ControlClient, ControlError
from tests.helpers import ROOT, autopilot_cmd, wait_for


class AutopilotProcess:
    """One autopilot under test: its config file, its log (stdout) and stderr, its control
    socket and client, its exit status."""

    def __init__(self, tmp: Path, config: str | dict[str, Any], *, env: dict[str, str],
                 prefix: list[str] | None = None, name: str = "autopilot",
                 socket: str | None = None) -> None:
        self.tmp = tmp
        self.name = name
        self.config_path = tmp / f"{name}.json5"
        #: where the control socket is: the one a dict config gets, or the one a string
        #: config names
        self.socket = socket or str(tmp / f"{name}.sock")
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

    def start(self, wait: bool = False) -> AutopilotProcess:
        """Start it; ``wait``: until its control socket answers a ping."""
        self.proc = subprocess.Popen(
            [*self.prefix, *autopilot_cmd("run", str(self.config_path))], cwd=ROOT,
            env=self.env, stdout=self.log_path.open("ab"), stderr=self.err_path.open("ab"),
            stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_until(self.answers, timeout=15, message="autopilot to answer")
        return self

    def answers(self) -> bool:
        """Its control socket answers a ping (an AssertionError once it has exited)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"autopilot exited {self.proc.returncode}:\n{self.tail()}")
        try:
            return bool(self.client().ping()["ok"])
        except ControlError:
            return False

    def client(self) -> ControlClient:
        return ControlClient(self.socket, timeout=20)

    def job(self, name: str) -> dict[str, Any]:
        """The job's entry in the control socket's status."""
        return next(j for j in self.client().status()["jobs"] if j["name"] == name)

    def wait_until(self, cond: Any, timeout: float = 10.0, message: str = "condition") -> Any:
        """``wait_for``, with autopilot's log in the failure message."""
        try:
            return wait_for(cond, timeout=timeout, message=message)
        except AssertionError as exc:
            state = "running" if self.proc and self.proc.poll() is None else (
                f"exited {self.proc.returncode if self.proc else None}")
            raise AssertionError(f"{exc}\n--- autopilot ({state}) log {self.log_path} ---\n"
                                 f"{self.tail(60)}") from None

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

    def ctl(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """``autopilot ctl --socket <this autopilot's socket> ARGS…`` (output as text)."""
        return subprocess.run(autopilot_cmd("ctl", "--socket", self.socket, *args), cwd=ROOT,
                              env=self.env, text=True, capture_output=True, timeout=timeout)

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

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s; its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

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
