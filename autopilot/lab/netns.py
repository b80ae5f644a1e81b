"""Network plumbing for the lab: a bridge, one network namespace per node, partitions.

Addresses come from a private range created ONLY on the lab's own interfaces: the bridge
holds the host's address (clients, tests) and, as a second address, the catalog's; node N
lives in its own namespace behind a veth whose inner end is `eth0` (so autopilot's default
`eth0:inet` interface spec finds it). No route leaves the subnet. A partition is iptables
inside the node's namespace, dropping traffic to and from the catalog's address only, so
clients on the host address still reach the node.

Several labs can run on one machine: lab network 0 (the default, the one the workshop
shows) is bridge `ap-lab-br0`, namespaces `ap-lab-N`, subnet 10.231.0.0/24; network K > 0
is `aplabK-br`, `aplabK-N`, 10.231.K.0/24.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

RULE_COMMENT = "autopilot-lab"
MAX_NET = 200


class PlumbingError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run one plumbing command; a failure names the command and its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise PlumbingError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def missing_tools(netns: bool) -> list[tuple[str, str]]:
    """(tool, Debian package) pairs this machine lacks for the chosen mode."""
    need = [("redis-server", "redis-server"), ("redis-cli", "redis-tools"),
            ("unshare", "util-linux"), ("flock", "util-linux")]
    if netns:
        need += [("ip", "iproute2"), ("iptables", "iptables")]
    return [(t, p) for t, p in need if shutil.which(t) is None]


def list_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    proc = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete_ns(ns: str) -> None:
    if ns in list_namespaces():
        for pid in ns_pids(ns):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", ns, check=False)


@dataclass(frozen=True)
class Net:
    """One lab network: its bridge, addresses and node namespaces."""

    k: int = 0

    @property
    def prefix(self) -> str:
        return f"10.231.{self.k}"

    @property
    def bridge(self) -> str:
        return "ap-lab-br0" if self.k == 0 else f"aplab{self.k}-br"

    @property
    def ns_prefix(self) -> str:
        return "ap-lab-" if self.k == 0 else f"aplab{self.k}-"

    @property
    def host_ip(self) -> str:
        return f"{self.prefix}.1"

    @property
    def catalog_ip(self) -> str:
        return f"{self.prefix}.2"

    def node_ip(self, n: int) -> str:
        return f"{self.prefix}.{10 + n}"

    def ns_name(self, n: int) -> str:
        return f"{self.ns_prefix}{n}"

    def _veth(self, n: int, side: str) -> str:
        return f"ap-lab-{side}{n}" if self.k == 0 else f"aplab{self.k}{side}{n}"

    def in_ns(self, n: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns_name(n), *cmd, check=check)

    # ------------------------------------------------------------ bridge
    def bridge_exists(self) -> bool:
        return sh("ip", "link", "show", self.bridge, check=False).returncode == 0

    def _forward_rule(self, action: str) -> list[str]:
        # Bridged frames cross iptables' FORWARD chain when br_netfilter is loaded, and
        # Docker sets its policy to DROP; this lets lab traffic stay on the lab bridge only.
        return ["iptables", action, "FORWARD", "-i", self.bridge, "-o", self.bridge,
                "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]

    def create_bridge(self) -> None:
        """Create the bridge; PlumbingError if it exists (another lab owns this network)."""
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "addr", "add", f"{self.catalog_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        if sh(*self._forward_rule("-C"), check=False).returncode != 0:
            sh(*self._forward_rule("-I"))

    def delete_bridge(self) -> None:
        while sh(*self._forward_rule("-C"), check=False).returncode == 0:
            sh(*self._forward_rule("-D"), check=False)
        if self.bridge_exists():
            sh("ip", "link", "del", self.bridge, check=False)

    # ------------------------------------------------------------ nodes
    def create_node_ns(self, n: int) -> None:
        ns, host_if, peer = self.ns_name(n), self._veth(n, "v"), self._veth(n, "p")
        self.delete_node_ns(n)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        self.in_ns(n, "ip", "link", "set", peer, "name", "eth0")
        self.in_ns(n, "ip", "addr", "add", f"{self.node_ip(n)}/24", "dev", "eth0")
        self.in_ns(n, "ip", "link", "set", "eth0", "up")
        self.in_ns(n, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", host_if, "master", self.bridge)
        sh("ip", "link", "set", host_if, "up")

    def delete_node_ns(self, n: int) -> None:
        delete_ns(self.ns_name(n))
        sh("ip", "link", "del", self._veth(n, "v"), check=False)

    def namespaces(self) -> list[str]:
        """This network's node namespaces (ns_prefix + a number)."""
        return [ns for ns in list_namespaces()
                if ns.startswith(self.ns_prefix) and ns[len(self.ns_prefix):].isdigit()]

    def teardown(self) -> None:
        """Everything of this network: namespaces (and their processes), veths, bridge."""
        for ns in self.namespaces():
            n = int(ns[len(self.ns_prefix):])
            self.delete_node_ns(n)
        self.delete_bridge()

    # ------------------------------------------------------------ faults
    def _partition_rules(self, action: str) -> list[list[str]]:
        return [["iptables", action, "OUTPUT", "-d", self.catalog_ip, "-j", "DROP"],
                ["iptables", action, "INPUT", "-s", self.catalog_ip, "-j", "DROP"]]

    def partition(self, n: int) -> None:
        """Cut node n off from the catalog (both directions); clients still reach it."""
        for rule in self._partition_rules("-C"):
            if self.in_ns(n, *rule, check=False).returncode != 0:
                self.in_ns(n, *[("-A" if a == "-C" else a) for a in rule])

    def heal(self, n: int) -> None:
        for rule in self._partition_rules("-D"):
            while self.in_ns(n, *rule, check=False).returncode == 0:
                pass

    def is_partitioned(self, n: int) -> bool:
        return self.in_ns(n, *self._partition_rules("-C")[0], check=False).returncode == 0


def allocate(first: int = 1) -> Net:
    """Claim a free lab network (its bridge created) for a lab that need not be network 0."""
    for k in range(first, MAX_NET):
        net = Net(k)
        if net.bridge_exists():
            continue
        try:
            net.create_bridge()
        except PlumbingError:
            continue  # taken concurrently: try the next one
        return net
    raise PlumbingError(f"no free lab network among {first}..{MAX_NET - 1}")
