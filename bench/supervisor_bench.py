"""autopilot against supervisord, tini and dumb-init, side by side in one run: memory (RSS,
PSS, USS), idle CPU and start latency; plus autopilot's import-time profile.

Not a test. Run: ``python bench/supervisor_bench.py [--window 30] [--starts 10]
[--python PATH ...] [--before DIR]`` (tini, dumb-init and supervisor are Debian packages).

``--python`` (repeatable) names the interpreters autopilot's rows run on, side by side in
the same run (default: the one running the bench). The images run Debian's
``/usr/bin/python3`` in a virtual environment (images/*/Dockerfile); to measure that one,
make such an environment (``/usr/bin/python3 -m venv /opt/ap && /opt/ap/bin/pip install .``)
and pass ``--python /opt/ap/bin/python3 --python python3``. Every interpreter must import
autopilot's dependencies; autopilot itself comes from the tree being measured.

Rows (all running at the same time during the idle window):

- ``autopilot 1 job``: one ``sleep`` job, the control socket, nothing else (no telemetry,
  no checks). Targets (issue 12): RSS <= 15 MB, CPU 0.0 %.
- ``autopilot 5 jobs full``: 5 ``sleep`` jobs, each with a ``true`` health check every 1 s
  (5 checks/s) and a port, so each is registered in Consul with a TTL check; discovery on
  against an embedded catalog (``autopilot catalog``, started here, not measured), a watch,
  the control socket and telemetry. Targets: RSS <= 20 MB, CPU <= 0.1 % (supervisor alone).
- ``autopilot 5 jobs checks``: the same 5 jobs and checks without discovery and telemetry
  (the issue's first measurement).
- ``supervisord``: 5 ``sleep`` programs (it has no health checks); ``tini`` and
  ``dumb-init``: one ``sleep`` child (they run one process).
- ``python3``/``python3 + asyncio``/``python3 + asyncio - ssl``: an idle interpreter (and
  one that imported asyncio, with and without ``ssl``), for the floor any Python supervisor
  starts from on this machine; one set per interpreter.
- With ``--before DIR`` (a checkout of an older autopilot, e.g. ``git archive 6c2b840``),
  its ``1 job`` and ``5 jobs full`` rows are measured in the same run (``PYTHONPATH=DIR``).

Memory is read from ``/proc/PID/smaps_rollup`` once per second over the window (median):
RSS counts every resident page, PSS shares each page among the processes mapping it, USS
counts only the pages no other process maps (what the process costs on its own). CPU is the
supervisor process's own CPU time over the window, from ``/proc/PID/schedstat``
(nanoseconds: 0.1 % over 60 s is only six 10 ms clock ticks of ``utime+stime``), and with
its reaped children (the checks it spawns: ``cutime+cstime``); the JSON also has it in
microseconds per second and the main thread's voluntary context switches per second
(``wakeups_per_s``: every sleep in the event loop and every spawn's vfork wait). Start latency: exec of the
supervisor to its first job's process running (the job writes a timestamp as its first act), median of ``--starts`` fresh starts,
taken round-robin across the rows; beside it the supervisor's own CPU time until then
(``/proc/PID/schedstat``: what a start costs when it never waits for a core, which on a
quiet machine is close to its wall time).

``--cpu-only`` measures only the rows with checks (``5 jobs full`` and ``5 jobs checks``,
now and ``--before``) over the idle window, nothing else running beside them: a quick
side-by-side of the supervisor's CPU while working on it (about a minute).

Prints a table and writes bench/results/supervisor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.catalog.local import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "supervisor.json"
JOBS = 5
TICK = os.sysconf("SC_CLK_TCK")


# -- configs ------------------------------------------------------------------------------------
def job_cmd(i: int, marker: Path | None) -> list[str]:
    if i == 0 and marker is not None:
        return ["sh", "-c", f"date +%s%N > {marker}; exec sleep 3600"]
    return ["sleep", "3600"]


def autopilot_config(tmp: Path, kind: str, marker: Path | None, prefix: str,
                     consul: str | None, telemetry_port: int | None) -> Path:
    """``kind``: ``one`` (1 job), ``checks`` (5 jobs + checks), ``full`` (+ discovery...)."""
    jobs: list[dict[str, Any]] = []
    for i in range(1 if kind == "one" else JOBS):
        job: dict[str, Any] = {"name": f"{prefix}job{i}", "exec": job_cmd(i, marker)}
        if kind != "one":
            job["health"] = {"exec": ["true"], "interval": 1, "ttl": 5}
        if kind == "full":
            job["port"] = 8000 + i
            job["interfaces"] = ["static:127.0.0.1"]
        jobs.append(job)
    cfg: dict[str, Any] = {"control": {"socket": str(tmp / "ap.sock")},
                           "logging": {"level": "INFO"}, "jobs": jobs}
    if kind == "full":
        cfg["consul"] = consul
        cfg["watches"] = [{"name": f"{prefix}job0", "interval": 5}]
        cfg["telemetry"] = {"port": telemetry_port, "interfaces": ["static:127.0.0.1"]}
    path = tmp / "autopilot.json5"
    path.write_text(json.dumps(cfg))
    return path


def supervisord_config(tmp: Path, marker: Path | None) -> Path:
    lines = ["[supervisord]", "nodaemon=true", f"logfile={tmp}/supervisord.log",
             f"pidfile={tmp}/supervisord.pid", f"childlogdir={tmp}", ""]
    for i in range(JOBS):
        cmd = " ".join(job_cmd(i, None))
        if i == 0 and marker is not None:
            cmd = f"sh -c 'date +%%s%%N > {marker}; exec sleep 3600'"
        lines += [f"[program:job{i}]", f"command={cmd}", "autorestart=true", ""]
    path = tmp / "supervisord.conf"
    path.write_text("\n".join(lines))
    return path


class Setup:
    """What the rows share: the catalog address, the trees autopilot runs from, the
    interpreters (tag -> executable; the first also runs the ``before`` rows)."""

    def __init__(self, consul: str | None, now: Path, before: Path | None,
                 pythons: dict[str, str]) -> None:
        self.consul = consul
        self.now = now
        self.before = before
        self.pythons = pythons
        self.first = next(iter(pythons.values()))

    def split(self, row: str) -> tuple[str, str]:
        """``"autopilot 1 job @ 3.11.2 /usr"`` -> (``"autopilot 1 job"``, its executable)."""
        name, _, tag = row.partition(" @ ")
        return name, self.pythons[tag] if tag else self.first


def interpreter_tag(executable: str) -> str:
    """``3.11.2 /usr``: the version and the installation (``sys.base_prefix``: a virtual
    environment shows the interpreter it was made from)."""
    out = subprocess.run([executable, "-c", "import sys, platform; "
                          "print(platform.python_version(), sys.base_prefix)"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def check_interpreter(executable: str) -> None:
    probe = subprocess.run([executable, "-c", "import psutil"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SystemExit(f"{executable} cannot import autopilot's dependencies "
                         f"({probe.stderr.strip().splitlines()[-1]}); make a virtual "
                         "environment as the images do (see --help)")


def installed_copy(tree: Path, dest: Path, pythons: list[str]) -> Path:
    """The ``autopilot`` package of ``tree`` copied to ``dest`` with its bytecode compiled
    by every interpreter, as a wheel install leaves it (a source checkout under
    PYTHONDONTWRITEBYTECODE compiles every module at each start, which is not what an image
    does)."""
    shutil.copytree(tree / "autopilot", dest / "autopilot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for python in dict.fromkeys(pythons):
        subprocess.run([python, "-m", "compileall", "-q", str(dest / "autopilot")],
                       check=True, capture_output=True, timeout=300)
    return dest


def command(row: str, tmp: Path, marker: Path | None, setup: Setup
            ) -> tuple[list[str], dict[str, str]]:
    """argv and environment for one row."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "AUTOPILOT"))}
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the copies are compiled; nothing is written
    row, python = setup.split(row)
    if row.startswith(("autopilot", "before")):
        kind = row.rsplit(" ", 1)[-1] if not row.endswith("job") else "one"
        prefix = "b" if row.startswith("before") else "a" + str(abs(hash(row)) % 97)
        cfg = autopilot_config(tmp, kind, marker, prefix, setup.consul, free_port())
        env["PYTHONPATH"] = str(setup.before if row.startswith("before") else setup.now)
        return [python, "-m", "autopilot", "run", str(cfg)], env
    if row == "supervisord":
        return [shutil.which("supervisord") or "/usr/bin/supervisord", "-n", "-c",
                str(supervisord_config(tmp, marker))], env
    if row in ("tini", "dumb-init"):
        argv = job_cmd(0, marker)
        return ([shutil.which("tini") or "tini", "-s", "--", *argv] if row == "tini"
                else [shutil.which("dumb-init") or "dumb-init", *argv]), env
    if row == "python3":
        return [python, "-c", "import time; time.sleep(3600)"], env
    if row == "python3 + asyncio":
        return [python, "-c", "import asyncio, time; time.sleep(3600)"], env
    if row == "python3 + asyncio - ssl":
        return [python, "-c", "import sys; sys.modules['ssl'] = None; "
                "import asyncio, time; time.sleep(3600)"], env
    raise ValueError(row)


def spawn(row: str, tmp: Path, marker: Path | None, setup: Setup) -> subprocess.Popen[bytes]:
    argv, env = command(row, tmp, marker, setup)
    return subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp / "stderr.log").open("wb"), start_new_session=True)


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


# -- /proc readings -----------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def sleeps_under(pid: int) -> int:
    n, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "sleep":
                n += 1
            todo += children(p)
        except OSError:
            pass
    return n


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS in MB from smaps_rollup."""
    vals: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            vals[parts[0].rstrip(":")] = int(parts[1])
    uss = vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)
    return {"rss": vals["Rss"] / 1024, "pss": vals["Pss"] / 1024, "uss": uss / 1024}


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# -- measurements -------------------------------------------------------------------------------
def expected_sleeps(row: str) -> int:
    row = row.partition(" @ ")[0]
    if row.startswith("python3"):
        return 0
    if row in ("tini", "dumb-init") or row.endswith("1 job"):
        return 1
    return JOBS


def idle(rows: list[str], setup: Setup, window: float, settle: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    tmps = {r: Path(tempfile.mkdtemp(prefix="bench-sup-")) for r in rows}
    procs = {r: spawn(r, tmps[r], None, setup) for r in rows}
    try:
        for r, p in procs.items():
            wait_until(lambda p=p, r=r: sleeps_under(p.pid) >= expected_sleeps(r), 60,
                       f"{r} to start its jobs")
        time.sleep(settle)
        t0 = {r: cpu_ticks(p.pid) for r, p in procs.items()}
        ns0 = {r: run_ns(p.pid) for r, p in procs.items()}
        sw0 = {r: switches(p.pid) for r, p in procs.items()}
        w0 = time.monotonic()
        samples: dict[str, list[dict[str, float]]] = {r: [] for r in rows}
        while time.monotonic() - w0 < window:
            for r, p in procs.items():
                samples[r].append(memory(p.pid))
            time.sleep(1.0)
        elapsed = time.monotonic() - w0
        for r, p in procs.items():
            _, kids1 = cpu_ticks(p.pid)
            own = (run_ns(p.pid) - ns0[r]) / 1e9  # exact, not in 10 ms clock ticks
            kids = (kids1 - t0[r][1]) / TICK
            mem = {k: round(statistics.median(s[k] for s in samples[r]), 1)
                   for k in ("rss", "pss", "uss")}
            out[r] = {"rss_mb": mem["rss"], "pss_mb": mem["pss"], "uss_mb": mem["uss"],
                      "rss_max_mb": round(max(s["rss"] for s in samples[r]), 1),
                      "cpu_pct": round(100 * own / elapsed, 3),
                      "cpu_pct_with_children": round(100 * (own + kids) / elapsed, 3),
                      "cpu_us_per_s": round(1e6 * own / elapsed),
                      "wakeups_per_s": round((switches(p.pid) - sw0[r]) / elapsed, 1),
                      "window_s": round(elapsed, 1)}
    finally:
        for p in procs.values():
            stop(p)
        for t in tmps.values():
            shutil.rmtree(t, ignore_errors=True)
    return out


def switches(pid: int) -> int:
    """Voluntary context switches of the main thread so far: how often it slept and was
    woken (each wait in the event loop, each posix_spawn's vfork wait)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def run_ns(pid: int) -> int:
    """CPU time the process itself has run so far (``/proc/PID/schedstat``, nanoseconds)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def start_latency(row: str, runs: int, setup: Setup,
                  cpu: list[float] | None = None) -> list[float]:
    """Exec → first job running, in ms; with ``cpu``, also the supervisor's own CPU time
    until then (what the start costs without waiting for a core: a loaded machine
    stretches the wall time, hardly this)."""
    samples = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
        marker = tmp / "started"
        try:
            argv, env = command(row, tmp, marker, setup)
            t0 = time.time_ns()
            proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    text = marker.read_text().strip() if marker.exists() else ""
                    if text:
                        samples.append((int(text) - t0) / 1e6)
                        if cpu is not None:
                            cpu.append(run_ns(proc.pid) / 1e6)
                        break
                    time.sleep(0.002)
                else:
                    raise RuntimeError(f"{row}: first job never started")
            finally:
                stop(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return samples


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def import_profile(setup: Setup, row: str) -> dict[str, Any]:
    """``python -X importtime`` of a real start of ``row``, until its first job runs."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-imp-"))
    marker = tmp / "started"
    try:
        argv, env = command(row, tmp, marker, setup)
        argv = [argv[0], "-X", "importtime", *argv[1:]]
        with (tmp / "imports.txt").open("wb") as err:
            proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
            try:
                wait_until(marker.exists, 30, "the first job")
                time.sleep(1.5)  # components that import on first use (watches, telemetry)
            finally:
                stop(proc)
        modules = []
        for line in (tmp / "imports.txt").read_text(errors="replace").splitlines():
            m = IMPORT_LINE.match(line)
            if m:
                modules.append({"module": m.group(4), "self_us": int(m.group(1)),
                                "cumulative_us": int(m.group(2)),
                                "depth": len(m.group(3)) // 2})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = {m["module"] for m in modules}
    if "_ssl" not in names:  # an import blocked on purpose (autopilot.lazyssl) still shows
        modules = [m for m in modules if m["module"] != "ssl"]
    top: dict[str, int] = {}
    for m in modules:
        pkg = m["module"].split(".")[0]
        top[pkg] = top.get(pkg, 0) + m["self_us"]
    return {"row": row, "modules_imported": len(modules),
            "total_ms": round(sum(m["self_us"] for m in modules) / 1000, 1),
            "by_package_ms": {k: round(v / 1000, 1)
                              for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:25]},
            "third_party": sorted({m["module"].split(".")[0] for m in modules}
                                  & {"aiohttp", "jinja2", "consul", "requests", "urllib3",
                                     "prometheus_client", "click", "structlog", "psutil",
                                     "json5", "yarl", "multidict", "ssl"}),
            "modules": modules}


def start_catalog() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autopilot", "catalog", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)
    import urllib.request

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader",
                                        timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(up, 20, "the embedded catalog")
    return proc, f"127.0.0.1:{port}"


def version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


#: issue 12's targets, per interpreter: (row, column, limit, what)
TARGETS = [("autopilot 1 job", "rss_mb", 15.0, "RSS <= 15 MB, 1 job"),
           ("autopilot 5 jobs full", "rss_mb", 20.0, "RSS <= 20 MB, full config"),
           ("autopilot 5 jobs full", "cpu_pct", 0.1, "CPU <= 0.1 %, 5 checks/s + discovery"),
           ("autopilot 1 job", "cpu_pct", 0.0, "CPU 0.0 %, no checks"),
           ("autopilot 1 job", "start_ms_median", 150.0, "start <= 150 ms median")]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--python", action="append", default=[],
                    help="an interpreter for autopilot's rows (repeatable; default: this one)")
    ap.add_argument("--before", type=Path, default=None,
                    help="an older autopilot source tree to measure in the same run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the rows with checks (now and --before), the idle window "
                         "alone: a quick A/B of the supervisor's CPU (no starts, no other "
                         "supervisors, no import profile)")
    ap.add_argument("--source", action="store_true",
                    help="run autopilot from the source trees as they are (no compiled "
                         "bytecode copy)")
    args = ap.parse_args()

    executables = [shutil.which(p) or p for p in (args.python or [sys.executable])]
    for python in executables:
        check_interpreter(python)
    pythons = {interpreter_tag(p): p for p in executables}
    tags = list(pythons)
    rows: list[str] = []
    if args.cpu_only:
        for tag in tags:
            rows += [f"autopilot 5 jobs full @ {tag}", f"autopilot 5 jobs checks @ {tag}"]
        if args.before:
            rows += [f"before 5 jobs full @ {tags[0]}", f"before 5 jobs checks @ {tags[0]}"]
        args.starts = 0
    else:
        for tag in tags:
            rows += [f"{r} @ {tag}" for r in ("autopilot 1 job", "autopilot 5 jobs full",
                                              "autopilot 5 jobs checks")]
        if args.before:
            rows += [f"before 1 job @ {tags[0]}", f"before 5 jobs full @ {tags[0]}"]
        rows += ["supervisord", "tini", "dumb-init"]
        for tag in tags:
            rows += [f"{r} @ {tag}" for r in ("python3", "python3 + asyncio",
                                              "python3 + asyncio - ssl")]
    start_rows = [r for r in rows if not r.startswith("python3")] if args.starts else []

    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    now, before = ROOT, args.before.resolve() if args.before else None
    if not args.source:
        now = installed_copy(ROOT, work / "now", executables)
        before = installed_copy(before, work / "before", executables) if before else None
    catalog, address = start_catalog()
    setup = Setup(address, now, before, pythons)
    loads: dict[str, list[float]] = {"before": [round(x, 2) for x in load0]}
    try:
        res = idle(rows, setup, args.window, args.settle)
        loads["after_idle"] = [round(x, 2) for x in os.getloadavg()]
        # round-robin (each round starts every row once), so a change of load during the
        # starts falls on every row alike instead of on whichever rows came first
        lats: dict[str, list[float]] = {r: [] for r in start_rows}
        cpus: dict[str, list[float]] = {r: [] for r in start_rows}
        for _ in range(args.starts):
            for r in start_rows:
                lats[r] += start_latency(r, 1, setup, cpus[r])
        for r, lat in lats.items():
            res[r]["start_ms_median"] = round(statistics.median(lat), 1)
            res[r]["start_ms_samples"] = [round(x, 1) for x in lat]
            res[r]["start_cpu_ms_median"] = round(statistics.median(cpus[r]), 1)
        profiles = {} if args.cpu_only else {
            tag: import_profile(setup, f"autopilot 5 jobs full @ {tag}") for tag in tags}
    finally:
        stop(catalog)
        shutil.rmtree(work, ignore_errors=True)
    loads["after"] = [round(x, 2) for x in os.getloadavg()]
    targets = {tag: [{"target": what, "row": row, "value": res[f"{row} @ {tag}"].get(col),
                      "met": res[f"{row} @ {tag}"].get(col, float("inf")) <= limit}
                     for row, col, limit, what in TARGETS if f"{row} @ {tag}" in res]
               for tag in tags}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "bench_python": sys.executable, "interpreters": pythons,
                    "loadavg_before": loads["before"], "loadavg_after_idle_window":
                    loads["after_idle"], "loadavg_after": loads["after"]},
        "setup": {"jobs": JOBS, "job": "sleep 3600", "check": "`true` every 1 s, ttl 5 s",
                  "window_s": args.window, "settle_s": args.settle, "starts": args.starts,
                  "before": str(args.before) if args.before else None,
                  "bytecode": "compiled copy" if not args.source else "source tree",
                  "versions": {"supervisord": version(["supervisord", "--version"]),
                               "tini": version(["tini", "--version"]),
                               "dumb-init": version(["dumb-init", "--version"])}},
        "rows": res,
        "targets": targets,
        "import_profile": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    cols = [("RSS MB", "rss_mb"), ("PSS MB", "pss_mb"), ("USS MB", "uss_mb"),
            ("CPU %", "cpu_pct"), ("CPU % +children", "cpu_pct_with_children"),
            ("CPU us/s", "cpu_us_per_s"), ("wake-ups/s", "wakeups_per_s"),
            ("start ms (median)", "start_ms_median"),
            ("start CPU ms", "start_cpu_ms_median")]
    table = [("", *[c[0] for c in cols])]
    for r in rows:
        table.append((r, *[str(res[r].get(k, "-")) for _, k in cols]))
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    for tag in tags:
        print(f"targets @ {tag} ({pythons[tag]}): " + "; ".join(
            f"{t['target']}: {t['value']} {'met' if t['met'] else 'NOT met'}"
            for t in targets[tag]))
        p = profiles.get(tag)
        if p:
            print(f"  import profile ({p['row']}): {p['modules_imported']} modules, "
                  f"{p['total_ms']} ms; third-party: {', '.join(p['third_party'])}")
    print(f"load average before / after the idle window / after: {loads['before']} / "
          f"{loads['after_idle']} / {loads['after']}; written to {args.out}")


if __name__ == "__main__":
    main()
