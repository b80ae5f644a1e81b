"""The `function` block of a job (autopilot/config/function.py): defaults, and every refusal
says where (file:line: path) and why."""

from __future__ import annotations

import pytest

from autopilot.config import ConfigError, load_text
from autopilot.jobs.function import Histogram, activation_argv

pytestmark = pytest.mark.timeout(30)


def cfg(text: str):
    return load_text(text, "/etc/fn.json5", {})


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg(text)
    return info.value.errors


def test_defaults_make_a_registered_passing_function() -> None:
    job = cfg('{jobs: [{name: "hello", exec: "hello", port: 8080, function: true}]}').jobs[0]
    assert job.function is not None
    assert job.function.idle_timeout == 60.0 and job.function.max_concurrency == 16
    assert job.function.bind == "0.0.0.0" and job.function.fd_name == "hello"
    assert job.initial_status == "passing"  # registered before any handler runs
    assert job.health is not None and job.health.exec is None  # blind TTL heartbeats
    assert job.health.ttl > job.health.interval > 0


def test_every_key() -> None:
    job = cfg('''{jobs: [{name: "hello", exec: ["h"], port: 8080, health: {ttl: 30},
        function: {idleTimeout: "250ms", maxConcurrency: 3, bind: "127.0.0.1",
                   backlog: 64, fdName: "web"}}]}''').jobs[0]
    fn = job.function
    assert (fn.idle_timeout, fn.max_concurrency, fn.bind, fn.backlog, fn.fd_name) == (
        0.25, 3, "127.0.0.1", 64, "web")
    assert job.health.ttl == 30


def test_function_false_is_an_ordinary_job() -> None:
    job = cfg('{jobs: [{name: "a", exec: "a", function: false}]}').jobs[0]
    assert job.function is None


@pytest.mark.parametrize("body, message", [
    ('exec: "h", function: true', "a function needs 'port'"),
    ('port: 80, function: true', "a function needs 'exec'"),
    ('exec: "h", port: 80, when: {source: "x", once: "healthy"}, function: true',
     "jobs[0].when: a function starts on its first connection"),
    ('exec: "h", port: 80, health: {exec: "true", interval: 1, ttl: 3}, function: true',
     "jobs[0].health: a function has no health 'exec'"),
    ('exec: "h", port: 80, function: {idleTimeout: 0}', "jobs[0].function.idleTimeout: must be > 0"),
    ('exec: "h", port: 80, function: {maxConcurrency: 0}',
     "jobs[0].function.maxConcurrency: must be >= 1"),
    ('exec: "h", port: 80, function: {bind: "localhost"}',
     'jobs[0].function.bind: "localhost" is not an IP address'),
    ('exec: "h", port: 80, function: {fdName: "a:b"}', "jobs[0].function.fdName: must be"),
    ('exec: "h", port: 80, function: {idle: "1s"}', "jobs[0].function"),
])
def test_refusals_name_the_field(body: str, message: str) -> None:
    errs = errors('{jobs: [{name: "fn", ' + body + '}]}')
    assert any(message in e and e.startswith("/etc/fn.json5:1") for e in errs), errs


def test_activation_argv_moves_the_socket_to_fd_3() -> None:
    argv = activation_argv(["node", "h.js"], 17)
    assert argv[:2] == ["/bin/bash", "-c"] and argv[-2:] == ["node", "h.js"]
    assert "exec 3<&17 17<&-" in argv[2] and "LISTEN_PID=$$" in argv[2]
    assert "3<&3" not in activation_argv(["h"], 3)[2]  # already at 3: no move (it would close)


def test_histogram_is_cumulative() -> None:
    h = Histogram()
    for v in (0.001, 0.02, 0.02, 7.0):
        h.observe(v)
    b = dict(h.buckets())
    assert b["0.005"] == 1 and b["0.025"] == 3 and b["10.0"] == 4 and b["+Inf"] == 4
    assert h.count == 4 and h.sum == pytest.approx(7.041)
