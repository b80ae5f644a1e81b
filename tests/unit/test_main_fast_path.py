"""`autopilot run CONFIG` skips the click CLI; anything unusual goes through it."""

from __future__ import annotations

import pytest

from autopilot.__main__ import run_config


@pytest.mark.parametrize("args, expected", [
    (["run", "a.json5"], "a.json5"),
    (["run", "-c", "b.json5"], "b.json5"),
    (["run", "--config", "c.json5"], "c.json5"),
    (["run", "--config=d.json5"], "d.json5"),
    (["run", "--help"], None),
    (["run", "-h"], None),
    (["run", "a", "b"], None),
    (["run", "--config="], None),
    (["render", "a.json5"], None),
    ([], None),
])
def test_run_config(args: list[str], expected: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPILOT", raising=False)
    monkeypatch.delenv("CONTAINERPILOT", raising=False)
    assert run_config(args) == expected


def test_run_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPILOT", raising=False)
    monkeypatch.setenv("CONTAINERPILOT", "/etc/cp.json5")
    assert run_config(["run"]) == "/etc/cp.json5"
    monkeypatch.setenv("AUTOPILOT", "/etc/ap.json5")  # AUTOPILOT first, as `run` does
    assert run_config(["run"]) == "/etc/ap.json5"
    monkeypatch.delenv("AUTOPILOT")
    monkeypatch.delenv("CONTAINERPILOT")
    assert run_config(["run"]) is None  # the CLI prints its usage error
