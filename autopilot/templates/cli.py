"""`autopilot template SOURCE`: render a template once, to stdout or a file."""

from __future__ import annotations

import sys

import click

from autopilot.config.model import ConfigError, ConsulConfig


def render_once(source: str, address: str | None) -> str:
    """One render with fresh reads (no watches); raises on any error."""
    from autopilot.discovery.connection import build_client, resolve
    from autopilot.templates.deps import Dep
    from autopilot.templates.render import make_environment, render

    cfg = resolve(ConsulConfig(address=address) if address else ConsulConfig())
    client = build_client(cfg)
    cache: dict[Dep, object] = {}

    def fetch(dep: Dep) -> object:
        if dep not in cache:
            cache[dep] = dep.fetch(client, timeout=10.0)[1]
        return cache[dep]

    text, _ = render(make_environment(source), source, fetch)
    return text


@click.command("template")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--consul", "address", metavar="ADDR",
              help="catalog address host:port or URL (default: CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
@click.option("--out", "out", metavar="FILE", help="write atomically to FILE instead of stdout")
def template_cmd(source: str, address: str | None, out: str | None) -> None:
    """Render the Jinja2 template SOURCE from the catalog once (see docs/stateful.md)."""
    try:
        text = render_once(source, address)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any failure: message and exit 1
        raise click.ClickException(f"render failed: {type(exc).__name__}: {exc}") from exc
    if out and out != "-":
        from autopilot.templates.write import write_if_changed

        write_if_changed(out, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
