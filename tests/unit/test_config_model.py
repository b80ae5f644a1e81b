"""The config classes' ``repr`` and ``==`` (written once in `autopilot.config.model._Record`
instead of generated per class) answer exactly as ``dataclass``'s own would."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from autopilot.config import model

CLASSES = [c for c in vars(model).values()
           if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == model.__name__]


def twin(cls: type) -> type:
    """The same fields in a class ``dataclass`` makes with its own repr and ==."""
    specs = []
    for f in dataclasses.fields(cls):
        kw: dict[str, Any] = {"repr": f.repr, "compare": f.compare}
        if f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kw["default_factory"] = f.default_factory
        specs.append((f.name, Any, dataclasses.field(**kw)))
    made = dataclasses.make_dataclass(cls.__name__, specs)
    made.__qualname__ = cls.__qualname__
    return made


def samples(cls: type) -> list[dict[str, Any]]:
    """Constructor arguments: the defaults, then every field changed in turn."""
    required = {f.name: "x" for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    out = [required]
    for f in dataclasses.fields(cls):
        out += [{**required, f.name: v} for v in (None, 7, "it's", [1, "a"], math.nan)]
    return out


def test_every_model_class_is_covered() -> None:
    assert len(CLASSES) >= 17
    assert all(issubclass(c, model._Record) for c in CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_repr_and_eq_are_dataclass_s(cls: type) -> None:
    ref = twin(cls)
    for a in samples(cls):
        x, rx = cls(**a), ref(**a)
        assert repr(x) == repr(rx)
        for b in samples(cls):
            y, ry = cls(**b), ref(**b)
            assert (x == y) is (rx == ry), (a, b)
            assert (x != y) is (rx != ry), (a, b)
        assert x.__eq__(object()) is NotImplemented
        assert x != rx  # another class: not equal, as between two dataclasses
    with pytest.raises(TypeError):
        hash(cls(**samples(cls)[0]))
    with pytest.raises(TypeError):
        hash(ref(**samples(cls)[0]))


def test_nested_and_cyclic_repr() -> None:
    cfg = model.Config(jobs=[model.JobConfig(name="a")])
    assert repr(cfg).startswith("Config(path='', consul=None, logging=LoggingConfig(level=")
    assert "jobs=[JobConfig(name='a', exec=None," in repr(cfg)
    job = model.JobConfig(name="loop")
    job.meta = {"self": job}  # type: ignore[dict-item]
    assert repr(job).count("...") == 1 and "meta={'self': ...}" in repr(job)
    assert cfg == model.Config(jobs=[model.JobConfig(name="a")])
    assert cfg != model.Config(jobs=[model.JobConfig(name="b")])


def test_validator_imports_optional_sections_only_when_used() -> None:
    """A config without consul, election, function, watches, telemetry or templates is
    validated without importing their sections; one with them gets them all."""
    import subprocess
    import sys
    import textwrap

    from tests.helpers import ROOT

    code = textwrap.dedent("""
        import sys
        from autopilot.config import load_text
        opt = [f"autopilot.config.validate.{s}" for s in
               ("consul", "election", "function", "watches", "telemetry", "templates")]
        cfg = load_text('{jobs: [{name: "a", exec: "true", health: {exec: "true", '
                        'interval: 1, ttl: 5}, when: {interval: "1s"}}], control: {}}', "a.json5")
        assert cfg.jobs[0].health is not None
        assert not [m for m in opt if m in sys.modules], sorted(sys.modules)
        cfg = load_text('{consul: "localhost:8500", jobs: [{name: "bb", exec: "true", port: 80, '
                        'health: {exec: "true", interval: 1, ttl: 5}}], '
                        'watches: [{name: "cc", interval: 3}]}', "b.json5")
        assert cfg.consul.address == "localhost:8500" and cfg.watches[0].name == "cc"
        assert all(m in sys.modules for m in opt)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr
