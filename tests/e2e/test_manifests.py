"""Offline checks of the deployment files; no Docker engine or cluster needed.

`kubectl kustomize` renders the Kubernetes manifests, `kubernetes-validate --strict` checks
them against the bundled API schemas (unknown fields fail), `docker-compose config -q` checks
the compose files, and autopilot's own loader loads every config the images and ConfigMaps
carry. Each check is skipped only when its tool is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autopilot.config import load
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(60)

K8S = ROOT / "k8s"
KUSTOMIZATIONS = [K8S, K8S / "overlays" / "consul", K8S / "overlays" / "consul-agent"]
IMAGE_CONFIGS = {
    "app": ROOT / "images/app/autopilot.json5",
    "nginx": ROOT / "images/nginx/autopilot.json5",
    "catalog": ROOT / "images/catalog/autopilot.json5",
}

needs_kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
needs_validate = pytest.mark.skipif(not shutil.which("kubernetes-validate"),
                                    reason="kubernetes-validate not installed "
                                           "(pip install kubernetes-validate)")
needs_compose = pytest.mark.skipif(not shutil.which("docker-compose"),
                                   reason="docker-compose not installed (apt-get install docker-compose)")


def kustomize(path: Path) -> str:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(kustomize(path)) if d]


def find(objs: list[dict], kind: str, name: str) -> dict:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind}/{name} in {[(o['kind'], o['metadata']['name']) for o in objs]}")


@needs_kubectl
@needs_validate
@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomize_output_validates_strictly(path: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(kustomize(path))
    out = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(rendered)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_kubectl
@needs_validate
def test_strict_validation_catches_an_unknown_field(tmp_path: Path) -> None:
    """Guards the check itself: a typo in a manifest must fail it."""
    text = kustomize(K8S).replace("readinessProbe:", "readinessProbes:", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


@needs_kubectl
def test_the_shop_on_kubernetes_has_what_the_pattern_needs() -> None:
    objs = objects(K8S)
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {
        "autopilot-shop"}
    redis = find(objs, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 3 and redis["spec"]["serviceName"] == "redis"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert find(objs, "Service", "redis")["spec"]["clusterIP"] == "None"
    assert find(objs, "PodDisruptionBudget", "redis")["spec"]["minAvailable"] == 2
    find(objs, "PodDisruptionBudget", "app")
    find(objs, "Service", "nginx")
    find(objs, "Service", "catalog")
    configmaps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    for kind, name in [("StatefulSet", "redis"), ("Deployment", "app"), ("Deployment", "nginx")]:
        pod = find(objs, kind, name)["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "telemetry"}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "telemetry"}, name
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", name
        assert c["env"][0]["name"] == "CONSUL", f"{name}: overlays/consul patches env[0]"
        for vol in pod["volumes"]:
            if "configMap" in vol:
                assert vol["configMap"]["name"] in configmaps, (name, vol)
    redis_env = {e["name"]: e.get("value") for e in redis["spec"]["template"]["spec"]
                 ["containers"][0]["env"]}
    assert redis_env["REDIS_INTERFACE"] == "static:$(POD_IP)"


@needs_kubectl
def test_postgres_statefulset_runs_the_image_as_postgres_in_sync_mode() -> None:
    """PostgreSQL as a StatefulSet: a stable name and a volume per pod at the image's PG_DIR,
    the image's numeric postgres uid (runAsNonRoot cannot be checked against a user name),
    sync mode, readiness from the role check, a PDB and a headless Service; its config is the
    image's own (no ConfigMap), whose ready job is the one with the role check."""
    objs = objects(K8S)
    sts = find(objs, "StatefulSet", "postgres")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "postgres"
    assert find(objs, "Service", "postgres")["spec"]["clusterIP"] == "None"
    assert find(objs, "PodDisruptionBudget", "postgres")["spec"]["minAvailable"] == 2
    pod = sts["spec"]["template"]["spec"]
    dockerfile = (ROOT / "images" / "postgres" / "Dockerfile").read_text()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile)
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", dockerfile)
    assert uid and gid, "images/postgres/Dockerfile: the postgres user's fixed uid/gid"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": int(uid[1]),
                                      "runAsGroup": int(gid[1]), "fsGroup": int(gid[1])}
    assert "USER postgres" in dockerfile
    c = pod["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert c["env"][0]["name"] == "CONSUL", "overlays/consul patches env[0]"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["PG_INTERFACE"]["value"] == "static:$(POD_IP)"
    assert env["PG_SYNC"]["value"] == "1"
    mount = c["volumeMounts"][0]
    assert mount["name"] == sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert f"PG_DIR={mount['mountPath']}" in dockerfile
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "telemetry"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "telemetry"}
    assert "volumes" not in pod, "the image carries its own config"
    # /ready answers 200 once the ready job's health check passes: the role check
    cfg = load(str(ROOT / "autopilot/lab/examples/postgres/autopilot.json5"),
               {"POD_IP": "10.9.8.7", "PG_INTERFACE": "static:10.9.8.7", "PG_SYNC": "1",
                "AP_TELEMETRY_PORT": env["AP_TELEMETRY_PORT"]["value"],
                "CONSUL": env["CONSUL"]["value"]})
    ready = next(j for j in cfg.jobs if j.name == cfg.telemetry.ready.job)
    assert ready.health is not None and ready.health.exec[-1] == "health"
    assert ready.election is not None and ready.interfaces[0] == "static:10.9.8.7"
    assert {j.name for j in cfg.jobs} >= {"postgres", "postgres-sync"}
    assert cfg.telemetry.port == 9090 == c["ports"][1]["containerPort"]


@needs_kubectl
def test_consul_overlay_drops_the_catalog_and_repoints_everyone() -> None:
    objs = objects(K8S / "overlays" / "consul")
    assert not [o for o in objs if o["metadata"]["name"] == "catalog"]
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            env = o["spec"]["template"]["spec"]["containers"][0]["env"]
            assert env[0] == {"name": "CONSUL", "value": "consul-server.consul.svc:8500"}


@needs_kubectl
def test_consul_agent_overlay_defines_host_ip_before_using_it() -> None:
    objs = objects(K8S / "overlays" / "consul-agent")
    assert not [o for o in objs if o["metadata"]["name"] == "catalog"]
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    assert {o["metadata"]["name"] for o in workloads} == {"redis", "postgres", "app", "nginx"}
    for o in workloads:
        env = o["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert names[:2] == ["HOST_IP", "CONSUL"], o["metadata"]["name"]
        assert env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
        assert env[1]["value"] == "$(HOST_IP):8500"
        assert "POD_IP" in names, "the patch replaced a variable instead of adding one"


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_env_reference_names_an_earlier_variable(path: Path) -> None:
    """Kubernetes expands $(VAR) only from variables defined earlier in the same list; any
    other reference stays literal text (a CONSUL of "$(HOST_IP):8500", say)."""
    for o in objects(path):
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            seen: set[str] = set()
            for e in c.get("env", []):
                value = e.get("value", "")
                for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                    assert ref in seen, f"{o['metadata']['name']}: {e['name']} uses $({ref})"
                seen.add(e["name"])


@needs_kubectl
def test_configmaps_carry_configs_autopilot_loads(tmp_path: Path) -> None:
    objs = objects(K8S)
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        for fname, text in cm["data"].items():
            path = tmp_path / f"{cm['metadata']['name']}-{fname}"
            path.write_text(text)
            cfg = load(str(path), {"POD_IP": "10.9.8.7", "CONSUL": "catalog:8500",
                                   "REDIS_INTERFACE": "static:10.9.8.7",
                                   "AP_TELEMETRY_PORT": "9090"})
            assert cfg.jobs, cm["metadata"]["name"]
            assert cfg.telemetry is not None and cfg.telemetry.port == 9090
            # what registers (a job with a port, the telemetry) advertises the pod IP
            for ifaces in [j.interfaces for j in cfg.jobs if j.port] + [
                    cfg.telemetry.interfaces]:
                assert ifaces[0] == "static:10.9.8.7", cm["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(IMAGE_CONFIGS))
def test_k8s_configmaps_are_the_images_own_configs(name: str) -> None:
    copy = K8S / "base" / "config" / f"{name}.json5"
    assert copy.read_text() == IMAGE_CONFIGS[name].read_text(), (
        f"{copy} drifted from {IMAGE_CONFIGS[name]}: copy it over")


def test_k8s_redis_configmap_is_the_images_own_config() -> None:
    """images/redis copies its config out of the package's example (see its Dockerfile)."""
    copy = K8S / "base" / "config" / "redis.json5"
    own = ROOT / "autopilot" / "lab" / "examples" / "redis" / "autopilot.json5"
    assert copy.read_text() == own.read_text(), f"{copy} drifted from {own}: copy it over"


@pytest.mark.parametrize("name", sorted(IMAGE_CONFIGS))
def test_image_configs_load_in_compose_and_kubernetes(name: str) -> None:
    compose = load(str(IMAGE_CONFIGS[name]), {"CONSUL": "catalog:8500"})
    k8s = load(str(IMAGE_CONFIGS[name]), {"POD_IP": "10.1.2.3"})
    assert compose.telemetry.interfaces == ["eth0:inet", "inet"]
    assert k8s.telemetry.interfaces[0] == "static:10.1.2.3"
    if compose.jobs[0].port:
        assert compose.jobs[0].interfaces == ["eth0:inet", "inet"]
        assert k8s.jobs[0].interfaces[0] == "static:10.1.2.3"
    assert compose.control.socket.startswith("/tmp/autopilot/"), "images run as non-root"
    if name == "catalog":
        assert compose.consul is None and compose.main_job == "catalog"
    else:
        assert compose.consul.address == "catalog:8500"
        assert compose.templates and compose.telemetry.ready.job == compose.jobs[0].name


@needs_compose
@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.consul.yml"]],
                         ids=["embedded-catalog", "consul-override"])
def test_compose_files_are_valid(files: list[str]) -> None:
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    out = subprocess.run(["docker-compose", *args, "config", "-q"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr


@needs_compose
def test_compose_stack_shape() -> None:
    out = subprocess.run(["docker-compose", "config"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"catalog", "redis-1", "redis-2", "redis-3", "app", "nginx"} <= set(services)
    assert services["app"]["scale"] >= 2
    # compose 1.29 prints "127.0.0.1:8080:8080/tcp"; Compose v2 a mapping
    def spec(port: str | dict) -> tuple[str, str]:
        if isinstance(port, dict):
            return str(port.get("host_ip")), str(port["published"])
        host_ip, published, _ = port.split(":")
        return host_ip, published

    assert spec(services["nginx"]["ports"][0])[1] == "8080"
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert spec(port)[0] == "127.0.0.1", f"{name} publishes beyond loopback"
        if name != "catalog":
            assert svc["depends_on"]["catalog"]["condition"] == "service_healthy"
