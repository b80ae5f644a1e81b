"""Fixtures for the control and telemetry tests: ``workdir`` (a short private directory: a
unix socket path is limited to 107 bytes) and ``launch`` (an autopilot run there,
`tests.autopilot_process.AutopilotProcess`). The ``autopilot`` fixture is in
tests/conftest.py."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.autopilot_process import AutopilotProcess


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
