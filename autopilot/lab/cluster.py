"""The lab's cluster: start, inspect and break a catalog plus N autopilot-run Redis nodes.

All state lives in one directory (``state.json`` plus a folder per node with its log, data
and hook log), so every `autopilot lab` invocation is a short-lived process that reads the
state, acts on real PIDs and namespaces, and exits. Processes outlive the CLI on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

import autopilot
from autopilot.lab import netns
from autopilot.lab.resp import Redis, RedisError

EXAMPLES = Path(__file__).resolve().parent / "examples"
FENCE = "10"  # min-replicas-to-write of a fenced node (see examples/redis/hook.sh)

#: timing profiles: health interval, health TTL, lock-delay (session TTL is 10 s, Consul's min)
PROFILES: dict[str, dict[str, str]] = {
    # the leader's local lease is check TTL - interval - 0.5 s (autopilot.election): 0.55 s
    # here, renewed about every 0.3 s; failover ~ TTL + lock-delay + promote ~ 1.3 s
    "fast": {"AP_HEALTH_INTERVAL": "200ms", "AP_HEALTH_TTL": "1250ms", "AP_HEALTH_TIMEOUT": "1s",
             "AP_LOCK_DELAY": "50ms", "AP_SESSION_TTL": "10s"},
    "default": {"AP_HEALTH_INTERVAL": "1s", "AP_HEALTH_TTL": "3s", "AP_HEALTH_TIMEOUT": "1s",
                "AP_LOCK_DELAY": "1s", "AP_SESSION_TTL": "10s"},
}


class LabError(RuntimeError):
    pass


@dataclass
class Node:
    n: int
    ip: str
    port: int
    dir: str
    ns: str | None = None
    pid: int | None = None  # the launcher: `ip netns exec … unshare …` or autopilot itself
    started: float | None = None  # the launcher's start (ticks since boot), against PID reuse

    @property
    def name(self) -> str:
        return f"node-{self.n}"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class State:
    mode: str = "netns"  # "netns" (root) or "loopback"
    pidns: bool = True
    service: str = "redis"
    profile: str = "fast"
    no_loss: bool = False
    net: int | None = None  # the lab network we created (netns mode), see netns.Net
    catalog: dict[str, Any] = field(default_factory=dict)  # pid, address
    nodes: dict[str, Node] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra env given at `up`

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> State:
        d = json.loads(text)
        d["nodes"] = {k: Node(**v) for k, v in d.get("nodes", {}).items()}
        return cls(**d)


def default_dir() -> Path:
    return Path(os.environ.get("AUTOPILOT_LAB_DIR", ".lab")).resolve()


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


def _alive(pid: int | None, started: float | None = None) -> psutil.Process | None:
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


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
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


class Lab:
    def __init__(self, directory: Path | str | None = None) -> None:
        self.dir = Path(directory).resolve() if directory else default_dir()
        self.state_file = self.dir / "state.json"
        self.state = State()
        if self.state_file.exists():
            self.state = State.from_json(self.state_file.read_text())

    # ---------------------------------------------------------------- state
    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(self.state.to_json())
        tmp.replace(self.state_file)

    @property
    def running(self) -> bool:
        return self.state_file.exists() and bool(self.state.nodes)

    def node(self, name: str | int) -> Node:
        key = str(name).removeprefix("node-")
        if key not in self.state.nodes:
            known = ", ".join(f"node-{k}" for k in self.state.nodes) or "none (run `lab up`)"
            raise LabError(f"unknown node {name!r}; nodes: {known}")
        return self.state.nodes[key]

    @property
    def catalog_address(self) -> str:
        return str(self.state.catalog.get("address", ""))

    @property
    def catalog_url(self) -> str:
        return f"http://{self.catalog_address}"

    # ---------------------------------------------------------------- up / down
    def up(self, nodes: int = 3, service: str = "redis", netns_mode: bool | None = None,
           pidns: bool = True, profile: str = "fast", no_loss: bool = False,
           catalog_port: int = 8500, env: dict[str, str] | None = None,
           net: int | None = 0) -> None:
        """Start the catalog and `nodes` nodes. `net`: the lab network (0 is the one the
        workshop shows; None picks a free one, for labs running side by side)."""
        if self.running:
            raise LabError(f"a lab is already up in {self.dir} (run `lab down` first)")
        if service != "redis":
            raise LabError(f"unknown lab service {service!r} (available: redis)")
        if profile not in PROFILES:
            raise LabError(f"unknown profile {profile!r} (available: {', '.join(PROFILES)})")
        if netns_mode is None:
            netns_mode = netns.is_root()
        if netns_mode and not netns.is_root():
            raise LabError("network namespaces need root; run as root or pass --loopback")
        missing = netns.missing_tools(netns_mode)
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

    def _start_catalog(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        log = (self.dir / "catalog.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "autopilot", "catalog", "--bind", host, "--port", port,
             "--node", "lab-catalog", "--data-dir", str(self.dir / "catalog")],
            stdout=log, stderr=subprocess.STDOUT, env=self._base_env(),
            start_new_session=True, cwd=self.dir)
        self.state.catalog = {"pid": proc.pid, "address": address,
                              "started": start_ticks(proc.pid)}
        self.save()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"the catalog exited ({proc.returncode}); see {self.dir}/catalog.log")
            try:
                if requests.get(f"http://{address}/v1/status/leader", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise LabError(f"the catalog did not answer on {address}; see {self.dir}/catalog.log")

    def add_node(self, n: int) -> Node:
        ndir = self.dir / f"node-{n}"
        (ndir / "data").mkdir(parents=True, exist_ok=True)
        if self.state.mode == "netns":
            self.net.create_node_ns(n)
            node = Node(n=n, ip=self.net.node_ip(n), port=6379, dir=str(ndir),
                        ns=self.net.ns_name(n))
        else:
            node = Node(n=n, ip="127.0.0.1", port=6379 + n, dir=str(ndir))
        self.state.nodes[str(n)] = node
        self.save()
        self.start(n)
        return node

    @property
    def net(self) -> netns.Net:
        if self.state.net is None:
            raise LabError("this lab has no network namespaces (loopback mode)")
        return netns.Net(self.state.net)

    def down(self, net: int | None = None) -> None:
        """Leave nothing running: processes, namespaces, bridge, iptables rules. `net`: also
        tear down that lab network (a lab whose state directory was lost)."""
        for key in list(self.state.nodes):
            self._kill_tree(self.state.nodes[key])
        cat = self.catalog_process()
        if cat is not None:
            cat.kill()
            _wait_gone([cat], 5)
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
        env.update(PROFILES[s.profile])
        env.update({
            "CONSUL": self.catalog_address,
            "REDIS_HOME": str(EXAMPLES / "redis"),
            "REDIS_PORT": str(node.port),
            "REDIS_DIR": str(Path(node.dir) / "data"),
            "REDIS_BIND": "0.0.0.0" if s.mode == "netns" else "127.0.0.1",
            "REDIS_HOOK_LOG": str(Path(node.dir) / "hooks.log"),
            "REDIS_NO_LOSS": "1" if s.no_loss else "0",
            "REDIS_PYTHON": sys.executable,  # for peers.py (python3 may be a slow shim)
            "REDIS_INTERFACE": "eth0:inet" if s.mode == "netns" else "static:127.0.0.1",
            "AUTOPILOT_CONTROL_SOCKET": str(Path(node.dir) / "autopilot.sock"),
            "AP_TELEMETRY_PORT": "9090" if s.mode == "netns" else str(9090 + node.n),
        })
        env.update(s.env)
        return env

    @staticmethod
    def _base_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CONSUL_", "CONTAINERPILOT", "AUTOPILOT", "REDIS_", "AP_"))}
        pkg_root = str(Path(autopilot.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [pkg_root, env.get("PYTHONPATH", "")] if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def command(self, node: Node) -> list[str]:
        config = str(EXAMPLES / "redis" / "autopilot.json5")
        run = [sys.executable, "-m", "autopilot", "run", config]
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
        return _alive(self.state.catalog.get("pid"), self.state.catalog.get("started"))

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
        root = _alive(node.pid, node.started)
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

    def redis_pid(self, node: Node) -> int | None:
        pidfile = Path(node.dir) / "data" / "redis-server.pid"
        for p in self.tree(node):
            try:
                if p.name() == "redis-server":
                    return p.pid
            except psutil.Error:
                continue
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        # a pidfile written inside a PID namespace holds that namespace's number: only
        # trust it outside PID namespaces, and only if it is a redis-server
        if self.state.pidns:
            return None
        p = _alive(pid)
        try:
            return pid if p is not None and p.name() == "redis-server" else None
        except psutil.Error:
            return None

    def _signal_all(self, procs: list[psutil.Process], sig: int) -> None:
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass

    def _kill_tree(self, node: Node) -> None:
        procs = self.tree(node)
        extra = self.redis_pid(node)
        self._signal_all(procs, signal.SIGKILL)
        if extra and all(p.pid != extra for p in procs):
            try:
                os.kill(extra, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(procs, 5)

    # ---------------------------------------------------------------- faults
    def kill(self, name: str | int, what: str = "all") -> None:
        """SIGKILL the node's supervisor and redis (`what`: all | supervisor | redis), or
        the catalog (`name` "catalog")."""
        if name == "catalog":
            cat = self.catalog_process()
            if cat is None:
                raise LabError("the catalog is not running")
            cat.kill()
            _wait_gone([cat], 5)
            return
        node = self.node(name)
        if what == "all":
            self._kill_tree(node)
            return
        target = self.supervisor(node) if what == "supervisor" else None
        if what == "redis":
            pid = self.redis_pid(node)
            target = _alive(pid) if pid else None
        if target is None:
            raise LabError(f"{node.name}: no running {what} to kill")
        if what == "supervisor" and self.state.pidns:
            raise LabError("the supervisor is PID 1 of its namespace: killing it kills the "
                           "node; start the lab with --no-pidns to kill it alone")
        target.kill()
        _wait_gone([target], 5)

    def stop(self, name: str | int, timeout: float = 20.0) -> None:
        """SIGTERM the supervisor (graceful hand-over) and wait until the node is gone."""
        node = self.node(name)
        sup = self.supervisor(node)
        if sup is None:
            raise LabError(f"{node.name} is not running")
        procs = self.tree(node)
        sup.terminate()
        _wait_gone(procs, timeout)
        if self.supervisor(node) is not None:
            raise LabError(f"{node.name} still running {timeout}s after SIGTERM")

    def pause(self, name: str | int) -> None:
        """SIGSTOP the whole node, supervisor first so it cannot react to the rest."""
        node = self.node(name)
        if not self.tree(node):
            raise LabError(f"{node.name} is not running")
        self._signal_all(self._supervisor_first(node), signal.SIGSTOP)

    def resume(self, name: str | int) -> None:
        """SIGCONT the node, supervisor first: it must see its lease expired before redis runs."""
        self._signal_all(self._supervisor_first(self.node(name)), signal.SIGCONT)

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

    # ---------------------------------------------------------------- observation
    def catalog_entries(self) -> dict[str, dict[str, Any]]:
        """service address:port -> {"health": worst check status, "tags": [...]}."""
        try:
            r = requests.get(f"{self.catalog_url}/v1/health/service/{self.state.service}",
                             timeout=1)
            r.raise_for_status()
        except requests.RequestException:
            return {}
        out: dict[str, dict[str, Any]] = {}
        order = {"passing": 0, "warning": 1, "critical": 2}
        for e in r.json():
            svc = e["Service"]
            addr = f"{svc.get('Address') or e['Node'].get('Address')}:{svc['Port']}"
            statuses = [c["Status"] for c in e.get("Checks", []) if c.get("ServiceID")]
            worst = max(statuses or ["passing"], key=lambda s: order.get(s, 3))
            out[addr] = {"health": worst, "tags": svc.get("Tags") or [], "id": svc["ID"]}
        return out

    def leader(self) -> dict[str, Any] | None:
        """The election key's value (who holds the lock), or None."""
        key = f"service/{self.state.service}/leader"
        try:
            r = requests.get(f"{self.catalog_url}/v1/kv/{key}", timeout=1)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        entry = r.json()[0]
        if not entry.get("Session"):
            return None
        try:
            value = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
        except ValueError:
            value = {}
        return {**value, "epoch": entry.get("LockIndex"), "session": entry["Session"]}

    @staticmethod
    def redis_role(ip: str, port: int, timeout: float = 0.5) -> dict[str, Any]:
        """role (primary | fenced | replica | down), offset and link of one Redis."""
        try:
            with Redis(ip, port, timeout=timeout) as r:
                info = r.info("replication")
                fence = r.call("CONFIG", "GET", "min-replicas-to-write")
        except (OSError, RedisError, ValueError) as exc:
            return {"role": "down", "offset": None, "detail": type(exc).__name__}
        if info.get("role") == "master":
            fenced = isinstance(fence, list) and len(fence) == 2 and fence[1] == FENCE
            return {"role": "fenced" if fenced else "primary",
                    "offset": int(info.get("master_repl_offset", 0)),
                    "detail": f"{info.get('connected_slaves', 0)} replicas"}
        return {"role": "replica", "offset": int(info.get("slave_repl_offset", 0) or 0),
                "detail": f"of {info.get('master_host')}:{info.get('master_port')} "
                          f"link {info.get('master_link_status')}"}

    def status(self, partitions: bool = True) -> list[dict[str, Any]]:
        entries = self.catalog_entries()
        rows = []
        for node in self.state.nodes.values():
            sup = self.supervisor(node)
            if sup is None:
                proc = "dead"
            else:
                try:
                    proc = "paused" if sup.status() == psutil.STATUS_STOPPED else "running"
                except psutil.Error:
                    proc = "dead"
            red = (self.redis_role(node.ip, node.port)
                   if proc != "paused" else {"role": "paused", "offset": None, "detail": ""})
            cat = entries.get(node.address, {})
            tags = [t for t in cat.get("tags", []) if t in ("primary", "replica")]
            part = partitions and self.state.mode == "netns" and self.net.is_partitioned(node.n)
            rows.append({
                "node": node.name, "supervisor": proc, "role": red["role"],
                "catalog": cat.get("health", "absent"), "tag": ",".join(tags) or "-",
                "address": node.address, "offset": red["offset"], "detail": red["detail"],
                "partitioned": part,
            })
        return rows

    def primaries(self) -> list[str]:
        """Names of the nodes whose Redis currently accepts writes (I1: at most one)."""
        return [r["node"] for r in self.status(partitions=False) if r["role"] == "primary"]

    def wait_converged(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait for one primary tagged `primary` and every other node a tagged replica of it."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.status(partitions=False)
            if converged(rows):
                return rows
            time.sleep(0.1)
        raise LabError("the cluster did not converge within "
                       f"{timeout}s:\n{format_table(rows)}")


def converged(rows: list[dict[str, Any]]) -> bool:
    live = [r for r in rows if r["supervisor"] == "running"]
    prim = [r for r in live if r["role"] == "primary"]
    if len(prim) != 1 or prim[0]["tag"] != "primary" or prim[0]["catalog"] != "passing":
        return False
    following = f"of {prim[0]['address']} link up"
    return all(r is prim[0] or (r["role"] == "replica" and r["tag"] == "replica"
                                and r["catalog"] == "passing" and r["detail"] == following)
               for r in live)


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["node", "supervisor", "role", "catalog", "tag", "address", "offset", "detail"]
    data = [[("" if r[c] is None else str(r[c])) + (" (partitioned)" if c == "node" and
             r.get("partitioned") else "") for c in cols] for r in rows]
    widths = [max(len(c), *(len(d[i]) for d in data)) if data else len(c)
              for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(d, widths, strict=True)) for d in data]
    return "\n".join([line, *body])
