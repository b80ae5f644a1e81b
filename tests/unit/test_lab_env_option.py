"""`autopilot lab up --env NAME=VALUE`: a malformed pair is refused before anything starts
(the well-formed ones reach every node: tests/chaos/test_postgres_auth.py runs a lab so)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from autopilot.lab.cli import lab


def test_env_pair_without_equals_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(lab, ["up", "postgres", "--env", "PG_AUTH_METHOD",
                                      "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "'PG_AUTH_METHOD' is not NAME=VALUE" in result.output
    assert not (tmp_path / "state.json").exists()
