"""The pipeline: read the file -> Go template over the environment -> JSON5 -> validate.

Every stage reports problems as ``ConfigError`` whose lines start with ``file:line``
(and ``:column`` for syntax errors), so an operator can jump straight to the spot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from autopilot.config import gotemplate
from autopilot.config.json5parse import JSON5Error, Parsed, parse
from autopilot.config.model import Config, ConfigError


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file", path) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          path) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", path) from None


def render_text(text: str, path: str, environ: Mapping[str, str] | None = None) -> str:
    """Render config text as a Go text/template whose data is the environment."""
    env = dict(os.environ if environ is None else environ)
    try:
        return gotemplate.render(text, env, name=path)
    except gotemplate.TemplateError as exc:
        raise ConfigError(_excerpt(f"{path}:{exc.line}:{exc.column}: template error: "
                                   f"{exc.message}", text, exc.line, exc.column), path) from None


def render(path: str, environ: Mapping[str, str] | None = None) -> str:
    """The config file after the Go template, before JSON5 (what `autopilot render` shows)."""
    return render_text(_read(path), path, environ)


def _excerpt(message: str, text: str, line: int, column: int) -> str:
    """The message, then the offending line and a caret under the column."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return message
    src = lines[line - 1].replace("\t", " ")
    return f"{message}\n    {src}\n    {' ' * max(column - 1, 0)}^"


def parse_text(text: str, path: str) -> Parsed:
    """JSON5 -> value and positions; syntax errors name file:line:column."""
    try:
        return parse(text)
    except JSON5Error as exc:
        raise ConfigError(_excerpt(f"{path}:{exc.line}:{exc.column}: parse error: "
                                   f"{exc.message}", text, exc.line, exc.column), path) from None


def load_raw(path: str, environ: Mapping[str, str] | None = None) -> Any:
    """Render and parse only, no validation: enough for the client verbs to find the
    control socket in a config that would not fully validate here."""
    return parse_text(render(path, environ), path).value


def load_text(text: str, path: str = "<config>",
              environ: Mapping[str, str] | None = None) -> Config:
    """Like ``load`` for config text that is not (or not yet) in a file."""
    # imported here: client verbs use load_raw only and must start fast
    from autopilot.config.validate import Validator, format_path

    parsed = parse_text(render_text(text, path, environ), path)
    checker = Validator(path, parsed.positions)
    for dup_path, line, _col in parsed.duplicates:
        checker.warnings.append(f"{path}:{line}: {format_path(dup_path)}: duplicate key "
                                "(the last one wins)")
    for line, col in parsed.missing_commas:
        checker.warnings.append(f"{path}:{line}:{col}: missing comma (accepted because a line "
                                "break follows; ContainerPilot refuses this)")
    cfg = checker.config(parsed.value, path)
    if checker.errors:
        raise ConfigError("\n".join(checker.errors), path, errors=checker.errors)
    cfg.warnings = checker.warnings
    return cfg


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, render, parse and validate a config file; ``environ`` defaults to os.environ.

    Raises ``ConfigError`` listing every problem found, one per line, each prefixed with
    the file name and line."""
    return load_text(_read(path), path, environ)
