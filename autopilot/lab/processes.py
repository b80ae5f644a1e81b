"""The lab's processes: bring the catalog and the nodes up and down, and find them again.

PIDs come from the state file and are checked against their start ticks, so a reused PID
is never mistaken for a lab process. Processes outlive the CLI on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

import autopilot
from autopilot.catalog.local import CatalogNotReady, LocalCatalog
from autopilot.lab import netns, services
from autopilot.lab.state import PROFILES, LabError, LabState, Node, State, profile_env


def start_ticks(pid: int) -> float | None:
    """The process' start time in clock ticks since boot (/proc/PID/stat field 22).

    Not psutil's create_time(): that adds the boot time as seen from the wall clock, which
    moves when the clock is stepped, and a stepped clock must not make a live node look dead.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return float(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int | None, started: float | None = None) -> psutil.Process | None:
    """The process `pid` if it still runs and is the one started at `started` (ticks)."""
    if not pid:
        return None
    try:
        p = psutil.Process(pid)
        if started is not None and start_ticks(pid) != started:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


def wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until every process is gone or a zombie (reaping those that are our children)."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        still = []
        for p in pending:
            try:
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    still.append(p)
            except psutil.Error:
                pass
        pending = still
        if pending:
            time.sleep(0.02)


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


class LabProcesses(LabState):
    """Up, down, start and the process tree of each node."""

    # ---------------------------------------------------------------- up / down
    def up(self, nodes: int = 3, service: str = "redis", netns_mode: bool | None = None,
           pidns: bool = True, profile: str = "fast", no_loss: bool = False,
           catalog_port: int = 8500, env: dict[str, str] | None = None,
           net: int | None = 0) -> None:
        """Start the catalog and `nodes` nodes. `net`: the lab network (0 is the one the
        workshop shows; None picks a free one, for labs running side by side)."""
        if self.running:
            raise LabError(f"a lab is already up in {self.dir} (run `lab down` first)")
        try:
            svc = services.get(service)
        except KeyError as exc:
            raise LabError(str(exc.args[0])) from None
        if profile not in PROFILES:
            raise LabError(f"unknown profile {profile!r} (available: {', '.join(PROFILES)})")
        if netns_mode is None:
            netns_mode = netns.is_root()
        if netns_mode and not netns.is_root():
            raise LabError("network namespaces need root; run as root or pass --loopback")
        missing = svc.missing_tools(netns_mode)
        if missing:
            pkgs = " ".join(sorted({p for _, p in missing}))
            raise LabError(f"missing tools: {', '.join(t for t, _ in missing)}; "
                           f"install them with: apt-get install -y {pkgs}")
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in [*self.dir.glob("node-*"), self.dir / "catalog"]:
            shutil.rmtree(old, ignore_errors=True)  # a new lab starts from nothing
        self.state = State(mode="netns" if netns_mode else "loopback",
                           pidns=pidns and netns_mode, service=service, profile=profile,
                           no_loss=no_loss, env=dict(env or {}))
        try:
            if netns_mode:
                if net is None:
                    claimed = netns.allocate()
                else:
                    claimed = netns.Net(net)
                    if claimed.bridge_exists():
                        raise LabError(
                            f"lab network {net} is in use (bridge {claimed.bridge} exists): "
                            "run `autopilot lab down` in that lab's directory, or "
                            f"`autopilot lab down --net {net}` if it was left behind")
                    claimed.create_bridge()
                self.state.net = claimed.k
                cat_addr = f"{claimed.catalog_ip}:{catalog_port}"
            else:
                cat_addr = f"127.0.0.1:{catalog_port}"
            self._start_catalog(cat_addr)
            for n in range(1, nodes + 1):
                self.add_node(n)
        except BaseException:
            self.down()
            raise

    def _catalog_env(self) -> dict[str, str]:
        """The catalog's environment; AUTOPILOT_CATALOG_FAULTS given at `up` (env) turns on
        its test-only fault switch (autopilot/catalog/faults.py), e.g. for chaos tests."""
        env = self._base_env()
        if self.state.env.get("AUTOPILOT_CATALOG_FAULTS"):
            env["AUTOPILOT_CATALOG_FAULTS"] = self.state.env["AUTOPILOT_CATALOG_FAULTS"]
        return env

    def _start_catalog(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        cat = LocalCatalog(self.dir / "catalog.log", "--node", "lab-catalog",
                           "--data-dir", str(self.dir / "catalog"), host=host, port=int(port),
                           env=self._catalog_env(), cwd=self.dir, new_session=True)
        proc = cat.spawn()
        self.state.catalog = {"pid": proc.pid, "address": address,
                              "started": start_ticks(proc.pid)}
        self.save()
        try:
            cat.wait_ready(timeout=20)
        except CatalogNotReady as exc:
            raise LabError(str(exc)) from None

    def add_node(self, n: int) -> Node:
        ndir = self.dir / f"node-{n}"
        (ndir / "data").mkdir(parents=True, exist_ok=True)
        if self.state.mode == "netns":
            self.net.create_node_ns(n)
            node = Node(n=n, ip=self.net.node_ip(n), port=self.service.port, dir=str(ndir),
                        ns=self.net.ns_name(n))
        else:
            node = Node(n=n, ip="127.0.0.1", port=self.service.port + n, dir=str(ndir))
        self.service.prepare_dir(ndir)
        self.state.nodes[str(n)] = node
        self.save()
        self.start(n)
        return node

    def down(self, net: int | None = None) -> None:
        """Leave nothing running: processes, namespaces, bridge, iptables rules. `net`: also
        tear down that lab network (a lab whose state directory was lost)."""
        for key in list(self.state.nodes):
            self._kill_tree(self.state.nodes[key])
        cat = self.catalog_process()
        if cat is not None:
            cat.kill()
            wait_gone([cat], 5)
        # only the network this lab created: another lab may own the others
        for k in {self.state.net, net} - {None}:
            netns.Net(k).teardown()  # type: ignore[arg-type]
        self.state.net = None
        self.state.nodes.clear()
        self.state.catalog = {}
        if self.state_file.exists():
            self.state_file.unlink()

    # ---------------------------------------------------------------- processes
    def node_env(self, node: Node) -> dict[str, str]:
        s = self.state
        env = self._base_env()
        env.update(profile_env(s.service, s.profile))
        env["CONSUL"] = self.catalog_address
        env.update(self.service.node_env(s, node))
        env.update({
            "AUTOPILOT_CONTROL_SOCKET": str(Path(node.dir) / "autopilot.sock"),
            "AP_TELEMETRY_PORT": "9090" if s.mode == "netns" else str(9090 + node.n),
        })
        env.update(s.env)
        return env

    @staticmethod
    def _base_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CONSUL_", "CONTAINERPILOT", "AUTOPILOT", "REDIS_", "AP_",
                                    "PG_"))}
        pkg_root = str(Path(autopilot.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [pkg_root, env.get("PYTHONPATH", "")] if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def command(self, node: Node) -> list[str]:
        run = [sys.executable, "-m", "autopilot", "run", str(self.service.config)]
        # every node has a hostname of its own: the service ID is <job>-<hostname>
        if self.state.mode != "netns":  # without root, through a user namespace
            prefix = ["unshare", "--uts"] if netns.is_root() else \
                ["unshare", "--user", "--map-root-user", "--uts"]
        elif self.state.pidns:  # autopilot becomes PID 1 of a fresh PID namespace
            prefix = ["ip", "netns", "exec", str(node.ns),
                      "unshare", "--pid", "--fork", "--mount-proc", "--uts"]
        else:
            prefix = ["ip", "netns", "exec", str(node.ns), "unshare", "--uts"]
        return [*prefix, "sh", "-c", f'hostname {node.name} && exec "$@"', "sh", *run]

    def catalog_process(self) -> psutil.Process | None:
        return alive(self.state.catalog.get("pid"), self.state.catalog.get("started"))

    def start(self, name: str | int) -> None:
        """(Re)start a node's supervisor (its redis job starts or adopts redis-server), or
        the catalog (`name` "catalog"; its KV and sessions persist in its data dir)."""
        if name == "catalog":
            if self.catalog_process() is not None:
                raise LabError("the catalog is already running")
            self._start_catalog(self.catalog_address)
            return
        node = self.node(name)
        if self.tree(node):
            raise LabError(f"{node.name} is already running")
        log = (Path(node.dir) / "autopilot.log").open("ab")
        proc = subprocess.Popen(self.command(node), stdout=log, stderr=subprocess.STDOUT,
                                env=self.node_env(node), start_new_session=True, cwd=node.dir)
        node.pid = proc.pid
        node.started = start_ticks(proc.pid)
        self.save()

    def tree(self, node: Node) -> list[psutil.Process]:
        """The launcher and all its descendants (the supervisor, redis, hooks)."""
        root = alive(node.pid, node.started)
        if root is None:
            return []
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return [root]

    def supervisor(self, node: Node) -> psutil.Process | None:
        for p in self.tree(node):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if "autopilot" in cmd and "run" in cmd and cmd[0] not in ("ip", "unshare", "sh"):
                return p
        return None

    @property
    def service(self) -> services.Service:
        return services.get(self.state.service)

    def redis_pid(self, node: Node) -> int | None:
        """The data server's PID (redis-server, the postmaster), whatever the service."""
        svc = self.service
        found = svc.find_in(self.tree(node))
        if found is not None or svc.pidfile is None:
            return found
        try:
            pid = int(svc.pidfile(node).read_text().strip())
        except (OSError, ValueError):
            return None
        # a pidfile written inside a PID namespace holds that namespace's number: only
        # trust it outside PID namespaces, and only if it is a redis-server
        if self.state.pidns:
            return None
        return pid if svc.is_server(alive(pid)) else None

    def _kill_tree(self, node: Node) -> None:
        procs = self.tree(node)
        extra = self.redis_pid(node)
        signal_all(procs, signal.SIGKILL)
        if extra and all(p.pid != extra for p in procs):
            try:
                os.kill(extra, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(procs, 5)
