"""Record the reference transcripts against a real Consul dev agent.

    python3 -m tests.catalog.reference.recorder --consul /opt/consul/bin/consul [names...]

Each scenario of ``scenarios.py`` runs on a fresh ``consul agent -dev`` (loopback, random
ports, node ``ref-node``; ACLs on for the ``acl`` scenario) and its transcript is written to
``tests/catalog/reference/<scenario>.json``. CI cannot build Consul, so the transcripts are
committed and ``test_reference_replay.py`` replays them against ``autopilot catalog``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.catalog.reference.runner import Runner
from tests.catalog.reference.scenarios import NODE, SCENARIOS, TOKEN

HERE = Path(__file__).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextmanager
def consul_agent(binary: str, acl: bool = False) -> Iterator[str]:
    """A dev agent on loopback with random ports; yields its HTTP URL."""
    http, serf_lan, serf_wan, server = _free_ports(4)
    hcl = "limits { http_max_conns_per_client = 4000 }"
    if acl:
        hcl += (' acl { enabled = true default_policy = "deny" '
                f'tokens {{ master = "{TOKEN}" }} }}')
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [binary, "agent", "-dev", "-node", NODE, "-client", "127.0.0.1",
             "-bind", "127.0.0.1", "-http-port", str(http), "-grpc-port", "-1",
             "-dns-port", "-1", "-serf-lan-port", str(serf_lan), "-serf-wan-port",
             str(serf_wan), "-server-port", str(server), "-log-level", "warn", "-hcl", hcl],
            stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{http}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = requests.get(url + "/v1/catalog/nodes", timeout=1,
                                     headers={"X-Consul-Token": TOKEN})
                    if r.ok and r.json() and r.headers.get("X-Consul-KnownLeader") == "true":
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError("consul did not start: " + log.read().decode()[-2000:])
                time.sleep(0.2)
            # the dev agent syncs its node checks a moment after it elects itself
            time.sleep(1.0)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def version(binary: str) -> str:
    return subprocess.run([binary, "version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--consul", default="/opt/consul/bin/consul")
    ap.add_argument("names", nargs="*", help="scenarios (default: all)")
    args = ap.parse_args(argv)
    names = args.names or list(SCENARIOS)
    ver = version(args.consul)
    for name in names:
        steps, acl = SCENARIOS[name]
        with consul_agent(args.consul, acl=acl) as url:
            t0 = time.monotonic()
            recs = Runner(url).run(steps)
        out = {"scenario": name, "recorded_with": ver, "node": NODE, "acl": acl,
               "steps": recs}
        (HERE / f"{name}.json").write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
        print(f"{name}: {len(recs)} steps in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
