"""Real supervisors for the election tests: `autopilot run` processes, each in its own UTS
namespace (its own hostname, so its own service ID), against the real catalog; hook
invocations are recorded with wall-clock timestamps in one file per node.

``Supervisor`` runs CONFIG (promote/demote hooks, an ``elected`` job); ``Node`` runs
NODE_CONFIG (candidacy by position, detach, a ``leaderChanged`` job). Used by
test_election_supervisors.py, test_election_wipe.py, test_election_restart.py and
test_election_real_consul.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers import CatalogProcess

HEALTH_TTL = 4  # the service check's TTL: a dead supervisor's check is critical after this
LOCK_DELAY = 1.0

CONFIG = """\
{{
  consul: "{catalog}",
  logging: {{level: "INFO"}},
  stopTimeout: 5,
  control: {{socket: "{tmp}/{node}.sock"}},
  jobs: [
    {{
      name: "db",
      exec: ["sh", "-c", "echo $$ > {tmp}/{node}.pid; exec sleep 3600"],
      port: {port},
      health: {{
        exec: ["sh", "-c", "while [ -f {tmp}/{node}.stall ]; do sleep 0.05; done"],
        interval: 1, ttl: {ttl}, timeout: "20s",
      }},
      election: {{
        lockDelay: "{lock_delay}s",
        stateDir: "{tmp}/state",
        promote: ["sh", "-c", "echo promote $(date +%s.%N) $AUTOPILOT_ROLE $AUTOPILOT_LEADER_EPOCH >> {tmp}/{node}.hooks"],
        demote: ["sh", "-c", "echo demote $(date +%s.%N) $AUTOPILOT_ROLE >> {tmp}/{node}.hooks"],
      }},
    }},
    {{
      name: "on-elected",
      exec: ["sh", "-c", "echo elected-job $(date +%s.%N) $AUTOPILOT_ROLE $AUTOPILOT_LEADER_NODE >> {tmp}/{node}.hooks"],
      when: {{source: "db", each: "elected"}},
    }},
  ],
}}
"""


class Supervisor:
    def __init__(self, cat: CatalogProcess, tmp: Path, node: str, port: int, env: dict) -> None:
        self.cat, self.tmp, self.node, self.port = cat, tmp, node, port
        self.cfg = tmp / f"{node}.json5"
        self.cfg.write_text(CONFIG.format(catalog=cat.address, tmp=tmp, node=node, port=port,
                                          ttl=HEALTH_TTL, lock_delay=LOCK_DELAY))
        self.hooks = tmp / f"{node}.hooks"
        self.log = tmp / f"{node}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = ["unshare", "--uts", "sh", "-c",
               f'hostname {self.node} && exec "$0" -m autopilot run "$1"',
               sys.executable, str(self.cfg)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[2]))

    def lines(self, kind: str | None = None) -> list[list[str]]:
        if not self.hooks.exists():
            return []
        rows = [ln.split() for ln in self.hooks.read_text().splitlines() if ln.strip()]
        return [r for r in rows if kind is None or r[0] == kind]

    def times(self, kind: str) -> list[float]:
        return [float(r[1]) for r in self.lines(kind)]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with_cont = [signal.SIGCONT, signal.SIGKILL]
            for sig in with_cont:
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)
        pidfile = self.tmp / f"{self.node}.pid"
        if pidfile.exists():  # the job's process outlives a SIGKILLed supervisor
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


NODE_CONFIG = """\
{{
  consul: "{catalog}",
  logging: {{level: "INFO"}},
  stopTimeout: 5,
  control: {{socket: "{tmp}/{node}.sock"}},
  jobs: [
    {{
      name: "db",
      exec: ["sh", "-c", "echo $$ > {tmp}/{node}.pid; exec sleep 3600"],
      port: {port},
      health: {{exec: ["true"], interval: 1, ttl: {ttl}, timeout: "5s"}},
      election: {{
        lockDelay: "1s",
        stateDir: "{tmp}/state-{node}",
        promote: ["sh", "-c", "echo promote $(date +%s.%N) $AUTOPILOT_ROLE $AUTOPILOT_LEADER_EPOCH >> {tmp}/{node}.hooks"],
        demote: ["sh", "-c", "echo demote $(date +%s.%N) $AUTOPILOT_ROLE >> {tmp}/{node}.hooks"],
        detach: ["sh", "-c", "echo detach $(date +%s.%N) $AUTOPILOT_ROLE >> {tmp}/{node}.hooks"],
        position: ["cat", "{tmp}/{node}.position"],{extra}
      }},
    }},
    {{
      name: "follow",
      exec: ["sh", "-c", "echo follow $(date +%s.%N) x$AUTOPILOT_LEADER_NODE $AUTOPILOT_LEADER_EPOCH >> {tmp}/{node}.hooks"],
      when: {{source: "db", each: "leaderChanged"}},
    }},
  ],
}}
"""


class Node(Supervisor):
    def __init__(self, cat: CatalogProcess, tmp: Path, node: str, port: int, env: dict,
                 position: int, extra: str = "", ttl: int = 4) -> None:
        super().__init__(cat, tmp, node, port, env)
        self.cfg.write_text(NODE_CONFIG.format(catalog=cat.address, tmp=tmp, node=node, port=port,
                                          extra=extra, ttl=ttl))
        (tmp / f"{node}.position").write_text(f"{position}\n")


def holder(cat: CatalogProcess) -> dict | None:
    try:
        r = requests.get(cat.url + "/v1/kv/service/db/leader", timeout=2)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        return None
    entry = r.json()[0]
    if not entry.get("Session"):
        return None
    import base64
    import json
    return {**json.loads(base64.b64decode(entry["Value"])), "LockIndex": entry["LockIndex"]}


def timeline(nodes: list[Node], since: float) -> str:
    rows = []
    for n in nodes:
        rows += [(float(r[1]), f"{n.node}: {' '.join(r)}") for r in n.lines()
                 if float(r[1]) >= since - 30]
        if n.log.exists():
            for ln in n.log.read_text().splitlines()[-60:]:
                if any(k in ln for k in ("elect", "stepping", "candidacy", "detach", "session",
                                         "index", "lost", "lock")):
                    rows.append((0.0, f"{n.node} log: {ln[:200]}"))
    return "\n".join(r for _, r in sorted(rows))
