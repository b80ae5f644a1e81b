"""The PostgreSQL example (autopilot/lab/examples/postgres): its config loads in both
durability modes with every election hook wired, its scripts parse, and the lab knows the
service. The behaviour itself is tested against real servers in tests/chaos/test_postgres.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autopilot.config import loader
from autopilot.lab import services

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "autopilot" / "lab" / "examples" / "postgres"


def load(**env: str):
    return loader.load(str(EXAMPLE / "autopilot.json5"), {"PG_HOME": "/pg", **env})


def test_async_config_wires_every_election_hook() -> None:
    cfg = load()
    jobs = {j.name: j for j in cfg.jobs}
    # no sync upkeep in async mode; the slot upkeep in both
    assert set(jobs) == {"postgres", "postgres-follow", "postgres-slots"}
    assert jobs["postgres-slots"].exec == ["sh", "/pg/hook.sh", "slots"]
    e = jobs["postgres"].election
    for verb in ("promote", "demote", "identity", "position", "detach"):
        assert getattr(e, verb) == ["sh", "/pg/hook.sh", verb]
    assert e.successor == ["cat", "/var/lib/postgresql/autopilot/successor"]
    assert e.maximum_lag_on_failover == 1048576  # Patroni's default
    assert jobs["postgres-follow"].when.source == ["postgres"]
    assert jobs["postgres-follow"].when.each == "leaderChanged"


def test_sync_mode_adds_the_sync_upkeep_and_tags_follow_env() -> None:
    cfg = load(PG_SYNC="1", PG_NOFAILOVER="1", PG_NOLOADBALANCE="1",
               PG_MAXIMUM_LAG_ON_FAILOVER="0")
    jobs = {j.name: j for j in cfg.jobs}
    assert jobs["postgres-sync"].exec == ["sh", "/pg/hook.sh", "sync"]
    assert {"nofailover", "noloadbalance"} <= set(jobs["postgres"].tags)
    assert jobs["postgres"].election.maximum_lag_on_failover == 0


# the entry script and every part it sources (lib/*.sh)
PARTS = ["common", "state", "catalog", "sync", "position", "run", "health", "demote", "follow",
         "promote", "slots"]


@pytest.mark.parametrize("script", ["hook.sh", *(f"lib/{p}.sh" for p in PARTS)])
def test_shell_hooks_parse(script: str) -> None:
    proc = subprocess.run(["sh", "-n", str(EXAMPLE / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_hook_sources_each_part_once_and_no_other() -> None:
    # a part added to lib/ but not sourced (or sourced twice) is a mistake either way
    sourced = re.findall(r'^\. "\$LIB/(\w+)\.sh"$', (EXAMPLE / "hook.sh").read_text(), re.M)
    assert sourced == PARTS
    assert sorted(p.stem for p in (EXAMPLE / "lib").glob("*.sh")) == sorted(PARTS)


def test_hook_finds_its_parts_from_anywhere(tmp_path: Path) -> None:
    # run from another directory, by a relative path, and through a symbolic link: the parts
    # are found beside the script (an unknown verb: usage, exit 2, after every part loaded)
    env = {"PATH": "/usr/bin:/bin", "PG_DIR": "/nonexistent"}
    link = tmp_path / "pg-hook"
    link.symlink_to(EXAMPLE / "hook.sh")
    for cmd, cwd in ((["sh", str(EXAMPLE / "hook.sh"), "nonsense"], tmp_path),
                     (["sh", "hook.sh", "nonsense"], EXAMPLE),
                     (["sh", "./hook.sh", "nonsense"], EXAMPLE),
                     (["sh", str(link), "nonsense"], tmp_path)):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=10)
        assert proc.returncode == 2 and "usage" in proc.stderr, (cmd, proc.stderr)
        assert "cannot open" not in proc.stderr and "not found" not in proc.stderr, proc.stderr


def test_hook_refuses_an_unknown_verb() -> None:
    proc = subprocess.run(["sh", str(EXAMPLE / "hook.sh"), "nonsense"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PG_DIR": "/nonexistent"})
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_catalog_helper_names_nodes_like_the_hook() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import catalog  # the example's stdlib-only helper
    finally:
        sys.path.remove(str(EXAMPLE))
    # application_name and slot: the hostname part of the service ID, "-" -> "_"
    assert catalog.node_name("postgres-node-1", "postgres") == "node_1"
    assert catalog.node_name("postgres-db.example", "postgres") == "db_example"


def test_lab_knows_postgres_and_says_what_is_missing() -> None:
    svc = services.get("postgres")
    assert svc.config == EXAMPLE / "autopilot.json5"
    assert svc.port == 5432
    with pytest.raises(KeyError, match="available: redis, postgres"):
        services.get("mysql")


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
def test_k8s_statefulset_matches_the_image() -> None:
    """The StatefulSet runs the image's own config: the volume where the image keeps its
    data, the pod IP registered, sync mode, and never as root (PostgreSQL refuses it)."""
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    sts = next(o for o in yaml.safe_load_all(out.stdout)
               if o and o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PG_INTERFACE"] == "static:$(POD_IP)" and env["PG_SYNC"] == "1"
    dockerfile = (ROOT / "images" / "postgres" / "Dockerfile").read_text()
    mount = c["volumeMounts"][0]["mountPath"]
    assert f"PG_DIR={mount}" in dockerfile
    assert "USER postgres" in dockerfile


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")
def test_compose_override_is_valid() -> None:
    out = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "-f",
                          "docker-compose.postgres.yml", "config"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres-1", "postgres-2", "postgres-3"} <= set(services)
    assert services["postgres-1"]["image"] == "autopilot/postgres:dev"
