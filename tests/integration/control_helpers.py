"""`python -m autopilot run CONFIG` as a subprocess together with its control client, for
the control and telemetry end-to-end tests (fixtures ``workdir`` and ``launch`` in
conftest.py). A unix socket path is limited to 107 bytes, so each autopilot runs in a short
private directory under /tmp rather than in pytest's tmp_path."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

from autopilot.control.client import ControlClient, ControlError
from tests.helpers import ROOT, autopilot_cmd, wait_for


class Autopilot:
    """`python -m autopilot run CONFIG` as a subprocess, plus its control client."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str]) -> None:
        self.dir = workdir
        self.config = workdir / "autopilot.json5"
        self.config.write_text(textwrap.dedent(config))
        self.socket = str(workdir / "cp.sock")
        self.log = workdir / "autopilot.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> Autopilot:
        self.proc = subprocess.Popen(autopilot_cmd("run", str(self.config)), cwd=ROOT,
                                     env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        if wait:
            wait_for(self.answers, timeout=15, message=f"autopilot to answer ({self.logtail()})")
        return self

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"autopilot exited {self.proc.returncode}: {self.logtail()}")
        try:
            return bool(self.client().ping()["ok"])
        except ControlError:
            return False

    def client(self) -> ControlClient:
        return ControlClient(self.socket, timeout=20)

    def ctl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(autopilot_cmd("ctl", "--socket", self.socket, *args), cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def job(self, name: str) -> dict[str, Any]:
        return next(j for j in self.client().status()["jobs"] if j["name"] == name)

    def wait(self, cond: Any, timeout: float = 10.0, message: str = "condition") -> Any:
        """wait_for, with autopilot's log in the failure message."""
        try:
            return wait_for(cond, timeout=timeout, message=message)
        except AssertionError as exc:
            state = "running" if self.proc and self.proc.poll() is None else (
                f"exited {self.proc.returncode if self.proc else None}")
            raise AssertionError(f"{exc}\n--- autopilot ({state}) log {self.log} ---\n"
                                 f"{self.logtail()}") from None

    def logtail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
            if len(lines) > 60:
                lines = [*lines[:25], f"... ({len(lines) - 50} lines) ...", *lines[-25:]]
            return "\n".join(lines)
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def stop(self) -> int | None:
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
