"""Log formats (ContainerPilot's default/text/json), raw job output, the log file reopened
on SIGUSR1."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(40)

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def jobs() -> list[dict]:
    return [
        {"name": "app", "exec": sh("echo hello from app; echo to stderr >&2; sleep 60")},
        {"name": "rawjob", "logging": {"raw": True}, "exec": sh("echo RAW-LINE; sleep 60")},
    ]


def test_default_format(autopilot) -> None:
    ap = autopilot({"logging": {"level": "INFO"}, "jobs": jobs()})
    ap.wait_log("hello from app")
    ap.wait_log("RAW-LINE")
    ap.wait_log("to stderr")
    line = next(x for x in ap.log.splitlines() if "hello from app" in x)
    assert re.fullmatch(rf"{TS} app \d+ hello from app", line), line
    assert "RAW-LINE" in ap.log.splitlines()  # raw: the child's own line, untouched
    assert "event code=" not in ap.log  # DEBUG lines filtered at INFO
    ap.terminate()
    assert ap.wait() == 0


def test_text_format(autopilot) -> None:
    ap = autopilot({"logging": {"level": "DEBUG", "format": "text"}, "jobs": jobs()})
    ap.wait_log('msg="hello from app"')
    line = next(x for x in ap.log.splitlines() if 'msg="hello from app"' in x)
    assert re.fullmatch(rf'time="?{TS}"? level=info msg="hello from app" job=app pid=\d+',
                        line), line
    assert re.search(r'level=debug msg=event code=startup source=global', ap.log)
    ap.terminate()
    assert ap.wait() == 0


def test_json_format_and_file_reopen(autopilot, tmp_path: Path) -> None:
    logfile = tmp_path / "autopilot.log.json"
    ap = autopilot({"logging": {"level": "INFO", "format": "json", "output": str(logfile)},
                    "jobs": [{"name": "app", "exec": sh("echo first; sleep 60")},
                             {"name": "hup", "exec": sh("echo second"),
                              "when": {"source": "SIGHUP"}}]})
    wait_for(lambda: logfile.exists() and "first" in logfile.read_text(), 10,
             message="first line in the log file")
    records = [json.loads(x) for x in logfile.read_text().splitlines()]
    rec = next(r for r in records if r["msg"] == "first")
    assert rec["job"] == "app" and rec["level"] == "info" and isinstance(rec["pid"], int)
    assert re.fullmatch(TS, rec["time"])
    rotated = tmp_path / "rotated.json"
    logfile.rename(rotated)
    ap.signal(signal.SIGUSR1)  # reopen: a new file at the configured path
    wait_for(logfile.exists, 5, message="log file reopened")
    ap.signal(signal.SIGHUP)
    wait_for(lambda: "second" in logfile.read_text(), 5, message="new lines in the new file")
    assert "second" not in rotated.read_text()
    ap.terminate()
    assert ap.wait() == 0


def test_fixture_ctl_and_status(autopilot) -> None:
    ap = autopilot({"jobs": [{"name": "app", "exec": ["sleep", "60"]}]})
    ap.wait_socket()
    out = ap.ctl("status")
    assert out.returncode == 0 and "app" in out.stdout
    ap.terminate()
    assert ap.wait() == 0
