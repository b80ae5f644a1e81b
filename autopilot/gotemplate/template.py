"""A parsed template, the source map of its output, and the entry points the config
loader calls (Go's text/template/template.go)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from autopilot.gotemplate.errors import TemplateError
from autopilot.gotemplate.exec import State
from autopilot.gotemplate.funcs import builtin_funcs
from autopilot.gotemplate.parse import Parser


class Template:
    """A parsed template; ``execute(data)`` renders it."""

    def __init__(self, src: str, name: str = "template",
                 environ: Mapping[str, str] | None = None) -> None:
        self.src = src
        self.name = name
        self.funcs = builtin_funcs(environ if environ is not None else {})
        try:
            parser = Parser(src)
            self.nodes = parser.parse()
        except TemplateError as exc:
            raise self._at(exc.message, exc.column) from None
        self.defines = parser.defines

    def _at(self, message: str, offset: int) -> TemplateError:
        line = self.src.count("\n", 0, offset) + 1
        col = offset - (self.src.rfind("\n", 0, offset) + 1) + 1
        return TemplateError(message, line, col)

    def execute(self, data: Any) -> str:
        return self.execute_mapped(data)[0]

    def execute_mapped(self, data: Any) -> tuple[str, SourceMap]:
        """The output, and where each part of it came from in the template source."""
        out: list[str] = []
        state = State(self, data, out)
        state.run(self.nodes, data)
        return "".join(out), SourceMap(state.chunks)


class SourceMap:
    """Maps an offset in the rendered text back to the template source: text copied from
    the template maps character for character, an action's output maps to the action."""

    def __init__(self, chunks: list[tuple[int, int, bool]]) -> None:
        # (offset in the output, offset in the source, copied verbatim?)
        self.chunks = chunks
        self.starts = [c[0] for c in chunks]

    def source_offset(self, out_offset: int) -> int:
        i = bisect.bisect_right(self.starts, out_offset) - 1
        if i < 0:
            return out_offset
        out_start, src_start, verbatim = self.chunks[i]
        return src_start + (out_offset - out_start) if verbatim else src_start


def render(src: str, environ: Mapping[str, str], name: str = "template") -> str:
    """Render ``src`` with the environment as data (``{{ .HOME }}``) and for ``env``."""
    return render_mapped(src, environ, name)[0]


def render_mapped(src: str, environ: Mapping[str, str],
                  name: str = "template") -> tuple[str, SourceMap]:
    """``render``, plus the map from rendered offsets back to ``src`` offsets."""
    data = dict(environ)
    try:
        return Template(src, name, environ=data).execute_mapped(data)
    except RecursionError:
        raise TemplateError("template nested too deeply", 1, 1) from None
