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
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.failover import harness
from bench.failover.harness import Group, trial_cpu, trial_failover
from bench.failover.sides import AutopilotSide, SentinelSide

RESULTS = Path(__file__).resolve().parent.parent / "results" / "failover.json"


def plan(args: argparse.Namespace) -> list[tuple[Any, list[Group]]]:
    """Every Redis side with its groups (each side is brought up once and reused)."""
    n, burners = args.trials, 2 * (os.cpu_count() or 2) + 2

    def fault(kind: str, wait_ms: int, budget: float) -> Any:
        return lambda s: trial_failover(s, kind, budget, wait_ms=wait_ms)

    def cpu(s: Any) -> dict[str, Any]:
        return trial_cpu(s, args.cpu_seconds, burners)

    return [
        (AutopilotSide("fast", False), [("kill", n, fault("kill", 0, 20)),
                                        ("term", n, fault("term", 0, 20)),
                                        ("loss async", n, fault("loss", 0, 20)),
                                        ("cpu", args.cpu_trials, cpu)]),
        (AutopilotSide("fast", True), [("kill WAIT 1", n, fault("kill", 200, 20)),
                                       ("term WAIT 1", n, fault("term", 200, 20)),
                                       ("loss WAIT 1", n, fault("loss", 200, 20))]),
        (AutopilotSide("default", False), [("kill", n, fault("kill", 0, 30)),
                                           ("cpu", args.cpu_trials, cpu)]),
        (SentinelSide(1000, False), [("kill", n, fault("kill", 0, 20)),
                                     ("term", n, fault("term", 0, 20)),
                                     ("loss async", n, fault("loss", 0, 20)),
                                     ("cpu", args.cpu_trials, cpu)]),
        (SentinelSide(1000, True), [("loss WAIT 1", n, fault("loss", 200, 20))]),
        (SentinelSide(30000, False), [("kill", args.sentinel_default_trials,
                                       fault("kill", 0, 60)),
                                      ("cpu", args.cpu_trials, cpu)]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--sentinel-default-trials", type=int, default=3,
                    help="Sentinel at its defaults takes ~30 s a trial")
    ap.add_argument("--cpu-trials", type=int, default=2)
    ap.add_argument("--cpu-seconds", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="3 trials, 1 at Sentinel defaults")
    ap.add_argument("--settle", type=float, default=harness.SETTLE_S,
                    help="seconds each fault trial waits before its random jitter "
                    "(anchors.md: 3)")
    ap.add_argument("--only", default="kill,term,loss,cpu")
    ap.add_argument("--keep-failed", default="/tmp/ap-bench-failed", metavar="DIR",
                    help="copy a failed trial's logs and state (lab or Patroni directory, "
                    "files up to 4 MB, and what the side sees now) to DIR/<time>-<side>-"
                    "<test>-<trial> before the run removes them; '' keeps nothing")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="default: bench/results/failover.json (Redis), "
                    "failover-postgres.json (PostgreSQL)")
    ap.add_argument("--service", choices=["redis", "postgres"], default="redis",
                    help="postgres: autopilot-run PostgreSQL against Patroni + etcd "
                    "(bench/failover/pg.py)")
    ap.add_argument("--patroni-default-trials", type=int, default=3,
                    help="Patroni at its defaults takes ~25 s a trial")
    ap.add_argument("--pg-sides", default="autopilot,patroni",
                    help="--service postgres: the sides to run, by label prefix "
                    "(e.g. 'patroni', 'autopilot default')")
    args = ap.parse_args(argv)
    args.default_out = RESULTS
    harness.SETTLE_S = args.settle
    harness.KEEP_DIR = Path(args.keep_failed) if args.keep_failed else None
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
    results: dict[str, Any] = {}
    started = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]
    complete = False
    try:
        harness.run_plan(plan(args), only, results)
        complete = True
    finally:  # an interrupted run still writes the trials it has
        harness.write(args.out, results, harness.meta(
            argv if argv is not None else sys.argv[1:], started, loadavg_start=load_start,
            complete=complete, cpu_burners=2 * (os.cpu_count() or 2) + 2,
            cpu_seconds=args.cpu_seconds, settle_s=harness.SETTLE_S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
