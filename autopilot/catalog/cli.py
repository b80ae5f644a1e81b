"""`autopilot catalog`: run the embedded Consul-compatible catalog."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import click

from autopilot.catalog.state import Settings


@click.command("catalog")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", default=8500, show_default=True, type=click.IntRange(0, 65535))
@click.option("--node", default=None, help="Node name (default: the hostname).")
@click.option("--datacenter", default="dc1", show_default=True)
@click.option("--token", default=None, envvar="AUTOPILOT_CATALOG_TOKEN",
              help="Require this ACL token (X-Consul-Token, ?token= or Bearer).")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Persist state here (atomic writes) so a restart keeps KV and sessions.")
def catalog(bind: str, port: int, node: str | None, datacenter: str, token: str | None,
            data_dir: str | None) -> None:
    """Serve a single-node Consul-compatible HTTP API (like `consul agent -dev`).

    For development, tests and the workshop; production uses a real Consul cluster.
    """
    from autopilot.catalog.server import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # hostile or broken clients make aiohttp log a traceback per bad request; they get a 400
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    settings = Settings(node=node or socket.gethostname(), bind=bind, port=port,
                        datacenter=datacenter, token=token or None, data_dir=data_dir)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {bind}:{port}: {exc}") from exc
