"""The control socket and `autopilot ctl` end to end, against a real `python -m autopilot run`.

Each test starts its own autopilot on a socket in a short private directory (a unix socket
path is limited to 107 bytes, pytest's tmp_path can be longer)."""

from __future__ import annotations

import concurrent.futures
import errno
import grp
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from autopilot.control.client import ControlClient, ControlError
from tests.helpers import ROOT, autopilot_cmd, free_port, wait_for

pytestmark = pytest.mark.timeout(60)


JOBS = """
{
  control: {socket: "@DIR@/cp.sock"},
  jobs: [
    {name: "app", exec: ["sleep", "300"],
     health: {exec: ["test", "-f", "@DIR@/healthy"], interval: 1, ttl: 5}},
    {name: "worker", exec: ["/bin/sh", "-c",
       "trap 'echo \\"usr1 $GREETING\\" >> @DIR@/signals' USR1; while :; do sleep 0.05; done"],
     restarts: "unlimited"},
  ],
}
"""


def proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def test_ping_status_putenv_job_control(launch: Any, workdir: Path) -> None:
    ap = launch(JOBS)
    out = ap.ctl("ping")
    assert out.returncode == 0 and out.stdout.strip() == "ok"
    wait_for(lambda: ap.job("worker")["pid"], message="worker running")
    out = ap.ctl("status", "--json")
    status = json.loads(out.stdout)
    assert {j["name"] for j in status["jobs"]} == {"app", "worker"}
    assert status["pid"] == ap.proc.pid
    # putenv reaches processes started afterwards, not the running one
    old_pid = ap.job("worker")["pid"]
    assert ap.ctl("putenv", "GREETING=hello world", "DSN=a=b").returncode == 0
    assert "GREETING" not in proc_env(old_pid)
    out = ap.ctl("job", "worker", "restart")
    assert out.returncode == 0, out.stderr
    new_pid = wait_for(lambda: ap.job("worker")["pid"], message="worker restarted")
    assert new_pid != old_pid
    env = proc_env(new_pid)
    assert env["GREETING"] == "hello world" and env["DSN"] == "a=b"
    assert env["AUTOPILOT_SOCKET"] == ap.socket  # children find the socket by themselves
    # signal: delivered to the job's process, which keeps running
    assert ap.ctl("job", "worker", "signal", "SIGUSR1").returncode == 0
    wait_for(lambda: "usr1 hello world" in (workdir / "signals").read_text(),
             message="the trap to run")
    assert ap.job("worker")["pid"] == new_pid
    # stop: stays stopped; start: runs again (through the client library from here on)
    ap.client().job("worker", "stop")
    wait_for(lambda: ap.job("worker")["pid"] is None, message="worker stopped")
    assert not Path(f"/proc/{new_pid}").exists() or _zombie_or_gone(new_pid)
    ap.client().job("worker", "start")
    wait_for(lambda: ap.job("worker")["pid"] not in (None, new_pid), message="worker started")
    # errors: exit 1 with the server's message
    out = ap.ctl("job", "nope", "restart")
    assert out.returncode == 1 and "unknown job 'nope'" in out.stderr
    with pytest.raises(ControlError, match="SIGWHAT"):
        ap.client().job("worker", "signal", "SIGWHAT")
    # raw HTTP errors
    assert _raw(ap.socket, "GET", "/v3/reload")[0] == 405
    assert _raw(ap.socket, "GET", "/v3/ping/x")[0] == 404
    assert _raw(ap.socket, "POST", "/v3/environ", b"\xc3\x28")[0] == 400
    code, body = _raw(ap.socket, "POST", "/v3/environ", b'{"A": ' + b'"x' * 600_000 + b'"}')
    assert code == 413 and "too large" in body["error"]
    assert ap.client().ping()["ok"]


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _raw(path: str, method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    import http.client

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    conn = http.client.HTTPConnection("control", timeout=10)
    conn.sock = s
    conn.request(method, url, body=body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def test_reload_and_maintenance(launch: Any, workdir: Path) -> None:
    ap = launch(JOBS)
    app_pid = wait_for(lambda: ap.job("app")["pid"], message="app running")
    worker_pid = wait_for(lambda: ap.job("worker")["pid"], message="worker running")
    # a broken config is refused with the loader's message; everything keeps running
    good = ap.config_path.read_text()
    ap.config_path.write_text(good.replace('name: "worker"', 'name: "worker", bogus: 1'))
    out = subprocess.run(autopilot_cmd("reload", "--socket", ap.socket), cwd=ROOT, env=ap.env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "bogus" in out.stderr, out.stderr
    assert ap.job("worker")["pid"] == worker_pid
    # a changed job restarts, an unchanged one keeps its pid
    ap.config_path.write_text(good.replace("sleep 0.05", "sleep 0.06"))
    out = ap.ctl("reload")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: ap.job("worker")["pid"] not in (None, worker_pid), message="new worker")
    assert ap.job("app")["pid"] == app_pid
    # maintenance
    assert ap.ctl("maintenance", "enable").returncode == 0
    assert ap.client().status()["maintenance"] is True
    wait_for(lambda: ap.job("app")["status"] == "maintenance", message="app in maintenance")
    ap.client().maintenance(False)
    assert ap.client().status()["maintenance"] is False
    # a reload that changes control.socket answers on the old socket, then serves the new
    old = ap.socket
    ap.config_path.write_text(ap.config_path.read_text().replace("cp.sock", "moved.sock"))
    ap.client().reload()
    assert not os.path.exists(old)
    moved = ControlClient(str(workdir / "moved.sock"))
    assert moved.ping()["ok"] and moved.status()["pid"] == ap.proc.pid
    ap.socket = moved.socket_path


def test_concurrent_clients(launch: Any) -> None:
    ap = launch(JOBS)

    def one(i: int) -> bool:
        c = ap.client()
        c.putenv({f"K{i}": str(i)})
        return bool(c.ping()["ok"])

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        assert all(pool.map(one, range(200)))
    # every putenv landed: a job started now sees all 200 variables
    ap.client().job("worker", "restart")
    pid = wait_for(lambda: ap.job("worker")["pid"], message="worker restarted")
    env = proc_env(pid)
    assert all(env.get(f"K{i}") == str(i) for i in range(200))


def connect_as(uid: int, gid: int, path: str) -> int:
    """Connect to a unix socket from a forked child running as uid/gid: 0 or the errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 98
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.close()
            code = 0
        except OSError as exc:
            code = exc.errno or 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_socket_permissions(launch: Any, workdir: Path) -> None:
    """0600 by default: another user cannot connect; mode 0660 + group lets the group in."""
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)  # nobody's own group (nogroup on Debian)
    os.chmod(workdir, 0o755)  # let nobody reach the socket files at all
    ap = launch(JOBS)
    st = os.stat(ap.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert connect_as(nobody.pw_uid, nobody.pw_gid, ap.socket) == errno.EACCES
    assert connect_as(0, 0, ap.socket) == 0
    cfg = JOBS.replace('socket: "@DIR@/cp.sock"',
                       f'socket: "@DIR@/g/cp.sock", mode: "0660", group: "{group.gr_name}"')
    ap2 = launch(cfg, sub="g")
    os.chmod(workdir / "g", 0o755)
    st = os.stat(ap2.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == group.gr_gid
    assert connect_as(nobody.pw_uid, nobody.pw_gid, ap2.socket) == 0  # via the group
    other_gid = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, group.gr_gid))
    assert connect_as(nobody.pw_uid, other_gid, ap2.socket) == errno.EACCES
    assert ap2.stop() == 0
    assert not os.path.exists(ap2.socket)  # removed at shutdown


def test_stale_socket_replaced_live_socket_refused(launch: Any, workdir: Path) -> None:
    path = workdir / "cp.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a stale socket file, nobody listening
    first = launch(JOBS)
    assert first.client().ping()["ok"]
    second = launch(JOBS, sub="second", start=False)
    second.socket = first.socket
    second.start(wait=False)
    code = second.proc.wait(20)
    assert code != 0
    assert "in use by another running process" in (second.log + second.stderr)
    assert first.client().ping()["ok"]  # the first autopilot keeps its socket
    assert first.stop() == 0


def test_client_without_server(workdir: Path, env_clean: dict[str, str]) -> None:
    out = subprocess.run(autopilot_cmd("ctl", "--socket", str(workdir / "none.sock"), "ping"),
                         cwd=ROOT, env=env_clean, capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "does not exist" in out.stderr
    with pytest.raises(ControlError):
        ControlClient(str(workdir / "none.sock")).status()


def test_sensor_job_posts_metrics(launch: Any) -> None:
    port = free_port()
    sensor = json.dumps([sys.executable, "-m", "autopilot", "ctl", "putmetric", "app_ticks=2"])
    ap = launch(JOBS.replace("jobs: [", f"""
      telemetry: {{port: {port}, interfaces: ["static:127.0.0.1"],
                  metrics: [{{namespace: "app", name: "ticks", type: "counter"}}]}},
      jobs: [
        {{name: "sensor", exec: {sensor}, when: {{interval: "2s"}}}},"""))
    url = f"http://127.0.0.1:{port}/metrics"

    def ticks() -> float:
        for line in requests.get(url, timeout=5).text.splitlines():
            if line.startswith("app_ticks "):
                return float(line.split()[1])
        return 0.0

    # each run adds 2; a run has one interval (2 s) to start python and post
    ap.wait_until(lambda: ticks() >= 2, timeout=30, message="the sensor's counter to reach 2")
    assert ticks() % 2 == 0
    # the sensor posts before it exits: its ExitSuccess is counted a moment later
    text = ap.wait_until(lambda: (t := requests.get(url, timeout=5).text)
                         and 'containerpilot_events{code="ExitSuccess",source="sensor"}' in t
                         and t, timeout=20, message="the sensor's ExitSuccess to be counted")
    assert 'containerpilot_control_http_requests{code="200",path="/v3/metric"}' in text

