"""autopilot vs supervisord, side by side: resident memory, idle CPU, start latency.

Not a test. Run: ``python bench/supervisor_bench.py [--window 30] [--starts 10]``.

- Idle: each supervisor runs 5 ``sleep`` jobs; autopilot also health-checks each one every
  second with ``true`` (supervisord has no health checks, so it does less work; a second
  autopilot without checks is measured too, for a like-for-like figure). All run at the same
  time; after a settle period, RSS (psutil) and CPU time are taken over the window.
  CPU is reported for the supervisor process alone and with its reaped children (for
  autopilot that includes the 5 checks/s it spawns).
- Start latency: from exec of the supervisor to its first job's process running (the job
  writes a timestamp as its first act), median of N fresh starts.

Prints a table and writes bench/results/supervisor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "supervisor.json"
JOBS = 5


def autopilot_config(tmp: Path, marker: Path | None, health: bool = True) -> Path:
    jobs = []
    for i in range(JOBS):
        cmd = ["sleep", "3600"]
        if i == 0 and marker is not None:
            cmd = ["sh", "-c", f"date +%s%N > {marker}; exec sleep 3600"]
        job: dict[str, Any] = {"name": f"job{i}", "exec": cmd}
        if health:
            job["health"] = {"exec": ["true"], "interval": 1, "ttl": 5}
        jobs.append(job)
    path = tmp / "autopilot.json5"
    path.write_text(json.dumps({"control": {"socket": str(tmp / "ap.sock")},
                                "logging": {"level": "INFO"}, "jobs": jobs}))
    return path


def supervisord_config(tmp: Path, marker: Path | None) -> Path:
    lines = ["[supervisord]", "nodaemon=true", f"logfile={tmp}/supervisord.log",
             f"pidfile={tmp}/supervisord.pid", f"childlogdir={tmp}", ""]
    for i in range(JOBS):
        cmd = "sleep 3600"
        if i == 0 and marker is not None:
            cmd = f"sh -c 'date +%%s%%N > {marker}; exec sleep 3600'"
        lines += [f"[program:job{i}]", f"command={cmd}", "autorestart=true", ""]
    path = tmp / "supervisord.conf"
    path.write_text("\n".join(lines))
    return path


def spawn(kind: str, tmp: Path, marker: Path | None) -> subprocess.Popen[bytes]:
    if kind.startswith("autopilot"):
        cfg = autopilot_config(tmp, marker, health=kind == "autopilot")
        cmd = [sys.executable, "-m", "autopilot", "run", str(cfg)]
        if not (ROOT / "autopilot" / "commands.py").exists():
            cmd = [sys.executable, "-c", "import sys; from autopilot.supervisor import "
                   "run_supervisor; sys.exit(run_supervisor(sys.argv[1]))", cmd[-1]]
    else:
        cmd = [shutil.which("supervisord") or "/usr/bin/supervisord", "-n", "-c",
               str(supervisord_config(tmp, marker))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "AUTOPILOT"))}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_jobs(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    ps = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        sleeps = [c for c in ps.children(recursive=True) if c.name() == "sleep"]
        if len(sleeps) >= JOBS:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not start its {JOBS} jobs")


def idle(window: float, settle: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ap-") as a, \
            tempfile.TemporaryDirectory(prefix="bench-ap0-") as a0, \
            tempfile.TemporaryDirectory(prefix="bench-sv-") as s:
        procs = {"autopilot": spawn("autopilot", Path(a), None),
                 "autopilot_nohealth": spawn("autopilot_nohealth", Path(a0), None),
                 "supervisord": spawn("supervisord", Path(s), None)}
        try:
            for p in procs.values():
                wait_jobs(p)
            time.sleep(settle)
            ps = {k: psutil.Process(p.pid) for k, p in procs.items()}
            t0 = {k: p.cpu_times() for k, p in ps.items()}
            w0 = time.monotonic()
            rss_samples: dict[str, list[int]] = {k: [] for k in ps}
            while time.monotonic() - w0 < window:
                for k, p in ps.items():
                    rss_samples[k].append(p.memory_info().rss)
                time.sleep(1.0)
            elapsed = time.monotonic() - w0
            for k, p in ps.items():
                t1 = p.cpu_times()
                own = (t1.user - t0[k].user) + (t1.system - t0[k].system)
                kids = (t1.children_user - t0[k].children_user) + (
                    t1.children_system - t0[k].children_system)
                out[k] = {
                    "rss_mb": round(statistics.median(rss_samples[k]) / 2**20, 1),
                    "rss_max_mb": round(max(rss_samples[k]) / 2**20, 1),
                    "cpu_pct": round(100 * own / elapsed, 3),
                    "cpu_pct_with_children": round(100 * (own + kids) / elapsed, 3),
                    "window_s": round(elapsed, 1),
                }
        finally:
            for p in procs.values():
                stop(p)
    return out


def start_latency(kind: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as d:
            marker = Path(d) / "started"
            t0 = time.time_ns()
            proc = spawn(kind, Path(d), marker)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    text = marker.read_text().strip() if marker.exists() else ""
                    if text:
                        samples.append((int(text) - t0) / 1e6)
                        break
                    time.sleep(0.002)
                else:
                    raise RuntimeError(f"{kind}: first job never started")
            finally:
                stop(proc)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--starts", type=int, default=10)
    args = ap.parse_args()

    load0 = os.getloadavg()
    res_idle = idle(args.window, args.settle)
    lat = {k: start_latency(k, args.starts) for k in ("autopilot", "supervisord")}
    sv_version = subprocess.run(["supervisord", "--version"], capture_output=True,
                                text=True).stdout.strip()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load0],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"jobs": JOBS, "job": "sleep 3600",
                  "autopilot_health": "exec `true` every 1 s per job",
                  "supervisord_health": "none (supervisord has no health checks)",
                  "supervisord_version": sv_version, "window_s": args.window,
                  "starts": args.starts},
        "autopilot": {**res_idle["autopilot"],
                      "start_ms_median": round(statistics.median(lat["autopilot"]), 1),
                      "start_ms_samples": [round(x, 1) for x in lat["autopilot"]]},
        "autopilot_nohealth": res_idle["autopilot_nohealth"],
        "supervisord": {**res_idle["supervisord"],
                        "start_ms_median": round(statistics.median(lat["supervisord"]), 1),
                        "start_ms_samples": [round(x, 1) for x in lat["supervisord"]]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    rows = [("", "autopilot", "autopilot, no checks", f"supervisord {sv_version}")]
    for key, label in [("rss_mb", "RSS, median (MB)"), ("rss_max_mb", "RSS, max (MB)"),
                       ("cpu_pct", "CPU, supervisor only (%)"),
                       ("cpu_pct_with_children", "CPU, incl. reaped children (%)"),
                       ("start_ms_median", f"start latency, median of {args.starts} (ms)")]:
        rows.append((label, str(result["autopilot"][key]),
                     str(result["autopilot_nohealth"].get(key, "-")),
                     str(result["supervisord"][key])))
    rows.append(("health checks", "5 x `true` every 1 s", "none", "none"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"load average before/after: {result['machine']['loadavg_before']} / "
          f"{result['machine']['loadavg_after']}; written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
