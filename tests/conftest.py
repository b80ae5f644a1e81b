"""Shared fixtures; the helpers themselves live in tests/helpers.py and
tests/autopilot_process.py."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.autopilot_process import AutopilotProcess
from tests.helpers import CatalogProcess

# elections persist their highest epoch (docs/stateful.md): keep it out of /var/lib/autopilot,
# one directory per test session, inherited by the supervisors the tests start
if "AUTOPILOT_STATE_DIR" not in os.environ:
    os.environ["AUTOPILOT_STATE_DIR"] = tempfile.mkdtemp(prefix="autopilot-state-")
    atexit.register(shutil.rmtree, os.environ["AUTOPILOT_STATE_DIR"], True)


# CI runs the tests that assert no wall-clock duration in parallel (pytest-xdist, `.ci/run`);
# tests that share one fixed resource must then run in one worker, one after the other
# (`--dist loadgroup`). Path prefix -> group:
SERIAL_GROUPS = {
    # the pages' addresses: lab network 0 (ap-lab-br0); each waits for the bridge to be
    # gone, which two workers can see at the same moment and then both bring up the lab
    "tests/chaos/test_workshop_doc.py": "lab-network-0",
    "tests/chaos/test_workshop_postgres.py": "lab-network-0",
    # one 3-node PostgreSQL lab at a time, as before the suite ran in parallel: on 2 cores
    # three bootstraps at once plus the rest slowed each one past its waits (measured)
    "tests/chaos/test_postgres": "postgres-labs",
    # session fixtures build the shop's Go and Java services: once, not once per worker
    "tests/services/": "shop-builds",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        try:
            rel = Path(str(item.fspath)).relative_to(root).as_posix()
        except ValueError:
            continue
        for prefix, group in SERIAL_GROUPS.items():
            if rel.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[CatalogProcess]:
    """The real catalog; killed at the end (its SIGTERM path waits for open long polls)."""
    cat = CatalogProcess(tmp_path).start()
    yield cat
    cat.kill()


@pytest.fixture
def catalog_factory(tmp_path: Path) -> Iterator[Callable[..., CatalogProcess]]:
    started: list[CatalogProcess] = []

    def make(*args: str, port: int | None = None) -> CatalogProcess:
        cat = CatalogProcess(tmp_path, *args, port=port).start()
        started.append(cat)
        return cat

    yield make
    for cat in started:
        cat.stop()


@pytest.fixture
def env_clean() -> dict[str, str]:
    """An environment for child autopilots without inherited Consul/autopilot settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONSUL_", "CONTAINERPILOT", "AUTOPILOT"))
           or k == "AUTOPILOT_STATE_DIR"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def autopilot(tmp_path: Path, env_clean: dict[str, str]
              ) -> Iterator[Callable[..., AutopilotProcess]]:
    """Factory for a real ``python -m autopilot run CONFIG`` subprocess:
    ``autopilot(config, start=True, env=None, prefix=None, name="autopilot")``::

        def test_x(autopilot):
            ap = autopilot({"jobs": [{"name": "app", "exec": ["sleep", "30"]}]})
            ap.wait_log(r"event code=startup")
            ap.terminate()
            assert ap.wait() == 0

    A dict config is written as JSON with a control socket in the test's tmp dir and DEBUG
    logging (every bus event is logged as ``event code=<code> source=<source>``); a string
    is written as is. Every process is killed (as a group) at teardown."""
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
