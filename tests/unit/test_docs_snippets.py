"""Every ```json5 block of the docs loads with the real loader (README.md, docs/**, k8s/ and
images/*/README.md), so an example cannot drift from the code.

Conventions (visible in the rendered page, as the block's first line):

* no marker: a whole config; it must load without warnings;
* ``// fragment: top level`` or ``// fragment: inside a job``: part of a config; it is
  wrapped in ``{…}`` (or in a job with a port and Consul) and must then load without warnings;
* ``// error: …``: a config that must be refused; the next fenced block is the message
  autopilot prints for it saved as /etc/cp.json5 (an optional first ``$ …`` line aside).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from autopilot.config import ConfigError, load_text
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

FENCE = re.compile(r"^([ \t]*)```([^\n]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
ENV = {"SERVICE_NAME_0": "billing", "SERVICE_INTERVAL_0": "7", "CONSUL": "consul.example.com"}
WRAP = {
    "top level": "{{\n{}\n}}",
    "inside a job": '{{ consul: "localhost:8500", jobs: [{{ name: "job", exec: "true", port: 80,\n'
                    '{}\n}}] }}',
}


def docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            ROOT / "k8s" / "README.md", *sorted((ROOT / "images").glob("*/README.md"))]


@dataclass
class Snippet:
    doc: str
    line: int
    text: str
    after: str | None  # the body of the next fenced block

    @property
    def marker(self) -> str:
        first = self.text.split("\n", 1)[0].strip()
        return first[3:].strip() if first.startswith("// ") else ""


def snippets() -> list[Snippet]:
    out = []
    for doc in docs():
        if not doc.exists():
            continue
        text = doc.read_text()
        fences = list(FENCE.finditer(text))
        for i, m in enumerate(fences):
            if m.group(2).strip() != "json5":
                continue
            after = fences[i + 1].group(3) if i + 1 < len(fences) else None
            out.append(Snippet(str(doc.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1,
                               textwrap.dedent(m.group(3)), after))
    return out


SNIPPETS = snippets()


def test_the_docs_have_snippets_of_every_kind() -> None:
    assert len(SNIPPETS) >= 30
    kinds = {s.marker.split(":")[0] for s in SNIPPETS}
    assert {"fragment", "error"} <= kinds, kinds


@pytest.mark.parametrize("s", SNIPPETS, ids=[f"{s.doc}:{s.line}" for s in SNIPPETS])
def test_snippet_loads(s: Snippet) -> None:
    where = f"{s.doc}:{s.line}"
    if s.marker.startswith("error:"):
        assert s.after is not None, f"{where}: an error example needs its message block"
        with pytest.raises(ConfigError) as err:
            load_text(s.text, "/etc/cp.json5", ENV)
        shown = [ln for ln in s.after.rstrip("\n").split("\n") if not ln.startswith("$ ")]
        assert str(err.value).split("\n") == shown, f"{where}: the message shown is not the real one"
        return
    text = s.text
    if s.marker.startswith("fragment:"):
        context = s.marker.split(":", 1)[1].strip()
        assert context in WRAP, f"{where}: unknown fragment context {context!r}"
        text = WRAP[context].format(s.text)
    else:
        assert not s.marker.startswith("fragment"), f"{where}: write `// fragment: <where>`"
    cfg = load_text(text, where, ENV)
    assert cfg.warnings == [], f"{where}: {cfg.warnings}"
