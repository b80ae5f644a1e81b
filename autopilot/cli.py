"""The `autopilot` command. Each verb lives next to the code it drives; this file only maps
names to them, importing a verb's module when it is used (start-up stays fast)."""

from __future__ import annotations

import importlib

import click

#: verb -> "module:attribute" of a click command
COMMANDS = {
    "run": "autopilot.commands:run",
    "render": "autopilot.commands:render",
    "version": "autopilot.commands:version",
    "reload": "autopilot.control.cli:reload_cmd",
    "ctl": "autopilot.control.cli:ctl",
    "catalog": "autopilot.catalog.cli:catalog",
    "template": "autopilot.templates:template_cmd",
    "lab": "autopilot.lab.cli:lab",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """autopilot: the supervisor a container runs as its entrypoint.

    It runs the container's jobs, health-checks them, registers them in Consul, watches
    what they depend on, renders their config files and elects a primary for stateful
    services. A drop-in for ContainerPilot v3 (see `containerpilot --help`).
    """
