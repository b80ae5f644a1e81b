"""`autopilot run`, `autopilot render` and `autopilot version`.

Exit status (documented in docs/configuration.md):
0 success; 2 a config error (unreadable file, template, syntax or validation error) or a
usage error; `run` otherwise exits with the supervisor's status.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import click

import autopilot

EXIT_OK = 0
EXIT_CONFIG = 2
#: environment variables naming the config file, in order of precedence
CONFIG_ENVS = ("AUTOPILOT", "CONTAINERPILOT")


def config_path(*candidates: str | None, envs: tuple[str, ...] = CONFIG_ENVS,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The first non-empty candidate, else the first non-empty environment variable."""
    env = os.environ if environ is None else environ
    for c in candidates:
        if c:
            return c
    return next((env[e] for e in envs if env.get(e)), None)


def version_text() -> str:
    return f"Version: {autopilot.__version__}\nGitHash: {git_hash()}"


def git_hash() -> str:
    """The build's hash; from a source checkout, read .git without running git."""
    if autopilot.GIT_HASH != "dev":
        return autopilot.GIT_HASH
    git = Path(autopilot.__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                head = ref_file.read_text().strip()
            else:
                packed = (git / "packed-refs").read_text().splitlines()
                head = next(line.split()[0] for line in packed if line.endswith(" " + ref))
        return head[:7] if len(head) >= 7 else "dev"
    except (OSError, StopIteration, IndexError):
        return "dev"


def write_rendered(text: str, out: str | None) -> None:
    """Print to stdout (``out`` empty or ``-``) or write the file atomically, mode 0644."""
    if not out or out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".render-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(message, err=True)
    sys.exit(code)


@click.command()
@click.argument("config", required=False, metavar="[CONFIG]")
@click.option("-c", "--config", "config_opt", metavar="FILE",
              help="Config file (else $AUTOPILOT, else $CONTAINERPILOT).")
def run(config: str | None, config_opt: str | None) -> None:
    """Supervise the jobs of CONFIG until shutdown; exit with the supervisor's status."""
    path = config_path(config, config_opt)
    if not path:
        fail("autopilot: no config: give CONFIG, -c FILE, or set AUTOPILOT or CONTAINERPILOT")
    from autopilot.entry import supervise

    sys.exit(supervise(path))


@click.command()
@click.argument("config", required=False, metavar="[CONFIG]")
@click.option("-c", "--config", "config_opt", metavar="FILE",
              help="Config file (else $AUTOPILOT, else $CONTAINERPILOT).")
@click.option("--check", is_flag=True,
              help="Validate the whole config instead of printing it; errors on stderr.")
@click.option("-o", "--out", metavar="PATH",
              help="Write the rendered text to PATH (mode 0644) instead of stdout.")
def render(config: str | None, config_opt: str | None, check: bool, out: str | None) -> None:
    """Print CONFIG after its Go template is applied (before JSON5 parsing).

    With --check, load and validate it fully and report every problem found."""
    from autopilot.config import ConfigError, load
    from autopilot.config import render as render_config

    path = config_path(config, config_opt)
    if not path:
        fail("autopilot: no config: give CONFIG, -c FILE, or set AUTOPILOT or CONTAINERPILOT")
    assert path is not None
    try:
        if check:
            cfg = load(path)
        else:
            text = render_config(path)
    except ConfigError as exc:
        fail(str(exc))
    if check:
        for warning in cfg.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"{path}: OK ({len(cfg.jobs)} jobs, {len(cfg.watches)} watches, "
                   f"discovery {'on' if cfg.consul else 'off'})")
        return
    try:
        write_rendered(text, out)
    except OSError as exc:
        fail(f"autopilot: cannot write {out}: {exc.strerror}", 1)


@click.command()
def version() -> None:
    """Print the version and the build's git hash."""
    click.echo(version_text())
