"""The position-keeping JSON5 parser (autopilot/config/json5parse.py)."""

from __future__ import annotations

import math

import json5
import pytest

from autopilot.config.json5parse import JSON5Error, parse

pytestmark = pytest.mark.timeout(30)

VALID = [
    "{}", "[]", "null", "true", "-0", "1e3", "'single'", '"double"',
    "{unquoted: 1, $dollar_key: 2, _u: 3, 'quoted': 4, \"dq\": 5,}",
    "[1, 2, 3,]",
    "// leading comment\n{a: /* inline */ 1} // trailing",
    "{hex: 0xFF, neg: -0x10, lead: .5, trail: 5., plus: +1, exp: 1E-2}",
    "{inf: Infinity, ninf: -Infinity}",
    "{s: 'it\\'s', d: \"say \\\"hi\\\"\", esc: \"\\t\\n\\u00e9\\x41\\0\"}",
    "{multi: \"line one \\\nline two\"}",
    "{nested: {list: [{a: [1, {b: null}]}]}}",
    "{ünïcode: 1, 'key with spaces': 2}",
]


@pytest.mark.parametrize("text", VALID)
def test_agrees_with_the_json5_package(text: str) -> None:
    assert parse(text).value == json5.loads(text)


def test_nan() -> None:
    assert math.isnan(parse("NaN").value)


@pytest.mark.parametrize("text,line,col,message", [
    ("{a: 1,\n b: [1, 2,,]}", 2, 11, 'unexpected ","'),
    ("{a: 1 b: 2}", 1, 7, 'expected "," or "}" but found "b"'),
    ("[1 2]", 1, 4, 'expected "," or "]" but found "2"'),
    ("{a: 01}", 1, 5, "leading zero"),
    ("{a: 'x}", 1, 5, "unterminated string"),
    ("{a: \"x\ny\"}", 1, 5, "newline inside a string"),
    ("{a: tru}", 1, 5, 'unexpected "t"'),
    ("{a 1}", 1, 4, 'expected ":" after key "a"'),
    ("{1a: 1}", 1, 2, "invalid key"),
    ("{a: 1", 1, 6, "unexpected end of input"),
    ("", 1, 1, "unexpected end of input"),
    ("{} extra", 1, 4, 'unexpected "e"'),
    ("/* never closed", 1, 1, "unterminated comment"),
    ("{a: 0x}", 1, 5, "invalid hexadecimal number"),
    ("{a: '\\x4'}", 1, 6, "invalid escape sequence"),
])
def test_syntax_errors_have_line_and_column(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(JSON5Error) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, col), info.value
    assert message in info.value.message


def test_positions_of_keys_and_items() -> None:
    parsed = parse('{\n  jobs: [\n    {name: "a",\n     port: 80},\n  ],\n}')
    assert parsed.positions[("jobs",)] == (2, 3)
    assert parsed.positions[("jobs", 0)] == (3, 5)
    assert parsed.positions[("jobs", 0, "name")] == (3, 6)
    assert parsed.positions[("jobs", 0, "port")] == (4, 6)


def test_duplicates_and_line_break_commas_are_recorded() -> None:
    parsed = parse('{a: 1, a: 2\n b: [1\n 2]}')
    assert parsed.value == {"a": 2, "b": [1, 2]}
    assert parsed.duplicates == [(("a",), 1, 8)]
    assert parsed.missing_commas == [(1, 12), (2, 7)]


def test_nesting_is_bounded() -> None:
    with pytest.raises(JSON5Error, match="nested deeper than 100 levels"):
        parse("[" * 500 + "]" * 500)
