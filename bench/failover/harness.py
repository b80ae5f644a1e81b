"""What the Redis and the PostgreSQL failover benchmarks share: the trials, the plan runner,
the summary table and the JSON, so both services' sides are driven by the same client code
in the same way.

A *side* is one system at one setting (autopilot fast, Patroni at its floor, ...). It offers
`label`, `prepare()` (every member running and in sync; may return notes for the trial), `members`, `primary()`,
`kill(name)`, `graceful(name)` (autopilot SIGTERM, Patroni switchover, Sentinel SIGTERM),
`hold_back(name, seconds)` (new writes on the primary alone), `stall(name)` /
`resume(name)` (a replica stops acknowledging; PostgreSQL only), `leader_epoch()`,
`jitter()` (a random wait before the fault, U(0, the side's lease cycle), so it falls
anywhere in that cycle; it follows a fixed settle of `SETTLE_S`, as anchors.md's method),
`workload_options()` (the client's driver and timeouts), `close()` (nothing left
running, no directory left behind) and, optionally, `keep(dest)` (copy what explains a
failed trial, its logs and state, before `close()` removes it).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil

from autopilot.lab.workload import Member, Timeline, Workload
from bench.failover.breakdown import PHASES, breakdown

#: a group: (label, trial count, the trial run against the side)
Group = tuple[str, int, Callable[[Any], dict[str, Any]]]

#: seconds every fault trial waits, after its start condition and 50 acknowledged writes,
#: before the side's random jitter: anchors.md's "sleeps 3 s plus U(0, loop_wait)" (the
#: command line's --settle changes it for a quick run; the JSON records both per trial)
SETTLE_S = 3.0

#: where a failed trial's side copies its directory (logs, state) before the run removes
#: it; None: keep nothing. The command line's --keep-failed sets it.
KEEP_DIR: Path | None = None
#: files larger than this are not copied (WAL segments, relation files: not what explains
#: a failure, and a 3-node cluster's data would fill /tmp after a few failures)
KEEP_MAX_BYTES = 4 << 20


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def member(side: Any, name: str) -> Member:
    return next(m for m in side.members if m.name == name)


def promoted_elsewhere(side: Any, old: str) -> bool:
    try:
        return side.primary() != old
    except (AssertionError, StopIteration, OSError, RuntimeError):
        return False


def fault_delay(side: Any, settle: float) -> float:
    """Sleep `settle` seconds plus the side's jitter (U(0, its lease cycle)); return the
    jitter (anchors.md: "each trial then sleeps 3 s plus U(0, loop_wait), so the kill falls
    at a random point of the lease cycle")."""
    jitter = side.jitter()
    time.sleep(settle + jitter)
    return jitter


def trial_failover(side: Any, fault: str, budget: float, *, wait_ms: int = 0,
                   stall_replica: bool = False, settle: float | None = None,
                   ) -> dict[str, Any]:
    """One trial: `fault` is kill (SIGKILL of the primary), term (the side's graceful
    path) or loss (replication held back 0.3 s, then SIGKILL). Before it, once the client
    has 50 acknowledged writes: `settle` seconds (default SETTLE_S) plus the side's
    jitter, U(0, its lease cycle). `stall_replica`: one replica stops acknowledging 1 s
    before the fault (resumed once a new primary is promoted, since a sync primary waits
    for a standby)."""
    settle = SETTLE_S if settle is None else settle
    notes = side.prepare() or {}
    members = side.members
    tl = Timeline()
    old = side.primary()
    tl.add("before", f"primary {old}")
    wl = Workload(members, tl, wait_ms=wait_ms, max_seconds=budget + 60,
                  **side.workload_options()).start()
    stalled = None
    load_at_fault = None
    try:
        if not wl.wait_acks(50, 20):
            raise RuntimeError("the workload could not write before the fault")
        jitter = fault_delay(side, settle)
        if stall_replica:
            stalled = next(m.name for m in members if m.name != old)
            side.stall(stalled)
            time.sleep(1.0)
        if fault == "loss":
            side.hold_back(old, 0.3)
        load_at_fault = load1()
        t_fault = tl.add("fault", f"{fault} {old}")
        wall_fault = time.time()
        if fault == "term":
            side.graceful(old)
        else:
            side.kill(old)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if wl.failover(t_fault, old)["failover_s"] is not None:
                break
            if stalled and time.monotonic() > t_fault + 1.0 and promoted_elsewhere(side, old):
                side.resume(stalled)
                stalled = None
            time.sleep(0.02)
        wl.wait_acks(20, 3, after=time.monotonic())
    finally:
        if stalled:
            side.resume(stalled)
        wl.stop()
    figures: dict[str, Any] = dict(wl.failover(t_fault, old))
    acked = [a.seq for a in wl.results.acks]
    figures["acked"] = len(acked)
    figures["failed_writes"] = wl.results.failures
    if wl.results.unconfirmed:
        figures["unconfirmed"] = wl.results.unconfirmed
    new = wl.current if wl.current != old else None
    figures["lost"] = len(wl.driver.missing(member(side, new), acked)) if new else None
    figures["new_primary"] = new
    figures["load1"] = load_at_fault
    figures["settle_s"] = settle
    figures["jitter_s"] = round(jitter, 3)
    figures.update(notes)  # e.g. a Patroni member that had to be reinitialized first
    if hasattr(side, "logs") and figures["failover_s"] is not None:
        try:
            phases = breakdown(side.logs(), wall_fault, new, wall_fault + figures["failover_s"])
        except (OSError, ValueError) as exc:
            figures["breakdown_error"] = str(exc)
        else:
            figures["breakdown"] = phases
            figures.update({f"{k}_s": v for k, v in phases.items()})  # summarized per phase
    if figures["lost"]:  # keep what explains it (in a no-loss mode it must not happen)
        figures["timeline"] = tl.format().splitlines()[-60:]
        figures["missing_on"] = {m.name: len(wl.driver.missing(m, acked)) for m in members
                                 if m.name != old}
    return figures


def cpu_burners(n: int, seconds: float) -> list[psutil.Popen]:
    """`n` busy loops that end on their own after `seconds` (bounded even if we crash)."""
    code = f"import time\nend=time.time()+{seconds}\nwhile time.time()<end: pass\n"
    return [psutil.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop_burners(procs: list[psutil.Popen]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def trial_cpu(side: Any, seconds: float, burners: int) -> dict[str, Any]:
    """Spurious failovers: `burners` busy loops for `seconds` while the client writes every
    20 ms; the leader's epoch (autopilot's lock epoch, Patroni's timeline, Sentinel's
    primary) is read every 0.5 s and every change counted. `writer_switches` counts the
    client moving to another node (a leader change the epoch poll could miss);
    `longest_write_gap_s` is the longest time without an acknowledged write (a primary
    that stalls or fences itself without a failover)."""
    notes = side.prepare() or {}
    tl = Timeline()
    wl = Workload(side.members, tl, interval=0.02, max_seconds=seconds + 60,
                  **side.workload_options()).start()
    changes = 0
    try:
        if not wl.wait_acks(20, 20):
            raise RuntimeError("the workload could not write before the burners started")
        first = last = side.leader_epoch()
        procs = cpu_burners(burners, seconds)
        loads = []
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.5)
                try:
                    epoch = side.leader_epoch()
                except Exception:  # noqa: BLE001 - a slow answer under load is no failover
                    continue
                if epoch is not None and epoch != last:
                    changes += 1
                    last = epoch
                loads.append(load1())
        finally:
            stop_burners(procs)
        # a change that completes just after the window is still caused by it
        time.sleep(2.0)
        try:
            epoch = side.leader_epoch()
            if epoch is not None and epoch != last:
                changes += 1
                last = epoch
        except Exception:  # noqa: BLE001
            pass
    finally:
        wl.stop()
    switches = sum(1 for _, k, _ in tl.events if k == "writes-ok") - 1
    ts = [a.t for a in wl.results.acks]
    gap = max((b - a for a, b in pairwise(ts)), default=None)
    return {"spurious_failovers": changes, "writer_switches": max(switches, 0),
            "longest_write_gap_s": gap,
            "epoch_first": first, "epoch_last": last, "acked": len(wl.results.acks),
            "failed_writes": wl.results.failures, "load1": max(loads, default=None), **notes}


def summarize(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"n": 0, "missing": len(values)}
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "n": len(got),
            "missing": len(values) - len(got)}


#: a PostgreSQL data directory's folders of relation, commit and statistics data: megabytes
#: per node, and none of it explains a failure (its configuration, signal files, pg_control,
#: timeline histories and slots do)
PG_DATA_DIRS = {"base", "pg_xact", "pg_multixact", "pg_subtrans", "pg_commit_ts", "pg_serial",
                "pg_snapshots", "pg_stat", "pg_stat_tmp", "pg_logical", "pg_notify",
                "pg_dynshmem", "pg_twophase"}


def copy_small_files(src: Path, dest: Path, max_bytes: int = KEEP_MAX_BYTES) -> None:
    """Copy the regular files of `src` no larger than `max_bytes` (sockets, FIFOs and big
    data files are skipped; a file that vanishes meanwhile is no error), but not a
    PostgreSQL data directory's data: of `global/` only pg_control, of `pg_wal/` only the
    timeline histories (WAL segments are over the size limit anyway)."""
    for root, dirs, files in os.walk(src):
        pgdata = "PG_VERSION" in files
        if pgdata:
            dirs[:] = [d for d in dirs if d not in PG_DATA_DIRS]
        parent = Path(root)
        if (parent.parent / "PG_VERSION").exists():
            if parent.name == "global":
                files = [f for f in files if f == "pg_control"]
            elif parent.name == "pg_wal":
                files = [f for f in files if f.endswith(".history")]
        for f in files:
            path = parent / f
            try:
                st = path.lstat()
                if not path.is_file() or path.is_symlink() or st.st_size > max_bytes:
                    continue
                target = dest / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            except OSError:
                continue


def failed(side: Any, t: dict[str, Any]) -> bool:
    """A trial worth keeping the evidence of: it raised, its fault had no failover within
    the budget, or a no-loss side lost an acknowledged write."""
    return ("error" in t or ("failover_s" in t and t["failover_s"] is None)
            or bool(getattr(side, "durable", False) and t.get("lost")))


def keep_failed(side: Any, group: str, i: int) -> str | None:
    """A failed trial's evidence, copied by the side before the run removes its directory
    (a failure seen once at high load is otherwise gone). Returns where, or None."""
    if KEEP_DIR is None or not hasattr(side, "keep"):
        return None
    name = "-".join([time.strftime("%Y%m%dT%H%M%S", time.gmtime()), side.label, group,
                     str(i + 1)])
    dest = KEEP_DIR / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    try:
        side.keep(dest)
    except Exception as exc:  # noqa: BLE001 - keeping evidence must not end the run
        return f"{dest} (incomplete: {type(exc).__name__}: {exc})"
    return str(dest)


def run_group(label: str, side: Any, n: int, fn: Callable[[], dict[str, Any]],
              results: dict[str, Any]) -> None:
    trials = []
    for i in range(n):
        t0 = time.time()
        try:
            t = fn()
        except Exception as exc:  # noqa: BLE001 - a failed trial is a figure too
            t = {"error": f"{type(exc).__name__}: {exc}"}
        if failed(side, t):
            kept = keep_failed(side, label, i)
            if kept:
                t["kept"] = kept
        t.setdefault("load1", load1())
        t["trial_s"] = round(time.time() - t0, 1)
        trials.append(t)
        short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()
                 if k not in ("breakdown", "timeline", "missing_on")}
        print(f"  {label} [{side.label}] trial {i + 1}/{n}: {short}", flush=True)
    keys = sorted({k for t in trials for k, v in t.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    results.setdefault(label, {})[side.label] = {
        "trials": trials, "errors": sum(1 for t in trials if "error" in t),
        "summary": {k: summarize([t.get(k) for t in trials]) for k in keys}}


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does, so every side's `close()` (in the
    callers' finally blocks) stops its processes and removes its directory."""
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_plan(plan: list[tuple[Any, list[Group]]], only: set[str],
             results: dict[str, Any]) -> None:
    """Run each side's groups in turn, one side up at a time (2 cores: nothing else of
    ours competes with a trial); every side is closed, whatever happens."""
    try:
        with interruptible():
            for side, groups in plan:
                try:
                    for label, count, fn in groups:
                        if label.split(" ")[0] in only and count:
                            run_group(label, side, count, lambda s=side, f=fn: f(s), results)
                finally:
                    side.close()
    finally:
        for side, _ in plan:
            side.close()


def meta(argv: list[str], started: float, **extra: Any) -> dict[str, Any]:
    return {"command": " ".join(["python -m bench.failover", *argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "seconds": round(time.time() - started, 1), **extra}


def loads(results: dict[str, Any]) -> tuple[float, float] | None:
    got = [t["load1"] for sides in results.values() for d in sides.values()
           for t in d["trials"] if t.get("load1") is not None]
    return (min(got), max(got)) if got else None


def write(out: Path, results: dict[str, Any], meta_: dict[str, Any]) -> None:
    span = loads(results)
    meta_["load1_during_trials"] = list(span) if span else None
    meta_["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta_, "results": results}, indent=2))
    print()
    print(table(results))
    if span:
        print(f"\nload average (1 min) during the trials: {span[0]:.1f}-{span[1]:.1f} "
              f"on {os.cpu_count()} CPUs")
    print(f"wrote {out} ({meta_['seconds']} s)")


def fmt(s: dict[str, Any], unit: str = "s") -> str:
    if not s or not s.get("n"):
        return "n/a"
    miss = f", {s['missing']} without" if s.get("missing") else ""
    if unit == "s":
        return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, n={s['n']}{miss})"
    return f"{s['median']:g} ({s['min']:g}-{s['max']:g}, n={s['n']}{miss})"


SPEC = {"kill": [("failover_s", "s", "failover"), ("write_gap_s", "s", "write gap"),
                 ("lost", "n", "lost acked")],
        "term": [("write_gap_s", "s", "write gap"), ("lost", "n", "lost acked")],
        "loss": [("lost", "n", "lost acked"), ("failover_s", "s", "failover")],
        "cpu": [("spurious_failovers", "n", "spurious failovers"),
                ("writer_switches", "n", "writer switches"),
                ("longest_write_gap_s", "s", "longest write gap")]}


def table(results: dict[str, Any]) -> str:
    rows = [("test", "system / setting", "figure: median (min-max, n)", "load")]
    for group, sides in results.items():
        kind = group.split(" ")[0]
        for label, data in sides.items():
            figs = [f"{name} {fmt(data['summary'].get(k, {}), unit)}"
                    for k, unit, name in SPEC.get(kind, [])]
            if data.get("errors"):
                figs.append(f"{data['errors']} trial(s) failed")
            ld = data["summary"].get("load1", {})
            load = f"{ld['min']:.1f}-{ld['max']:.1f}" if ld.get("n") else ""
            rows.append((group, label, "; ".join(figs), load))
            phases = [f"{k} {data['summary'][f'{k}_s']['median']:.2f}" for k in PHASES
                      if data["summary"].get(f"{k}_s", {}).get("n")]
            if phases and kind in ("kill", "term"):
                rows.append(("", "  median phases (s)", ", ".join(phases), ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}".rstrip() for a, b, c, d in rows)
