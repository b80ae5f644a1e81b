"""The lab's faults: kill, stop, pause, resume, partition and heal a node or the catalog.

Each fault acts on real processes (signals) or on the node's network namespace (iptables),
so what the cluster sees is what it would see in production.
"""

from __future__ import annotations

import signal
import time

import psutil

from autopilot.lab.processes import LabProcesses, alive, signal_all, wait_gone
from autopilot.lab.state import LabError, Node


class LabFaults(LabProcesses):
    def kill(self, name: str | int, what: str = "all") -> None:
        """SIGKILL the node's supervisor and redis (`what`: all | supervisor | redis), or
        the catalog (`name` "catalog")."""
        if name == "catalog":
            cat = self.catalog_process()
            if cat is None:
                raise LabError("the catalog is not running")
            cat.kill()
            wait_gone([cat], 5)
            return
        node = self.node(name)
        if what == "all":
            self._kill_tree(node)
            return
        target = self.supervisor(node) if what == "supervisor" else None
        if what in ("redis", "postgres"):  # the data server, whichever the service is
            pid = self.redis_pid(node)
            target = alive(pid) if pid else None
        if target is None:
            raise LabError(f"{node.name}: no running {what} to kill")
        if what == "supervisor" and self.state.pidns:
            raise LabError("the supervisor is PID 1 of its namespace: killing it kills the "
                           "node; start the lab with --no-pidns to kill it alone")
        target.kill()
        wait_gone([target], 5)

    def stop(self, name: str | int, timeout: float = 20.0) -> None:
        """SIGTERM the supervisor (graceful hand-over) and wait until the node is gone."""
        node = self.node(name)
        sup = self.supervisor(node)
        if sup is None:
            raise LabError(f"{node.name} is not running")
        procs = self.tree(node)
        sup.terminate()
        wait_gone(procs, timeout)
        if self.supervisor(node) is not None:
            raise LabError(f"{node.name} still running {timeout}s after SIGTERM")

    def pause(self, name: str | int, timeout: float = 5.0) -> None:
        """SIGSTOP the whole node, supervisor first so it cannot react to the rest, and
        return once every process of the node is stopped.

        A signal is only sent when this returns, not acted on, and the node's processes are
        read at one moment: a health check or hook the supervisor forked between that read
        and its own stop ran on, unstopped, while `lab status` already said "paused". So
        the supervisor is stopped first and seen stopped, then the node's tree is read
        again, and stopped, until every process in it is."""
        node = self.node(name)
        if not self.tree(node):
            raise LabError(f"{node.name} is not running")
        deadline = time.monotonic() + timeout
        sup = self.supervisor(node)
        if sup is not None:
            signal_all([sup], signal.SIGSTOP)
            self._wait_stopped(node, [sup], deadline)
        while True:
            running = [p for p in self.tree(node) if not stopped(p)]
            if not running:
                return
            signal_all(running, signal.SIGSTOP)
            self._wait_stopped(node, running, deadline)

    @staticmethod
    def _wait_stopped(node: Node, procs: list[psutil.Process], deadline: float) -> None:
        while not all(stopped(p) for p in procs):
            if time.monotonic() > deadline:
                left = [p.pid for p in procs if not stopped(p)]
                raise LabError(f"{node.name}: processes {left} not stopped by SIGSTOP")
            time.sleep(0.005)

    def resume(self, name: str | int) -> None:
        """SIGCONT the node, supervisor first: it must see its lease expired before redis runs."""
        signal_all(self._supervisor_first(self.node(name)), signal.SIGCONT)

    def _supervisor_first(self, node: Node) -> list[psutil.Process]:
        sup = self.supervisor(node)
        rest = [p for p in self.tree(node) if sup is None or p.pid != sup.pid]
        return ([sup] if sup else []) + rest

    def partition(self, name: str | int) -> None:
        node = self.node(name)
        if self.state.mode != "netns":
            raise LabError("partition needs network namespaces (run the lab as root)")
        self.net.partition(node.n)

    def heal(self, name: str | int) -> None:
        node = self.node(name)
        if self.state.mode != "netns":
            raise LabError("heal needs network namespaces (run the lab as root)")
        self.net.heal(node.n)


def stopped(p: psutil.Process) -> bool:
    """Stopped by a signal, or gone (a process that exited has nothing left to stop)."""
    try:
        return p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True
