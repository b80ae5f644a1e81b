"""Every ```json5 example in docs/control.md and docs/telemetry.md loads with the real loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autopilot.config import load
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

DOCS = [ROOT / "docs" / "control.md", ROOT / "docs" / "telemetry.md"]
BLOCKS = [(doc.name, i, block) for doc in DOCS
          for i, block in enumerate(re.findall(r"```json5\n(.*?)```", doc.read_text(), re.S))]


def _load(path: str):
    return load(path)


@pytest.mark.parametrize(("doc", "index", "block"), BLOCKS, ids=[f"{d}#{i}" for d, i, _ in BLOCKS])
def test_doc_example_loads(doc: str, index: int, block: str, tmp_path: Path) -> None:
    path = tmp_path / "example.json5"
    path.write_text(block)
    config = _load(str(path))
    assert config is not None
