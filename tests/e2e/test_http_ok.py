"""images/base/http-ok: the health-check probe every image uses (bash, no python/curl)."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT, free_port

HTTP_OK = str(ROOT / "images" / "base" / "http-ok")
pytestmark = pytest.mark.timeout(30)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/slow":
            time.sleep(3)
        code = {"/ok": 200, "/slow": 200, "/ready": 503}.get(self.path, 404)
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield port
    srv.shutdown()
    srv.server_close()


def probe(*urls: str, timeout: str = "2") -> subprocess.CompletedProcess:
    return subprocess.run([HTTP_OK, *urls], capture_output=True, text=True, timeout=10,
                          env={"PATH": "/usr/bin:/bin", "HTTP_OK_TIMEOUT": timeout})


def test_2xx_is_ok_anything_else_is_not(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    assert probe(f"{base}/ok").returncode == 0
    bad = probe(f"{base}/ready")
    assert bad.returncode == 1 and "503" in bad.stderr
    assert probe(f"{base}/missing").returncode == 1
    assert probe(f"http://127.0.0.1:{free_port()}/ok").returncode == 1  # nobody listening


@pytest.mark.timing
def test_first_answering_url_wins_and_slow_answers_time_out(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    assert probe(f"http://127.0.0.1:{free_port()}/", f"{base}/ok").returncode == 0
    t0 = time.monotonic()
    assert probe(f"{base}/slow", timeout="1").returncode == 1
    assert time.monotonic() - t0 < 2.5


def test_usage_and_scheme_errors() -> None:
    assert probe().returncode == 2
    out = probe("https://127.0.0.1/")
    assert out.returncode == 1 and "only http://" in out.stderr
