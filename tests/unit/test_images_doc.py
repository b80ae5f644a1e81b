"""docs/images.md lists every environment variable the example images read: in their
autopilot configs (Go templates), Dockerfiles, templates, hook scripts and the services'
code (the shop's settings, Node.js, Go, Java, the function handler)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

DOC = (ROOT / "docs" / "images.md").read_text()
IMAGES = ["app", "nginx", "catalog", "redis",
          "frontend", "catalogue", "orders", "function", "postgres"]
# the images whose autopilot config is in images/<image>/ (redis and postgres: in the package)
OWN_CONFIG = ["app", "nginx", "catalog", "frontend", "catalogue", "orders", "function"]
EXAMPLES = ROOT / "autopilot" / "lab" / "examples"
REDIS = EXAMPLES / "redis"
POSTGRES = EXAMPLES / "postgres"
NAME = r"([A-Z][A-Z0-9_]*)"
# per language, how the services read their environment (each has a small env(name, def)
# helper besides the standard call)
READS = {
    "js": [rf"process\.env(?:\.|\[['\"])?{NAME}", rf"\benv\(\s*['\"]{NAME}['\"]"],
    "go": [rf"os\.(?:Getenv|LookupEnv)\(\"{NAME}\"", rf"\benv\(\"{NAME}\""],
    "java": [rf"System\.getenv\(\"{NAME}\"", rf"\benv\(\"{NAME}\""],
    # Python: any case (the OpenFaaS-style Http_Query), the name closed by its quote
    "py": [r"""(?:environ|env)(?:\.get\(|\[)["']([A-Za-z_][A-Za-z0-9_]*)["']"""],
}
SERVICES = [ROOT / "images" / "frontend" / "server.js", ROOT / "images" / "catalogue" / "main.go",
            ROOT / "images" / "orders" / "src" / "Orders.java",
            EXAMPLES / "functions" / "hello.py", POSTGRES / "catalog.py"]


def read_vars() -> dict[str, set[str]]:
    """variable -> the files that read it."""
    found: dict[str, set[str]] = {}

    def add(names: list[str], path) -> None:  # noqa: ANN001
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))

    configs = [ROOT / "images" / i / "autopilot.json5" for i in OWN_CONFIG]
    for path in [*configs, REDIS / "autopilot.json5", POSTGRES / "autopilot.json5"]:
        text = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)  # not the comments
        add(re.findall(r"\{\{-?\s*(?:if\s+)?\.([A-Z][A-Z0-9_]*)", text), path)
    for path in [ROOT / "images" / i / "Dockerfile" for i in IMAGES]:
        # continuation lines too (a greedy ".*" first would stop at the first backslash)
        for line in re.findall(r"^ENV ((?:.*\\\n)*.*)", path.read_text(), re.M):
            add(re.findall(r"([A-Z][A-Z0-9_]*)=", line), path)
    # (the PostgreSQL hook reads its settings in its parts, lib/*.sh)
    for path in [REDIS / "hook.sh", POSTGRES / "hook.sh", *sorted(POSTGRES.glob("lib/*.sh")),
                 ROOT / "images" / "base" / "http-ok", ROOT / "images" / "nginx" / "reload-nginx"]:
        if path.exists():
            # ${NAME:-default}: read from the environment (script-local names have no default)
            add(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?-", path.read_text()), path)
    for path in [REDIS / "peers.py", ROOT / "images" / "app" / "shop" / "settings.py"]:
        add(re.findall(r"""(?:environ|env)(?:\.get\(|\[)["']([A-Z][A-Z0-9_]*)""",
                       path.read_text()), path)
    for path in SERVICES:
        for pattern in READS[path.suffix.lstrip(".")]:
            add(re.findall(pattern, path.read_text()), path)
    # the frontend's fallback per service, process.env[`${service.toUpperCase()}_URL`]: the
    # services are those its upstreams template renders
    upstreams = ROOT / "images" / "frontend" / "upstreams.json.tmpl"
    assert "toUpperCase()}_URL`]" in (ROOT / "images" / "frontend" / "server.js").read_text()
    add([f"{s.upper()}_URL" for s in re.findall(r'"(\w+)": \{\{ service\(', upstreams.read_text())],
        upstreams)
    # the templates' env("NAME", default)
    for path in sorted(ROOT.glob("images/*/*.tmpl")):
        add(re.findall(rf"\benv\(\s*[\"']{NAME}", path.read_text()), path)
    settings = (ROOT / "images" / "app" / "shop" / "settings.py").read_text()
    add(re.findall(r"""num\("([A-Z][A-Z0-9_]*)\"""", settings),
        ROOT / "images" / "app" / "shop" / "settings.py")
    return found


def test_every_variable_the_images_read_is_in_the_table() -> None:
    found = read_vars()
    assert {"CONSUL", "PORT", "REDIS_NO_LOSS", "CATALOG_TOKEN", "SHOP_WAIT_MS",
            "HTTP_OK_TIMEOUT", "AP_LOCK_DELAY"} <= set(found), sorted(found)
    # one read of each new image and of each way of reading, so a regex that stops matching
    # cannot pass by finding nothing
    assert {"FRONTEND_UPSTREAMS", "FRONTEND_DRAIN_MS", "CARTS_URL", "NODE_ENV",
            "CATALOGUE_DATA", "ORDERS_DB_FILE", "ORDERS_THREADS", "PGHOST", "FUNCTION_IDLE",
            "Http_Query", "PG_SYNC", "PG_REWIND_AFTER", "PG_CATALOG_TIMEOUT", "PG_PYTHON",
            "NGINX_FUNCTIONS"} <= set(found), sorted(found)
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
    for image in OWN_CONFIG:
        assert 'stopTimeout: "10s"' in (ROOT / "images" / image / "autopilot.json5").read_text()
    assert "Redis 20 s, app and nginx 15 s" in DOC and "Redis 30 s, app and nginx 20 s" in DOC
