"""Every command of workshop labs 02-05 runs (docs/workshop/0[2-5]-*.md).

Lab 02 needs only redis-server and curl; lab 04's commands run offline (kustomize,
kubernetes-validate) and its cluster-only commands are checked against the rendered
manifests; labs 03 and 05 need a Docker engine (marker e2e, skipped without one).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.docker_helpers import engine_problem
from tests.e2e.shop_helpers import have_redis
from tests.e2e.workshop import DOCS, blocks, run_doc
from tests.helpers import ROOT, free_port, wait_for

LAB02 = DOCS / "02-twelve-factor.md"
LAB03 = DOCS / "03-compose.md"
LAB04 = DOCS / "04-kubernetes.md"
LAB05 = DOCS / "05-break-it.md"


def documented_lines(doc: Path, replacements: dict[str, str]) -> list[str]:
    """Output lines the doc promises that do not vary between runs (JSON bodies, statuses)."""
    lines = []
    for body in blocks(doc, "text"):
        for line in body.splitlines():
            for old, new in replacements.items():
                line = line.replace(old, new)
            if "{{" not in line and re.match(r"^(\{\"|exit status|shop: |acknowledged counts|No instance|\d+ app instances)", line):
                lines.append(line)
    return lines


def assert_ran(out, doc: Path, replacements: dict[str, str]) -> None:  # noqa: ANN001
    assert out.returncode == 0, f"{doc.name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    for line in documented_lines(doc, replacements):
        assert line in out.stdout, f"{doc.name}: documented output missing: {line}"


@pytest.mark.timeout(120)
@pytest.mark.skipif(not (have_redis() and shutil.which("curl")),
                    reason="needs redis-server, redis-cli and curl")
def test_lab02_twelve_factor_commands(tmp_path: Path) -> None:
    ports = {"16379": str(free_port()), "18000": str(free_port()), "18001": str(free_port())}
    repl = ports | {"/tmp/shop-lab": str(tmp_path / "shop-lab")}
    try:
        out = run_doc(LAB02, tmp_path, replacements=repl, timeout=90)
    finally:  # a lab that stopped half-way must not leave its servers behind
        for pidfile in tmp_path.glob("shop-lab*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        subprocess.run(["redis-cli", "-p", ports["16379"], "shutdown", "nosave"],
                       capture_output=True, timeout=10)
    assert_ran(out, LAB02, repl)
    # the lab's clean-up leaves nothing listening (its pid files name the right processes)
    def closed(port: str) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", int(port))) != 0

    for port in ports.values():
        wait_for(lambda p=port: closed(p), timeout=10, message=f"port {port} to close")


@pytest.mark.timeout(120)
@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
@pytest.mark.skipif(not shutil.which("kubernetes-validate"),
                    reason="kubernetes-validate not installed (pip install kubernetes-validate)")
def test_lab04_offline_commands_run_and_cluster_commands_name_real_objects(
        tmp_path: Path) -> None:
    repl = {"/tmp/shop": str(tmp_path / "shop")}
    out = run_doc(LAB04, tmp_path, replacements=repl, timeout=110)
    assert_ran(out, LAB04, repl)
    rendered = [d for d in yaml.safe_load_all((tmp_path / "shop.yaml").read_text()) if d]
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    kinds = {"svc": "Service", "service": "Service", "statefulset": "StatefulSet",
             "sts": "StatefulSet", "deployment": "Deployment", "deploy": "Deployment",
             "pdb": "PodDisruptionBudget", "configmap": "ConfigMap"}
    cluster_blocks = blocks(LAB04, "sh cluster")
    assert cluster_blocks, "lab 04 has no cluster-only commands to check"
    for block in cluster_blocks:  # marked in the rendered page, not only in the info string
        assert block.startswith("# needs "), f"unmarked cluster block:\n{block}"
    cluster = "\n".join(cluster_blocks)
    # commands that return: no watch, every wait bounded, every port-forward stopped
    assert not re.search(r"\s(-w|--watch)\b", cluster), "a watch never returns"
    for line in cluster.splitlines():
        if re.match(r"kubectl .*\b(wait|rollout status|drain)\b", line):
            assert "--timeout=" in line, f"unbounded: {line}"
    assert cluster.count("port-forward") == cluster.count('kill "$pf"') + cluster.count(
        'kill "$PF"'), "a port-forward is left running"
    assert "kubectl drain" in cluster and "kubectl uncordon" in cluster
    assert cluster_blocks[-1].count("kubectl delete -k k8s/") == 1, "no clean-up at the end"
    for line in cluster.splitlines():
        if not line.startswith("kubectl"):
            continue
        if " -k " not in line and not re.match(r"kubectl (drain|uncordon) ", line):
            assert "-n autopilot-shop" in line, f"wrong or missing namespace: {line}"
        for kind, name in re.findall(r"\b(svc|service|statefulset|sts|deployment|deploy|pdb)"
                                     r"/([a-z0-9-]+)", line):
            assert (kinds[kind], name) in names, f"{line}: no {kinds[kind]}/{name}"
        for pod in re.findall(r"\bpod/?\s*(redis-\d|[a-z]+-[a-z0-9]+-[a-z0-9]+)", line):
            if pod.startswith("redis-"):
                assert int(pod.split("-")[1]) < 3, f"{line}: the StatefulSet has 3 pods"
    assert "kubectl apply -k k8s/" in cluster


_problem = engine_problem()


def compose_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    shop, catalog = str(free_port()), str(free_port())
    env = {"SHOP_PORT": shop, "CATALOG_PORT": catalog, "SHOP_BIND": "127.0.0.1",
           "COMPOSE_PROJECT_NAME": f"aplab{free_port()}", "DOCKER_BUILDKIT": "0",
           "COMPOSE_DOCKER_CLI_BUILD": "0"}
    repl = {"localhost:8080": f"localhost:{shop}", "localhost:8500": f"localhost:{catalog}"}
    return env, repl


def run_compose_lab(doc: Path, tmp_path: Path) -> None:
    env, repl = compose_env(tmp_path)
    try:
        out = run_doc(doc, tmp_path, replacements=repl, env=env, timeout=560)
        assert_ran(out, doc, repl)
    finally:
        subprocess.run(["docker-compose", "down", "--timeout", "20"], cwd=ROOT,
                       env=os.environ | env, capture_output=True, timeout=120)


@pytest.mark.e2e
@pytest.mark.timeout(600)
@pytest.mark.skipif(_problem is not None, reason=_problem or "")
def test_lab03_compose_commands(tmp_path: Path) -> None:
    run_compose_lab(LAB03, tmp_path)


@pytest.mark.e2e
@pytest.mark.timeout(600)
@pytest.mark.skipif(_problem is not None, reason=_problem or "")
def test_lab05_break_it_commands(tmp_path: Path) -> None:
    run_compose_lab(LAB05, tmp_path)


def test_every_lab_has_commands_and_is_indexed() -> None:
    index = (DOCS / "README.md").read_text()
    for doc in (LAB02, LAB03, LAB04, LAB05):
        assert blocks(doc), f"{doc.name} has no sh block"
        assert doc.name in index, f"{doc.name} missing from docs/workshop/README.md"
        for link in re.findall(r"\]\(([^)#]+\.md)", doc.read_text()):
            assert (doc.parent / link).exists() or (ROOT / link).exists(), f"{doc.name}: {link}"
