"""End to end: a real `python -m autopilot run CONFIG` against a real `autopilot catalog`.

Registration on the first passing check, the IP handed to children, a watch's `changed`
hook, explicit fail, maintenance, re-registration after a catalog restart, deregistration
on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import autopilot_cmd, wait_for

SID = f"app-{socket.gethostname()}"


def services(url: str) -> dict:
    return requests.get(url + "/v1/agent/services", timeout=2).json()


def check(url: str) -> dict | None:
    return requests.get(url + "/v1/agent/checks", timeout=2).json().get(f"service:{SID}")


def write_config(tmp: Path, address: str) -> Path:
    cfg = {
        "consul": address,
        "control": {"socket": str(tmp / "ap.sock")},
        "stopTimeout": 3,
        "jobs": [
            {"name": "app", "exec": "sleep 300", "port": 8080, "interfaces": ["lo"],
             "tags": ["web"],
             "health": {"exec": f"test -f {tmp}/healthy", "interval": 1, "ttl": 5}},
            {"name": "env", "exec": ["sh", "-c", f"env > {tmp}/env.txt"]},
            {"name": "on-change", "exec": ["sh", "-c", f"echo x >> {tmp}/changes"],
             "when": {"source": "watch.app", "each": "changed"}},
        ],
        "watches": [{"name": "app", "interval": 5}],
    }
    path = tmp / "autopilot.json5"
    path.write_text(json.dumps(cfg))
    return path


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.timing
@pytest.mark.timeout(60)
def test_run_registers_watches_fails_maintains_and_deregisters(catalog_factory, tmp_path,
                                                               env_clean):
    cat = catalog_factory()
    (tmp_path / "healthy").touch()
    log = (tmp_path / "autopilot.log").open("wb")
    proc = subprocess.Popen(autopilot_cmd("run", str(write_config(tmp_path, cat.address))),
                            stdout=log, stderr=subprocess.STDOUT, env=env_clean)
    try:
        svc = wait_for(lambda: services(cat.url).get(SID), 10, message="registration")
        assert (svc["Address"], svc["Port"], svc["Tags"]) == ("127.0.0.1", 8080, ["web"])
        env = wait_for(lambda: (tmp_path / "env.txt").exists()
                       and (tmp_path / "env.txt").read_text(), 5, message="env dump")
        assert "CONTAINERPILOT_APP_IP=127.0.0.1" in env and "AUTOPILOT_APP_IP=127.0.0.1" in env
        # the watch saw its own service appear: the changed hook ran
        wait_for(lambda: lines(tmp_path / "changes") >= 1, 5, message="changed hook")

        # a failing check: critical within one check interval (no TTL wait)
        n = lines(tmp_path / "changes")
        t0 = time.monotonic()
        (tmp_path / "healthy").unlink()
        wait_for(lambda: check(cat.url)["Status"] == "critical", 5, message="critical")
        assert time.monotonic() - t0 < 2.5  # interval 1 s + check run + update
        wait_for(lambda: lines(tmp_path / "changes") == n + 1, 5,
                 message="changed hook when the instance left")
        (tmp_path / "healthy").touch()
        wait_for(lambda: check(cat.url)["Status"] == "passing", 5, message="passing again")

        ctl = autopilot_cmd("ctl", "--socket", str(tmp_path / "ap.sock"), "maintenance")
        subprocess.run([*ctl, "enable"], check=True, env=env_clean, timeout=10,
                       capture_output=True)
        wait_for(lambda: SID not in services(cat.url), 5, message="deregistered in maintenance")
        subprocess.run([*ctl, "disable"], check=True, env=env_clean, timeout=10,
                       capture_output=True)
        wait_for(lambda: SID in services(cat.url), 5, message="registered after maintenance")

        # the catalog loses everything: the service comes back by itself
        cat.kill()
        cat.start()
        t0 = time.monotonic()
        wait_for(lambda: SID in services(cat.url), 8, message="re-registration")
        assert time.monotonic() - t0 < 5
        wait_for(lambda: check(cat.url)["Status"] == "passing", 5, message="passing")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert SID not in services(cat.url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    text = (tmp_path / "autopilot.log").read_text()
    assert text.count("consul unreachable") <= 1, text
