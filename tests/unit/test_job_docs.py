"""The json5 examples of docs/jobs.md load with the real loader (fragments inside a job)."""

from __future__ import annotations

import re

from autopilot.config.loader import load_text
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "jobs.md").read_text()
BLOCKS = re.findall(r"```json5\n(.*?)```", DOC, re.S)


def test_examples_load() -> None:
    assert len(BLOCKS) >= 3
    full = load_text(BLOCKS[0], "docs/jobs.md")
    assert full.main_job == "app" and full.job("app").stop_signal == "SIGINT"
    assert full.job("app").backoff.initial == 1.0 and full.job("app").user == "node"
    assert not full.warnings
    for block in BLOCKS[1:]:
        # the first line marks a fragment: `// fragment: inside a job` or `: top level`
        body = re.sub(r"^\s*// fragment:.*\n", "", block).strip()
        if body.startswith("health:"):
            cfg = load_text("{jobs: [{name: 'x', exec: 'true', " + body + "}]}", "docs/jobs.md")
            assert cfg.jobs[0].health is not None
        else:
            cfg = load_text("{" + body + "}", "docs/jobs.md")
            assert not cfg.warnings
