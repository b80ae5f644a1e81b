"""Fixtures for running a real ``python -m autopilot run CONFIG`` subprocess: ``autopilot``
(below) and, for the control and telemetry tests, ``workdir`` and ``launch``
(all three run `tests.integration.autopilot_process.AutopilotProcess`).

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

import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.autopilot_process import AutopilotProcess


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
def launch(workdir: Path, env_clean: dict[str, str]
           ) -> Iterator[Callable[..., AutopilotProcess]]:
    """Factory for the control and telemetry tests: ``launch(config, sub="", start=True)``
    runs a string config (``@DIR@`` replaced by ``workdir``, dedented) whose control socket
    is ``@DIR@[/sub]/cp.sock``, in a short private directory (a unix socket path is limited
    to 107 bytes); ``start`` waits until the socket answers. Stopped at teardown."""
    started: list[AutopilotProcess] = []

    def make(config: str, sub: str = "", start: bool = True) -> AutopilotProcess:
        where = workdir / sub if sub else workdir
        where.mkdir(exist_ok=True)
        ap = AutopilotProcess(where, textwrap.dedent(config.replace("@DIR@", str(workdir))),
                              env=env_clean, socket=str(where / "cp.sock"))
        started.append(ap)
        return ap.start(wait=True) if start else ap

    yield make
    for ap in started:
        ap.stop()
