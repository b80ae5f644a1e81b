"""Runs every ```sh block of docs/workshop/01-redis-lab.md, in order, in one shell, against
a real lab — as a reader pasting them into one terminal would. ```text blocks are output
or set-up (installing packages) and are not run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psutil
import pytest

from autopilot.lab.cluster import Lab
from autopilot.lab.netns import Net
from tests.e2e.workshop import autopilot_shim, blocks, is_setup, lab_commands
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.chaos

DOC = ROOT / "docs" / "workshop" / "01-redis-lab.md"


README = ROOT / "README.md"


def readme_lab_commands() -> list[str]:
    """The `autopilot lab …` steps of the README's run command (the rest installs)."""
    block = blocks(README)[0]
    steps = [s.strip() for s in block.split("&&")]
    return [s.replace("/opt/autopilot/bin/autopilot", "autopilot") for s in steps
            if s.startswith("/opt/autopilot/bin/autopilot lab")]


def test_the_setup_block_is_the_readmes_install() -> None:
    """Lab 01's set-up (not run here) installs what the README's run command installs."""
    setup = next(b for b in blocks(DOC) if is_setup(b))
    readme = blocks(README)[0]
    for step in readme.split("&&"):
        step = step.strip()
        if not step.startswith("/opt/autopilot/bin/autopilot"):
            assert step in setup, f"lab 01's set-up lacks the README's `{step}`"


def test_doc_has_the_promised_steps() -> None:
    script = "\n".join(lab_commands(DOC))
    for step in ("lab up redis", "lab status", "lab kill", "lab start", "lab stop",
                 "lab pause", "lab resume", "lab partition", "lab heal", "lab down"):
        assert step in script, f"the workshop lost its `{step}` step"


@pytest.mark.timeout(450)
def test_every_command_of_the_workshop_runs(tmp_path: Path) -> None:
    bin_dir = autopilot_shim(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    # the page shows lab network 0 (ap-lab-br0, 10.231.0.x): wait while another run uses it
    wait_for(lambda: not Net(0).bridge_exists(), timeout=150, interval=0.5,
             message="lab network 0 to be free (another lab or workshop run is using it)")
    # the README's run command first: lab 01 must follow on from it
    readme = readme_lab_commands()
    assert readme[0].startswith("autopilot lab up redis"), readme
    script = "set -ex\n" + "\n".join(readme + lab_commands(DOC))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTOPILOT", "CONSUL_", "REDIS_", "AP_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    net = Net(0)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=280)
        # what the page's `lab down` left behind (checked before the safety net below)
        left = [p.info for p in psutil.process_iter(["pid", "cmdline", "cwd"])
                if str(work) in (p.info.get("cwd") or "") + " ".join(p.info.get("cmdline") or [])]
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True,
                               text=True).stdout
        leftovers = (left, net.namespaces(), net.bridge_exists(), net.bridge in rules)
    finally:
        Lab(work / ".lab").down(net=0 if net.bridge_exists() else None)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"a workshop command failed:\n{out[-6000:]}"
    # what the reader is told they will see
    assert proc.stdout.count("hello") >= 3, out[-3000:]  # the write read back on every node
    assert "READONLY" in proc.stdout, out[-3000:]
    # the partitioned primary refuses writes (fenced: a replica of nothing, or NOREPLICAS)
    assert re.search(r"partitioned node-\d answers: (READONLY|NOREPLICAS)", proc.stdout), \
        out[-3000:]
    assert re.search(r"writes to node-\d", proc.stdout), out[-3000:]
    assert "the same lab is already up" in proc.stdout, out[-3000:]  # README, then lab 01
    assert "longest time without an acknowledged write" in proc.stdout, out[-3000:]
    assert "lab down" in proc.stdout
    # `lab down` left nothing: processes, namespaces, bridge, iptables rule
    assert leftovers == ([], [], False, False), leftovers
