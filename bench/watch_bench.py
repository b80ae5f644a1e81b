"""Watch reaction time: a service changes in the catalog -> the `changed` hook process started.

Modes, each measured over N changes (an instance registered, then deregistered, alternately):

- ``autopilot run (blocking)``: a real ``python -m autopilot run`` whose watch parks in a
  blocking query and whose job ``when: {source: watch.bench, each: changed}`` runs the hook;
- ``blocking (in-process)``: the Watch component alone, the hook spawned on ``changed``;
- ``polling 1s`` / ``polling 5s``: the same Watch in ContainerPilot's model (a plain poll every
  ``interval``), hook spawned the same way.

The hook is ``sh -c 'date +%s.%N >> FILE'``: its timestamp is when the hook process ran. The
change time is taken just after the catalog answered the write. Everything is on 127.0.0.1.

    python bench/watch_bench.py                 # 100 changes per mode (~9 min: polling 5s)
    python bench/watch_bench.py --changes 20    # quicker

Prints a table and writes bench/results/watch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autopilot.catalog.local import LocalCatalog  # noqa: E402
from autopilot.config.model import Config, ConsulConfig, WatchConfig  # noqa: E402
from autopilot.context import Context  # noqa: E402
from autopilot.discovery import Watch, connect  # noqa: E402
from autopilot.events import CHANGED, EventBus  # noqa: E402


def hook_cmd(path: Path) -> list[str]:
    return ["sh", "-c", f"date +%s.%N >> {path}"]


def stamps(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [float(x) for x in path.read_text().split()]


def change(url: str, service: str, i: int) -> float:
    """Register (even i) or deregister (odd i) one instance; the time the catalog answered."""
    sid = f"{service}-1"
    if i % 2 == 0:
        body = {"ID": sid, "Name": service, "Port": 9000, "Address": "127.0.0.1",
                "Check": {"CheckID": f"service:{sid}", "TTL": "600s", "Status": "passing"}}
        r = requests.put(url + "/v1/agent/service/register", json=body, timeout=5)
    else:
        r = requests.put(url + f"/v1/agent/service/deregister/{sid}", timeout=5)
    r.raise_for_status()
    return time.time()


async def measure(url: str, service: str, path: Path, n: int, timeout: float,
                  phase: float = 0.25) -> list[float]:
    """Make n changes one after the other; each waits for its hook. Delays in seconds.

    Before each change, a random pause up to ``phase``: with polling, a change lands at a
    uniformly random point of the poll period (set ``phase`` to the interval)."""
    delays = []
    for i in range(n):
        before = len(stamps(path))
        await asyncio.sleep(random.uniform(0.05, max(0.05, phase)))
        t0 = await asyncio.to_thread(change, url, service, i)
        deadline = time.monotonic() + timeout
        while len(stamps(path)) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service}: no hook run for change {i}")
            await asyncio.sleep(0.002)
        delays.append(stamps(path)[before] - t0)
    return delays


async def in_process(url: str, address: str, service: str, path: Path, n: int,
                     blocking: bool, interval: float) -> list[float]:
    cfg = Config(consul=ConsulConfig(address=address),
                 watches=[WatchConfig(name=service, interval=interval)])
    ctx = Context(config=cfg, bus=EventBus(), consul=connect(cfg.consul, {}))
    watch = Watch(ctx, cfg.watches[0], blocking=blocking)
    sub = ctx.bus.subscribe("bench-hook")
    procs: list[asyncio.subprocess.Process] = []

    async def hooks() -> None:
        while True:
            e = await sub.get()
            if e.code == CHANGED and e.source == watch.source:
                procs.append(await asyncio.create_subprocess_exec(*hook_cmd(path)))

    hook_task = asyncio.create_task(hooks())
    await watch.start()
    try:
        while watch.index == 0:  # the first answer is in (blocking: now parked)
            await asyncio.sleep(0.01)
        return await measure(url, service, path, n, timeout=interval * 2 + 5,
                             phase=0.25 if blocking else interval)
    finally:
        await watch.stop()
        hook_task.cancel()
        for p in procs:
            await p.wait()
        ctx.consul.close()


async def with_autopilot_run(url: str, address: str, tmp: Path, n: int) -> list[float]:
    service = "benchrun"
    path = tmp / f"{service}.stamps"
    cfg = {
        "consul": address,
        "control": {"socket": str(tmp / "ap.sock")},
        "logging": {"level": "WARN"},
        "jobs": [{"name": "on-change", "exec": hook_cmd(path),
                  "when": {"source": f"watch.{service}", "each": "changed"}}],
        "watches": [{"name": service, "interval": 5}],
    }
    (tmp / "run.json5").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "AUTOPILOT"))}
    proc = subprocess.Popen([sys.executable, "-m", "autopilot", "run", str(tmp / "run.json5")],
                            cwd=ROOT, env=env, stdout=(tmp / "run.log").open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        # the watch's first answer: make one change and wait for its hook (not counted)
        await asyncio.sleep(1.0)
        await measure(url, service, path, 2, timeout=15)
        return await measure(url, service, path, n, timeout=10)
    finally:
        proc.terminate()
        proc.wait(15)


def summary(name: str, delays: list[float]) -> dict:
    ms = sorted(d * 1000 for d in delays)
    p99 = ms[min(len(ms) - 1, max(0, round(0.99 * len(ms)) - 1))]
    return {"mode": name, "changes": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p99_ms": round(p99, 1), "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1),
            "mean_ms": round(statistics.fmean(ms), 1)}


async def main_async(args: argparse.Namespace) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    cat = LocalCatalog(tmp / "catalog.log").start()
    results = []
    try:
        url, address = cat.url, cat.address
        n = args.changes
        results.append(summary("autopilot run (blocking)",
                               await with_autopilot_run(url, address, tmp, n)))
        results.append(summary("blocking (in-process)", await in_process(
            url, address, "benchblock", tmp / "block.stamps", n, True, 5)))
        # ContainerPilot's model; the two intervals run side by side (they barely load CPU)
        polls = await asyncio.gather(*(in_process(
            url, address, f"benchpoll{int(i)}", tmp / f"poll{int(i)}.stamps", n, False, i)
            for i in args.poll_intervals))
        for i, delays in zip(args.poll_intervals, polls, strict=True):
            results.append(summary(f"polling {i:g}s (ContainerPilot model)", delays))
    finally:
        cat.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--poll-intervals", type=float, nargs="*", default=[1.0, 5.0])
    ap.add_argument("--out", default=str(ROOT / "bench/results/watch.json"))
    args = ap.parse_args()
    t0 = time.monotonic()
    results = asyncio.run(main_async(args))
    header = f"{'mode':<36} {'n':>4} {'median ms':>10} {'p99 ms':>9} {'max ms':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['mode']:<36} {r['changes']:>4} {r['median_ms']:>10} {r['p99_ms']:>9} "
              f"{r['max_ms']:>9}")
    out = {"benchmark": "watch reaction: catalog change -> changed hook process started",
           "command": "python bench/watch_bench.py " + " ".join(sys.argv[1:]),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "duration_s": round(time.monotonic() - t0, 1), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
