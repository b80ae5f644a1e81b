"""Catalog-driven configuration files (Jinja2): render, watch, re-render, reload.

The supervisor calls ``components(ctx)``: one :class:`Template` per ``templates[]`` entry.
``template_cmd`` is `autopilot template SOURCE`. See docs/stateful.md.
"""

from __future__ import annotations

from typing import Any

from autopilot.context import Context
from autopilot.templates.component import Template


def __getattr__(name: str) -> Any:
    """``template_cmd`` on first use: the supervisor never loads click for its templates."""
    if name == "template_cmd":
        from autopilot.templates.cli import template_cmd

        return template_cmd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def components(ctx: Context) -> list[Template]:
    return [Template(ctx, cfg) for cfg in ctx.config.templates]


__all__ = ["Template", "components", "template_cmd"]
