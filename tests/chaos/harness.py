"""Chaos harness: a real lab, a client writing and reading throughout, a role watcher, one
timeline, and the invariants I1-I5 of failure-scenarios.md checked at the end.

Any violation fails the test with the whole timeline: faults injected, roles and tags seen
changing, writes acked and failing."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from autopilot.lab.cluster import Lab, converged, format_table
from autopilot.lab.workload import Member, Timeline, Workload, check_invariants

#: scenarios whose client and watcher may still run (see stop_scenarios)
_LIVE: weakref.WeakSet[Scenario] = weakref.WeakSet()


def stop_scenarios() -> None:
    """Stop the client and watcher threads of every scenario still running. A test that
    fails before `finish` leaves them running (for up to the workload's 90-150 s, the
    watcher for good), and the next test's lab usually gets the same lab network: its
    nodes would take the dead test's writes and probes (PostgreSQL: rows whose sequence
    numbers the next workload then finds taken). The chaos fixture calls this at teardown."""
    for sc in list(_LIVE):
        sc.stop()


class Scenario:
    def __init__(self, lab: Lab, *, no_loss: bool = False, wait_ms: int = 300,
                 probe_wait_ms: int = 0) -> None:
        self.lab = lab
        self.no_loss = no_loss
        self.probe_wait_ms = probe_wait_ms if no_loss else 0
        self.wait_ms = wait_ms if no_loss else 0
        self.timeline = Timeline()
        self.workload: Workload | None = None
        self.killed: set[str] = set()  # nodes whose supervisor we took down on purpose
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.last_rows: list[dict[str, Any]] = []
        _LIVE.add(self)

    # ------------------------------------------------------------ running
    @property
    def members(self) -> list[Member]:
        return [Member(n.name, n.ip, n.port) for n in self.lab.state.nodes.values()]

    def start(self) -> Scenario:
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        self.workload = Workload(self.members, self.timeline, wait_ms=self.wait_ms,
                                 max_seconds=90, probe_wait_ms=self.probe_wait_ms).start()
        return self

    def stop(self) -> None:
        """Stop the client and the watcher (`finish` does, after its checks)."""
        self._stop.set()
        if self.workload is not None:
            self.workload.stop()
        if self._watcher is not None:
            self._watcher.join(5)
        _LIVE.discard(self)

    def _watch(self) -> None:
        """Role, tag and catalog health per node, on the timeline whenever they change."""
        seen: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                rows = self.lab.status(partitions=False)
            except Exception as exc:  # noqa: BLE001 - keep watching
                self.timeline.add("watch-error", repr(exc))
                rows = []
            self.last_rows = rows or self.last_rows
            for r in rows:
                desc = f"{r['supervisor']} {r['role']} catalog={r['catalog']} tag={r['tag']}"
                if seen.get(r["node"]) != desc:
                    seen[r["node"]] = desc
                    self.timeline.add("node", f"{r['node']}: {desc}")
            self._stop.wait(0.2)

    def fault(self, what: str, fn: Any, *args: Any) -> float:
        """Record then inject a fault; returns its monotonic time."""
        t = self.timeline.add("FAULT", what)
        fn(*args)
        self.timeline.add("fault-done", what)
        return t

    def primary(self, timeout: float = 30) -> str:
        rows = self.lab.wait_converged(timeout)
        return next(r["node"] for r in rows if r["role"] == "primary")

    def wait(self, cond: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        self.fail(f"timed out after {timeout}s waiting for {what}")

    def fail(self, message: str) -> None:
        raise AssertionError(f"{message}\n\nnodes now:\n{format_table(self.lab.status())}"
                             f"\n\ntimeline:\n{self.timeline.format()}")

    # ------------------------------------------------------------ checking
    def finish(self, *, converge_timeout: float = 30.0, check_i2: bool | None = None
               ) -> dict[str, Any]:
        """Stop the client, wait for convergence (I3, I4), check I1-I5; fail with the
        timeline on any violation. Returns the figures."""
        assert self.workload is not None
        violations: list[str] = []
        try:
            rows = self.lab.wait_converged(converge_timeout)
            self.timeline.add("converged", ", ".join(f"{r['node']}={r['role']}" for r in rows))
        except Exception as exc:  # noqa: BLE001 - reported with the timeline
            rows = self.lab.status()
            violations.append(f"I3/I4: no convergence: {exc}")
        # a few writes on the final primary, so every replica must catch up to them
        self.workload.wait_acks(10, 5, after=time.monotonic())
        self.stop()
        figures: dict[str, Any] = {}
        if converged(rows):
            prim = next(r["node"] for r in rows if r["role"] == "primary")
            by_name = {m.name: m for m in self.members}
            live = [r["node"] for r in rows if r["supervisor"] == "running"]
            self._wait_in_sync(rows)
            final = [by_name[prim]] + [by_name[n] for n in live if n != prim]
            no_loss = self.no_loss if check_i2 is None else check_i2
            v, figures = check_invariants(self.workload, final, no_loss=no_loss)
            violations += v
        # I5: every supervisor we did not take down is still running
        for r in rows:
            if r["node"] not in self.killed and r["supervisor"] != "running":
                violations.append(f"I5: {r['node']} supervisor is {r['supervisor']}")
        self.timeline.add("figures", str(figures))
        if violations:
            self.fail("invariants violated:\n  " + "\n  ".join(violations))
        return figures

    def _wait_in_sync(self, rows: list[dict[str, Any]], timeout: float = 10.0) -> None:
        """Replicas at the primary's offset (replication is asynchronous; a PostgreSQL
        replica's offset is what it replayed). If they never get there, I3 below says
        which writes a replica lacks; the timeline says the offsets differed."""
        deadline = time.monotonic() + timeout
        offsets: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rows = self.lab.status(partitions=False)
            offsets = {r["node"]: r["offset"] for r in rows if r["supervisor"] == "running"}
            if len(set(offsets.values())) == 1:
                return
            time.sleep(0.05)
        self.timeline.add("not-in-sync", f"offsets after {timeout}s: {offsets}")
