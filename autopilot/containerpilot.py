"""`containerpilot`: ContainerPilot v3's command line, mapped onto autopilot.

An image that runs ``containerpilot -config /etc/cp.json5`` keeps working when the binary
is replaced by this entry point. Flags are parsed the way Go's ``flag`` package does it:
``-x`` or ``--x``, ``-x=v`` or ``-x v``, booleans as ``-x`` or ``-x=false``, parsing stops
at the first non-flag argument or at ``--``.

Which action runs follows ContainerPilot's precedence: -version > -template > -reload >
-maintenance > -putenv > -putmetric > -ping > run. Exit status: 0 done, 1 a control
request failed, 2 a usage or config error (run: the supervisor's status).
``AUTOPILOT_EXIT_CODES=containerpilot`` gives ContainerPilot's instead (docs/containerpilot.md).

Two ContainerPilot behaviours are kept here that ``autopilot run`` does differently: a
reload restarts every job (``AUTOPILOT_RELOAD=diff`` restarts only the changed ones), and
``-putmetric`` for a metric the config does not define is accepted and ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

DEFAULT_SOCKET = "/var/run/containerpilot.socket"
SOCKET_ENV = "AUTOPILOT_SOCKET"
#: the config file when -config is not given (ContainerPilot reads CONTAINERPILOT only)
CONFIG_ENVS = ("CONTAINERPILOT", "AUTOPILOT")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RELOAD_ENV = "AUTOPILOT_RELOAD"  # "all" (default here) or "diff"
EXIT_CODES_ENV = "AUTOPILOT_EXIT_CODES"  # "autopilot" (default) or "containerpilot"

BOOL_FLAGS = {"template", "version", "reload", "ping"}
STRING_FLAGS = {"config", "out", "maintenance"}
LIST_FLAGS = {"putenv", "putmetric"}

USAGE = """\
usage: containerpilot [flags]     (autopilot's ContainerPilot-compatible entry point)

  -config PATH        the JSON5 config (default: $CONTAINERPILOT, then $AUTOPILOT)
  -template           print the config after its Go template is applied, then exit
  -out PATH           with -template: write there (mode 0644) instead of stdout ("-")
  -version            print the version and git hash, then exit
  -reload             ask the running supervisor to reload its config
  -maintenance MODE   "enable" or "disable" maintenance mode in the running supervisor
  -putenv KEY=VALUE   set a variable for jobs started from now on (repeatable)
  -putmetric KEY=VAL  record a value for a configured metric (repeatable)
  -ping               check that the control socket answers; prints "ok"

Without any of these, the supervisor runs the config. Flags take one or two dashes and
"-flag=value" or "-flag value". See also `autopilot --help`.
"""


class UsageError(Exception):
    """Bad flags; the message is printed with the usage text, exit status 2."""


class BadValue(UsageError):
    """A flag's value is refused; the message alone is printed, exit status 2."""


class Flags:
    """The parsed command line.

    A plain class, not a dataclass: this module is imported before `dispatch` keeps
    ``inspect`` out of the supervisor (`autopilot.entry`), and ``import dataclasses``
    here would load ``inspect``, ``ast`` and ``dis`` for real (about 1 MB in every
    ``containerpilot`` run)."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.template = False
        self.out: str | None = None
        self.version = False
        self.reload = False
        self.maintenance: str | None = None
        self.putenv: list[str] = []
        self.putmetric: list[str] = []
        self.ping = False
        self.help = False
        self.rest: list[str] = []


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_flags(argv: Sequence[str]) -> Flags:
    """Go ``flag`` semantics over ContainerPilot's flag set."""
    flags = Flags()
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if len(arg) < 2 or arg[0] != "-":
            break  # first non-flag argument
        if arg == "--":
            i += 1
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise UsageError(f"bad flag syntax: {arg}")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        i += 1
        if name in ("h", "help"):
            flags.help = True
            continue
        if name in BOOL_FLAGS:
            if value is None:
                setattr(flags, name, True)
            elif value in _TRUE or value in _FALSE:
                setattr(flags, name, value in _TRUE)
            else:
                raise UsageError(f'invalid boolean value "{value}" for -{name}')
            continue
        if name in STRING_FLAGS or name in LIST_FLAGS:
            if value is None:
                if i >= len(args):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            if name in LIST_FLAGS:
                getattr(flags, name).append(value)
            else:
                setattr(flags, name, value)
            continue
        raise UsageError(f"flag provided but not defined: -{name}")
    flags.rest = args[i:]
    return flags


def find_config(flags: Flags, environ: Mapping[str, str]) -> str | None:
    if flags.config:
        return flags.config
    return next((environ[e] for e in CONFIG_ENVS if environ.get(e)), None)


def find_socket(config: str | None, environ: Mapping[str, str]) -> str:
    """The config's ``control.socket`` when the file can be rendered and parsed (no full
    validation: a client verb must work where Consul or eth0 are missing), else
    ``$AUTOPILOT_SOCKET``, else the default."""
    if config:
        try:
            from autopilot.config import load_raw

            raw = load_raw(config, environ)
        except Exception:  # noqa: BLE001 - any unreadable config: fall back
            raw = None
        if isinstance(raw, dict):
            control = next((v for k, v in raw.items() if k.lower() == "control"), None)
            if isinstance(control, dict):
                sock = next((v for k, v in control.items() if k.lower() == "socket"), None)
                if isinstance(sock, str) and sock:
                    return sock
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def parse_pairs(flag: str, items: list[str]) -> dict[str, str]:
    """``K=V`` items; the value may contain ``=``; a bare ``K`` is refused (as in CP)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadValue(f"-{flag} {item!r}: expected KEY=VALUE (to clear a variable, "
                             f"send an empty value: -{flag} {key or 'KEY'}=)")
        out[key] = value
    return out


def _client_call(config: str | None, environ: Mapping[str, str], action: str,
                 *args: object) -> int:
    from autopilot.control.client import ControlClient, ControlError

    client = ControlClient(find_socket(config, environ))
    try:
        getattr(client, action)(*args)
    except ControlError as exc:
        print(f"containerpilot: {action} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _putmetric(config: str | None, environ: Mapping[str, str], values: dict[str, str]) -> int:
    """Send each value on its own: ContainerPilot ignored a name its config does not define
    (sensor scripts under ``set -e`` rely on that), so such a name is reported on stderr and
    skipped, and the known ones are still recorded. Any other refusal is a failure."""
    from autopilot.control.client import ControlClient, ControlError

    client = ControlClient(find_socket(config, environ))
    code = EXIT_OK
    for key, value in values.items():
        try:
            client.putmetric({key: value})
        except ControlError as exc:
            if exc.status == 400 and ("unknown metric" in exc.message
                                      or "telemetry is not configured" in exc.message):
                print(f"containerpilot: -putmetric {key}: not a configured metric; ignored",
                      file=sys.stderr)
                continue
            print(f"containerpilot: putmetric failed: {exc}", file=sys.stderr)
            code = EXIT_FAILED
    return code


def containerpilot_status(code: int, environ: Mapping[str, str], running: bool) -> int:
    """``AUTOPILOT_EXIT_CODES=containerpilot``: ContainerPilot's exit statuses. A supervisor
    that ran exits 0 whatever its jobs did (ContainerPilot never propagated them, #526);
    a config or usage error, or a failed client call, exits 1 (its ``log.Fatal``)."""
    if (environ.get(EXIT_CODES_ENV) or "autopilot").strip().lower() != "containerpilot":
        return code
    if running:
        return EXIT_FAILED if code == EXIT_USAGE else EXIT_OK
    return EXIT_FAILED if code else EXIT_OK


def dispatch(flags: Flags, environ: Mapping[str, str]) -> int:
    """Run the single action the flags ask for, in ContainerPilot's precedence."""
    if flags.help:
        sys.stdout.write(USAGE)
        return EXIT_OK
    config = find_config(flags, environ)
    if flags.version:
        from autopilot.commands import version_text

        print(version_text())
        return EXIT_OK
    if flags.template:
        if not config:
            print("containerpilot: -config flag is required", file=sys.stderr)
            return EXIT_USAGE
        from autopilot.commands import write_rendered
        from autopilot.config import ConfigError, render

        try:
            text = render(config, environ)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        try:
            write_rendered(text, flags.out)
        except OSError as exc:
            print(f"containerpilot: cannot write {flags.out}: {exc.strerror}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    if flags.reload:
        return _client_call(config, environ, "reload")
    if flags.maintenance is not None:
        mode = flags.maintenance.strip().lower()
        if mode not in ("enable", "disable"):
            raise BadValue(f'-maintenance must be "enable" or "disable", got '
                             f'"{flags.maintenance}"')
        return _client_call(config, environ, "maintenance", mode == "enable")
    if flags.putenv:
        return _client_call(config, environ, "putenv", parse_pairs("putenv", flags.putenv))
    if flags.putmetric:
        return _putmetric(config, environ, parse_pairs("putmetric", flags.putmetric))
    if flags.ping:
        code = _client_call(config, environ, "ping")
        if code == EXIT_OK:
            print("ok")
        return code
    if flags.rest:
        print(f"containerpilot: ignoring arguments {flags.rest!r} (v3 has no command "
              "mode; put the command in a job's exec)", file=sys.stderr)
    if not config:
        print("containerpilot: -config flag is required (or set CONTAINERPILOT)",
              file=sys.stderr)
        return EXIT_USAGE
    reload_mode = (environ.get(RELOAD_ENV) or "all").strip().lower()
    if reload_mode not in ("all", "diff"):
        raise BadValue(f'{RELOAD_ENV} must be "all" or "diff", got "{reload_mode}"')
    from autopilot.entry import supervise  # keeps ssl and inspect out: see there

    return supervise(config, reload_all=reload_mode == "all")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """The console entry point; exits with the action's status."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    running = False
    try:
        flags = parse_flags(argv)
        running = not (flags.help or flags.version or flags.template or flags.reload
                       or flags.maintenance is not None or flags.putenv or flags.putmetric
                       or flags.ping)
        code = dispatch(flags, env)
    except UsageError as exc:
        print(f"containerpilot: {exc}", file=sys.stderr)
        if not isinstance(exc, BadValue):
            sys.stderr.write(USAGE)
        code = EXIT_USAGE
    sys.exit(containerpilot_status(code, env, running))


if __name__ == "__main__":
    main()
