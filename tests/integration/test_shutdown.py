"""Shutdown order, the global stop_timeout bound, and exit codes, through
`python -m autopilot run` as a real subprocess."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(40)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.mark.timing
def test_shutdown_order_hooks_and_prompt_exit(autopilot, tmp_path: Path) -> None:
    order = tmp_path / "order"
    mark = f">> {order}"
    ap = autopilot({
        "stopTimeout": 10,
        "jobs": [
            {"name": "app", "exec": sh(f"trap 'echo app-term {mark}; exit 0' TERM; "
                                       "echo up; while true; do sleep 0.05; done")},
            {"name": "onshutdown", "exec": sh(f"sleep 0.2; echo shutdown-hook {mark}"),
             "when": {"source": "global", "once": "shutdown"}, "timeout": "5s"},
            {"name": "prestop", "exec": sh(f"sleep 0.2; echo prestop {mark}"),
             "when": {"source": "app", "once": "stopping"}},
            {"name": "poststop", "exec": sh(f"echo poststop {mark}"),
             "when": {"source": "app", "once": "stopped"}},
        ],
    })
    ap.wait_log(r"app \d+ up")
    t0 = time.monotonic()
    ap.terminate()
    assert ap.wait() == 0
    took = time.monotonic() - t0
    assert order.read_text().split("\n")[:-1] == [
        "shutdown-hook", "prestop", "app-term", "poststop"], ap.tail()
    assert took < 3.0, f"shutdown took {took:.2f}s: no unconditional sleep allowed"
    for code in ("shutdown source=global", "stopping source=app", "stopped source=app"):
        assert f"event code={code}" in ap.log


@pytest.mark.timing
def test_global_stop_timeout_bounds_everything(autopilot, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    ap = autopilot({
        "stopTimeout": 1,
        "jobs": [
            {"name": "stubborn", "stopTimeout": "30s",
             "exec": sh(f"trap '' TERM; echo $$ > {pidfile}; while true; do sleep 0.05; done")},
            # a stopping hook that hangs forever, with no timeout of its own
            {"name": "hang", "exec": ["sleep", "60"],
             "when": {"source": "stubborn", "once": "stopping"}},
        ],
    })
    wait_for(pidfile.exists, 10, message="job started")
    child = int(pidfile.read_text())
    t0 = time.monotonic()
    ap.terminate()
    assert ap.wait() == 0
    took = time.monotonic() - t0
    assert 0.9 <= took < 3.0, took
    wait_for(lambda: not psutil.pid_exists(child), 3, message="stubborn job killed")
    assert "shutdown deadline" in ap.log


@pytest.mark.timing
def test_job_stop_timeout_ends_the_stopping_hook_wait(autopilot, tmp_path: Path) -> None:
    """ContainerPilot's bug #479: a job's stopTimeout never fired. Here it does."""
    ap = autopilot({
        "stopTimeout": 20,
        "jobs": [
            {"name": "app", "stopTimeout": "500ms", "exec": ["sleep", "60"]},
            {"name": "slowhook", "exec": ["sleep", "60"],
             "when": {"source": "app", "once": "stopping"}},
        ],
    })
    ap.wait_log(r"event code=startup")
    ap.wait_log(r"process started.*")
    t0 = time.monotonic()
    ap.terminate()
    ap.wait_log(r"event code=stopped source=app", timeout=5)
    assert time.monotonic() - t0 < 3.0
    assert ap.wait() == 0
    assert "stopping hooks still running at stop_timeout" in ap.log


@pytest.mark.parametrize(("script", "expected"), [
    ("exit 7", 7),
    ("kill -KILL $$", 128 + 9),
    ("exit 0", 0),
])
def test_main_job_exit_status_propagates(autopilot, script: str, expected: int) -> None:
    ap = autopilot({
        "mainJob": "app",
        "jobs": [
            {"name": "app", "exec": sh(f"sleep 0.2; {script}")},
            {"name": "sidecar", "exec": ["sleep", "60"], "restarts": "unlimited"},
        ],
    })
    assert ap.wait() == expected
    assert "main job exited" in ap.log
    assert "event code=stopped source=sidecar" in ap.log


def test_main_job_restarts_before_exit(autopilot) -> None:
    ap = autopilot({"mainJob": "app",
                    "jobs": [{"name": "app", "exec": sh("exit 3"), "restarts": 2}]})
    assert ap.wait() == 3
    assert ap.count(r"event code=exitFailed source=app") == 3


def test_sigterm_with_main_job_is_clean(autopilot) -> None:
    ap = autopilot({"mainJob": "app", "jobs": [{"name": "app", "exec": ["sleep", "60"]}]})
    ap.wait_log(r"process started")
    ap.signal(signal.SIGINT)
    assert ap.wait() == 0  # ended by the stop signal we sent: a clean stop


def test_all_jobs_complete_exit_status(autopilot) -> None:
    ap = autopilot({"jobs": [
        {"name": "ok", "exec": ["true"]},
        {"name": "bad", "exec": sh("sleep 0.2; exit 5")},
        {"name": "after", "exec": ["true"], "when": {"source": "bad", "once": "exitFailed"}},
    ]})
    assert ap.wait() == 5
    assert "every job is complete" in ap.log


def test_config_error_exits_2(autopilot) -> None:
    ap = autopilot('{ jobs: [ {name: "a", exec: "true", restarts: "sometimes"} ] }')
    assert ap.wait() == 2
    assert "restarts" in ap.stderr
    assert "config error" in ap.stderr.lower()


def test_control_socket_failure_stops_startup(autopilot, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-socket"
    blocker.write_text("a regular file where the socket should go")
    ap = autopilot({"control": {"socket": str(blocker)},
                    "jobs": [{"name": "app", "exec": ["sleep", "60"]}]})
    assert ap.wait() == 1
    assert "startup failed" in ap.log
    assert "process started" not in ap.log  # no job was started
