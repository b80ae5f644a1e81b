"""`python -m bench.failover --service postgres`: autopilot-run PostgreSQL against Patroni
3.0.2 + etcd, side by side, in one run, measured the way ../shared/anchors.md measured
Patroni (a client writing autocommit INSERTs, polling every member after an error). The
trials, the client and the table are bench/failover/harness.py's, shared with Redis.

  kill   SIGKILL of every process of the primary -> a write acknowledged elsewhere
         (failover) and the client's write gap; lost acknowledged commits;
  term   graceful hand-over: autopilot SIGTERM of the primary's supervisor; Patroni
         `patronictl switchover` (its graceful path): the write gap, async and sync;
  loss   the primary's walsenders are stopped 0.3 s before the kill (new commits on the
         primary alone in async mode; waiting in sync mode), and, with `stall`, one
         replica's walreceiver is stopped 1 s before that: acknowledged commits lost;
  cpu    spurious failovers while bounded busy loops saturate the CPU (default settings).
Writes bench/results/failover-postgres.json (every trial, its load average, the summary).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.failover import harness
from bench.failover.harness import Group, trial_cpu, trial_failover
from bench.failover.patroni import PatroniSide
from bench.failover.sides import AutopilotSide

RESULTS = Path(__file__).resolve().parent.parent / "results" / "failover-postgres.json"
#: what the JSON's meta says of the wait before each fault (anchors.md's method)
JITTER = ("settle_s, then U(0, cycle): Patroni loop_wait; autopilot the health-check "
          "interval (its check TTL is renewed after every check)")


def _fault_groups(n: int, budget: float, durable: bool) -> list[Group]:
    """kill, the graceful path (term) and the two loss cells, in either mode (anchors.md
    measured Patroni's switchover in both; issue 11 sets its target in sync mode)."""
    mode = "sync" if durable else "async"
    groups: list[Group] = [("kill", n, lambda s: trial_failover(s, "kill", budget)),
                           ("term", n, lambda s: trial_failover(s, "term", budget))]
    groups += [(f"loss {mode}", n, lambda s: trial_failover(s, "loss", budget + 10)),
               (f"loss {mode} +replica stall", n,
                lambda s: trial_failover(s, "loss", budget + 10, stall_replica=True))]
    return groups


def plan(args: Any) -> list[tuple[Any, list[Group]]]:
    """Every side with its groups, in the order they run (one side up at a time)."""
    n, burners = args.trials, 2 * (os.cpu_count() or 2) + 2
    cpu: list[Group] = [("cpu", args.cpu_trials,
                         lambda s: trial_cpu(s, args.cpu_seconds, burners))]
    sides: list[tuple[Any, list[Group]]] = [
        (AutopilotSide("fast", False, "postgres"), _fault_groups(n, 30, False)),
        (AutopilotSide("fast", True, "postgres"), _fault_groups(n, 30, True)),
        (AutopilotSide("default", False, "postgres"),
         [("kill", n, lambda s: trial_failover(s, "kill", 40)), *cpu]),
        (PatroniSide(5, 1, 2, False), _fault_groups(n, 30, False)),
        (PatroniSide(5, 1, 2, True), _fault_groups(n, 30, True)),
        (PatroniSide(30, 10, 10, False),
         [("kill", args.patroni_default_trials, lambda s: trial_failover(s, "kill", 90)),
          *cpu]),
    ]
    wanted = [w.strip() for w in args.pg_sides.split(",")]
    return [(side, groups) for side, groups in sides
            if any(side.label.startswith(w) for w in wanted)]


def main(args: Any, argv: list[str]) -> int:
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    started = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]
    out = args.out if args.out != args.default_out else RESULTS
    complete = False
    try:
        harness.run_plan(plan(args), only, results)
        complete = True
    finally:  # an interrupted run still writes the trials it has
        harness.write(out, results, harness.meta(
            argv, started, loadavg_start=load_start, complete=complete,
            cpu_burners=2 * (os.cpu_count() or 2) + 2, cpu_seconds=args.cpu_seconds,
            settle_s=harness.SETTLE_S, jitter=JITTER))
    return 0
