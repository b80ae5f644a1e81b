"""Replay the transcripts recorded against a real Consul 1.10.12 agent (tests/catalog/
reference/*.json, made by ``recorder.py``) against ``autopilot catalog`` and compare.

Only what must differ between two agents is normalised (UUIDs, raft indexes, the node name,
Date/length headers); timing is compared by class (a blocking query woke because of the
write vs. ran to its ``wait``; a session was invalidated inside its TTL window). A failure
names every step that differs, as ``<scenario>/<step>``, with both sides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.catalog.reference.runner import Runner, diff_paths, view
from tests.catalog.reference.scenarios import NODE, SCENARIOS, TOKEN
from tests.helpers import CatalogProcess

REF = Path(__file__).parent / "reference"


def _transcript(name: str) -> dict:
    return json.loads((REF / f"{name}.json").read_text())


def test_every_scenario_is_recorded() -> None:
    for name, (steps, _) in SCENARIOS.items():
        rec = _transcript(name)
        assert rec["recorded_with"].startswith("Consul v1.10.12"), name
        assert [s["name"] for s in rec["steps"]] == [s["name"] for s in steps], \
            f"{name}: transcript out of date, re-run the recorder"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_replay(name: str, tmp_path: Path) -> None:
    steps, acl = SCENARIOS[name]
    ref = _transcript(name)
    args = ["--node", NODE] + (["--token", TOKEN] if acl else [])
    cat = CatalogProcess(tmp_path, *args).start()
    try:
        got = Runner(cat.url).run(steps)
    finally:
        cat.stop()
    diffs = []
    for step, want, have in zip(steps, ref["steps"], got, strict=True):
        a, b = view(step, want, NODE), view(step, have, NODE)
        if a != b:
            lines = "\n    ".join(diff_paths(a, b))
            diffs.append(f"{name}/{step['name']} (path: consul -> catalog):\n    {lines}")
    assert not diffs, f"{len(diffs)} step(s) differ from Consul 1.10.12:\n" + "\n".join(diffs)
