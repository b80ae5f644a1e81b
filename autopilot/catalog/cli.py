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
@click.option("--check-update-interval", default="5m", show_default=True,
              help="Consul's check_update_interval: an update that changes only a check's "
                   "output reaches the catalog (and wakes watchers) this much later; 0s: "
                   "at once.")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Serve HTTPS with this PEM certificate (chain).")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The PEM private key of --tls-cert.")
@click.option("--tls-ca", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Require client certificates signed by this CA (Consul's "
                   "verify_incoming).")
def catalog(bind: str, port: int, node: str | None, datacenter: str, token: str | None,
            data_dir: str | None, check_update_interval: str, tls_cert: str | None,
            tls_key: str | None, tls_ca: str | None) -> None:
    """Serve a single-node Consul-compatible HTTP API (like `consul agent -dev`).

    For development, tests and the workshop; production uses a real Consul cluster.
    """
    from autopilot.catalog.durations import DurationError, parse_duration
    from autopilot.catalog.server import serve

    try:
        update_every = parse_duration(check_update_interval) / 1e9
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--check-update-interval") from None
    if update_every < 0:
        raise click.BadParameter("must not be negative", param_hint="--check-update-interval")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_ca and not tls_cert:
        raise click.UsageError("--tls-ca needs --tls-cert and --tls-key")

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # hostile or broken clients make aiohttp log a traceback per bad request; they get a 400
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    settings = Settings(node=node or socket.gethostname(), bind=bind, port=port,
                        datacenter=datacenter, token=token or None, data_dir=data_dir,
                        check_update_interval=update_every, tls_cert=tls_cert,
                        tls_key=tls_key, tls_ca=tls_ca)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {bind}:{port}: {exc}") from exc
