"""docker-compose.consul.yml's mechanics, with our catalog image standing in for Consul.

`hashicorp/consul` cannot be pulled on our machines, so this checks everything around it:
the embedded catalog scaled to zero, every autopilot re-pointed at the `consul` service,
start-up ordering on its health check, the shop counting through nginx. A third compose file
(written by the test) swaps only the `consul` service's image, command and health check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.docker_helpers import Stack, engine_problem
from tests.helpers import ROOT, free_port, wait_for

_problem = engine_problem()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_problem is not None, reason=_problem or ""),
              pytest.mark.timeout(300)]

STAND_IN = """\
version: "2.4"
services:
  consul:
    image: autopilot/catalog:dev
    command: []
    healthcheck:
      test: ["CMD", "http-ok", "http://127.0.0.1:8500/v1/status/leader"]
"""


class ConsulStack(Stack):
    files: tuple[str, ...] = ()

    def compose(self, *args: str, **kw):  # noqa: ANN003, ANN201
        return super().compose(*[a for f in self.files for a in ("-f", f)], *args, **kw)


@pytest.fixture
def consul_stack(tmp_path: Path) -> Iterator[ConsulStack]:
    stand_in = tmp_path / "consul-stand-in.yml"
    stand_in.write_text(STAND_IN)
    s = ConsulStack(project=f"apconsul{os.getpid()}")
    s.files = (str(ROOT / "docker-compose.yml"), str(ROOT / "docker-compose.consul.yml"),
               str(stand_in))
    os.environ["CONSUL_PORT"] = str(free_port())
    try:
        yield s
    finally:
        s.save_logs()
        s.compose("down", "--timeout", "20", check=False)
        os.environ.pop("CONSUL_PORT", None)


def test_consul_override_repoints_everything_and_drops_the_catalog(
        consul_stack: ConsulStack) -> None:
    s = consul_stack
    t0 = time.monotonic()
    s.compose("up", "-d", "--no-build", timeout=300)
    wait_for(lambda: requests.post(s.shop + "/visit", timeout=5).status_code == 200,
             timeout=120, interval=0.5, message="the shop to count via the consul service")
    s.record("consul_override_up_to_first_count_s", time.monotonic() - t0)
    assert s.compose("ps", "-q", "catalog").stdout.split() == []
    consul = f"http://127.0.0.1:{os.environ['CONSUL_PORT']}"
    # nginx may serve before its first health check has registered it
    wait_for(lambda: {"redis", "app", "nginx"} <= set(
        requests.get(consul + "/v1/catalog/services", timeout=5).json()),
        timeout=30, interval=0.5, message="redis, app and nginx registered in the consul service")
