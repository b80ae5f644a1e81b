"""docs/functions.md's examples work: its config block loads, and its "Try it" shell session
runs as written (ports swapped for free ones) against the real example handler."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autopilot.config import load_text
from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.timeout(60)

DOC = (ROOT / "docs" / "functions.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_config_block_loads() -> None:
    cfg = load_text(blocks("json5")[0], "docs/functions.md", {})
    fn = cfg.jobs[0].function
    assert fn is not None and fn.max_concurrency == 4 and fn.idle_timeout == 30


def test_try_it_session_runs(tmp_path: Path) -> None:
    script = blocks("sh")[0]
    port, metrics = free_port(), free_port()
    script = script.replace("8080", str(port)).replace("9090", str(metrics))
    script = script.replace("autopilot run", f"{sys.executable} -m autopilot run")
    # the backgrounded autopilot must be up before the first curl (a person waits a moment)
    script = script.replace("&\n", f"&\nfor i in $(seq 100); do curl -s localhost:{metrics}"
                                   "/health >/dev/null && break; sleep 0.1; done\n", 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "AP_CONTROL_SOCKET": str(tmp_path / "cp.sock")}
    out = subprocess.run(["bash", "-c", script + "\nwait\n"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=45)
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == 3, out.stdout + out.stderr
    first, warm, cold = answers
    assert first["listen_fds"] == "1" and first["listen_pid"] == str(first["pid"])
    assert warm["pid"] == first["pid"] and warm["hello"] == "you"
    assert cold["pid"] != first["pid"]
    assert 'autopilot_function_instances{function="hello"} 0.0' in out.stdout
