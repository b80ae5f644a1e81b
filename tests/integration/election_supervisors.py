"""Real supervisors for the election tests: `autopilot run` processes, each in its own UTS
namespace (its own hostname, so its own service ID), against the real catalog; hook
invocations are recorded with wall-clock timestamps in one file per node.

Both run ``config()``: ``Supervisor`` with promote/demote hooks, a check that a test can
stall and an ``elected`` job; ``Node`` with candidacy by position, detach and a
``leaderChanged`` job. Used by test_election_supervisors.py, test_election_wipe.py,
test_election_restart.py and test_election_real_consul.py."""

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
ELECTED_FIELDS = "$AUTOPILOT_ROLE $AUTOPILOT_LEADER_EPOCH"  # what the promote hook records

def config(cat: CatalogProcess, tmp: Path, node: str, port: int, *, health: str,
           election: str, job: str) -> str:
    """A supervisor's config: the job ``db`` (its pid in <node>.pid) with the ``health`` and
    ``election`` blocks' bodies given, and a second job ``job`` hooked on it."""
    return f"""{{
  consul: "{cat.address}",
  logging: {{level: "INFO"}},
  stopTimeout: 5,
  control: {{socket: "{tmp}/{node}.sock"}},
  jobs: [
    {{
      name: "db",
      exec: ["sh", "-c", "echo $$ > {tmp}/{node}.pid; exec sleep 3600"],
      port: {port},
      health: {{{health}}},
      election: {{{election}}},
    }},
    {job},
  ],
}}
"""


def record(tmp: Path, node: str, what: str, fields: str = "$AUTOPILOT_ROLE") -> str:
    """A command that appends ``what``, the wall-clock time and ``fields`` (expanded by sh)
    to <node>.hooks, as JSON5."""
    return f'["sh", "-c", "echo {what} $(date +%s.%N) {fields} >> {tmp}/{node}.hooks"]'


class Supervisor:
    def __init__(self, cat: CatalogProcess, tmp: Path, node: str, port: int, env: dict) -> None:
        self.cat, self.tmp, self.node, self.port = cat, tmp, node, port
        self.cfg = tmp / f"{node}.json5"
        self.cfg.write_text(config(
            cat, tmp, node, port,
            health=f'exec: ["sh", "-c", "while [ -f {tmp}/{node}.stall ]; do sleep 0.05; done"], '
                   f'interval: 1, ttl: {HEALTH_TTL}, timeout: "20s"',
            election=f'lockDelay: "{LOCK_DELAY}s", stateDir: "{tmp}/state", '
                     f'promote: {record(tmp, node, "promote", ELECTED_FIELDS)}, '
                     f'demote: {record(tmp, node, "demote")}',
            job=f'{{name: "on-elected", when: {{source: "db", each: "elected"}}, exec: '
                f'{record(tmp, node, "elected-job", "$AUTOPILOT_ROLE $AUTOPILOT_LEADER_NODE")}}}'))
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


class Node(Supervisor):
    def __init__(self, cat: CatalogProcess, tmp: Path, node: str, port: int, env: dict,
                 position: int, extra: str = "", ttl: int = 4) -> None:
        super().__init__(cat, tmp, node, port, env)
        self.cfg.write_text(config(
            cat, tmp, node, port,
            health=f'exec: ["true"], interval: 1, ttl: {ttl}, timeout: "5s"',
            election=f'lockDelay: "1s", stateDir: "{tmp}/state-{node}", '
                     f'promote: {record(tmp, node, "promote", ELECTED_FIELDS)}, '
                     f'demote: {record(tmp, node, "demote")}, '
                     f'detach: {record(tmp, node, "detach")}, '
                     f'position: ["cat", "{tmp}/{node}.position"],{extra}',
            job=f'{{name: "follow", when: {{source: "db", each: "leaderChanged"}}, exec: '
                f'{record(tmp, node, "follow", "x$AUTOPILOT_LEADER_NODE $AUTOPILOT_LEADER_EPOCH")}}}'))
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
