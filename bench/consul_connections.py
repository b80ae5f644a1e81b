"""Consul traffic cost: TCP connections the catalog sees and threads in the supervisor.

A few registrations (health checks every 0.1 s, TTL 1 s, a status flip every second) and a
few watches parked in blocking queries run in-process for a while against a real
`autopilot catalog`; the table shows how many client connections the catalog saw and how
many threads the process had at the end.

    python bench/consul_connections.py                      # this checkout
    python bench/consul_connections.py --before /tmp/old    # side by side with an older tree
                                                            # (e.g. git archive 6c2b840)

Prints a table and writes bench/results/consul_connections.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# runs inside a child python whose sys.path starts with the tree under test
PROBE = textwrap.dedent('''
    import asyncio, json, socket, subprocess, sys, threading, time
    import psutil, requests
    from autopilot import events as ev
    from autopilot.config.model import Config, ConsulConfig, HealthConfig, JobConfig, WatchConfig
    from autopilot.context import Context
    from autopilot.discovery import ServiceRegistration, Watch, connect
    from autopilot.events import Event, EventBus

    regs, watches, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cat = subprocess.Popen([sys.executable, "-m", "autopilot", "catalog", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        catp = psutil.Process(cat.pid)

        def peers():
            return {c.raddr for c in catp.net_connections(kind="tcp") if c.raddr}

        async def main():
            cfg = ConsulConfig(address=f"127.0.0.1:{port}")
            jobs = [JobConfig(name=f"svc{k}", port=8000 + k, interfaces=["lo"],
                              health=HealthConfig(interval=0.1, ttl=1)) for k in range(regs)]
            wcfg = [WatchConfig(name=f"w{k}", interval=5) for k in range(watches)]
            ctx = Context(config=Config(consul=cfg, jobs=jobs, watches=wcfg), bus=EventBus(),
                          consul=connect(cfg, {}))
            comps = [ServiceRegistration(ctx, j) for j in jobs] + [Watch(ctx, w) for w in wcfg]
            for c in comps:
                await c.start()
            seen, checks, t0 = set(), 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                for j in jobs:
                    ctx.bus.publish(Event(ev.HEALTHY if checks % 10 else ev.UNHEALTHY, j.name,
                                          detail=str(checks)))
                checks += 1
                await asyncio.sleep(0.1)
                if checks % 5 == 0:
                    seen |= peers()
            threads = threading.active_count()
            for c in comps:
                await c.stop()
            ctx.consul.close()
            return {"checks_per_job": checks, "connections": len(seen), "threads": threads}

        print(json.dumps(asyncio.run(main())))
    finally:
        cat.terminate()
        cat.wait(5)
''')


def measure(tree: Path, regs: int, watches: int, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(regs), str(watches), str(seconds)],
                         cwd=tree, env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registrations", type=int, default=2)
    ap.add_argument("--watches", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--before", type=Path, default=None, help="an older autopilot tree")
    ap.add_argument("--out", default=str(ROOT / "bench/results/consul_connections.json"))
    args = ap.parse_args()
    rows = [("this tree", measure(ROOT, args.registrations, args.watches, args.seconds))]
    if args.before:
        rows.append((f"before ({args.before})",
                     measure(args.before.resolve(), args.registrations, args.watches,
                             args.seconds)))
    print(f"{args.registrations} registrations, {args.watches} watches, {args.seconds:g} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'tree':40} {'checks/job':>10} {'connections':>12} {'threads':>8}")
    for name, r in rows:
        print(f"{name:40} {r['checks_per_job']:>10} {r['connections']:>12} {r['threads']:>8}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(
        {"host": platform.node(), "python": platform.python_version(),
         "registrations": args.registrations, "watches": args.watches,
         "seconds": args.seconds, "rows": [{"tree": n, **r} for n, r in rows]}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
