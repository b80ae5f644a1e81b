"""autopilot is installed once, in autopilot/runtime (images/base/Dockerfile), and every
example image copies it from there: no image pip-installs it again, and every compose build
names the runtime of its own SHOP_TAG (images/base/build.sh tags it the same way)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

IMAGES = sorted(p for p in (ROOT / "images").glob("*/Dockerfile") if p.parent.name != "base")
RUNTIME = "autopilot/runtime:${SHOP_TAG:-dev}"


def test_the_runtime_image_installs_autopilot_from_the_wheels() -> None:
    text = (ROOT / "images" / "base" / "Dockerfile").read_text()
    assert "COPY dist/ /tmp/wheels/" in text
    assert re.search(r"python3 -m venv /opt/autopilot \\\n.*pip install .*autopilot", text)
    assert f"runtime={RUNTIME}" in (ROOT / "images" / "base" / "build.sh").read_text()


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_an_image_copies_autopilot_from_the_runtime(path) -> None:  # noqa: ANN001
    text = path.read_text()
    assert "ARG RUNTIME=autopilot/runtime:dev\nFROM ${RUNTIME} AS autopilot\n" in text
    assert "COPY --from=autopilot /opt/autopilot /opt/autopilot\n" in text
    assert "pip install" not in text and "COPY dist/" not in text
    # the venv's python3 is the image's own: the same apt layer as the runtime's
    assert "apt-get install -y --no-install-recommends python3 python3-venv" in text


def test_every_compose_build_names_the_runtime() -> None:
    for name in ("docker-compose.yml", "docker-compose.postgres.yml"):
        text = (ROOT / name).read_text()
        builds = text.count("dockerfile: images/")
        named = text.count("args: *runtime") + text.count(f"RUNTIME: {RUNTIME}\n") \
            - (1 if "x-runtime: &runtime" in text else 0)
        assert builds and named == builds, name
