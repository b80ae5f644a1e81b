"""ContainerPilot's documented configuration examples load; its documented mistakes are
refused with a message that names the field (fixtures: tests/fixtures/configs/cp-docs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autopilot.config import ConfigError, load

pytestmark = pytest.mark.timeout(30)

DOCS = Path(__file__).resolve().parent.parent / "fixtures" / "configs" / "cp-docs"
ENV = {
    "CONSUL": "consul.example.com",
    "PORT": "8080",
    "SERVICE_NAME_0": "billing",
    "SERVICE_INTERVAL_0": "7",
    "SERVICE_NAME_2": "ledger",
    "PARTS": "a:b:c",
    "NAME": "Template",
}


def headers(path: Path, tag: str) -> list[str]:
    return re.findall(rf"^// {tag}: (.*)$", path.read_text(), re.M)


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


VALID = sorted((DOCS / "valid").glob("*.json5"))
INVALID = sorted((DOCS / "invalid").glob("*.json5"))


def test_fixture_sets_are_not_empty() -> None:
    assert len(VALID) >= 15 and len(INVALID) >= 12


@pytest.mark.parametrize("path", VALID, ids=ids(VALID))
def test_documented_example_loads(path: Path) -> None:
    cfg = load(str(path), ENV)
    assert cfg.path == str(path)
    for expected in headers(path, "expect-warning"):
        assert any(expected in w for w in cfg.warnings), (expected, cfg.warnings)
    if not headers(path, "expect-warning"):
        assert cfg.warnings == []


@pytest.mark.parametrize("path", INVALID, ids=ids(INVALID))
def test_documented_mistake_is_refused(path: Path) -> None:
    expected = headers(path, "expect")
    assert expected, f"{path.name} has no '// expect:' header"
    with pytest.raises(ConfigError) as info:
        load(str(path), ENV)
    message = str(info.value)
    for piece in expected:
        assert piece in message, (piece, message)
    # every reported problem names the file
    assert all(line.startswith(str(path)) for line in info.value.errors)


def test_complete_schema_example_is_read_field_by_field() -> None:
    cfg = load(str(DOCS / "valid" / "schema-complete.json5"), ENV)
    assert [j.name for j in cfg.jobs] == [
        "app", "setup", "preStop", "postStop", "consul-agent", "consul-template",
        "periodic-task1", "reload-app", "reload-nginx", "sensor"]
    app = cfg.job("app")
    assert app is not None and app.port == 80 and app.restarts == -1
    assert app.when.source == ["setup"] and app.when.once == "exitSuccess"
    assert app.when.timeout == 60.0
    assert app.health is not None and app.health.timeout == 5.0
    assert app.interfaces[:3] == ["eth0", "eth1[1]", "192.168.0.0/16"]
    task = cfg.job("periodic-task1")
    assert task is not None and task.when.interval == 1.5 and task.timeout == 0.1
    assert task.restarts == -1  # periodic jobs default to unlimited runs
    sensor = cfg.job("sensor")
    assert sensor is not None and sensor.when.interval == 5.0 and sensor.timeout == 5.0
    assert [w.name for w in cfg.watches] == ["app", "nginx"]
    assert cfg.telemetry is not None and cfg.telemetry.interfaces == ["eth0"]
    assert cfg.telemetry.metrics[0].full_name == "__metric_id"


def test_template_functions_example_renders_as_documented() -> None:
    cfg = load(str(DOCS / "valid" / "template-functions.json5"), ENV)
    argv = cfg.jobs[0].exec
    assert argv == ["echo", "a.b.c", "T_mplat_", "T_m_l_t_", "0,1,2,3,4,", "5,6,7,",
                    "5,4,3,2,", "Template"]
    assert [(w.name, w.interval) for w in cfg.watches] == [("billing", 7.0), ("ledger", 10.0)]
    assert cfg.consul is not None and cfg.consul.address == "localhost:8500"


def test_health_without_interval_gets_defaults() -> None:
    cfg = load(str(DOCS / "valid" / "example-consul-agent-chain.json5"), ENV)
    agent = cfg.job("consul-agent")
    assert agent is not None and agent.health is not None
    assert (agent.health.interval, agent.health.ttl) == (5.0, 15.0)
    assert agent.exec is not None and "consul.example.com" in agent.exec
