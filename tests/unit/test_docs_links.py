"""Every relative link of the docs pages listed below points at a file that exists (and, for a link to a
heading of a markdown page, at a heading that exists)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

# the pages the docs owner keeps (others check their own pages)
DOCS = [ROOT / "README.md", ROOT / "k8s" / "README.md",
        *[ROOT / "docs" / f"{n}.md" for n in ("configuration", "jobs", "discovery", "control",
                                               "telemetry", "images")],
        *sorted((ROOT / "docs" / "workshop").glob("0[1-5]-*.md")),
        ROOT / "docs" / "workshop" / "README.md",
        *sorted((ROOT / "images").glob("*/README.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for title in re.findall(r"^#+ (.*)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)  # not in code
        for target in LINK.findall(text):
            if not re.match(r"[a-z]+:", target):
                found.append((str(doc.relative_to(ROOT)), target))
    return found


LINKS = links()


@pytest.mark.parametrize("doc,target", LINKS, ids=[f"{d}->{t}" for d, t in LINKS])
def test_link_resolves(doc: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    page = (ROOT / doc).parent / path if path else ROOT / doc
    assert page.exists(), f"{doc}: {target} does not exist"
    if anchor and page.suffix == ".md":
        assert anchor in anchors(page), f"{doc}: no heading #{anchor} in {path or doc}"
