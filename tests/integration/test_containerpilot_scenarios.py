"""ContainerPilot 3.8's integration-test scenarios (its ``integration_tests/tests/*``),
run without Docker: the ``containerpilot`` entry point as a process, `autopilot catalog` as
Consul, the log file read the way its ``run.sh`` scripts grep ``docker logs``.

Covered here: test_envvars, test_config_reload (one reload, then a burst), test_logging
(``loaded config:``), test_tasks (6 runs for ``restarts: "5"``, ``<job> timeout``),
test_no_command, test_sighup, test_sigterm, test_telemetry (a sensor's ``-putmetric``, the
``containerpilot`` service in Consul), test_coprocess and test_version_flag. The others are
covered elsewhere or listed in docs/containerpilot.md:
test_discovery_consul (tests/integration/test_discovery*.py with consul-template replaced by
autopilot's templates), test_reap_zombies (tests/integration/test_pid1.py), test_reopen
(tests/unit logging tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import CatalogProcess, free_port, holds, wait_for

pytestmark = pytest.mark.timeout(90)
HOST = os.uname().nodename


class CP:
    """``containerpilot -config <file>`` as a child process, logs in a file."""

    def __init__(self, tmp: Path, config: dict, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.path = tmp / "containerpilot.json5"
        self.sock = str(tmp / "cp.socket")
        config.setdefault("control", {"socket": self.sock})
        config.setdefault("logging", {"level": "DEBUG"})
        self.path.write_text(json.dumps(config))
        self.log = tmp / "cp.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "autopilot.containerpilot", *args]

    def start(self) -> CP:
        self.proc = subprocess.Popen(self.cmd("-config", str(self.path)), env=self.env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: "control: serving at" in self.text(), 20, message="control socket")
        return self

    def client(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd("-config", str(self.path), *args), env=self.env,
                              capture_output=True, text=True, timeout=30)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture
def catalog(tmp_path: Path):  # type: ignore[no-untyped-def]
    cat = CatalogProcess(tmp_path, "--check-update-interval", "0s").start()
    yield cat
    cat.stop()


@pytest.fixture
def cps():  # type: ignore[no-untyped-def]
    started: list[CP] = []
    yield started
    for cp in started:
        cp.stop()


def test_envvars(tmp_path: Path, catalog: CatalogProcess, cps: list[CP]) -> None:
    """The job's PID variable is named after the job (testpid), its IP after the job too."""
    out = tmp_path / "env.txt"
    # as ContainerPilot's test: testenvvar runs `env` while testpid is running (on its
    # first healthy), so testpid's PID variable is visible to it
    health = {"exec": "true", "interval": 1, "ttl": 5}
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [
        {"name": "testpid", "port": 8000, "exec": "sleep 30",
         "interfaces": ["static:127.0.0.1"], "health": health},
        {"name": "testenvvar", "port": 8500, "exec": ["sh", "-c", f"env > {out}"],
         "interfaces": ["static:127.0.0.1"], "health": health,
         "when": {"source": "testpid", "once": "healthy"}},
    ]})
    cps.append(cp.start())
    text = wait_for(lambda: out.exists() and "CONTAINERPILOT_TESTPID_PID" in out.read_text()
                    and out.read_text(), 15, message="env dump")
    assert "CONTAINERPILOT_TESTENVVAR_IP=127.0.0.1" in text
    assert f"CONTAINERPILOT_TESTPID_PID={_pids(cp)['testpid']}" in text
    assert "CONTAINERPILOT_SLEEP_PID" not in text  # not named after the executable


def _pids(cp: CP) -> dict[str, int | None]:
    from autopilot.control.client import ControlClient

    return {j["name"]: j.get("pid") for j in ControlClient(cp.sock).status()["jobs"]}


def test_config_reload_restarts_every_job_then_survives_a_burst(tmp_path: Path,
                                                                 catalog: CatalogProcess,
                                                                 cps: list[CP]) -> None:
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [
        {"name": "app", "exec": "sleep 60"}, {"name": "other", "exec": "sleep 60"}]})
    cps.append(cp.start())
    assert "loaded config:" in cp.text()  # test_logging: DEBUG shows the config
    first = wait_for(lambda: (p := _pids(cp)) and all(p.values()) and p, 10, message="pids")
    r = cp.client("-reload")
    assert r.returncode == 0, r.stderr
    # ContainerPilot's reload: every job restarts, changed or not
    wait_for(lambda: (p := _pids(cp)) and all(p.values())
             and all(p[n] != first[n] for n in p), 15, message="every job restarted")
    assert "control: reloaded app via control plane" in cp.text()
    for _ in range(40):  # the burst (ContainerPilot's test sends 200; bounded here)
        assert cp.client("-reload").returncode == 0
    assert cp.client("-ping").stdout.strip() == "ok"


def test_reload_diff_option_keeps_unchanged_jobs(tmp_path: Path, catalog: CatalogProcess,
                                                 cps: list[CP]) -> None:
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [{"name": "app",
                                                             "exec": "sleep 60"}]},
            env={"AUTOPILOT_RELOAD": "diff"})
    cps.append(cp.start())
    pid = wait_for(lambda: _pids(cp)["app"], 10, message="pid")
    assert cp.client("-reload").returncode == 0
    wait_for(lambda: "control: reloaded app via control plane" in cp.text(), 10,
             message="reload logged")
    holds(lambda: _pids(cp)["app"] == pid, 1.0)


def test_tasks_runs_and_timeouts(tmp_path: Path, catalog: CatalogProcess,
                                 cps: list[CP]) -> None:
    runs = tmp_path / "runs"
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [
        {"name": "task1", "exec": ["sh", "-c", f"echo x >> {runs}"],
         "when": {"interval": "500ms"}, "restarts": "5"},
        {"name": "task2", "exec": "sleep 5", "timeout": "100ms",
         "when": {"interval": "500ms"}, "restarts": "1"},
    ]})
    cps.append(cp.start())
    wait_for(lambda: runs.exists() and len(runs.read_text().split()) == 6, 15,
             message="6 runs of task1")
    holds(lambda: len(runs.read_text().split()) == 6, 1.2)  # and no 7th
    wait_for(lambda: cp.text().count("task2 timeout after 100ms") == 2, 10,
             message="two task2 timeouts")


def test_no_command_with_only_the_env_var(tmp_path: Path, catalog: CatalogProcess,
                                          cps: list[CP]) -> None:
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [{"name": "app",
                                                             "exec": "sleep 60"}]})
    cp.env["CONTAINERPILOT"] = str(cp.path)
    cp.proc = subprocess.Popen(cp.cmd(), env=cp.env, stdout=cp.log.open("ab"),
                               stderr=subprocess.STDOUT)
    cps.append(cp)
    wait_for(lambda: "control: serving at" in cp.text(), 20, message="running")
    holds(lambda: cp.proc.poll() is None, 1.0)


def test_sighup_and_sigusr2_trigger_jobs(tmp_path: Path, catalog: CatalogProcess,
                                         cps: list[CP]) -> None:
    marks = tmp_path / "marks"
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [
        {"name": "app", "exec": "sleep 60"},
        {"name": "onhup", "exec": ["sh", "-c", f"echo hup >> {marks}"],
         "when": {"source": "SIGHUP"}},
        {"name": "onusr2", "exec": ["sh", "-c", f"echo usr2 >> {marks}"],
         "when": {"source": "SIGUSR2"}},
    ]})
    cps.append(cp.start())
    wait_for(lambda: _pids(cp)["app"], 10, message="app")
    cp.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: marks.exists() and "hup" in marks.read_text(), 10, message="SIGHUP job")
    cp.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "usr2" in marks.read_text(), 10, message="SIGUSR2 job")
    assert cp.proc.poll() is None


def test_sigterm_runs_prestop_and_poststop(tmp_path: Path, catalog: CatalogProcess) -> None:
    marks = tmp_path / "marks"
    cp = CP(tmp_path, {"consul": catalog.address, "jobs": [
        {"name": "app", "exec": "sleep 60"},
        {"name": "preStop", "exec": ["sh", "-c", f"echo pre >> {marks}"],
         "when": {"source": "app", "once": "stopping"}},
        {"name": "postStop", "exec": ["sh", "-c", f"echo post >> {marks}"],
         "when": {"source": "app", "once": "stopped"}},
    ]}).start()
    wait_for(lambda: _pids(cp)["app"], 10, message="app")
    assert cp.stop() == 0
    assert marks.read_text().split() == ["pre", "post"]


def test_telemetry_sensor_and_service(tmp_path: Path, catalog: CatalogProcess,
                                      cps: list[CP]) -> None:
    port = free_port()
    cp = CP(tmp_path, {"consul": catalog.address, "telemetry": {
        "port": port, "interfaces": ["static:127.0.0.1"],
        "metrics": [{"namespace": "containerpilot", "subsystem": "app", "name": "some_counter",
                     "help": "help text", "type": "counter"}]}, "jobs": [
        {"name": "sensor", "exec": [sys.executable, "-m", "autopilot.containerpilot",
                                    "-config", str(tmp_path / "containerpilot.json5"),
                                    "-putmetric", "containerpilot_app_some_counter=42",
                                    "-putmetric", "not_configured=1"]},
        # keeps the supervisor up: with the one-shot sensor alone it exits (every job
        # complete, as ContainerPilot does) as soon as the sensor has run, ~70 ms after start
        {"name": "app", "exec": "sleep 60"}]})
    cps.append(cp.start())
    metrics = wait_for(lambda: (t := requests.get(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=2).text)
                       and "containerpilot_app_some_counter 42" in t and t, 20,
                       message="the sensor's value")
    assert "containerpilot_events" in metrics
    # the refusal comes after the known metric was recorded: wait for the sensor's line
    wait_for(lambda: "not a configured metric; ignored" in cp.text(), 10,
             message="the unknown metric's warning in the log")
    wait_for(lambda: f"containerpilot-{HOST}" in requests.get(
        catalog.url + "/v1/agent/services", timeout=2).json(), 15,
        message="the containerpilot service")
    cp.stop()
    wait_for(lambda: f"containerpilot-{HOST}" not in requests.get(
        catalog.url + "/v1/agent/services", timeout=2).json(), 15, message="deregistered")


def test_version_flag(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "autopilot.containerpilot", "-version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("Version: ") and "GitHash: " in r.stdout


def test_loaded_config_only_at_debug(tmp_path: Path, catalog: CatalogProcess,
                                     cps: list[CP]) -> None:
    cp = CP(tmp_path, {"consul": catalog.address, "logging": {"level": "INFO"},
                       "jobs": [{"name": "app", "exec": "sleep 60"}]})
    cps.append(cp.start())
    assert cp.client("-reload").returncode == 0
    wait_for(lambda: "reloading" in cp.text(), 10, message="the reload")
    assert "loaded config" not in cp.text()


def test_coprocess_restart_limit_and_reload(tmp_path: Path, catalog: CatalogProcess,
                                            cps: list[CP]) -> None:
    """restarts: 1 -> the first kill restarts it, the second leaves it dead; a reload with
    new args resets the limit and runs the new command."""
    cfg = {"consul": catalog.address, "jobs": [
        {"name": "coprocess", "exec": ["sleep", "61"], "restarts": 1},
        {"name": "keepalive", "exec": "sleep 120"}]}
    cp = CP(tmp_path, cfg)
    cps.append(cp.start())
    first = wait_for(lambda: _pids(cp)["coprocess"], 10, message="coprocess")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (p := _pids(cp)["coprocess"]) and p != first and p, 10,
                      message="the restart")
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: _pids(cp)["coprocess"] is None, 10, message="coprocess dead")
    holds(lambda: _pids(cp)["coprocess"] is None, 1.0)
    cfg["jobs"][0]["exec"] = ["sleep", "62"]
    cp.path.write_text(json.dumps({**cfg, "control": {"socket": cp.sock},
                                   "logging": {"level": "DEBUG"}}))
    assert cp.client("-reload").returncode == 0
    third = wait_for(lambda: _pids(cp)["coprocess"], 15, message="running again")
    assert Path(f"/proc/{third}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"62"]
    os.kill(third, signal.SIGKILL)  # the limit was reset: one restart again
    wait_for(lambda: (p := _pids(cp)["coprocess"]) and p != third, 10, message="restart")
