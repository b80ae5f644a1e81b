"""Unit checks of the catalog's Go-compatible pieces: durations, strict decoding, filters."""

from __future__ import annotations

import pytest

from autopilot.catalog import decode
from autopilot.catalog.durations import DurationError, format_duration, parse_duration
from autopilot.catalog.filter import FilterError, compile_filter

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("text,ns,back", [
    ("10s", 10 * 10**9, "10s"), ("1m30s", 90 * 10**9, "1m30s"), ("24h", 86400 * 10**9,
                                                                   "24h0m0s"),
    ("1.5s", 1_500_000_000, "1.5s"), ("500ms", 500_000_000, "500ms"), ("0", 0, "0s"),
    ("2us", 2000, "2µs"), ("1h0m0.5s", 3600 * 10**9 + 500_000_000, "1h0m0.5s"),
])
def test_durations_roundtrip(text, ns, back):
    assert parse_duration(text) == ns
    assert format_duration(ns) == back


@pytest.mark.parametrize("text,msg", [
    ("abc", 'time: invalid duration "abc"'), ("10", 'time: missing unit in duration "10"'),
    ("", 'time: invalid duration ""'), ("5x", 'time: invalid duration "5x"'),
])
def test_duration_errors_quote_go(text, msg):
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    assert str(err.value) == msg


def test_conform_is_case_insensitive_and_strict():
    out = decode.conform({"name": "x", "CHECK": {"ttl": "1s", "deregister_critical_service_after": "1m"}},
                         decode.SERVICE)
    assert out == {"Name": "x", "Check": {"TTL": "1s", "DeregisterCriticalServiceAfter": "1m"}}
    with pytest.raises(decode.DecodeError, match='unknown field "Nme"'):
        decode.conform({"Nme": "x"}, decode.SERVICE)
    with pytest.raises(decode.DecodeError, match="cannot unmarshal string"):
        decode.conform({"Port": "80"}, decode.SERVICE)


@pytest.mark.parametrize("expr", ["", "Service.ID ==", "(a == b", "a ~ b", "a is full",
                                  'a matches "("'])
def test_filter_syntax_errors(expr):
    with pytest.raises(FilterError):
        compile_filter(expr)


def test_filter_semantics():
    item = {"Service": {"Tags": ["x"], "Port": 80, "Meta": {}},
            "Checks": [{"Status": "passing"}, {"Status": "critical"}]}
    assert compile_filter("Checks.Status == critical")(item)
    assert not compile_filter("Checks.Status != critical")(item)
    assert compile_filter("x in Service.Tags and Service.Port == 80")(item)
    assert compile_filter("Service.Meta is empty and Service.Missing is empty")(item)
    assert not compile_filter("not Service.Port == 80")(item)
