"""The polyglot-shop labs (docs/workshop/07-10): every ```sh block runs, in order, as
written (ports swapped for free ones), and its documented output appears; nothing is left
running afterwards. Uses tests/e2e/workshop.py's runner (the conventions of labs 02-05)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.workshop import DOCS, blocks, run_doc
from tests.helpers import ROOT, free_port, wait_for

LAB07 = DOCS / "07-polyglot-shop.md"
TOOLS = ("go", "javac", "node", "redis-server", "curl")
needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in TOOLS) or not Path("/usr/share/java/postgresql.jar").exists()
    or not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
    reason="needs go, javac, node, redis-server, curl, libpostgresql-jdbc-java, postgresql-15")


def documented(doc: Path, repl: dict[str, str]) -> list[str]:
    """Output lines a ```text block promises (a `…` stands for a varying part)."""
    lines = []
    for body in blocks(doc, "text"):
        for line in body.splitlines():
            for old, new in repl.items():
                line = line.replace(old, new)
            if line.strip():
                lines.append(line)
    return lines


def assert_output(out: subprocess.CompletedProcess, doc: Path, repl: dict[str, str]) -> None:
    assert out.returncode == 0, f"{doc.name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    for line in documented(doc, repl):
        rx = ".*".join(re.escape(part) for part in line.split("…"))
        assert re.search(rf"^{rx}$", out.stdout, re.M), f"{doc.name}: missing output {line!r}"


def closed(port: str) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(port))) != 0


@pytest.mark.timeout(400)
@needs_tools
def test_lab07_four_services_bare(tmp_path: Path) -> None:
    ports = {p: str(free_port()) for p in ("16080", "16081", "16082", "16083", "16380", "15433")}
    out = run_doc(LAB07, tmp_path, replacements=ports, timeout=360)
    try:
        assert_output(out, LAB07, ports)
    finally:
        if out.returncode != 0:  # stopped half-way: its servers must not outlive the test
            subprocess.run(["redis-cli", "-p", ports["16380"], "shutdown", "nosave"],
                           capture_output=True, timeout=10)
            for pg in Path("/tmp").glob("socks-lab.*/pg/db"):
                subprocess.run(["runuser", "-u", "postgres", "--",
                                "/usr/lib/postgresql/15/bin/pg_ctl", "-D", str(pg), "-m",
                                "immediate", "stop"], capture_output=True, timeout=60)
    for port in ports.values():
        wait_for(lambda p=port: closed(p), timeout=15, message=f"port {port} closed after the lab")


def test_labs_are_indexed_and_link_to_real_files() -> None:
    index = (DOCS / "README.md").read_text()
    for doc in sorted(DOCS.glob("0[7-9]-*.md")) + sorted(DOCS.glob("1[0-9]-*.md")):
        assert doc.name in index, f"{doc.name} missing from docs/workshop/README.md"
        for link in re.findall(r"\]\(([^)#]+\.md)", doc.read_text()):
            assert (doc.parent / link).exists() or (ROOT / link).exists(), f"{doc.name}: {link}"


LAB08 = DOCS / "08-scale-stateless.md"


@pytest.mark.timeout(300)
@pytest.mark.skipif(not all(shutil.which(t) for t in ("go", "node", "curl", "autopilot")),
                    reason="needs go, node, curl and autopilot on PATH")
def test_lab08_scale_and_follow(tmp_path: Path) -> None:
    # ascending like the doc's, so the sorted lists the lab prints keep the doc's order
    cat = sorted({free_port() for _ in range(6)})[:3]
    front = sorted({free_port() for _ in range(4)})[:2]
    ports = {"18500": str(free_port())} | dict(zip(("18101", "18102", "18103"),
                                                  map(str, cat), strict=True)) | dict(
        zip(("18090", "18091"), map(str, front), strict=True))
    out = run_doc(LAB08, tmp_path, replacements=ports, timeout=240)
    assert_output(out, LAB08, ports)
    counts = [int(n) for n in re.findall(r"^(\d+)$", out.stdout, re.M)]
    assert len(counts) >= 3 and all(c >= 1 for c in counts[-3:]), out.stdout  # round robin
    for port in ports.values():
        wait_for(lambda p=port: closed(p), timeout=20, message=f"port {port} closed after the lab")


LAB09 = DOCS / "09-functions.md"


@pytest.mark.timeout(200)
@pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "autopilot", "pgrep")),
                    reason="needs curl, pgrep and autopilot on PATH")
def test_lab09_launch_a_function(tmp_path: Path) -> None:
    ports = {p: str(free_port()) for p in ("18510", "19080", "19081")}
    out = run_doc(LAB09, tmp_path, replacements=ports, timeout=150)
    assert_output(out, LAB09, ports)
    for port in ports.values():
        wait_for(lambda p=port: closed(p), timeout=20, message=f"port {port} closed after the lab")


LAB10 = DOCS / "10-compare.md"


@pytest.mark.timeout(300)
@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
def test_lab10_comparison_commands(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT)}
    out = run_doc(LAB10, tmp_path, env=env, timeout=240)
    assert_output(out, LAB10, {})
