"""Runs every ```sh block of docs/workshop/06-postgres.md, in order, in one shell, against a
real PostgreSQL lab on lab network 0 (the page's addresses), as a reader would; ```text
blocks are set-up or output and are not run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.lab.cluster import Lab
from autopilot.lab.netns import Net
from tests.e2e.workshop import autopilot_shim, lab_commands
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.chaos

DOC = ROOT / "docs" / "workshop" / "06-postgres.md"


def test_doc_has_the_promised_steps() -> None:
    script = "\n".join(lab_commands(DOC))
    for step in ("lab up postgres", "lab status", "lab kill", "lab start", "lab stop",
                 "lab pause", "lab resume", "lab client", "lab wait", "lab down", "psql"):
        assert step in script, f"the PostgreSQL lab lost its `{step}` step"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Not pytest's tmp_path: pytest sets its base (/tmp/pytest-of-root) back to 0700 at the
    start of every session, and the postgres user must reach the lab's data under it while
    other pytest sessions start beside this one."""
    path = Path(tempfile.mkdtemp(prefix="ap-workshop-pg-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(900)
def test_every_command_of_the_postgres_lab_runs(workdir: Path) -> None:
    tmp_path = workdir
    bin_dir = autopilot_shim(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    wait_for(lambda: not Net(0).bridge_exists(), timeout=300, interval=0.5,
             message="lab network 0 to be free (another lab or workshop run is using it)")
    script = "set -ex\n" + "\n".join(lab_commands(DOC))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOPILOT", "CONSUL_", "REDIS_", "AP_", "PG"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    net = Net(0)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=840)
        leftovers = (net.namespaces(), net.bridge_exists())
    finally:
        Lab(work / ".lab").down(net=0 if net.bridge_exists() else None)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"a lab command failed:\n{out[-6000:]}"
    # what the reader is told they will see
    assert proc.stdout.count("coffee beans") >= 3, out[-3000:]  # read back on every node
    assert "the replica refused, as it should" in proc.stdout, out[-3000:]
    assert "read-only transaction" in out, out[-3000:]
    assert proc.stdout.count("0 acknowledged writes missing") >= 2, out[-3000:]
    assert "pg_rewind" in proc.stdout, out[-3000:]
    assert "lab down" in proc.stdout
    assert leftovers == ([], False), leftovers
