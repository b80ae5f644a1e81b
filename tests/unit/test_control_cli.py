"""`autopilot ctl` / `autopilot reload`: socket-path lookup, argument checks, output and exit
codes, against a real control server (supervisor stand-in; see test_control_server)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from autopilot.control.cli import ctl, find_socket, reload_cmd, socket_from_config
from autopilot.control.client import DEFAULT_SOCKET
from autopilot.control.server import ControlServer
from tests.helpers import ROOT, autopilot_cmd
from tests.unit.control_standins import LoopThread, StandInSupervisor, make_supervisor

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def served(sockdir: str, loop: LoopThread) -> Iterator[tuple[str, StandInSupervisor]]:
    path = os.path.join(sockdir, "cli.sock")
    sup = make_supervisor(path)
    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    yield path, sup
    loop.run(srv.stop())


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(ctl, list(args), env=env or {}, catch_exceptions=False)


def test_socket_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.json5"
    cfg.write_text('{ // JSON5\n control: {socket: "/tmp/{{ .SOCKNAME }}.sock"}, jobs: [],}\n')
    monkeypatch.setenv("SOCKNAME", "from-template")
    for var in ("AUTOPILOT_SOCKET", "AUTOPILOT", "CONTAINERPILOT"):
        monkeypatch.delenv(var, raising=False)
    assert socket_from_config(str(cfg)) == "/tmp/from-template.sock"
    assert find_socket(None, None) == DEFAULT_SOCKET
    assert find_socket(None, str(cfg)) == "/tmp/from-template.sock"
    monkeypatch.setenv("CONTAINERPILOT", str(cfg))
    assert find_socket(None, None) == "/tmp/from-template.sock"
    monkeypatch.setenv("AUTOPILOT_SOCKET", "/tmp/env.sock")
    assert find_socket(None, str(cfg)) == "/tmp/env.sock"
    assert find_socket("/tmp/flag.sock", str(cfg)) == "/tmp/flag.sock"
    no_control = tmp_path / "n.json5"
    no_control.write_text("{jobs: []}")
    monkeypatch.delenv("AUTOPILOT_SOCKET")
    assert find_socket(None, str(no_control)) == DEFAULT_SOCKET


def test_verbs(served: tuple[str, StandInSupervisor]) -> None:
    path, sup = served
    r = invoke("--socket", path, "ping")
    assert r.exit_code == 0 and r.output.strip() == "ok"
    r = invoke("putenv", "A=1", "B=x=y", "--socket", path)  # option after the verb works too
    assert r.exit_code == 0 and sup.env == {"A": "1", "B": "x=y"}
    assert invoke("--socket", path, "putmetric", "temp=3.5").exit_code == 0
    assert "\ntemp 3.5\n" in sup.telemetry.exposition().decode()
    assert invoke("--socket", path, "maintenance", "enable").exit_code == 0 and sup.maintenance
    assert invoke("--socket", path, "maintenance", "disable").exit_code == 0
    assert not sup.maintenance
    r = invoke("--socket", path, "reload")
    assert r.exit_code == 0 and sup.reloads == 1
    r = CliRunner().invoke(reload_cmd, ["--socket", path], env={})
    assert r.exit_code == 0 and sup.reloads == 2
    r = invoke("--socket", path, "job", "worker", "signal", "SIGUSR1")
    assert r.exit_code == 0 and sup.actions[-1] == ("worker", "signal", "SIGUSR1")
    r = invoke("--socket", path, "status")
    assert r.exit_code == 0 and "web" in r.output and "primary" in r.output
    r = invoke("--socket", path, "status", "--json")
    assert {j["name"] for j in json.loads(r.output)["jobs"]} == {"web", "worker"}


def test_failures_exit_nonzero(served: tuple[str, StandInSupervisor], tmp_path: Path) -> None:
    path, sup = served
    r = invoke("--socket", path, "putmetric", "nope=1")
    assert r.exit_code == 1 and "unknown metric" in r.output
    r = invoke("--socket", path, "job", "ghost", "restart")
    assert r.exit_code == 1 and "unknown job" in r.output
    sup.reload_error = "jobs[0].name: required"
    r = invoke("--socket", path, "reload")
    assert r.exit_code == 1 and "jobs[0].name: required" in r.output
    r = invoke("--socket", str(tmp_path / "none.sock"), "ping")
    assert r.exit_code == 1 and "does not exist" in r.output
    # usage errors: exit 2, nothing sent
    assert invoke("--socket", path, "putenv", "NOEQUALS").exit_code == 2
    assert invoke("--socket", path, "putmetric", "temp=warm").exit_code == 2
    assert invoke("--socket", path, "job", "web", "signal").exit_code == 2
    assert invoke("--socket", path, "maintenance", "maybe").exit_code == 2
    assert sup.env == {}


def test_real_entry_point(served: tuple[str, StandInSupervisor]) -> None:
    """`python -m autopilot ctl` and `autopilot reload` through the lazy CLI dispatcher."""
    path, sup = served
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPILOT")}
    env["AUTOPILOT_SOCKET"] = path
    out = subprocess.run(autopilot_cmd("ctl", "ping"), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    out = subprocess.run(autopilot_cmd("reload"), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=20)
    assert out.returncode == 0 and sup.reloads == 1, out.stderr
