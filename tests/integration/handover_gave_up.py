"""Measurement (not collected by pytest): a SIGTERM hand-over whose named successor gives
up, with three real `autopilot run` supervisors against the real catalog, the default
candidacyTimeout (2 s) and lockDelay 1 s. The successor's promote hook fails once; the
other follower (position 950, the successor 900) is then promoted. Prints, per run, the
old primary's demote -> the new primary's promote (the write gap's election part).

    PYTHONPATH=. python3 -m tests.integration.handover_gave_up 3

docs/stateful.md ("Hand-over to a named successor") quotes its figures before and after
the old primary stopped being waited for (commit 907dd23)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.helpers import CatalogProcess, wait_for
from tests.integration.election_supervisors import Supervisor, config, holder, record


def promote_failing_once(tmp: Path, node: str) -> str:
    flag, log = tmp / f"{node}.failonce", tmp / f"{node}.hooks"
    return (f'["sh", "-c", "if [ -f {flag} ]; then rm -f {flag}; echo promote-failed '
            f'$(date +%s.%N) >> {log}; exit 1; fi; echo promote $(date +%s.%N) '
            f'$AUTOPILOT_ROLE $AUTOPILOT_LEADER_EPOCH >> {log}"]')


def run_once(env: dict[str, str]) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="handover-gave-up-"))
    cat = CatalogProcess(tmp).start()
    nodes = []
    for i in range(3):
        node, port = f"node{i}", 7890 + i
        s = Supervisor(cat, tmp, node, port, env)
        s.cfg.write_text(config(
            cat, tmp, node, port,
            health='exec: ["true"], interval: 1, ttl: 4, timeout: "5s"',
            election=f'lockDelay: "1s", stateDir: "{tmp}/state-{node}", '
                     f'promote: {promote_failing_once(tmp, node)}, '
                     f'demote: {record(tmp, node, "demote")}, '
                     f'detach: {record(tmp, node, "detach")}, '
                     f'position: ["cat", "{tmp}/{node}.position"], '
                     f'successor: ["cat", "{tmp}/successor"],',
            job=f'{{name: "follow", when: {{source: "db", each: "leaderChanged"}}, '
                f'exec: {record(tmp, node, "follow", "x$AUTOPILOT_LEADER_NODE")}}}'))
        (tmp / f"{node}.position").write_text("100\n")
        nodes.append(s)
    try:
        for n in nodes:
            n.start()
        first = wait_for(lambda: holder(cat) if (holder(cat) or {}).get("promoted") else None,
                         30, message="a first primary")
        lead = next(n for n in nodes if n.node == first["node"])
        succ, other = sorted((n for n in nodes if n is not lead), key=lambda n: n.node)
        wait_for(lambda: succ.lines("follow") and other.lines("follow"), 15, message="replicas")
        wait_for(lambda: len(requests.get(cat.url + "/v1/session/list", timeout=2).json()) == 3,
                 15, message="three sessions")
        for n, pos in ((lead, 1000), (succ, 900), (other, 950)):
            (tmp / f"{n.node}.position").write_text(f"{pos}\n")
        (tmp / "successor").write_text(f"db-{succ.node}\n")
        (tmp / f"{succ.node}.failonce").touch()
        t0 = time.time()
        lead.signal(signal.SIGTERM)
        wait_for(lambda: [r for n in (succ, other) for r in n.lines("promote")
                          if float(r[1]) >= t0], 40, message="a new primary")
        winner = next(n for n in (succ, other) if [r for r in n.lines("promote")
                                                   if float(r[1]) >= t0])
        gave_up = succ.times("promote-failed")
        gap = winner.times("promote")[-1] - lead.times("demote")[-1]
        print(f"demote -> promote {gap:.2f}s (winner {winner.node}; the successor "
              f"{'gave up' if gave_up else 'did not give up'})", flush=True)
        return gap
    finally:
        for n in nodes:
            n.cleanup()
        cat.kill()


def main(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONSUL_", "CONTAINERPILOT", "AUTOPILOT"))}
    env["PYTHONUNBUFFERED"] = "1"
    gaps = sorted(run_once(env) for _ in range(int(argv[0]) if argv else 3))
    print(f"runs {len(gaps)}: min {gaps[0]:.2f}s median {gaps[len(gaps) // 2]:.2f}s "
          f"max {gaps[-1]:.2f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
