"""The pipeline: read the file -> Go template over the environment -> JSON5 -> validate.

Every stage reports problems as ``ConfigError`` whose lines start with ``file:line``
(and ``:column`` for syntax errors), so an operator can jump straight to the spot.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autopilot.config.json5parse import JSON5Error, Parsed, parse
from autopilot.config.model import Config, ConfigError

if TYPE_CHECKING:
    from autopilot import gotemplate


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


def _line_starts(text: str) -> list[int]:
    starts = [0]
    i = text.find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


class Rendered:
    """The rendered text, and how to turn its (line, column) into the source file's."""

    def __init__(self, text: str, source: str, smap: gotemplate.SourceMap | None = None):
        self.text = text
        self.source = source
        self.smap = smap
        self._out_lines = _line_starts(text)
        self._src_lines = _line_starts(source) if smap is not None else self._out_lines

    def to_source(self, line: int, column: int) -> tuple[int, int]:
        if self.smap is None or not self._out_lines:
            return line, column
        line = min(max(line, 1), len(self._out_lines))
        offset = min(self._out_lines[line - 1] + column - 1, len(self.text))
        src = min(self.smap.source_offset(offset), len(self.source))
        src_line = bisect.bisect_right(self._src_lines, src)
        return src_line, src - self._src_lines[src_line - 1] + 1


def render_mapped(text: str, path: str, environ: Mapping[str, str] | None = None) -> Rendered:
    """Render config text as a Go text/template whose data is the environment.

    Text without ``{{`` has no action, so it renders to itself: the template engine is then
    not even imported (most configs; it is the largest part of a supervisor's start-up)."""
    if "{{" not in text:
        return Rendered(text, text)
    from autopilot import gotemplate

    env = dict(os.environ if environ is None else environ)
    try:
        out, smap = gotemplate.render_mapped(text, env, name=path)
    except gotemplate.TemplateError as exc:
        raise ConfigError(_excerpt(f"{path}:{exc.line}:{exc.column}: template error: "
                                   f"{exc.message}", text, exc.line, exc.column), path) from None
    return Rendered(out, text, smap)


def render_text(text: str, path: str, environ: Mapping[str, str] | None = None) -> str:
    """Render config text as a Go text/template whose data is the environment."""
    return render_mapped(text, path, environ).text


def render(path: str, environ: Mapping[str, str] | None = None) -> str:
    """The config file after the Go template, before JSON5 (what `autopilot render` shows)."""
    return render_text(_read(path), path, environ)


def _excerpt(message: str, text: str, line: int, column: int) -> str:
    """The message, then the offending line and a caret under the column."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return message
    src = lines[line - 1].rstrip("\r").replace("\t", " ")
    return f"{message}\n    {src}\n    {' ' * max(column - 1, 0)}^"


def parse_text(text: str | Rendered, path: str) -> Parsed:
    """JSON5 -> value and positions; syntax errors name file:line:column (of the source
    file; the quoted line is the rendered one, which is what the parser saw)."""
    rendered = text if isinstance(text, Rendered) else Rendered(text, text)
    try:
        return parse(rendered.text)
    except JSON5Error as exc:
        line, col = rendered.to_source(exc.line, exc.column)
        where = f"{path}:{line}:{col}: parse error: {exc.message}"
        if (line, col) != (exc.line, exc.column):
            where += f" (rendered line {exc.line}, column {exc.column})"
        raise ConfigError(_excerpt(where, rendered.text, exc.line, exc.column), path) from None


def load_raw(path: str, environ: Mapping[str, str] | None = None) -> Any:
    """Render and parse only, no validation: enough for the client verbs to find the
    control socket in a config that would not fully validate here."""
    return parse_text(render(path, environ), path).value


def load_text(text: str, path: str = "<config>",
              environ: Mapping[str, str] | None = None) -> Config:
    """Like ``load`` for config text that is not (or not yet) in a file."""
    # imported here: client verbs use load_raw only and must start fast
    from autopilot.config.validate import Validator, format_path

    rendered = render_mapped(text, path, environ)
    parsed = parse_text(rendered, path)
    # report lines of the file as written, not of the rendered text
    positions = {k: rendered.to_source(*v) for k, v in parsed.positions.items()}
    checker = Validator(path, positions)
    for dup_path, line, col in parsed.duplicates:
        line, _ = rendered.to_source(line, col)
        checker.warnings.append(f"{path}:{line}: {format_path(dup_path)}: duplicate key "
                                "(the last one wins)")
    for line, col in parsed.missing_commas:
        line, col = rendered.to_source(line, col)
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
