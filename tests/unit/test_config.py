"""Config loading: validation rules and their messages, weak typing, durations, defaults,
autopilot's extensions (autopilot/config/validate/, loader.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autopilot.config import ConfigError, load, load_raw, load_text, render
from autopilot.config.model import UNLIMITED
from autopilot.durations import parse_duration

pytestmark = pytest.mark.timeout(30)


def cfg(text: str, env: dict[str, str] | None = None):
    return load_text(text, "/etc/cp.json5", env or {})


def errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg(text, env)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(text: str) -> str:
    errs = errors(text)
    assert len(errs) == 1, errs
    return errs[0]


# -- files, syntax errors, positions ------------------------------------------------------

def test_load_reads_the_file_and_keeps_its_path(tmp_path: Path) -> None:
    path = tmp_path / "cp.json5"
    path.write_text('{consul: "{{ .CONSUL }}:8500", jobs: [{name: "a", exec: "true"}]}')
    config = load(str(path), {"CONSUL": "consul.svc"})
    assert config.path == str(path)
    assert config.consul is not None and config.consul.address == "consul.svc:8500"
    assert render(str(path), {"CONSUL": "c"}).startswith('{consul: "c:8500"')
    assert load_raw(str(path), {"CONSUL": "x"})["consul"] == "x:8500"


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cp.json5"
    path.write_text('{jobs: [{name: "{{ .AP_TEST_NAME }}", exec: "true"}]}')
    monkeypatch.setenv("AP_TEST_NAME", "from-env")
    assert load(str(path)).jobs[0].name == "from-env"


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="/nonexistent/cp.json5: no such config file"):
        load("/nonexistent/cp.json5")


def test_syntax_error_names_file_line_column_and_quotes_the_line() -> None:
    text = '{\n  jobs: [\n    {name: "a", exec: "x"}\n    {name: "b"}\n  ]\n  consul: 1 2\n}'
    with pytest.raises(ConfigError) as info:
        cfg(text)
    msg = str(info.value)
    first, quoted, caret = msg.splitlines()
    assert first.startswith("/etc/cp.json5:6:13: parse error: ")
    assert quoted.strip() == "consul: 1 2"
    assert caret.index("^") == quoted.index("2", quoted.index("1"))


def test_template_error_names_file_line_column() -> None:
    with pytest.raises(ConfigError) as info:
        cfg('{\n  consul: "{{ .A | nosuchfunc }}"\n}')
    assert str(info.value).startswith('/etc/cp.json5:2:20: template error: function '
                                      '"nosuchfunc" not defined')


def test_validation_errors_name_the_line_of_the_field() -> None:
    err = one_error('{\n  jobs: [\n    {\n      name: "a",\n      health: {interval: -1, ttl: 5},\n'
                    '    },\n  ],\n}')
    assert err == "/etc/cp.json5:5: jobs[0].health.interval: must be > 0"


def test_lines_are_those_of_the_file_even_when_the_template_adds_lines() -> None:
    src = ('{\n'
           '  jobs: [\n'
           '    {{ range $i := loop 3 }}\n'
           '    {\n'
           '      name: "job{{ $i }}",\n'
           '      {{ if eq $i 2 }}restarts: "bad",{{ end }}\n'
           '    },\n'
           '    {{ end }}\n'
           '  ],\n'
           '  {{/* a comment\n'
           '  over two lines */}}\n'
           '  watches: [{name: "w1"}],\n'
           '}')
    errs = errors(src)
    assert errs == [
        '/etc/cp.json5:6: jobs[2].restarts: must be "unlimited", "never" or a number >= 0, '
        'got "bad"',
        "/etc/cp.json5:12: watches[0].interval: is required and must be > 0"]


def test_syntax_error_in_generated_text_gives_both_positions() -> None:
    with pytest.raises(ConfigError) as info:
        cfg('{\n  {{ range loop 3 }}\n  a{{ . }}: {{ . }}\n  {{ end }}\n  b: {{ "x y" }},\n}')
    head, quoted, _ = str(info.value).splitlines()
    assert head.startswith("/etc/cp.json5:5:9: parse error: unexpected \"x\"")
    assert head.endswith("(rendered line 9, column 6)")
    assert quoted.strip() == "b: x y,"


def test_all_errors_are_reported_together_with_the_file_name() -> None:
    errs = errors('{jobs: [{name: "a", port: "x"}, {name: "b", restarts: "often"}], '
                  'watches: [{name: "web"}], stopTimeout: "forever"}')
    assert len(errs) == 4
    assert all(e.startswith("/etc/cp.json5:1: ") for e in errs)
    joined = "\n".join(errs)
    assert 'jobs[0].port: expected an integer, got "x"' in joined
    assert "jobs[1].restarts:" in joined
    assert "watches[0].interval: is required" in joined
    assert 'stopTimeout: invalid duration "forever"' in joined


def test_unknown_keys_are_listed_at_once_with_suggestions() -> None:
    err = one_error('{jobs: [{name: "a", exce: "x", prot: 80}]}')
    assert err.startswith('/etc/cp.json5:1: jobs[0]: unknown keys: ["exce", "prot"]')
    assert '"exce" -> "exec"' in err and '"prot" -> "port"' in err
    assert one_error("{consul: false, bogus: 1, other: 2}").endswith(
        'unknown config keys: ["bogus", "other"]')
    err = one_error('{logging: {lvl: "debug"}}')
    assert 'logging: unknown keys: ["lvl"]' in err


def test_keys_match_case_insensitively_like_mapstructure() -> None:
    c = cfg('{Jobs: [{NAME: "a", Exec: "x", StopTimeout: "2s"}]}')
    assert c.jobs[0].name == "a" and c.jobs[0].stop_timeout == 2.0


def test_duplicate_keys_and_missing_commas_are_warnings() -> None:
    c = cfg('{\n  stopTimeout: 1,\n  stopTimeout: 2\n  jobs: []\n}')
    assert c.stop_timeout == 2.0
    assert any("stopTimeout: duplicate key" in w for w in c.warnings)
    assert any(w.startswith("/etc/cp.json5:3:17: missing comma") for w in c.warnings)


# -- top level ------------------------------------------------------------------------------

def test_defaults_of_an_empty_config() -> None:
    c = cfg("{}")
    assert c.consul is None  # autopilot: discovery off
    assert (c.logging.level, c.logging.format, c.logging.output) == ("INFO", "default", "stdout")
    assert c.stop_timeout == 5.0 and c.jobs == [] and c.watches == [] and c.templates == []
    assert c.telemetry is None and c.control.socket == "/var/run/containerpilot.socket"
    assert c.control.mode == 0o600 and c.main_job is None and c.warnings == []


@pytest.mark.parametrize("value,address,scheme", [
    ('"localhost:8500"', "localhost:8500", "http"),
    ('"consul"', "consul:8500", "http"),
    ('"http://consul:8600"', "consul:8600", "http"),
    ('"https://consul.example.com"', "consul.example.com:8501", "https"),
    ('"[::1]:8500"', "[::1]:8500", "http"),
    ('{address: "https://c:9000"}', "c:9000", "https"),
    ('{address: "c:1", scheme: "https"}', "c:1", "https"),
    ('{scheme: "HTTPS"}', "127.0.0.1:8500", "https"),
    ("true", "127.0.0.1:8500", "http"),
])
def test_consul_forms(value: str, address: str, scheme: str) -> None:
    c = cfg(f"{{consul: {value}}}")
    assert c.consul is not None
    assert (c.consul.address, c.consul.scheme) == (address, scheme)


def test_consul_off_and_object_fields() -> None:
    assert cfg("{consul: false}").consul is None
    assert cfg("{consul: null}").consul is None
    c = cfg('{consul: {address: "c:8500", token: "t", tls: {cafile: "/ca", verify: "false"}}}')
    assert c.consul is not None and c.consul.token == "t"
    assert c.consul.tls.cafile == "/ca" and c.consul.tls.verify is False
    assert cfg('{consul: {tls: {}}}').consul.tls.verify is True  # type: ignore[union-attr]


@pytest.mark.parametrize("value,message", [
    ('"c:notaport"', 'consul: invalid port in Consul address "c:notaport"'),
    ('{scheme: "ftp"}', 'consul.scheme: must be "http" or "https"'),
    ('{tls: {verify: "maybe"}}', 'consul.tls.verify: expected true or false, got "maybe"'),
    ('{adress: "x"}', 'consul: unknown keys: ["adress"]'),
    ("5", "consul: expected an object, got 5"),
])
def test_consul_errors(value: str, message: str) -> None:
    assert message in one_error(f"{{consul: {value}}}")


def test_logging_fields() -> None:
    c = cfg('{logging: {level: "warning", format: "JSON", output: "/var/log/ap.log"}}')
    assert (c.logging.level, c.logging.format, c.logging.output) == ("WARN", "json",
                                                                     "/var/log/ap.log")
    assert 'logging.level: unknown log level "LOUD"' in one_error('{logging: {level: "loud"}}')
    assert 'logging.format: unknown log format "xml"' in one_error('{logging: {format: "xml"}}')
    assert "logging.output: must not be empty" in one_error('{logging: {output: ""}}')


def test_stop_timeout_forms() -> None:
    assert cfg("{stopTimeout: 0}").stop_timeout == 5.0  # 0 counts as unset
    assert cfg('{stopTimeout: "10"}').stop_timeout == 10.0
    assert cfg('{stopTimeout: "1m"}').stop_timeout == 60.0
    assert "stopTimeout: must be >= 0" in one_error("{stopTimeout: -1}")


def test_main_job_must_name_a_job() -> None:
    assert cfg('{jobs: [{name: "app", exec: "x"}], mainJob: "app"}').main_job == "app"
    assert 'mainJob: no job named "ap"' in one_error('{jobs: [{name: "app"}], mainJob: "ap"}')


# -- durations and weak typing --------------------------------------------------------------

@pytest.mark.parametrize("value,seconds", [
    (5, 5.0), ("5", 5.0), (" 7 ", 7.0), (1.5, 1.5), ("1.5s", 1.5), ("300ms", 0.3),
    ("1h30m", 5400.0), ("2m3.5s", 123.5), ("1us", 1e-6), ("1µs", 1e-6), ("-2s", -2.0),
    ("0", 0.0), ("1h1m1s1ms", 3661.001),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5x", "s", "1.5", "1s2", "one", True, None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_weak_typing_like_mapstructure() -> None:
    c = cfg('{jobs: [{name: 5, exec: ["echo", 1, true], tags: "single",'
            ' restarts: 2.9, health: {interval: "5", ttl: 10.0, exec: "true",'
            ' logging: {raw: "1"}}, logging: {raw: 1}, env: {N: 1, B: false, E: null}},'
            ' {name: "web", port: "8080", health: {interval: 1, ttl: 2}}]}')
    job = c.jobs[0]
    assert job.name == "5" and job.exec == ["echo", "1", "1"] and c.jobs[1].port == 8080
    assert job.tags == ["single"] and job.restarts == 2
    assert job.health is not None and job.health.interval == 5.0 and job.health.ttl == 10.0
    assert job.health.logging_raw is True and job.logging_raw is True
    assert job.env == {"N": "1", "B": "false", "E": ""}


@pytest.mark.parametrize("field,message", [
    ('port: "http"', 'jobs[0].port: expected an integer, got "http"'),
    ("port: 70000", "jobs[0].port: must be a port number between 0 and 65535, got 70000"),
    ("tags: {a: 1}", "jobs[0].tags: expected a string, got an object"),
    ('logging: {raw: "yes"}', 'jobs[0].logging.raw: expected true or false, got "yes"'),
    ("exec: {cmd: 1}", "jobs[0].exec: expected a string, got an object"),
    ("exec: []", "jobs[0].exec: must not be empty"),
    ('exec: ["", "x"]', "jobs[0].exec: the command (first item) must not be empty"),
    ('exec: ["x", {a: 1}]', "jobs[0].exec: item 1: expected a string, got an object"),
    ("env: [1]", "jobs[0].env: expected an object, got an array"),
    ('env: {"A=B": "x"}', 'jobs[0].env.A=B: a variable name must be non-empty'),
    ("stopSignal: NaN", 'jobs[0].stopSignal: expected a signal name like "SIGINT", got nan'),
    ("stopSignal: Infinity", "jobs[0].stopSignal: expected a signal name"),
    ("port: Infinity", "jobs[0].port: expected an integer, got inf"),
    ("stopTimeout: NaN", "jobs[0].stopTimeout: invalid duration"),
])
def test_type_errors(field: str, message: str) -> None:
    assert message in one_error(f'{{jobs: [{{name: "a", {field}}}]}}')


# -- jobs -----------------------------------------------------------------------------------

def test_job_defaults() -> None:
    job = cfg('{jobs: [{name: "a"}]}').jobs[0]
    assert job.exec is None and job.port == 0 and job.health is None
    assert job.interfaces == ["eth0:inet", "inet"] and job.tags == [] and job.meta == {}
    assert job.when.source is None and job.when.once is None and job.when.interval is None
    assert job.timeout is None and job.stop_timeout == 5.0 and job.stop_signal == "SIGTERM"
    assert job.restarts == 0 and job.backoff.initial == 0 and job.election is None
    assert job.user is None and job.group is None and job.workdir is None


def test_exec_string_is_split_like_a_shell() -> None:
    job = cfg("""{jobs: [{name: "a", exec: "sh -c 'echo \\"hi there\\" && exit 3'"}]}""").jobs[0]
    assert job.exec == ["sh", "-c", 'echo "hi there" && exit 3']


def test_name_rules() -> None:
    assert cfg('{jobs: [{name: "my_job"}]}').jobs[0].name == "my_job"  # no port: any name
    assert "jobs[0].name: is required" in one_error("{jobs: [{exec: \"x\"}]}")
    assert "is not a valid service name" in one_error(
        '{jobs: [{name: "Web", port: 80, health: {interval: 1, ttl: 2}}]}')
    assert "is not a valid service name" in one_error(
        '{jobs: [{name: "w", port: 80, health: {interval: 1, ttl: 2}}]}')  # 2 chars at least
    assert 'jobs[1].name: duplicate job name "a" (also jobs[0])' in one_error(
        '{jobs: [{name: "a"}, {name: "a"}]}')


def test_port_requires_health_and_initial_status_values() -> None:
    assert "jobs[0]: health must be set if 'port' is set" in one_error(
        '{jobs: [{name: "web", port: 80}]}')
    job = cfg('{jobs: [{name: "web", port: 80, initial_status: "warning",'
              ' health: {interval: 1, ttl: 2}}]}').jobs[0]
    assert job.initial_status == "warning"
    assert 'jobs[0].initial_status: must be one of "passing", "warning", "critical"' in \
        one_error('{jobs: [{name: "ab", port: 1, initial_status: "ok", health: {ttl: 9}}]}')
    # not registered: ContainerPilot never looked at it, so only a warning
    c = cfg('{jobs: [{name: "a", initial_status: "ok", interfaces: "eth0:bad"}]}')
    assert c.jobs[0].initial_status is None
    assert any("jobs[0].initial_status: must be one of" in w for w in c.warnings)
    assert any("jobs[0].interfaces: invalid interface spec" in w for w in c.warnings)


def test_health_fields() -> None:
    h = cfg('{jobs: [{name: "a", health: {exec: "check", interval: 3, ttl: "9"}}]}').jobs[0].health
    assert h is not None and (h.exec, h.interval, h.ttl, h.timeout) == (["check"], 3.0, 9.0, 3.0)
    h = cfg('{jobs: [{name: "a", health: {interval: 3, ttl: 9, timeout: "500ms"}}]}').jobs[0].health
    assert h is not None and h.exec is None and h.timeout == 0.5
    c = cfg('{jobs: [{name: "a", health: {interval: 10, ttl: 5}}]}')
    assert any("ttl (5s) is shorter than interval (10s)" in w for w in c.warnings)


def test_when_rules() -> None:
    w = cfg('{jobs: [{name: "a", when: {source: "b", once: "healthy", timeout: "2s"}}]}').jobs[0].when
    assert (w.source, w.once, w.each, w.timeout) == (["b"], "healthy", None, 2.0)
    w = cfg('{jobs: [{name: "a", when: {source: ["b", "c"], sourceMode: "all",'
            ' each: "exitSuccess"}}]}').jobs[0].when
    assert (w.source, w.source_mode, w.each) == (["b", "c"], "all", "exitSuccess")
    assert "jobs[0].when: can have only one of 'interval', 'once', or 'each'" in one_error(
        '{jobs: [{name: "a", when: {once: "startup", each: "startup", source: "global"}}]}')
    assert 'jobs[0].when.once: unknown event "done"' in one_error(
        '{jobs: [{name: "a", when: {source: "b", once: "done"}}]}')
    assert 'jobs[0].when.sourceMode: must be "any" or "all"' in one_error(
        '{jobs: [{name: "a", when: {source: "b", sourceMode: "both", once: "healthy"}}]}')
    c = cfg('{jobs: [{name: "a", when: {once: "healthy"}}]}')
    assert c.jobs[0].when.source is None
    assert any("'once: healthy' without a 'source' never fires" in x for x in c.warnings)
    c = cfg('{jobs: [{name: "a", when: {source: "b"}}]}')
    assert any("neither 'once' nor 'each'" in x for x in c.warnings)


def test_when_normalisations_for_signals_and_global_events() -> None:
    jobs = cfg('{jobs: [{name: "a", when: {source: "SIGHUP"}},'
               ' {name: "b", when: {once: "startup"}},'
               ' {name: "c", when: {each: "SIGUSR2"}}]}').jobs
    assert (jobs[0].when.source, jobs[0].when.each) == (["SIGHUP"], "signal")
    assert (jobs[1].when.source, jobs[1].when.once) == (["global"], "startup")
    assert (jobs[2].when.source, jobs[2].when.each) == (["SIGUSR2"], "signal")


def test_periodic_jobs() -> None:
    job = cfg('{jobs: [{name: "a", when: {interval: "500ms"}}]}').jobs[0]
    assert job.periodic and job.when.interval == 0.5
    assert job.timeout == 0.5 and job.restarts == UNLIMITED
    job = cfg('{jobs: [{name: "a", timeout: "100ms", restarts: "5", when: {interval: 1}}]}').jobs[0]
    assert job.timeout == 0.1 and job.restarts == 5


@pytest.mark.parametrize("value,expected", [
    ('"unlimited"', UNLIMITED), ('"never"', 0), ("3", 3), ('"3"', 3), ("1.9", 1), ("0", 0),
])
def test_restarts(value: str, expected: int) -> None:
    assert cfg(f'{{jobs: [{{name: "a", restarts: {value}}}]}}').jobs[0].restarts == expected


def test_stop_signal_and_timeouts() -> None:
    jobs = cfg('{jobs: [{name: "a", stopSignal: "INT", stopTimeout: "30s"},'
               ' {name: "b", stopSignal: 1}, {name: "c", stopSignal: "sigquit"}]}').jobs
    assert [j.stop_signal for j in jobs] == ["SIGINT", "SIGHUP", "SIGQUIT"]
    assert jobs[0].stop_timeout == 30.0
    assert 'jobs[0].stopSignal: unknown signal "SIGFOO"' in one_error(
        '{jobs: [{name: "a", stopSignal: "SIGFOO"}]}')
    assert "jobs[0].stopSignal: unknown signal number 999" in one_error(
        '{jobs: [{name: "a", stopSignal: 999}]}')


def test_restart_backoff() -> None:
    b = cfg('{jobs: [{name: "a", restartBackoff: {initial: "1s", max: "30s", resetAfter: "2m"}}]}'
            ).jobs[0].backoff
    assert (b.initial, b.max, b.reset_after) == (1.0, 30.0, 120.0)
    b = cfg('{jobs: [{name: "a", restartBackoff: {initial: 2}}]}').jobs[0].backoff
    assert (b.initial, b.max) == (2.0, 60.0)
    assert "jobs[0].restartBackoff.max: must be >= initial (10s)" in one_error(
        '{jobs: [{name: "a", restartBackoff: {initial: 10, max: 5}}]}')


def test_meta_env_user_group_workdir() -> None:
    job = cfg('{jobs: [{name: "a", meta: {version: 2, "zone-id": "b"}, env: {X: "1"},'
              ' user: "nobody", group: 65534, workdir: "/srv"}]}').jobs[0]
    assert job.meta == {"version": "2", "zone-id": "b"} and job.env == {"X": "1"}
    assert (job.user, job.group, job.workdir) == ("nobody", "65534", "/srv")
    assert 'the "consul-" prefix is reserved' in one_error(
        '{jobs: [{name: "a", meta: {"consul-x": "1"}}]}')
    assert "jobs[0].meta.a b: keys may contain only" in one_error(
        '{jobs: [{name: "a", meta: {"a b": "1"}}]}')
    assert "jobs[0].user: must not be empty" in one_error('{jobs: [{name: "a", user: ""}]}')


def test_job_consul_block() -> None:
    jc = cfg('{jobs: [{name: "a", consul: {enableTagOverride: true}}]}').jobs[0].consul
    assert jc is not None and jc.enable_tag_override and \
        jc.deregister_critical_service_after is None  # CP refused this (empty duration)
    jc = cfg('{jobs: [{name: "a", consul: {deregisterCriticalServiceAfter: "90"}}]}').jobs[0].consul
    assert jc is not None and jc.deregister_critical_service_after == "90s"


@pytest.mark.parametrize("spec", ["eth0", "eth0:inet6", "eth0:inet", "eth1[1]", "inet", "inet6",
                                  "10.0.0.0/16", "fdc6:238c:c4bc::/48", "static:192.168.1.100",
                                  "static:::1", "br-0123456789ab", "nosuchif0"])
def test_valid_interface_specs_are_not_resolved(spec: str) -> None:
    assert cfg(f'{{jobs: [{{name: "a", interfaces: "{spec}"}}]}}').jobs[0].interfaces == [spec]


@pytest.mark.parametrize("spec,message", [
    ("eth0:inet4", 'the family must be "inet" or "inet6"'),
    ("static:300.1.1.1", "invalid static address"),
    ("10.0.0.0/40", "invalid CIDR"),
    ("a-very-long-interface-name", "invalid interface spec"),
    ("", "invalid interface spec"),
])
def test_invalid_interface_specs(spec: str, message: str) -> None:
    assert message in one_error(f'{{jobs: [{{name: "web", port: 80, health: {{ttl: 9}},'
                                f' interfaces: ["inet", "{spec}"]}}]}}')
    assert message in one_error(f'{{telemetry: {{interfaces: ["{spec}"]}}}}')


def test_election_block() -> None:
    e = cfg('{consul: "c:8500", jobs: [{name: "db", port: 5432, health: {interval: 1, ttl: 10},'
            ' election: {sessionTTL: "15s", promote: "promote.sh --now", demote: ["demote.sh"]}}]}'
            ).jobs[0].election
    assert e is not None and e.key == "service/db/leader" and e.session_ttl == 15.0
    assert e.renew_interval == 5.0 and e.lock_delay == 1.0 and e.hook_timeout == 10.0
    assert (e.primary_tag, e.replica_tag) == ("primary", "replica")
    assert e.promote == ["promote.sh", "--now"] and e.demote == ["demote.sh"]
    assert cfg('{consul: "c", jobs: [{name: "db", election: true}]}').jobs[0].election is not None
    errs = "\n".join(errors('{jobs: [{name: "db", election: {sessionTTL: 5, renewInterval: 20,'
                            ' primaryTag: "x", replicaTag: "x", lockDelay: 90}}]}'))
    for piece in ["jobs[0].election.sessionTTL: must be between 10s and 24h",
                  "jobs[0].election.lockDelay: must be between 0s and 60s",
                  "jobs[0].election.renewInterval: must be > 0 and shorter than sessionTTL",
                  "jobs[0].election: primaryTag and replicaTag must differ",
                  "jobs[0].election: needs Consul"]:
        assert piece in errs


# -- watches, telemetry, control, templates ----------------------------------------------------

def test_watches() -> None:
    ws = cfg('{consul: "c", watches: [{name: "db", interval: "3", tag: "primary", dc: "dc2"},'
             ' {name: "cfg", interval: 1, key: "/app/config"},'
             ' {name: "flags", interval: 1, keyprefix: "app/flags/"}]}').watches
    assert [(w.kind, w.key, w.tag, w.dc) for w in ws] == [
        ("service", None, "primary", "dc2"), ("key", "app/config", None, None),
        ("keyprefix", "app/flags/", None, None)]
    assert ws[0].source == "watch.db"
    errs = "\n".join(errors('{watches: [{name: "a1", interval: 1, key: "k", keyprefix: "p"},'
                            ' {name: "a2", interval: 1, key: "k", tag: "t"},'
                            ' {name: "a1", interval: 2}]}'))
    assert "watches[0]: can have only one of 'key' and 'keyprefix'" in errs
    assert "watches[1].tag: applies to service watches only" in errs
    assert 'watches[2].name: duplicate watch name "a1"' in errs
    assert any("watches never fire" in w for w in cfg('{watches: [{name: "ab", interval: 1}]}'
                                                       ).warnings)


def test_telemetry() -> None:
    t = cfg('{telemetry: {metrics: [{namespace: "app", name: "hits", help: "h", type: "Gauge"}]}}'
            ).telemetry
    assert t is not None and t.port == 9090 and t.interfaces == ["eth0:inet", "inet"]
    assert t.metrics[0].type == "gauge" and t.metrics[0].full_name == "app__hits"
    assert t.ready.mode == "all"
    c = cfg('{consul: "c", jobs: [{name: "db", election: {}}],'
            ' telemetry: {port: "9100", ready: {role: "primary", job: "db"}}}')
    assert c.telemetry is not None and c.telemetry.port == 9100
    assert (c.telemetry.ready.mode, c.telemetry.ready.job, c.telemetry.ready.role) == \
        ("role", "db", "primary")
    ready = cfg('{jobs: [{name: "web"}], telemetry: {ready: {job: "web"}}}').telemetry.ready  # type: ignore[union-attr]
    assert (ready.mode, ready.job) == ("job", "web")
    assert cfg('{telemetry: {ready: "all"}}').telemetry.ready.mode == "all"  # type: ignore[union-attr]
    errs = "\n".join(errors('{jobs: [{name: "web"}], telemetry: {metrics: ['
                            '{name: "a", type: "counter", help: "x"},'
                            ' {name: "a", type: "counter", help: "y"}, {type: "gauge"},'
                            ' {name: "b-c", type: "gauge"}], ready: {role: "primary", job: "web"}}}'))
    for piece in ['telemetry.metrics[1]: duplicate metric "__a"',
                  "telemetry.metrics[2].name: is required",
                  "telemetry.metrics[3].name: may contain only",
                  'telemetry.ready.job: job "web" has no \'election\'']:
        assert piece in errs
    assert 'no job named "x"' in one_error('{telemetry: {ready: {job: "x"}}}')
    assert 'telemetry.ready: must be "all"' in one_error('{telemetry: {ready: "some"}}')


@pytest.mark.parametrize("value,mode", [('"0660"', 0o660), ('"660"', 0o660), ("660", 0o660),
                                        ('"0o640"', 0o640), ("600", 0o600)])
def test_control_mode_is_octal(value: str, mode: int) -> None:
    c = cfg(f'{{control: {{socket: "/tmp/ap.sock", mode: {value}, group: "ops"}}}}')
    assert (c.control.socket, c.control.mode, c.control.group) == ("/tmp/ap.sock", mode, "ops")


@pytest.mark.parametrize("value", ['"rw"', "689", '"99999"', "true"])
def test_control_mode_errors(value: str) -> None:
    assert "control.mode:" in one_error(f"{{control: {{mode: {value}}}}}")


def test_templates(tmp_path: Path) -> None:
    path = tmp_path / "cp.json5"
    path.write_text('{templates: [{source: "nginx.conf.j2", destination: "/etc/nginx/nginx.conf",'
                    ' wait: "2s:10s", mode: "0640", owner: "www", group: "www",'
                    ' command: "nginx -s reload", commandTimeout: "5s"},'
                    ' {source: "/abs/a.j2", destination: "/a", wait: "3s"},'
                    ' {source: "b.j2", destination: "/b", wait: {min: 1, max: "4s"}}]}')
    ts = load(str(path), {}).templates
    assert ts[0].source == os.path.join(str(tmp_path), "nginx.conf.j2")
    assert (ts[0].wait_min, ts[0].wait_max, ts[0].mode) == (2.0, 10.0, 0o640)
    assert ts[0].command == ["nginx", "-s", "reload"] and ts[0].command_timeout == 5.0
    assert (ts[1].source, ts[1].wait_min, ts[1].wait_max, ts[1].mode) == ("/abs/a.j2", 3.0, 12.0,
                                                                         0o644)
    assert (ts[2].wait_min, ts[2].wait_max) == (1.0, 4.0)
    errs = "\n".join(errors('{templates: [{source: "a"}, {source: "a", destination: "b",'
                            ' wait: "10s:2s"}, {source: "a", destination: "b", wait: "x:y"}]}'))
    assert "templates[0].destination: is required" in errs
    assert "templates[1].wait: needs 0 <= min <= max" in errs
    assert 'templates[2].wait: invalid duration "x"' in errs


def test_discovery_off_warns_about_registered_jobs() -> None:
    c = cfg('{jobs: [{name: "web", port: 80, health: {interval: 1, ttl: 3}}]}')
    assert any("jobs[0].port: discovery is off" in w for w in c.warnings)


def test_health_failure_threshold() -> None:
    base = '{jobs: [{name: "a", exec: "x", health: {exec: "true", interval: 1, ttl: 5%s}}]}'
    assert cfg(base % "").jobs[0].health.failure_threshold == 1
    assert cfg(base % ', failureThreshold: "3"').jobs[0].health.failure_threshold == 3
    assert one_error(base % ", failureThreshold: 0").endswith(
        "jobs[0].health.failureThreshold: must be >= 1")
