"""`autopilot run`, `autopilot render` and `autopilot version` (autopilot/commands.py)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from autopilot import __version__
from autopilot.cli import main
from autopilot.commands import config_path
from tests.helpers import autopilot_cmd

pytestmark = pytest.mark.timeout(30)

GOOD = '{consul: "{{ .CONSUL | default "localhost" }}:8500", jobs: [{name: "app", exec: "true"}]}'
BAD = '{\n  jobs: [{name: "app", prot: 80}],\n  watches: [{name: "db"}],\n}'


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(tmp_path: Path, text: str, name: str = "cp.json5") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["version"])
    assert result.exit_code == 0
    assert re.fullmatch(rf"Version: {re.escape(__version__)}\nGitHash: (dev|[0-9a-f]{{7}})\n",
                        result.output), result.output


def test_render_prints_the_template_result(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = runner.invoke(main, ["render", path], env={"CONSUL": "consul.svc"})
    assert result.exit_code == 0
    assert result.output == GOOD.replace('{{ .CONSUL | default "localhost" }}', "consul.svc")


def test_render_out_writes_mode_0644(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    out = tmp_path / "rendered.json5"
    old = os.umask(0o077)
    try:
        result = runner.invoke(main, ["render", path, "-o", str(out)], env={"CONSUL": "c"})
    finally:
        os.umask(old)
    assert result.exit_code == 0 and result.output == ""
    assert out.read_text().startswith('{consul: "c:8500"')
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_render_does_not_validate(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["render", write(tmp_path, BAD)])
    assert result.exit_code == 0 and "prot: 80" in result.output


def test_render_check_ok_and_warnings(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, '{jobs: [{name: "a", when: {source: "b"}}]}')
    result = runner.invoke(main, ["render", "--check", path])
    assert result.exit_code == 0
    assert f"{path}: OK (1 jobs, 0 watches, discovery off)" in result.stdout
    assert "warning: " in result.stderr and "neither 'once' nor 'each'" in result.stderr


def test_render_check_reports_every_error_and_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = runner.invoke(main, ["render", "--check", path])
    assert result.exit_code == 2
    assert f'{path}:2: jobs[0]: unknown keys: ["prot"]' in result.stderr
    assert f"{path}:3: watches[0].interval: is required" in result.stderr
    assert result.stdout == ""


def test_render_template_error_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  a: "{{ if .X }}"\n}')
    result = runner.invoke(main, ["render", path])
    assert result.exit_code == 2
    assert f"{path}:2:10: template error: unexpected EOF" in result.stderr


def test_config_path_precedence() -> None:
    env = {"AUTOPILOT": "/a.json5", "CONTAINERPILOT": "/c.json5"}
    assert config_path("/arg.json5", "/opt.json5", environ=env) == "/arg.json5"
    assert config_path(None, "/opt.json5", environ=env) == "/opt.json5"
    assert config_path(None, None, environ=env) == "/a.json5"
    assert config_path(None, None, environ={"CONTAINERPILOT": "/c.json5"}) == "/c.json5"
    assert config_path(None, None, environ={"AUTOPILOT": ""}) is None


def test_render_takes_the_config_from_the_environment(runner: CliRunner, tmp_path: Path) -> None:
    a = write(tmp_path, "{a: 1}", "a.json5")
    c = write(tmp_path, "{c: 1}", "c.json5")
    assert runner.invoke(main, ["render"], env={"AUTOPILOT": a, "CONTAINERPILOT": c}
                         ).output == "{a: 1}"
    assert runner.invoke(main, ["render"], env={"AUTOPILOT": "", "CONTAINERPILOT": c}
                         ).output == "{c: 1}"
    assert runner.invoke(main, ["render", "-c", c], env={"AUTOPILOT": a}).output == "{c: 1}"
    result = runner.invoke(main, ["render"], env={"AUTOPILOT": "", "CONTAINERPILOT": ""})
    assert result.exit_code == 2 and "no config" in result.stderr


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(autopilot_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=25)


def test_run_without_config_exits_2(env_clean: dict[str, str]) -> None:
    proc = run(["run"], env_clean)
    assert proc.returncode == 2 and "no config" in proc.stderr


def test_run_config_error_exits_2_with_the_errors(env_clean: dict[str, str],
                                                  tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    proc = run(["run", path], env_clean)
    assert proc.returncode == 2
    assert f'{path}:2: jobs[0]: unknown keys: ["prot"]' in proc.stderr
    assert f"{path}:3: watches[0].interval" in proc.stderr


def test_run_env_precedence(env_clean: dict[str, str]) -> None:
    env = env_clean | {"AUTOPILOT": "/nonexistent/a.json5",
                       "CONTAINERPILOT": "/nonexistent/c.json5"}
    proc = run(["run"], env)
    assert proc.returncode == 2 and "/nonexistent/a.json5" in proc.stderr
    proc = run(["run"], env | {"AUTOPILOT": ""})
    assert proc.returncode == 2 and "/nonexistent/c.json5" in proc.stderr


def test_run_supervises_and_exits_with_the_main_jobs_status(env_clean: dict[str, str],
                                                            tmp_path: Path) -> None:
    sock = tmp_path / "ap.sock"
    path = write(tmp_path, f'{{control: {{socket: "{sock}"}}, mainJob: "once",'
                           ' jobs: [{name: "once", exec: "sh -c \\"exit 3\\""}]}')
    proc = run(["run", "-c", path], env_clean)
    assert proc.returncode == 3, proc.stderr + proc.stdout
