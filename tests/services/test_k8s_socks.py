"""k8s/overlays/socks (the polyglot shop on Kubernetes) checked offline, as
tests/e2e/test_manifests.py checks the base: rendered by `kubectl kustomize`, validated
strictly against the bundled API schemas, its ConfigMaps the images' own configs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autopilot.config import load
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(120)
OVERLAY = ROOT / "k8s" / "overlays" / "socks"
COPIES = {"frontend": "frontend", "catalogue": "catalogue", "orders": "orders",
          "hello": "function"}
needs_kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")


def rendered() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@needs_kubectl
@pytest.mark.skipif(not shutil.which("kubernetes-validate"),
                    reason="kubernetes-validate not installed")
def test_overlay_validates_strictly(tmp_path: Path) -> None:
    path = tmp_path / "socks.yaml"
    path.write_text(yaml.safe_dump_all(rendered()))
    out = subprocess.run(["kubernetes-validate", "--strict", str(path)], capture_output=True,
                         text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_kubectl
def test_overlay_adds_the_services_and_routes_the_function() -> None:
    objs = rendered()
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    assert {"frontend", "catalogue", "orders", "hello", "app", "nginx"} <= set(deployments)
    for name in ("frontend", "catalogue", "orders", "hello"):
        pod = deployments[name]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["env"][0]["name"] == "CONSUL"  # overlays/consul replaces env[0]
        assert c["image"].endswith(":dev") and pod["securityContext"]["runAsNonRoot"]
        volume = pod["volumes"][0]["configMap"]["name"]
        assert volume.startswith(f"{name}-autopilot-")  # the generated, hashed ConfigMap
    nginx_env = deployments["nginx"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "NGINX_FUNCTIONS", "value": "hello"} in nginx_env


@pytest.mark.parametrize("name", sorted(COPIES))
def test_configmaps_are_the_images_own_configs(name: str) -> None:
    copy = OVERLAY / "config" / f"{name}.json5"
    image = ROOT / "images" / COPIES[name] / "autopilot.json5"
    assert copy.read_text() == image.read_text(), f"{copy} drifted from {image}: copy it over"
    assert load(str(copy), {"POD_IP": "10.1.2.3"}).jobs[0].interfaces[0] == "static:10.1.2.3"
