"""Run the workshop labs' commands: fenced ```sh blocks, in order, as one bash script.

Conventions of docs/workshop/02-05: ```sh blocks are run (from the repository root, one
shell, so variables carry over), except those whose first line is `# set-up` (installs,
once per machine); ```sh cluster blocks need a Kubernetes cluster, say so in their first
line, and are only checked offline; ```text blocks are output and not run. Ports in the docs are the defaults
a user gets; tests swap them for free ones with ``replacements``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
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


def is_setup(body: str) -> bool:
    """A block marked, visibly, as the once-per-machine set-up (installs): not run."""
    return body.startswith("# set-up")


def script(doc: Path, replacements: dict[str, str] | None = None) -> str:
    text = "\n".join(b for b in blocks(doc) if not is_setup(b))
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


def lab_commands(doc: Path) -> list[str]:
    """The ```sh blocks a reader runs, in order (not the `# set-up` ones)."""
    return [b for b in blocks(doc) if not is_setup(b)]


def autopilot_shim(tmp: Path) -> Path:
    """A bin dir whose `autopilot` runs this checkout with the tests' interpreter, as
    `pip install` would put it on PATH."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "autopilot"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m autopilot "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def run_doc(doc: Path, tmp: Path, *, replacements: dict[str, str] | None = None,
            env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess:
    body = script(doc, replacements)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", dir=tmp, delete=False) as fh:
        fh.write(body)
    full_env = os.environ | {"PATH": f"{python_shim(tmp)}:{os.environ['PATH']}"} | (env or {})
    # its own process group: whatever the lab left running in the background (it stopped
    # half-way, say) is killed with the group afterwards
    proc = subprocess.Popen(["bash", fh.name], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n(timed out after {timeout}s)"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    (tmp / f"{doc.stem}.out").write_text(stdout + "\n--- stderr ---\n" + stderr)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
