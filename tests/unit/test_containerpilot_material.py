"""ContainerPilot 3.8's own unit-test tables, restated as cases against autopilot.

Each table names the Go test it comes from (joyent/containerpilot at 3.8.0). A case either
behaves as ContainerPilot's test expects (accepted, refused, the same value) or is marked
``DIFF`` and listed in docs/containerpilot.md ("Deliberate differences") with the reason.
Error *wording* is ours (ours names the file, line and field); what must match is whether a
config is refused and which field is blamed. The documentation examples are in
test_config_cp_docs.py, the Go template tables in test_gotemplate.py (and below, TestTemplate).
"""

from __future__ import annotations

import pytest

from autopilot.config import ConfigError, load_text
from autopilot.config.coerce import Invalid, to_exec
from autopilot.config.model import UNLIMITED
from autopilot.durations import parse_duration
from autopilot.gotemplate import render
from autopilot.jobs.runs import pid_env_name

pytestmark = pytest.mark.timeout(30)
STATIC = 'interfaces: ["static:10.0.0.9"]'


def jobs(text: str):  # type: ignore[no-untyped-def]
    return load_text(f"{{consul: \"127.0.0.1:8500\", jobs: {text}}}", "/etc/cp.json5", {}).jobs


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        jobs(text)
    return str(info.value)


# -- commands/commands_test.go TestEnvName: CONTAINERPILOT_<NAME>_PID ----------------------
@pytest.mark.parametrize("name,env", [
    ("testCase", "TESTCASE"), ("test-case", "TEST_CASE"), ("/bin/to/testCase", "TESTCASE"),
    ("/bin/to/test-case", "TEST_CASE"), ("/bin/to/testCase.sh", "TESTCASE"),
    ("./bin/to/testCase.sh", "TESTCASE"), ("/bin/to/test-Case.sh", "TEST_CASE"),
    ("/bin/to/test-Case--now.sh", "TEST_CASE_NOW"),
    # what jobs and health checks are named in 3.8: the job name; "check.<job>"
    ("testpid", "TESTPID"), ("check.web", "CHECK"),
])
def test_env_name(name: str, env: str) -> None:
    assert pid_env_name(name) == f"CONTAINERPILOT_{env}_PID"


# -- commands/args_test.go TestParseArgs ----------------------------------------------------
def test_parse_args() -> None:
    assert to_exec("/testdata/test.sh arg1") == ["/testdata/test.sh", "arg1"]
    assert to_exec(["/testdata/test.sh", "arg2"]) == ["/testdata/test.sh", "arg2"]
    for empty in ("", [], "   "):
        with pytest.raises(Invalid):
            to_exec(empty)  # "received zero-length argument"
    # DIFF: ContainerPilot refused a list of non-strings; scalars are weakly typed here
    assert to_exec([True]) == ["1"]


def test_unbalanced_quote_splits_like_containerpilot() -> None:
    """A string ContainerPilot split on spaces keeps loading (shlex would refuse it)."""
    assert to_exec("logger it's up") == ["logger", "it's", "up"]
    [job] = jobs('[{name: "note", exec: "logger it\'s up"}]')
    assert job.exec == ["logger", "it's", "up"]
    # balanced quotes are honoured (DIFF: CP passed them through as characters)
    assert to_exec("sh -c 'echo a b'") == ["sh", "-c", "echo a b"]


# -- config/timing/duration_test.go TestParseDuration / TestGetTimeout ---------------------
@pytest.mark.parametrize("value,seconds", [
    (1, 1.0), (10, 10.0), ("1", 1.0), ("10", 10.0), ("10ns", 1e-8), ("10us", 1e-5),
    ("10ms", 0.01), ("10s", 10.0), ("10m", 600.0), ("10h", 36000.0), ("1s", 1.0),
    ("0", 0.0), ("1h", 3600.0),
])
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["asf", "20yy", "x"])
def test_parse_duration_errors(value: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# -- config/services/names_test.go TestValidateName (names of advertised jobs) -------------
@pytest.mark.parametrize("name", ["myService", "my-service", "my-service-123"])
def test_valid_service_names(name: str) -> None:
    [job] = jobs(f'[{{name: "{name}", exec: "x", port: 80, {STATIC}, '
                 'health: {exec: "true", interval: 1, ttl: 3}}]')
    assert job.name == name


@pytest.mark.parametrize("name", ["my_service", "-my-service", "my%service"])
def test_invalid_service_names(name: str) -> None:
    assert "name" in refused(f'[{{name: "{name}", exec: "x", port: 80, {STATIC}, '
                             'health: {exec: "true", interval: 1, ttl: 3}}]')


# -- jobs/config_test.go ------------------------------------------------------------------
def test_job_config_validate_name() -> None:
    for cfg in ('[{name: "", port: 80, health: {exec: "h", interval: 1, ttl: 3}}]',
                '[{name: "", exec: "e", port: 80, health: {exec: "h", interval: 1, ttl: 3}}]',
                '[{name: "", exec: "myexec"}]'):
        assert "name" in refused(cfg)
    # an invalid service name is fine without a port
    assert jobs('[{name: "myjob_invalid_name", exec: "myexec"}]')[0].name == "myjob_invalid_name"


def test_job_config_validate_discovery() -> None:
    assert "health must be set if 'port' is set" in refused(
        f'[{{name: "myName", port: 80, {STATIC}}}]')
    # DIFF: a missing ttl defaults to 3 x interval, with a warning (CP refused the config)
    [job] = load_text(f'{{consul: true, jobs: [{{name: "myName", port: 80, {STATIC}, '
                      'health: {interval: 1}}]}', "/etc/cp.json5", {}).jobs
    assert job.health.ttl == 3.0
    assert "initial_status" in refused(
        f'[{{name: "myName", port: 80, initial_status: "invalid", {STATIC}, '
        'health: {interval: 1, ttl: 1}}]')
    jobs(f'[{{name: "myName", port: 80, {STATIC}, health: {{interval: 1, ttl: 1}}}}]')


def test_job_config_consul_extras_errors() -> None:
    """TestErrJobConfigConsulEnableTagOverride / ...DeregisterCriticalServiceAfter."""
    base = f'name: "svc", port: 80, {STATIC}, health: {{exec: "true", interval: 1, ttl: 3}}'
    assert "enableTagOverride" in refused(
        f'[{{{base}, consul: {{enableTagOverride: "nope"}}}}]')
    assert "deregisterCriticalServiceAfter" in refused(
        f'[{{{base}, consul: {{deregisterCriticalServiceAfter: "nope"}}}}]')


@pytest.mark.parametrize("cfg,field", [
    ('[{name: "A", exec: "/bin/taskA", timeout: "1s", when: {interval: "-1s"}}]',
     "when.interval"),
    ('[{name: "B", exec: "/bin/taskB", timeout: "1s", when: {interval: "1ns"}}]',
     "when.interval"),
    ('[{name: "C", exec: "/bin/taskC", timeout: "-1ms", when: {interval: "1ms"}}]', "timeout"),
    ('[{name: "D", exec: "/bin/taskD", timeout: "1ns", when: {interval: "1ms"}}]', "timeout"),
    ('[{name: "E", exec: "/bin/taskE", timeout: "1ns", when: {interval: "xx"}}]',
     "when.interval"),
])
def test_job_config_validate_frequency(cfg: str, field: str) -> None:
    assert field in refused(cfg)


def test_job_config_periodic_defaults() -> None:
    [job] = jobs('[{name: "F", exec: "/bin/taskF", when: {interval: "1ms"}}]')
    assert job.timeout == job.when.interval == pytest.approx(0.001)
    assert job.restarts == UNLIMITED


def test_job_config_validate_exec() -> None:
    [a] = jobs('[{name: "serviceA", exec: ["/bin/serviceA", "A1", "A2"], timeout: "1ms"}]')
    assert a.exec == ["/bin/serviceA", "A1", "A2"] and a.timeout == pytest.approx(0.001)
    [b] = jobs('[{name: "serviceB", exec: "/bin/serviceB B1 B2", timeout: "1ms"}]')
    assert b.exec == ["/bin/serviceB", "B1", "B2"]
    assert "timeout" in refused('[{name: "serviceC", exec: "/bin/serviceC C1 C2", '
                                'timeout: "xx"}]')
    assert "exec" in refused('[{name: "serviceD", exec: ""}]')


@pytest.mark.parametrize("cfg", [
    '[{name: "A", exec: "/bin/coprocessA", restarts: "invalid"}]',
    '[{name: "B", exec: "/bin/coprocessB", restarts: "-1"}]',
    '[{name: "C", exec: "/bin/coprocessC", restarts: -1 }]',
    '[{name: "D", exec: "/bin/coprocessD", restarts: "unlimited", '
    'when: {each: "healthy", source: "other"}}, {name: "other"}]',
])
def test_job_config_validate_restarts_errors(cfg: str) -> None:
    assert "restarts" in refused(cfg)


def test_job_config_validate_restarts_values() -> None:
    got = [j.restarts for j in jobs('''[
        {name: "D", exec: "d", restarts: "unlimited"}, {name: "E", exec: "e", restarts: "never"},
        {name: "F", exec: "f", restarts: 1}, {name: "G", exec: "g", restarts: "1"},
        {name: "H", exec: "h", restarts: 0}, {name: "I", exec: "i", restarts: "0"},
        {name: "J", exec: "j"}]''')]
    assert got == [UNLIMITED, 0, 1, 1, 0, 0, 0]


def test_health_defaults_instead_of_errors() -> None:
    """DIFF: TestHealthChecksConfigError's first two cases (no interval, no ttl) load with
    defaults (5 s, 3 x interval) and a warning naming the field; ContainerPilot refused."""
    cfg = load_text('{jobs: [{name: "a", health: {exec: "/bin/true"}}, '
                    '{name: "b", health: {exec: "/bin/true", interval: 1}}]}', "/x", {})
    assert [(j.health.interval, j.health.ttl) for j in cfg.jobs] == [(5.0, 15.0), (1.0, 3.0)]
    assert any("jobs[0].health: no 'interval'" in w for w in cfg.warnings)
    assert any("jobs[1].health: no 'ttl'" in w for w in cfg.warnings)


@pytest.mark.parametrize("cfg,field", [
    ('[{name: "myName", health: {exec: "", interval: 1, ttl: 5}}]', "health.exec"),
    ('[{name: "myName", health: {exec: "/bin/true", interval: 1, ttl: 5, timeout: "xx"}}]',
     "health.timeout"),
])
def test_health_checks_config_error(cfg: str, field: str) -> None:
    assert field in refused(cfg)


# -- config/template/template_test.go TestTemplate / TestParseEnvironment -------------------
ENV = {"NAME": "Template", "USER": "pilot", "PARTS": "a:b:c", "COUNT": "3", "NAME_1": "Template"}


@pytest.mark.parametrize("src,out", [
    ("Hello, {{.NAME}}!", "Hello, Template!"),
    ("Hello, {{.NONAME}}!", "Hello, !"),
    ("{{ loop 2 5 }}", "[2 3 4]"),
    ("{{ loop 10 1 }}", "[10 9 8 7 6 5 4 3 2]"),
    ("{{ loop 5 }}", "[0 1 2 3 4]"),
    ("{{ loop .COUNT }}", "[0 1 2]"),
    ("{{ loop 1 .COUNT }}", "[1 2]"),
    ("{{ range $i := loop 2 5 -}}i={{$i}},{{ end }}", "i=2,i=3,i=4,"),
    ('Hello, {{ env (printf "NA%s" "ME_1") }}!', "Hello, Template!"),
    ('Hello, {{.NONAME | default "World" }}!', "Hello, World!"),
    ("Hello, {{.NONAME | default 100 }}!", "Hello, 100!"),
    ("Hello, {{.NONAME | default 10.1 }}!", "Hello, 10.1!"),
    ('Hello, {{.PARTS | split ":" | join "." }}!', "Hello, a.b.c!"),
    ('Hello, {{.NAME | replaceAll "e" "_" }}!', "Hello, T_mplat_!"),
    ('Hello, {{.NAME | regexReplaceAll "[epa]+" "_" }}!', "Hello, T_m_l_t_!"),
])
def test_template(src: str, out: str) -> None:
    assert render(src, ENV) == out


def test_parse_environment_keeps_values_with_equals() -> None:
    """DIFF (bug #573): ContainerPilot cut a value at its first '='; the full value is kept."""
    assert render("{{ .A }}", {"A": "x=y"}) == "x=y"


# -- discovery: `consul: ""` is the local agent (ContainerPilot's client default) ----------
def test_empty_consul_address_means_the_local_agent() -> None:
    cfg = load_text('{consul: "", jobs: [{name: "a", exec: "true"}]}', "/etc/cp.json5", {})
    assert cfg.consul is not None
    assert any("local Consul agent" in w for w in cfg.warnings)
    via_template = load_text('{consul: "{{ .UNSET }}", jobs: []}', "/etc/cp.json5", {})
    assert via_template.consul is not None


def test_containerpilot_exit_codes_option() -> None:
    """AUTOPILOT_EXIT_CODES=containerpilot: ContainerPilot's statuses (docs/containerpilot.md)."""
    from autopilot.containerpilot import containerpilot_status

    cp = {"AUTOPILOT_EXIT_CODES": "containerpilot"}
    assert containerpilot_status(3, cp, running=True) == 0  # jobs' status not propagated
    assert containerpilot_status(137, cp, running=True) == 0
    assert containerpilot_status(2, cp, running=True) == 1  # config error: log.Fatal
    assert containerpilot_status(2, cp, running=False) == 1
    assert containerpilot_status(0, cp, running=False) == 0
    assert containerpilot_status(3, {}, running=True) == 3  # the default keeps autopilot's
