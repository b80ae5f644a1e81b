"""The docs' table from one or more result files of `python -m bench.failover`:

    python -m bench.failover.markdown bench/failover/measured/postgres-*.json

One row per figure, one column per side, each cell `median (min-max)` with n when it is
not the same for every cell, and a last row with the load average during the cell's trials,
so a figure is never read without the load it was measured at.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.failover.harness import SPEC

NAMES = {"failover_s": "failover", "write_gap_s": "write gap", "lost": "acked commits lost",
         "spurious_failovers": "spurious failovers", "writer_switches": "writer switches",
         "longest_write_gap_s": "longest write gap"}


def cell(s: dict[str, Any] | None, unit: str, n_all: int | None) -> str:
    if not s or not s.get("n"):
        return "–"
    if unit == "s":
        text = f"{s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f})"
    else:
        text = f"{s['median']:g} ({s['min']:g}–{s['max']:g})"
    if s["n"] != n_all or s.get("missing"):
        text += f" n={s['n']}" + (f", {s['missing']} without" if s.get("missing") else "")
    return text


def merge(files: list[Path]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for f in files:
        for group, sides in json.loads(f.read_text())["results"].items():
            results.setdefault(group, {}).update(sides)
    return results


def order(label: str) -> tuple[int, int, str]:
    """Peers side by side: each autopilot setting beside the Patroni (Sentinel) one it is
    compared with; fast/floor before default, async before sync."""
    default = "default" in label or "ttl 30" in label or "30000" in label
    sync = label.endswith((" sync", "no-loss"))
    return (2 if default else int(sync), int(not label.startswith("autopilot")), label)


def render(results: dict[str, dict[str, Any]], n_all: int | None = 10) -> str:
    sides: list[str] = []
    for group in results.values():
        sides += [s for s in group if s not in sides]
    sides.sort(key=order)
    lines = ["| test | figure | " + " | ".join(sides) + " |",
             "|---|---|" + "---|" * len(sides)]
    for group, data in results.items():
        for key, unit, _ in SPEC.get(group.split(" ")[0], []):
            row = [cell(data.get(s, {}).get("summary", {}).get(key), unit, n_all)
                   for s in sides]
            if any(c != "–" for c in row):
                lines.append(f"| {group} | {NAMES[key]} | " + " | ".join(row) + " |")
        errs = [str(data[s]["errors"]) if s in data and data[s].get("errors") else "–"
                for s in sides]
        if any(e != "–" for e in errs):
            lines.append(f"| {group} | trials failed | " + " | ".join(errs) + " |")
        loads = []
        for s in sides:
            ld = data.get(s, {}).get("summary", {}).get("load1", {})
            loads.append(f"{ld['min']:.1f}–{ld['max']:.1f}" if ld.get("n") else "–")
        lines.append(f"| {group} | load average (1 min) | " + " | ".join(loads) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(merge([Path(a) for a in argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
