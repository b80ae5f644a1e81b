"""Where a one-job supervisor's memory goes, module group by module group.

Imports what ``autopilot run`` imports, one group after the other in the order a supervisor
loads them, and prints the RSS and anonymous memory each group adds (``/proc/self/
smaps_rollup``), then what the modules autopilot keeps out would add (``inspect`` with
``ast`` and ``dis``, ``json``). It runs the given interpreter on a bytecode-compiled copy of
the tree, as a package install leaves it (a source tree compiles every module, which builds
the interpreter's AST types: 0.2 MB that an installed autopilot never pays).

    python3 bench/import_memory.py --python /opt/ap/bin/python3 --runs 3

The table in docs/performance.md ("Memory: one job under 15 MB") comes from it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (label, statement); each group after the previous ones
STEPS = [
    ("runpy, importlib.util (python -m)", "import runpy, importlib.util"),
    ("re, enum, functools, collections, contextlib, weakref",
     "import re, enum, functools, collections, contextlib, weakref"),
    ("typing", "import typing"),
    ("threading", "import threading"),
    ("logging (traceback, linecache, tokenize, textwrap, string)", "import logging"),
    ("socket, selectors, subprocess (locale, signal)", "import subprocess, socket, selectors"),
    ("concurrent.futures, contextvars", "import concurrent.futures, contextvars"),
    ("autopilot, entry, lazyssl, lazyinspect",
     "from autopilot import entry, lazyssl, lazyinspect; lazyssl.defer(); lazyinspect.defer()"),
    ("asyncio's own modules", "import asyncio"),
    ("dataclasses, copy", "import dataclasses"),
    ("config model, loader, JSON5 parser, coerce; logs",
     "import autopilot.config, autopilot.logs, autopilot.config.coerce"),
    ("validator (the sections every config has)", "import autopilot.config.validate"),
    ("events, context, component, aio, init",
     "import autopilot.events, autopilot.context, autopilot.component, autopilot.aio, "
     "autopilot.init"),
    ("jobs", "import autopilot.jobs.job"),
    ("supervisor, reload, shutdown", "import autopilot.supervisor"),
    ("control socket (server, unixsock, stats)", "import autopilot.control.server"),
    ("_ctypes (subreaper prctl, not PID 1)", "import _ctypes"),
    ("(kept out) inspect with ast, dis",
     "import sys; sys.modules.pop('inspect'); import inspect"),
    ("(kept out) json", "import json"),
]

PROBE = """
import sys
def mem():
    v = {}
    for line in open("/proc/self/smaps_rollup").read().splitlines()[1:]:
        p = line.split()
        if len(p) >= 2 and p[1].isdigit():
            v[p[0].rstrip(":")] = int(p[1])
    return v["Rss"], v["Anonymous"]
print("start", *mem())
for label, code in STEPS:
    exec(code)
    print(label, *mem(), sep="\\t")
"""


def run(python: str, tree: Path) -> list[tuple[str, int, int]]:
    """One fresh interpreter: (label, RSS KB, anonymous KB) after each step."""
    code = f"STEPS = {STEPS!r}\n{PROBE}"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    rows = []
    for line in out.stdout.splitlines():
        label, rss, anon = line.rsplit(None, 2) if line.startswith("start") else line.split("\t")
        rows.append((label, int(rss), int(anon)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="the interpreter to measure")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        shutil.copytree(ROOT / "autopilot", tree / "autopilot",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([args.python, "-m", "compileall", "-q", str(tree / "autopilot")],
                       check=True, capture_output=True, timeout=300)
        runs = [run(args.python, tree) for _ in range(args.runs)]
    print(f"{'step':62s} {'RSS MB':>16s} {'anonymous MB':>16s}")
    for i, (label, _, _) in enumerate(runs[0]):
        if i == 0:
            rss = " ".join(f"{r[0][1] / 1024:5.2f}" for r in runs)
            anon = " ".join(f"{r[0][2] / 1024:5.2f}" for r in runs)
        else:
            rss = " ".join(f"{(r[i][1] - r[i - 1][1]) / 1024:+5.2f}" for r in runs)
            anon = " ".join(f"{(r[i][2] - r[i - 1][2]) / 1024:+5.2f}" for r in runs)
        print(f"{label:62s} {rss:>16s} {anon:>16s}")


if __name__ == "__main__":
    main()
