"""Bounded, seeded fuzzing: whatever the input, loading ends in a Config or a ConfigError
(never another exception), and the template engine in output or a TemplateError."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from autopilot.config import ConfigError, load_text
from autopilot.config.json5parse import parse
from autopilot.config.validate import Validator
from autopilot.gotemplate import TemplateError, go_sprintf, render

pytestmark = pytest.mark.timeout(60)

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "configs")
                  .rglob("*.json5"))
ENV = {"CONSUL": "consul.example.com", "PORT": "8080"}
VALUES: list[Any] = [None, True, False, 0, -1, 1.5, float("nan"), float("inf"), 10 ** 30, "",
                     "x", "0660", "5s", "-1s", "SIGHUP", "unlimited", [], [1], ["a", None], {},
                     {"a": 1}, {"name": "a"}, "eth0:inet7", "static:x", 1e300]
KEYS = ["name", "exec", "port", "health", "when", "interval", "ttl", "timeout", "source", "once",
        "each", "restarts", "election", "sessionTTL", "key", "keyprefix", "mode", "wait", "ready",
        "job", "role", "metrics", "type", "consul", "tls", "stopSignal", "restartBackoff", "env",
        "meta", "templates", "mainJob", "control", "telemetry", "watches", "jobs", "logging"]


def texts() -> list[str]:
    return [p.read_text() for p in FIXTURES]


def mutate(rng: random.Random, v: Any) -> Any:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            r = rng.random()
            if r < 0.1:
                out[k] = rng.choice(VALUES)
            elif r >= 0.15:
                out[k] = mutate(rng, x)
        if rng.random() < 0.1:
            out[rng.choice(KEYS)] = rng.choice(VALUES)
        return out
    if isinstance(v, list):
        return [mutate(rng, x) if rng.random() < 0.9 else rng.choice(VALUES) for x in v]
    return rng.choice(VALUES) if rng.random() < 0.2 else v


def test_validator_never_crashes_on_mistyped_values() -> None:
    rng = random.Random(4)
    bases = []
    for text in texts():
        try:
            bases.append(parse(render(text, ENV)).value)
        except Exception:  # noqa: BLE001 - the invalid fixtures
            pass
    assert len(bases) > 20
    for _ in range(1500):
        checker = Validator("f.json5", {})
        checker.config(mutate(rng, rng.choice(bases)), "f.json5")


def test_loader_never_crashes_on_mangled_text() -> None:
    rng = random.Random(1)
    alphabet = list("{}[]:,\"'/*\\ \n\t-+.0123456789abcxyzIN|$()=`") + [
        "{{", "}}", "{{-", "-}}", "null", "true", "[]", "{}"]
    sources = texts()
    for _ in range(1500):
        chars = list(rng.choice(sources))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(chars) + 1)
            r = rng.random()
            if r < 0.4 and chars:
                del chars[min(i, len(chars) - 1)]
            elif r < 0.8:
                chars.insert(i, rng.choice(alphabet))
            else:
                j = rng.randrange(len(chars) + 1)
                chars[i:i] = chars[j:j + rng.randint(1, 30)]
        try:
            load_text("".join(chars), "f.json5", ENV)
        except ConfigError:
            pass


def test_template_engine_never_crashes() -> None:
    rng = random.Random(2)
    toks = ["{{", "}}", "{{-", "-}}", " ", ".FOO", ".X", "$", "$x", ":=", "=", "|", "(", ")",
            "if", "else", "end", "range", "with", "define", "template", "block", "break",
            "continue", '"s"', "`r`", "'c'", "1", "-2", "3.5", "0x1", "nil", "true", "eq", "lt",
            "and", "or", "not", "len", "index", "slice", "printf", "print", "default", "env",
            "split", "join", "replaceAll", "regexReplaceAll", "loop", '"%d"', '"%c %q %*d"', ",",
            "/*", "*/", "text", "\n", "\\", "99999999999"]
    for _ in range(3000):
        src = "".join(rng.choice(toks) for _ in range(rng.randint(1, 25)))
        try:
            render(src, {"FOO": "a,b", "X": "3"})
        except TemplateError:
            pass


def test_printf_never_crashes() -> None:
    rng = random.Random(3)
    parts = list("%dsvqxXobcUefgGtT*.-+# 0a") + ["5", "12", "%%"]
    for _ in range(3000):
        fmt = "".join(rng.choice(parts) for _ in range(rng.randint(1, 8)))
        go_sprintf(fmt, *[rng.choice(VALUES) for _ in range(rng.randint(0, 3))])
