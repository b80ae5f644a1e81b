"""docs/images.md lists every environment variable the example images read: in their
autopilot configs (Go templates), Dockerfiles, hook scripts and the shop's settings."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

DOC = (ROOT / "docs" / "images.md").read_text()
IMAGES = ["app", "nginx", "catalog", "redis"]
REDIS = ROOT / "autopilot" / "lab" / "examples" / "redis"


def read_vars() -> dict[str, set[str]]:
    """variable -> the files that read it."""
    found: dict[str, set[str]] = {}

    def add(names: list[str], path) -> None:  # noqa: ANN001
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))

    configs = [ROOT / "images" / i / "autopilot.json5" for i in IMAGES[:3]]
    for path in [*configs, REDIS / "autopilot.json5"]:
        text = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)  # not the comments
        add(re.findall(r"\{\{-?\s*(?:if\s+)?\.([A-Z][A-Z0-9_]*)", text), path)
    for path in [ROOT / "images" / i / "Dockerfile" for i in IMAGES]:
        for line in re.findall(r"^ENV (.*(?:\\\n.*)*)", path.read_text(), re.M):
            add(re.findall(r"([A-Z][A-Z0-9_]*)=", line), path)
    for path in [REDIS / "hook.sh", ROOT / "images" / "base" / "http-ok",
                 ROOT / "images" / "nginx" / "reload-nginx"]:
        if path.exists():
            # ${NAME:-default}: read from the environment (script-local names have no default)
            add(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?-", path.read_text()), path)
    for path in [REDIS / "peers.py", ROOT / "images" / "app" / "shop" / "settings.py"]:
        add(re.findall(r"""(?:environ|env)(?:\.get\(|\[)["']([A-Z][A-Z0-9_]*)""",
                       path.read_text()), path)
    settings = (ROOT / "images" / "app" / "shop" / "settings.py").read_text()
    add(re.findall(r"""num\("([A-Z][A-Z0-9_]*)\"""", settings),
        ROOT / "images" / "app" / "shop" / "settings.py")
    return found


def test_every_variable_the_images_read_is_in_the_table() -> None:
    found = read_vars()
    assert {"CONSUL", "PORT", "REDIS_NO_LOSS", "CATALOG_TOKEN", "SHOP_WAIT_MS",
            "HTTP_OK_TIMEOUT", "AP_LOCK_DELAY"} <= set(found), sorted(found)
    missing = {name: sorted(files) for name, files in found.items()
               if f"`{name}`" not in DOC}
    assert not missing, f"docs/images.md does not list: {missing}"


def test_documented_stop_timeouts_are_the_examples() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grace = {n: services[n]["stop_grace_period"] for n in ("redis-1", "app", "nginx")}
    assert grace == {"redis-1": "20s", "app": "15s", "nginx": "15s"}
    grace = {f: re.search(r"terminationGracePeriodSeconds: (\d+)",
                          (ROOT / "k8s" / "base" / f"{f}.yaml").read_text()).group(1)
             for f in ("redis", "app", "nginx", "catalog")}
    assert grace == {"redis": "30", "app": "20", "nginx": "20", "catalog": "15"}
    assert 'stopTimeout: "15s"' in (REDIS / "autopilot.json5").read_text()
    for image in IMAGES[:3]:
        assert 'stopTimeout: "10s"' in (ROOT / "images" / image / "autopilot.json5").read_text()
    assert "Redis 20 s, app and nginx 15 s" in DOC and "Redis 30 s, app and nginx 20 s" in DOC
