"""The `containerpilot` flag shim (autopilot/containerpilot.py): Go flag parsing,
ContainerPilot's precedence between actions, socket discovery, and the client verbs against
a real running autopilot."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.containerpilot import (
    DEFAULT_SOCKET,
    BadValue,
    UsageError,
    find_socket,
    main,
    parse_flags,
    parse_pairs,
)
from autopilot.control.client import ControlClient
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


def shim(*args: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    """The real entry point in a child process."""
    return subprocess.run([sys.executable, "-m", "autopilot.containerpilot", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cp(capsys: pytest.CaptureFixture[str]):
    """``main()`` in this process (faster than a child): returns (status, stdout, stderr)."""
    def call(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(args), env)
        out = capsys.readouterr()
        return int(info.value.code or 0), out.out, out.err
    return call


# -- flag parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["-config", "/c.json5"], ["--config", "/c.json5"], ["-config=/c.json5"],
    ["--config=/c.json5"],
])
def test_string_flag_forms(argv: list[str]) -> None:
    assert parse_flags(argv).config == "/c.json5"


def test_bool_flags_and_repeatable_flags() -> None:
    f = parse_flags(["-template", "--out=/o", "-putenv", "A=1", "--putenv=B=2=3",
                     "-putmetric", "m=4", "-ping", "-reload=false", "-version=true",
                     "-maintenance", "enable"])
    assert f.template and f.out == "/o" and f.ping and not f.reload and f.version
    assert f.putenv == ["A=1", "B=2=3"] and f.putmetric == ["m=4"]
    assert f.maintenance == "enable"


def test_parsing_stops_at_the_first_non_flag_or_double_dash() -> None:
    f = parse_flags(["-ping", "app", "-reload"])
    assert f.ping and not f.reload and f.rest == ["app", "-reload"]
    f = parse_flags(["-ping", "--", "-reload"])
    assert f.rest == ["-reload"] and not f.reload


@pytest.mark.parametrize("argv,message", [
    (["-bogus"], "flag provided but not defined: -bogus"),
    (["-config"], "flag needs an argument: -config"),
    (["-ping=maybe"], 'invalid boolean value "maybe" for -ping'),
    (["---ping"], "bad flag syntax: ---ping"),
])
def test_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_flags(argv)


def test_putenv_pairs() -> None:
    assert parse_pairs("putenv", ["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(BadValue, match="expected KEY=VALUE"):
        parse_pairs("putenv", ["ENV_TO_CLEAR"])
    with pytest.raises(BadValue):
        parse_pairs("putmetric", ["=3"])


def test_socket_discovery(tmp_path: Path) -> None:
    cfg = tmp_path / "cp.json5"
    cfg.write_text('{control: {socket: "{{ .SOCK_DIR }}/cp.sock"}, jobs: [{bad: 1}]}')
    # the config need not validate: render + JSON5 are enough
    assert find_socket(str(cfg), {"SOCK_DIR": "/run/x"}) == "/run/x/cp.sock"
    assert find_socket(str(cfg), {"SOCK_DIR": "/run/x", "AUTOPILOT_SOCKET": "/e.sock"}) == \
        "/run/x/cp.sock"
    cfg.write_text("{consul: false}")  # no control block
    assert find_socket(str(cfg), {"AUTOPILOT_SOCKET": "/e.sock"}) == "/e.sock"
    cfg.write_text("{{ broken")  # unreadable config
    assert find_socket(str(cfg), {"AUTOPILOT_SOCKET": "/e.sock"}) == "/e.sock"
    assert find_socket(None, {}) == DEFAULT_SOCKET
    assert find_socket("/nonexistent.json5", {}) == DEFAULT_SOCKET


# -- actions without a running supervisor -------------------------------------------------

def test_entry_point_version_wins_over_everything(env_clean: dict[str, str]) -> None:
    proc = shim("-ping", "-reload", "-template", "--version", env=env_clean)
    assert proc.returncode == 0 and proc.stdout.startswith("Version: ")
    assert "GitHash: " in proc.stdout


def test_template_to_stdout_and_to_a_file(cp, env_clean: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "cp.json5"
    cfg.write_text('{consul: "{{ .CONSUL }}:8500", x: "a=b"}')
    env = env_clean | {"CONSUL": "consul.svc", "CONTAINERPILOT": str(cfg)}
    # template wins over reload
    assert cp("-template", "-reload", env=env) == (0, '{consul: "consul.svc:8500", x: "a=b"}', "")
    assert cp("-template", "-out=-", "-config", str(cfg), env=env_clean) == \
        (0, '{consul: ":8500", x: "a=b"}', "")
    out = tmp_path / "out.json5"
    proc = shim("--template", "-out", str(out), "-config", str(cfg),
                env=env_clean | {"CONSUL": "c"})
    assert proc.returncode == 0 and proc.stdout == ""
    assert out.read_text() == '{consul: "c:8500", x: "a=b"}'
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    code, _, err = cp("-template", "-out", str(tmp_path / "no" / "dir"), "-config", str(cfg),
                      env=env_clean)
    assert code == 1 and "cannot write" in err


def test_template_errors(cp, env_clean: dict[str, str], tmp_path: Path) -> None:
    code, _, err = cp("-template", env=env_clean)
    assert code == 2 and "-config flag is required" in err
    cfg = tmp_path / "cp.json5"
    cfg.write_text("{a: {{ .X | nofunc }}}")
    code, _, err = cp("-template", "-config", str(cfg), env=env_clean)
    assert code == 2 and f"{cfg}:1:13: template error" in err


def test_usage_errors_exit_2(cp, env_clean: dict[str, str]) -> None:
    code, _, err = cp("-nope", env=env_clean)
    assert code == 2 and "flag provided but not defined: -nope" in err
    assert "usage: containerpilot" in err
    code, out, _ = cp("-h", env=env_clean)
    assert code == 0 and "-putenv KEY=VALUE" in out


def test_run_needs_a_config(cp, env_clean: dict[str, str]) -> None:
    code, _, err = cp(env=env_clean)
    assert code == 2 and "-config flag is required" in err


def test_client_verb_without_a_server_fails_with_a_message(cp, env_clean: dict[str, str],
                                                           tmp_path: Path) -> None:
    env = env_clean | {"AUTOPILOT_SOCKET": str(tmp_path / "none.sock")}
    code, out, err = cp("-ping", env=env)
    assert code == 1 and "none.sock" in err and out == ""


# -- against a running supervisor ------------------------------------------------------------

@pytest.fixture
def running(env_clean: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """`containerpilot -config CFG` running a long job, with its socket in a short dir."""
    d = tempfile.mkdtemp(prefix="apcp")
    sock = os.path.join(d, "cp.sock")
    cfg = os.path.join(d, "cp.json5")
    Path(cfg).write_text('{control: {socket: "' + sock + '"}, jobs: [{name: "sleeper", '
                         'exec: "sleep 60", restarts: "never"}]}')
    env = env_clean | {"CONTAINERPILOT": cfg}
    log = open(os.path.join(d, "log"), "w")  # closed in the finally below
    proc = subprocess.Popen([sys.executable, "-m", "autopilot.containerpilot"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ControlClient(sock, timeout=2).ping() is not None, timeout=15,
                 message="the control socket to answer")
        yield cfg, env
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def test_client_verbs_against_a_running_supervisor(cp, running: tuple[str, dict[str, str]]
                                                   ) -> None:
    cfg, env = running
    proc = shim("-ping", env=env)  # the real entry point, socket from $CONTAINERPILOT's config
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
    # the socket comes from the config named by -config as well
    no_env = {k: v for k, v in env.items() if k != "CONTAINERPILOT"}
    assert cp("--ping", "--config", cfg, env=no_env) == (0, "ok\n", "")
    assert cp("-putenv", "A=1", "-putenv", "B=x=y", env=env)[0] == 0
    code, _, err = cp("-putenv", "ENV_TO_CLEAR", env=env)
    assert code == 2 and "expected KEY=VALUE" in err
    # precedence: maintenance is handled before putenv, so the bad value is what fails
    code, _, err = cp("-maintenance", "sideways", "-putenv", "A=1", env=env)
    assert code == 2 and '-maintenance must be "enable" or "disable"' in err
    # putenv before ping: the refused putenv wins, nothing is printed
    code, out, _ = cp("-putenv", "NOEQUALS", "-ping", env=env)
    assert code == 2 and out == ""
    assert cp("-maintenance=enable", env=env)[0] == 0
    assert cp("--maintenance", "disable", env=env)[0] == 0
    # a metric the config does not define: accepted and ignored, as ContainerPilot did
    code, _, err = cp("-putmetric", "no_such_metric=1", env=env)
    assert code == 0 and "no_such_metric: not a configured metric; ignored" in err
    # reload before maintenance: the bad maintenance value is never looked at
    code, _, err = cp("-reload", "-maintenance", "sideways", env=env)
    assert code == 0, err
    wait_for(lambda: cp("-ping", env=env)[0] == 0, timeout=15,
             message="the supervisor to answer after the reload")
