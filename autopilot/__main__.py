"""`python -m autopilot …` and the `autopilot` command.

``autopilot run CONFIG`` (the container's entrypoint) goes straight to the supervisor, without
loading click and the other verbs: it is the one verb whose start-up time and memory every
container pays. Anything else (or anything unusual about ``run``'s arguments) goes through
the click CLI in ``autopilot/cli.py``. Both start the supervisor through
`autopilot.entry.supervise`, which keeps ``ssl`` (4 MB) and ``inspect`` (0.95 MB) out
until something needs them.
"""

from __future__ import annotations

import os
import sys

CONFIG_ENVS = ("AUTOPILOT", "CONTAINERPILOT")


def run_config(args: list[str]) -> str | None:
    """The config path of a plain ``run`` invocation, or None to let the full CLI decide."""
    if not args or args[0] != "run":
        return None
    rest = args[1:]
    if len(rest) == 1 and not rest[0].startswith("-") and rest[0]:
        return rest[0]
    if len(rest) == 2 and rest[0] in ("-c", "--config") and rest[1]:
        return rest[1]
    if len(rest) == 1 and rest[0].startswith("--config=") and len(rest[0]) > 9:
        return rest[0][9:]
    if not rest:
        return next((os.environ[e] for e in CONFIG_ENVS if os.environ.get(e)), None)
    return None


def entry() -> None:
    path = run_config(sys.argv[1:])
    if path is not None:
        from autopilot.entry import supervise

        sys.exit(supervise(path))
    from autopilot.cli import main

    main()


if __name__ == "__main__":
    entry()
