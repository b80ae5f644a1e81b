"""Redis Sentinel side of the failover benchmark: 3 Redis + 3 sentinels on loopback.

A fresh cluster per trial (about a second to build): one primary, two replicas, three
sentinels with quorum 2. `down_after_ms` is Sentinel's detection budget (default 30000).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from autopilot.catalog.local import free_port
from autopilot.lab.resp import Redis, RedisError
from autopilot.lab.workload import Member


class SentinelCluster:
    def __init__(self, down_after_ms: int = 30000, no_loss: bool = False) -> None:
        self.down_after_ms = down_after_ms
        self.no_loss = no_loss
        self.dir = Path(tempfile.mkdtemp(prefix="ap-bench-sentinel-"))
        self.ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def members(self) -> list[Member]:
        return [Member(f"redis-{i}", "127.0.0.1", p) for i, p in enumerate(self.ports)]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.dir)

    def start(self) -> SentinelCluster:
        primary = self.ports[0]
        for i, port in enumerate(self.ports):
            d = self.dir / f"redis-{i}"
            d.mkdir()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                    "--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
                    "--repl-diskless-sync-delay", "0", "--protected-mode", "no"]
            if self.no_loss:
                argv += ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
            if i:
                argv += ["--replicaof", "127.0.0.1", str(primary)]
            self._spawn(f"redis-{i}", argv)
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"sentinel monitor bench 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds bench {self.down_after_ms}\n"
                f"sentinel failover-timeout bench {max(2 * self.down_after_ms, 10000)}\n"
                "sentinel parallel-syncs bench 1\n")
            self._spawn(f"sentinel-{i}", ["redis-sentinel", str(conf)])
        self._wait(self._ready, 20, "sentinel cluster ready")
        return self

    def _ready(self) -> bool:
        try:
            with Redis("127.0.0.1", self.ports[0], timeout=0.5) as r:
                if int(r.info().get("connected_slaves", 0)) < 2:
                    return False
            for p in self.sentinel_ports:
                with Redis("127.0.0.1", p, timeout=0.5) as s:
                    m = s.call("SENTINEL", "MASTER", "bench")
                    d = dict(zip(m[::2], m[1::2], strict=True)) if isinstance(m, list) else {}
                    if int(d.get("num-other-sentinels", 0)) < 2 or int(d.get("num-slaves", 0)) < 2:
                        return False
            return True
        except (OSError, RedisError, ValueError):
            return False

    @staticmethod
    def _wait(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")

    def primary_name(self) -> str | None:
        for p in self.sentinel_ports:
            try:
                with Redis("127.0.0.1", p, timeout=0.5) as s:
                    addr = s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "bench")
                if isinstance(addr, list):
                    port = int(addr[1])
                    return next(m.name for m in self.members if m.port == port)
            except (OSError, RedisError, ValueError, StopIteration):
                continue
        return None

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(10)

    def redis_pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
