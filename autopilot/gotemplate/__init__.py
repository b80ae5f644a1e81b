"""A small Go ``text/template`` engine, enough to render ContainerPilot configs.

ContainerPilot renders its config file as a Go template over the environment before
parsing it; existing configs rely on that syntax, so autopilot speaks the same dialect
rather than Jinja2: actions ``{{ pipeline }}``, trim markers ``{{- -}}``, comments,
``if/else if/else``, ``range`` (lists, maps, integers; ``$i, $v :=``; ``break``/
``continue``), ``with``/``else with``, variables, parenthesised pipelines,
``define``/``template``/``block``, Go's built-in functions and ContainerPilot's extra
ones (``default env split join replaceAll regexReplaceAll loop``). Missing map keys
render as the empty string (Go's ``missingkey=zero`` on a ``map[string]string``).

Values are plain Python objects: str, int, float, bool, None, list, dict.

Laid out like Go's packages: ``lex`` (text and actions into tokens), ``node`` and
``parse`` (the tree), ``exec`` (walking it), ``funcs`` (what a template can call), ``fmt``
(how a value prints) and ``template`` (the entry points).
"""

from autopilot.gotemplate.errors import TemplateError
from autopilot.gotemplate.fmt import go_format, go_sprintf
from autopilot.gotemplate.template import SourceMap, Template, render, render_mapped

__all__ = ["SourceMap", "Template", "TemplateError", "go_format", "go_sprintf", "render",
           "render_mapped"]
