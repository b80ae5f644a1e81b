"""Run the workshop labs' commands: fenced ```sh blocks, in order, as one bash script.

Conventions of docs/workshop/02-05: ```sh blocks are run (from the repository root, one
shell, so variables carry over); ```sh cluster blocks need a Kubernetes cluster and are only
checked offline; ```text blocks are output and not run. Ports in the docs are the defaults
a user gets; tests swap them for free ones with ``replacements``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import ROOT

DOCS = ROOT / "docs" / "workshop"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(doc: Path, info: str = "sh") -> list[str]:
    """The bodies of the fenced blocks whose info string is exactly ``info``."""
    return [body for lang, body in FENCE.findall(doc.read_text()) if lang.strip() == info]


def script(doc: Path, replacements: dict[str, str] | None = None) -> str:
    text = "\n".join(blocks(doc))
    for old, new in (replacements or {}).items():
        text = text.replace(old, new)
    return "set -e\nPS4='+ $(date +%T) '\nset -x\n" + text


def python_shim(tmp: Path) -> Path:
    """A bin dir whose python3 is the interpreter running the tests (it has redis-py)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "python3"
    if not link.exists():
        link.symlink_to(sys.executable)
    return bin_dir


def run_doc(doc: Path, tmp: Path, *, replacements: dict[str, str] | None = None,
            env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess:
    body = script(doc, replacements)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", dir=tmp, delete=False) as fh:
        fh.write(body)
    full_env = os.environ | {"PATH": f"{python_shim(tmp)}:{os.environ['PATH']}"} | (env or {})
    out = subprocess.run(["bash", fh.name], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env=full_env)
    (tmp / f"{doc.stem}.out").write_text(out.stdout + "\n--- stderr ---\n" + out.stderr)
    return out
