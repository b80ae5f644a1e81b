"""docs/architecture.md names files; a newcomer must find each one where it says.

A path in backquotes is looked up from the repository root, from ``autopilot/``, and, in
the layout table, from the directory of the row (``lock.py`` in the ``autopilot/election/``
row is ``autopilot/election/lock.py``). What counts as a path: a name ending in ``.py``,
``.md`` or ``/``, or one that starts with a top-level directory of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import ROOT

DOC = ROOT / "docs" / "architecture.md"
TOP = ("autopilot/", "tests/", "docs/", "bench/", "images/")


def is_path(token: str) -> bool:
    if " " in token or token.startswith("/") or "*" in token:
        return False  # a request line, an HTTP path, a pattern
    return token.endswith((".py", ".md", "/")) or token.startswith(TOP)


def row_dirs(line: str) -> list[Path]:
    """The directories a layout-table row names in its first cell (``autopilot/jobs/``), or
    the directory of the file it names (``autopilot/supervisor.py``: ``autopilot/``)."""
    first = line.split("|")[1]
    out = []
    for token in re.findall(r"`([^`]+)`", first):
        path = ROOT / token
        out.append(path if token.endswith("/") else path.parent)
    return out


def missing_paths(text: str) -> list[str]:
    missing = []
    for line in text.splitlines():
        bases = [ROOT, ROOT / "autopilot"]
        if line.startswith("| `"):
            bases = [*row_dirs(line), *bases]
        for token in re.findall(r"`([^`]+)`", line):
            if is_path(token) and not any((base / token).exists() for base in bases):
                missing.append(token)
    return missing


def test_every_path_named_in_the_architecture_doc_exists() -> None:
    text = DOC.read_text()
    assert len(re.findall(r"`[^`]+\.py`", text)) > 50  # the doc still names its files
    assert missing_paths(text) == []


def test_the_check_notices_a_path_that_is_gone() -> None:
    row = "| `autopilot/election/` | `election.py` (the component), `gone.py` |"
    assert missing_paths(row) == ["gone.py"]
    assert missing_paths("see `autopilot/nothing_here.py` and `jobs/hooks.py`") == [
        "autopilot/nothing_here.py"]
