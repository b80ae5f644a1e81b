"""Failover benchmark: autopilot-run Redis against Redis Sentinel, side by side, in one run.

    python -m bench.failover [--trials N] [--quick] [--only kill,term,loss,cpu]

Measures, per system and setting (median and min-max over the trials):
  kill  SIGKILL of the primary -> some node accepts writes again (failover time) and the
        write gap a client sees;
  term  SIGTERM of the primary: the write gap (autopilot hands over; Sentinel has no hook
        for it and waits for its detection);
  loss  acknowledged writes lost when the primary dies while replication is held back
        (the primary's replication links cut 300 ms before the kill), async and WAIT 1;
  cpu   spurious failovers while the CPU is saturated by bounded busy loops.
Writes `bench/results/failover.json`. Root is needed (the lab's namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.lab.workload import (
    Member,
    Timeline,
    Workload,
    hold_back_replication,
    missing_keys,
)
from bench.failover.breakdown import PHASES, breakdown
from bench.failover.sides import AutopilotSide, SentinelSide, cpu_burners, stop_burners

RESULTS = Path(__file__).resolve().parent.parent / "results" / "failover.json"


def _member(side: Any, name: str) -> Member:
    return next(m for m in side.members if m.name == name)


def trial_failover(side: Any, fault: str, wait_ms: int, budget: float) -> dict[str, Any]:
    """One SIGKILL / SIGTERM / held-back-replication trial."""
    side.prepare()
    tl = Timeline()
    old = side.primary()
    members = side.members
    tl.add("before", f"primary {old}")
    wl = Workload(members, tl, wait_ms=wait_ms, max_seconds=budget + 30).start()
    try:
        if not wl.wait_acks(50, 15):
            raise RuntimeError("the workload could not write before the fault")
        if fault == "loss":
            hold_back_replication(_member(side, old), 0.3)
        t_fault = tl.add("fault", f"{fault} {old}")
        wall_fault = time.time()
        if fault == "term":
            side.term(old)
        else:
            side.kill(old)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if wl.failover(t_fault, old)["failover_s"] is not None:
                break
            time.sleep(0.02)
        wl.wait_acks(20, 3, after=time.monotonic())
    finally:
        wl.stop()
    figures: dict[str, Any] = dict(wl.failover(t_fault, old))
    acked = [a.seq for a in wl.results.acks]
    figures["acked"] = len(acked)
    figures["unconfirmed"] = wl.results.unconfirmed
    new = wl.current if wl.current != old else None
    figures["lost"] = len(missing_keys(_member(side, new), acked)) if new else None
    figures["new_primary"] = new
    if hasattr(side, "logs") and figures["failover_s"] is not None:
        phases = breakdown(side.logs(), wall_fault, new, wall_fault + figures["failover_s"])
        figures["breakdown"] = phases
        figures.update({f"{k}_s": v for k, v in phases.items()})  # summarized per phase
    if figures["lost"] and wait_ms:  # must not happen: keep what explains it
        figures["timeline"] = tl.format().splitlines()[-60:]
        figures["missing_on"] = {m.name: len(missing_keys(m, acked)) for m in members
                                 if m.name != old}
    return figures


def trial_cpu(side: Any, seconds: float, burners: int) -> dict[str, Any]:
    side.prepare()
    tl = Timeline()
    wl = Workload(side.members, tl, interval=0.02, max_seconds=seconds + 30).start()
    changes = 0
    try:
        wl.wait_acks(20, 10)
        first = side.leader_epoch()
        last = first
        procs = cpu_burners(burners, seconds)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.5)
                try:
                    epoch = side.leader_epoch()
                except Exception:  # noqa: BLE001 - a slow answer under load is not a failover
                    continue
                if epoch is not None and epoch != last:
                    changes += 1
                    last = epoch
        finally:
            stop_burners(procs)
    finally:
        wl.stop()
    switches = sum(1 for _, k, _ in tl.events if k == "writes-ok") - 1
    return {"spurious_failovers": changes, "writer_switches": max(switches, 0),
            "acked": len(wl.results.acks), "failed_writes": wl.results.failures}


def summarize(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"n": 0, "missing": len(values)}
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "n": len(got),
            "missing": len(values) - len(got)}


def run_group(label: str, side: Any, n: int, fn: Callable[[], dict[str, Any]],
              results: dict[str, Any]) -> None:
    trials = []
    try:
        for i in range(n):
            try:
                t = fn()
            except Exception as exc:  # noqa: BLE001 - a failed trial is a figure too
                t = {"error": f"{type(exc).__name__}: {exc}"}
            trials.append(t)
            print(f"  {label} [{side.label}] trial {i + 1}/{n}: {t}", flush=True)
    finally:
        side.finish()
    keys = sorted({k for t in trials for k, v in t.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    results.setdefault(label, {})[side.label] = {
        "trials": trials, "summary": {k: summarize([t.get(k) for t in trials]) for k in keys}}


def fmt(s: dict[str, Any], unit: str = "s") -> str:
    if not s or not s.get("n"):
        return "n/a"
    if unit == "s":
        return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, n={s['n']})"
    return f"{s['median']:g} ({s['min']:g}-{s['max']:g}, n={s['n']})"


def table(results: dict[str, Any]) -> str:
    rows = [("test", "system / setting", "figure")]
    spec = {"kill": [("failover_s", "s", "failover"), ("write_gap_s", "s", "write gap"),
                     ("lost", "n", "lost acked")],
            "term": [("write_gap_s", "s", "write gap"), ("lost", "n", "lost acked")],
            "loss": [("lost", "n", "lost acked"), ("failover_s", "s", "failover")],
            "cpu": [("spurious_failovers", "n", "spurious failovers")]}
    for group, sides in results.items():
        for label, data in sides.items():
            figs = [f"{name} {fmt(data['summary'].get(k, {}), unit)}"
                    for k, unit, name in spec.get(group.split(" ")[0], [])]
            rows.append((group, label, "; ".join(figs)))
            phases = [f"{k} {data['summary'][f'{k}_s']['median']:.2f}" for k in PHASES
                      if data["summary"].get(f"{k}_s", {}).get("n")]
            if phases and group.split(" ")[0] in ("kill", "term"):
                rows.append(("", "  median phases (s)", ", ".join(phases)))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--sentinel-default-trials", type=int, default=3,
                    help="Sentinel at its defaults takes ~30 s a trial")
    ap.add_argument("--cpu-trials", type=int, default=2)
    ap.add_argument("--cpu-seconds", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="3 trials, 1 at Sentinel defaults")
    ap.add_argument("--only", default="kill,term,loss,cpu")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--service", choices=["redis", "postgres"], default="redis",
                    help="postgres: autopilot-run PostgreSQL against Patroni + etcd "
                    "(bench/failover/pg.py)")
    ap.add_argument("--patroni-default-trials", type=int, default=3,
                    help="Patroni at its defaults takes ~25 s a trial")
    ap.add_argument("--pg-sides", default="autopilot,patroni",
                    help="--service postgres: the sides to run, by label prefix "
                    "(e.g. 'patroni', 'autopilot default')")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the autopilot side runs in the lab's namespaces: run as root", file=sys.stderr)
        return 2
    if args.quick:
        args.trials, args.sentinel_default_trials = 3, 1
        args.cpu_trials, args.cpu_seconds = 1, 10.0
    if args.service == "postgres":
        from bench.failover import pg

        return pg.main(args, list(argv if argv is not None else sys.argv[1:]))
    only = set(args.only.split(","))
    n = args.trials
    burners = 2 * (os.cpu_count() or 2) + 2
    results: dict[str, Any] = {}
    started = time.time()
    if "kill" in only:
        for side, trials, budget in [(AutopilotSide("fast", False), n, 20),
                                     (AutopilotSide("fast", True), n, 20),
                                     (AutopilotSide("default", False), n, 30),
                                     (SentinelSide(1000, False), n, 20),
                                     (SentinelSide(30000, False), args.sentinel_default_trials, 60)]:
            wait_ms = 200 if side.no_loss else 0
            run_group("kill" + (" WAIT 1" if wait_ms else ""), side, trials,
                      lambda s=side, b=budget, w=wait_ms: trial_failover(s, "kill", w, b),
                      results)
    if "term" in only:
        for side, wait_ms in [(AutopilotSide("fast", False), 0), (AutopilotSide("fast", True), 200),
                              (SentinelSide(1000, False), 0)]:
            run_group("term" + (" WAIT 1" if wait_ms else ""), side, n,
                      lambda s=side, w=wait_ms: trial_failover(s, "term", w, 20), results)
    if "loss" in only:
        for side, wait_ms in [(AutopilotSide("fast", False), 0), (AutopilotSide("fast", True), 200),
                              (SentinelSide(1000, False), 0), (SentinelSide(1000, True), 200)]:
            label = "loss" + (" WAIT 1" if wait_ms else " async")
            run_group(label, side, n,
                      lambda s=side, w=wait_ms: trial_failover(s, "loss", w, 20), results)
    if "cpu" in only:
        for side in [AutopilotSide("default", False), AutopilotSide("fast", False),
                     SentinelSide(1000, False), SentinelSide(30000, False)]:
            run_group("cpu", side, args.cpu_trials,
                      lambda s=side: trial_cpu(s, args.cpu_seconds, burners), results)
    out = {"meta": {"command": " ".join(["python -m bench.failover", *(argv or sys.argv[1:])]),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": platform.platform(), "cpus": os.cpu_count(),
                    "seconds": round(time.time() - started, 1), "cpu_burners": burners},
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print()
    print(table(results))
    print(f"\nwrote {args.out} ({out['meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
