"""`autopilot ctl …` and `autopilot reload`: the control socket's client verbs.

A client verb needs only the socket path, found in this order: ``--socket PATH``, the
``AUTOPILOT_SOCKET`` environment variable, the ``control.socket`` of ``-c/--config FILE`` (or of
the config named by ``AUTOPILOT``/``CONTAINERPILOT``; read with a minimal render + JSON5, no
validation), else ``/var/run/containerpilot.socket``.

Exit status: 0 done, 1 the request failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from autopilot.control.client import DEFAULT_SOCKET, ControlClient, ControlError

SOCKET_ENV = "AUTOPILOT_SOCKET"
CONFIG_ENVS = ("AUTOPILOT", "CONTAINERPILOT")


def socket_from_config(path: str) -> str | None:
    """`control.socket` of a config file, read without validating anything else."""
    data = _read_raw(path)
    if not isinstance(data, dict):
        return None
    control = next((v for k, v in data.items() if k.lower() == "control"), None)
    if not isinstance(control, dict):
        return None
    sock = next((v for k, v in control.items() if k.lower() == "socket"), None)
    return sock if isinstance(sock, str) and sock else None


def _read_raw(path: str) -> Any:
    """Render + JSON5 through the config loader (``load_raw``), imported only when a client
    verb must read a config to find the socket."""
    from autopilot.config import load_raw

    return load_raw(path, dict(os.environ))


def find_socket(socket: str | None, config: str | None) -> str:
    if socket:
        return socket
    if os.environ.get(SOCKET_ENV):
        return os.environ[SOCKET_ENV]
    explicit = config is not None
    if config is None:
        config = next((os.environ[e] for e in CONFIG_ENVS if os.environ.get(e)), None)
    if config:
        try:
            found = socket_from_config(config)
        except Exception as exc:  # noqa: BLE001 - any unreadable config
            if explicit:
                raise click.UsageError(f"cannot read the socket path from {config}: {exc}") from exc
            found = None
        if found:
            return found
    return DEFAULT_SOCKET


def _common(fn: Any) -> Any:
    """`--socket`/`-c` on every verb (also accepted before the verb, on `ctl` itself)."""
    fn = click.option("-c", "--config", "config", metavar="FILE", default=None,
                      help="Read the socket path from this config's control.socket.")(fn)
    fn = click.option("--socket", "socket", metavar="PATH", default=None,
                      help=f"Control socket (default: ${SOCKET_ENV}, the config's "
                           f"control.socket, else {DEFAULT_SOCKET}).")(fn)
    return fn


def _client(socket: str | None, config: str | None) -> ControlClient:
    parent = click.get_current_context().find_root().meta
    return ControlClient(find_socket(socket or parent.get("ctl.socket"),
                                     config or parent.get("ctl.config")))


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ControlError as exc:
        click.echo(f"autopilot: {exc}", err=True)
        sys.exit(1)


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


@click.group("ctl", context_settings={"help_option_names": ["-h", "--help"]})
@_common
@click.pass_context
def ctl(ctx: click.Context, socket: str | None, config: str | None) -> None:
    """Talk to a running autopilot over its control socket."""
    ctx.find_root().meta["ctl.socket"] = socket
    ctx.find_root().meta["ctl.config"] = config


@ctl.command("ping")
@_common
def ping(socket: str | None, config: str | None) -> None:
    """Check that autopilot answers (prints `ok`)."""
    _call(_client(socket, config).ping)
    click.echo("ok")


@ctl.command("reload")
@_common
def ctl_reload(socket: str | None, config: str | None) -> None:
    """Re-read the config; only changed jobs restart. A refused config keeps the old one."""
    _call(_client(socket, config).reload)
    click.echo("reloaded")


@click.command("reload", context_settings={"help_option_names": ["-h", "--help"]})
@_common
def reload_cmd(socket: str | None, config: str | None) -> None:
    """Re-read the config of a running autopilot (same as `autopilot ctl reload`)."""
    _call(_client(socket, config).reload)
    click.echo("reloaded")


@ctl.command("maintenance")
@click.argument("state", type=click.Choice(["enable", "disable"]))
@_common
def maintenance(state: str, socket: str | None, config: str | None) -> None:
    """Enter (enable) or leave (disable) maintenance mode."""
    _call(_client(socket, config).maintenance, state == "enable")
    click.echo(f"maintenance {state}d")


@ctl.command("putenv")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@_common
def putenv(pairs: tuple[str, ...], socket: str | None, config: str | None) -> None:
    """Set environment variables for processes autopilot starts from now on."""
    _call(_client(socket, config).putenv, _pairs(pairs, "KEY=VALUE"))


@ctl.command("putmetric")
@click.argument("pairs", nargs=-1, required=True, metavar="NAME=VALUE...")
@_common
def putmetric(pairs: tuple[str, ...], socket: str | None, config: str | None) -> None:
    """Record sensor values: counter += v, gauge = v, histogram/summary observe v."""
    values: dict[str, float] = {}
    for key, value in _pairs(pairs, "NAME=VALUE").items():
        try:
            values[key] = float(value)
        except ValueError as exc:
            raise click.BadParameter(f"{key}: {value!r} is not a number",
                                     param_hint="NAME=VALUE") from exc
    _call(_client(socket, config).putmetric, values)


@ctl.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")
@_common
def status(as_json: bool, socket: str | None, config: str | None) -> None:
    """Show jobs, their health, registrations and roles."""
    data = _call(_client(socket, config).status)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    click.echo(format_status(data))


@ctl.command("job")
@click.argument("name")
@click.argument("action", type=click.Choice(["start", "stop", "restart", "signal"]))
@click.argument("sig", required=False, metavar="[SIGNAL]")
@_common
def job(name: str, action: str, sig: str | None, socket: str | None,
        config: str | None) -> None:
    """Start, stop or restart one job, or send a signal to its process (not its group)."""
    if action == "signal" and not sig:
        raise click.UsageError("`job NAME signal` needs a signal, e.g. SIGHUP")
    if action != "signal" and sig:
        raise click.UsageError(f"`job NAME {action}` takes no signal")
    data = _call(_client(socket, config).job, name, action, sig)
    info = data.get("job") or {}
    click.echo(f"{name}: {action} done (status {info.get('status')}, pid {info.get('pid')})")


def format_status(data: dict[str, Any]) -> str:
    lines = [f"autopilot {data.get('version', '?')} pid {data.get('pid', '?')}"
             + ("  [maintenance]" if data.get("maintenance") else "")]
    rows = [("JOB", "STATUS", "PID", "RUNS", "REGISTERED", "ROLE")]
    for j in data.get("jobs", []):
        rows.append((str(j.get("name")), str(j.get("status")), _dash(j.get("pid")),
                     _dash(j.get("runs")), "yes" if j.get("registered") else "no",
                     _dash(j.get("role"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)
