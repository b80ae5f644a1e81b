"""Replacement for py-consul's Docker fixture: each test gets a fresh agent on loopback.

``run_suite.py`` copies this file over the ``conftest.py`` at the root of a py-consul
checkout. ``PYCONSUL_TARGET`` picks the agent: ``catalog`` (``autopilot catalog``, the
default) or ``consul`` (a real dev agent: the binary in ``CONSUL_BIN``). The fixture names
and the ``ConsulInstance`` tuple are the ones py-consul's tests expect; the ACL instance has
ACLs on with a management token (py-consul: default policy allow).
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])
TARGET = os.environ.get("PYCONSUL_TARGET", "catalog")
CONSUL_BIN = os.environ.get("CONSUL_BIN", "/opt/consul/bin/consul")


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return out


def _command(http: int, token: str | None) -> list[str]:
    if TARGET == "consul":
        lan, wan, server = _ports(3)
        hcl = ""
        if token:
            hcl = f'primary_datacenter = "dc1" acl {{ enabled = true tokens {{ master = "{token}" }} }}'
        return [CONSUL_BIN, "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1",
                "-http-port", str(http), "-grpc-port", "-1", "-dns-port", "-1",
                "-serf-lan-port", str(lan), "-serf-wan-port", str(wan), "-server-port",
                str(server), "-log-level", "warn", "-hcl", 'enable_script_checks = true ' + hcl]
    cmd = [sys.executable, "-m", "autopilot", "catalog", "--port", str(http)]
    return cmd + (["--token", token] if token else [])


def _start(token: str | None = None):  # type: ignore[no-untyped-def]
    (http,) = _ports(1)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(_command(http, token), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}/v1/"
    headers = {"X-Consul-Token": token} if token else {}
    deadline = time.monotonic() + 30
    while True:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            log.seek(0)
            raise RuntimeError(f"{TARGET} did not start: {log.read().decode()[-2000:]}")
        try:
            # py-consul's own readiness test: a registered service shows in health
            requests.put(base + "agent/service/register", json={"name": "test-service"},
                         headers=headers, timeout=2)
            r = requests.get(base + "health/service/test-service", headers=headers, timeout=2)
            if r.status_code == 200 and r.json():
                requests.put(base + "agent/service/deregister/test-service", headers=headers,
                             timeout=2)
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    version = requests.get(base + "agent/self", headers=headers,
                           timeout=5).json()["Config"]["Version"].strip()
    return proc, log, ConsulInstance(None, http, version)


def _stop(proc, log) -> None:  # type: ignore[no-untyped-def]
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


@pytest.fixture
def consul_instance():
    proc, log, instance = _start()
    yield instance
    _stop(proc, log)


@pytest.fixture
def acl_consul_instance():
    token = str(uuid.uuid4())
    proc, log, instance = _start(token)
    yield instance, token
    _stop(proc, log)


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
