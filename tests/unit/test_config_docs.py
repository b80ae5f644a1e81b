"""Every ```json5 block in docs/configuration.md, docs/containerpilot.md and README.md loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autopilot.config import load_text

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = [ROOT / "docs" / "configuration.md", ROOT / "docs" / "containerpilot.md", ROOT / "README.md"]
ENV = {"SERVICE_NAME_0": "billing", "SERVICE_INTERVAL_0": "7", "CONSUL": "consul.example.com"}


def blocks() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text()
        for m in re.finditer(r"^```json5\n(.*?)^```", text, re.M | re.S):
            if m.group(1).startswith("// error:"):  # refused on purpose: test_docs_snippets
                continue
            out.append((doc.name, text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


BLOCKS = blocks()


def test_the_docs_have_examples() -> None:
    assert sum(1 for name, _, _ in BLOCKS if name == "configuration.md") >= 10


@pytest.mark.parametrize("doc,line,text", BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_doc_example_loads_without_warnings(doc: str, line: int, text: str) -> None:
    cfg = load_text(text, f"docs/{doc}:{line}", ENV)
    assert cfg.warnings == []


@pytest.mark.parametrize("health,interval,ttl", [("ttl: 4", 2.0, 4.0), ("ttl: 30", 5.0, 30.0),
                                                 ("interval: 2", 2.0, 6.0)])
def test_documented_health_defaults(health: str, interval: float, ttl: float) -> None:
    """configuration.md: no interval gets 5 s or ttl / 2 when shorter; no ttl 3 x interval."""
    text = ('{ consul: "localhost:8500", jobs: [{ name: "app", exec: "true", port: 80, '
            f'health: {{ exec: "true", {health} }} }}] }}')
    h = load_text(text, "t.json5", {}).jobs[0].health
    assert (h.interval, h.ttl) == (interval, ttl)
    doc = DOCS[0].read_text()
    assert "5 s, or `ttl` / 2 when that is shorter" in doc
