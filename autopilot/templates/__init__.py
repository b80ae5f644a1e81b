"""Catalog-driven configuration files (Jinja2): render, watch, re-render, reload.

The supervisor calls ``components(ctx)``: one :class:`Template` per ``templates[]`` entry.
``template_cmd`` is `autopilot template SOURCE`. See docs/stateful.md.
"""

from __future__ import annotations

from autopilot.context import Context
from autopilot.templates.cli import template_cmd
from autopilot.templates.component import Template


def components(ctx: Context) -> list[Template]:
    return [Template(ctx, cfg) for cfg in ctx.config.templates]


__all__ = ["Template", "components", "template_cmd"]
