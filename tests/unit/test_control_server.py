"""Routing and validation of the control socket, against a stand-in for the supervisor API.

The server, its unix socket and the HTTP client are real; only the supervisor is a small
test double (the integration tests run the real `python -m autopilot run`)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from autopilot.control.client import ControlClient, ControlError
from autopilot.control.server import MAX_BODY, ControlServer, ControlSocketError
from autopilot.control.stats import request_counts
from tests.unit.control_standins import LoopThread, StandInSupervisor, make_supervisor

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server(sockdir: str, loop: LoopThread) -> Iterator[tuple[ControlServer, StandInSupervisor]]:
    sock = os.path.join(sockdir, "cp.sock")
    sup = make_supervisor(sock)
    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    yield srv, sup
    loop.run(srv.stop())


def raw(path: str, method: str, url: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request over the unix socket; returns (status, decoded JSON, headers)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    conn = http.client.HTTPConnection("control", timeout=10)
    conn.sock = s
    conn.request(method, url, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None, dict(resp.getheaders())


def test_ping_and_status(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    client = ControlClient(srv.path)
    assert client.ping()["ok"] is True
    assert client.ping()["pid"] == os.getpid()
    st = client.status()
    jobs = {j["name"]: j for j in st["jobs"]}
    assert jobs["web"]["registered"] is True and jobs["web"]["role"] == "primary"
    assert jobs["web"]["status"] == "healthy" and jobs["web"]["pid"] == 1234
    assert jobs["web"]["extra"] == 1  # the supervisor's own per-job fields are kept
    assert jobs["worker"]["registered"] is False and jobs["worker"]["health_check"] is False
    assert st["maintenance"] is False


def test_environ(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    assert ControlClient(srv.path).putenv({"A": "1", "B": "x=y=z", "C": ""})["updated"] == ["A", "B", "C"]
    assert sup.env == {"A": "1", "B": "x=y=z", "C": ""}
    code, body, _ = raw(srv.path, "POST", "/v3/environ", b'{"N": null}')
    assert code == 200 and sup.env["N"] == ""
    for bad, why in [(b"[1,2]", "JSON object"), (b'{"A": 1}', "must be a string"),
                     (b'{"A=B": "x"}', "invalid environment"), (b'{"": "x"}', "invalid environment"),
                     (b"{nope", "not valid JSON"), (b"\xff\xfe{}", "UTF-8"), (b"", "empty body")]:
        code, body, _ = raw(srv.path, "POST", "/v3/environ", bad)
        assert code == 400, bad
        assert why in body["error"], (bad, body)
    with pytest.raises(ControlError) as exc:
        ControlClient(srv.path).putenv({"A": 5})  # type: ignore[dict-item]
    assert exc.value.status == 400 and "must be a string" in exc.value.message


def test_reload(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    assert ControlClient(srv.path).reload()["reloaded"] is True
    assert sup.reloads == 1
    sup.reload_error = "/etc/app.json5:3:5: parse error: unexpected '}'"
    with pytest.raises(ControlError) as exc:
        ControlClient(srv.path).reload()
    assert exc.value.status == 422
    assert "parse error" in exc.value.message and "running config stays" in exc.value.message
    assert sup.reloads == 1


def test_maintenance(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    ControlClient(srv.path).maintenance(True)
    assert sup.maintenance is True
    assert ControlClient(srv.path).status()["maintenance"] is True
    ControlClient(srv.path).maintenance(False)
    assert sup.maintenance is False


def test_metric(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    c = ControlClient(srv.path)
    c.putmetric({"app_s_tacos": 2, "temp": "21.5"})
    c.putmetric({"app_s_tacos": "3"})
    text = sup.telemetry.exposition().decode()
    assert "\napp_s_tacos 5.0\n" in text and "\ntemp 21.5\n" in text
    for bad, why in [({"app_s_tacos": -1}, "counter"), ({"nope": 1}, "unknown metric"),
                     ({"temp": "warm"}, "not a number"), ({"temp": True}, "must be a number"),
                     ({"temp": [1]}, "must be a number")]:
        with pytest.raises(ControlError) as exc:
            c.putmetric(bad)
        assert exc.value.status == 400 and why in exc.value.message, (bad, exc.value.message)
    # all or nothing: a batch with one bad entry changes nothing
    with pytest.raises(ControlError):
        c.putmetric({"temp": 99, "app_s_tacos": -5})
    assert "\ntemp 21.5\n" in sup.telemetry.exposition().decode()
    sup.telemetry = None
    with pytest.raises(ControlError, match="telemetry is not configured"):
        c.putmetric({"temp": 1})


def test_jobs(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    c = ControlClient(srv.path)
    out = c.job("web", "stop")
    assert out["job"]["status"] == "stopped" and sup.actions[-1] == ("web", "stop", None)
    c.job("web", "restart")
    c.job("web", "start")
    c.job("worker", "signal", "SIGHUP")
    assert sup.actions[-1] == ("worker", "signal", "SIGHUP")
    with pytest.raises(ControlError) as exc:
        c.job("nope", "restart")
    assert exc.value.status == 404 and "unknown job" in exc.value.message
    with pytest.raises(ControlError) as exc:
        c.job("web", "signal", "SIGBOGUS")
    assert exc.value.status == 400 and "SIGBOGUS" in exc.value.message
    code, body, _ = raw(srv.path, "POST", "/v3/jobs/web/signal", b"{}")
    assert code == 400 and "signal" in body["error"]
    code, body, _ = raw(srv.path, "POST", "/v3/jobs/web/explode")
    assert code == 404 and "unknown job action" in body["error"]


def test_unknown_route_wrong_method_huge_body(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, _ = server
    code, body, _ = raw(srv.path, "GET", "/v3/nothing")
    assert code == 404 and "no such route" in body["error"]
    code, body, headers = raw(srv.path, "GET", "/v3/reload")
    assert code == 405 and "not allowed" in body["error"] and "POST" in headers.get("Allow", "")
    code, body, _ = raw(srv.path, "POST", "/v3/ping")
    assert code == 405
    code, body, _ = raw(srv.path, "POST", "/v3/environ", b"[" * 200_000 + b"]" * 200_000)
    assert code == 400 and "nested too deeply" in body["error"]
    code, body, _ = raw(srv.path, "POST", "/v3/environ", b"{" + b" " * (MAX_BODY + 10) + b"}")
    assert code == 413 and "too large" in body["error"]
    assert ControlClient(srv.path).ping()["ok"]  # still serving


def test_request_counter(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server
    c = ControlClient(srv.path)
    c.ping()
    c.ping()
    raw(srv.path, "GET", "/v3/nothing/at/all")
    with pytest.raises(ControlError):
        c.job("zzz", "stop")
    counts = request_counts(sup)
    assert counts[("200", "/v3/ping")] == 2
    assert counts[("404", "other")] == 1
    assert counts[("404", "/v3/jobs/{name}/{action}")] == 1
    text = sup.telemetry.exposition().decode()
    assert 'containerpilot_control_http_requests{code="200",path="/v3/ping"} 2.0' in text


def test_concurrent_clients(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, sup = server

    def one(i: int) -> bool:
        c = ControlClient(srv.path)
        c.putenv({f"K{i}": str(i)})
        return c.ping()["ok"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        assert all(pool.map(one, range(100)))
    assert sup.env == {f"K{i}": str(i) for i in range(100)}


# -- the socket file ------------------------------------------------------------------------

def test_socket_mode_default_0600(server: tuple[ControlServer, StandInSupervisor]) -> None:
    srv, _ = server
    st = os.stat(srv.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_socket_mode_and_group(sockdir: str, loop: LoopThread) -> None:
    gid = os.getgroups()[-1] if os.getgroups() else os.getgid()
    path = os.path.join(sockdir, "g.sock")
    sup = make_supervisor(path, mode=0o660, group=str(gid))
    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    try:
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
        assert ControlClient(path).ping()["ok"]
    finally:
        loop.run(srv.stop())
    assert not os.path.exists(path)  # removed on stop


def test_unknown_group_refused(sockdir: str, loop: LoopThread) -> None:
    sup = make_supervisor(os.path.join(sockdir, "x.sock"), group="no-such-group-xyz")
    with pytest.raises(ControlSocketError, match="no such group"):
        loop.run(ControlServer(sup.ctx, sup).start())


def test_stale_socket_replaced(sockdir: str, loop: LoopThread) -> None:
    path = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    sup = make_supervisor(path)
    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    try:
        assert ControlClient(path).ping()["ok"]
    finally:
        loop.run(srv.stop())


def test_live_socket_refused(server: tuple[ControlServer, StandInSupervisor], loop: LoopThread) -> None:
    srv, _ = server
    sup2 = make_supervisor(srv.path)
    with pytest.raises(ControlSocketError, match="in use by another running process"):
        loop.run(ControlServer(sup2.ctx, sup2).start())
    assert ControlClient(srv.path).ping()["ok"]  # the first one is untouched


def test_regular_file_not_replaced(sockdir: str, loop: LoopThread) -> None:
    path = os.path.join(sockdir, "file")
    with open(path, "w") as fh:
        fh.write("precious")
    sup = make_supervisor(path)
    with pytest.raises(ControlSocketError, match="not a socket"):
        loop.run(ControlServer(sup.ctx, sup).start())
    assert open(path).read() == "precious"


def test_stop_leaves_a_successors_socket(sockdir: str, loop: LoopThread) -> None:
    path = os.path.join(sockdir, "succ.sock")
    sup = make_supervisor(path)
    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    os.unlink(path)  # someone else replaced it
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    try:
        loop.run(srv.stop())
        assert os.path.exists(path)
        loop.run(srv.stop())  # idempotent
    finally:
        other.close()


def test_http_stack_made_with_the_first_connection(sockdir: str, loop: LoopThread) -> None:
    """The socket listens at once; the HTTP server and routes are made when a client first
    connects (docs/performance.md: a supervisor nobody calls does not load them), and a
    server nobody called stops cleanly, its socket file removed."""
    sock = os.path.join(sockdir, "lazy.sock")
    sup = make_supervisor(sock)
    idle = ControlServer(sup.ctx, sup)
    loop.run(idle.start())
    assert os.path.exists(sock) and idle.routes is None
    loop.run(idle.stop())
    assert not os.path.exists(sock)
    loop.run(idle.stop())  # idempotent

    srv = ControlServer(sup.ctx, sup)
    loop.run(srv.start())
    try:
        assert srv.routes is None
        assert ControlClient(srv.path).ping()["ok"] is True
        assert srv.routes is not None
        assert ControlClient(srv.path).ping()["ok"] is True  # the same server serves on
    finally:
        loop.run(srv.stop())
    assert not os.path.exists(sock)
