"""Benchmark of the embedded catalog (not a test).

One `autopilot catalog` on loopback serves N service instances that each heartbeat their TTL
check once a second, plus W long-poll watchers on `health/service/<name>?passing`, while a
changer flips one instance's check every CHANGE_EVERY seconds. Reports requests/s, heartbeat
latency (p50/p99) and watcher wake latency after a change (median/p99); prints a table and
writes bench/results/catalog.json.

    python bench/catalog_bench.py [--services 500] [--watchers 100] [--duration 20]
    python bench/catalog_bench.py --against catalog,consul   # both, side by side

``--against consul`` starts a Consul dev agent (``--consul-bin``, default
/opt/consul/bin/consul) on random loopback ports at ``-log-level warn``; the load is the same
requests over the same keep-alive client, which reads both Content-Length and chunked answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from autopilot.catalog.local import LocalCatalog, free_port

ROOT = Path(__file__).resolve().parent.parent
NAMES = 50  # service names; instances are spread over them


def _pid_listening(port: int) -> int:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
            return conn.pid
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class RawConn:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: far cheaper per request than
    a full client library, so the load generator steals less CPU from the catalog."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked()  # what Consul (Go's net/http) sends past 2 KB
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, data

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readline()).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)  # CRLF after each chunk

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Bench:
    def __init__(self, url: str, services: int, watchers: int, duration: float,
                 change_every: float) -> None:
        self.url, self.services, self.watchers = url, services, watchers
        self.duration, self.change_every = duration, change_every
        self.hb_lat: list[float] = []
        self.hb_errors = 0
        self.requests = 0
        self.wakes: list[float] = []
        self.timeouts = 0
        self.last_change: dict[str, float] = {}
        self.changes = 0
        self.stop_at = 0.0
        self.server_stats: dict[str, str] = {}
        self.flap_warning: dict[str, bool] = {}  # name -> its flap instance is warning now

    def sid(self, i: int) -> tuple[str, str]:
        name = f"bench-{i % NAMES}"
        return name, f"{name}-{i}"

    async def setup(self, http: aiohttp.ClientSession) -> None:
        bodies = []
        for i in range(self.services):
            name, sid = self.sid(i)
            bodies.append({"Name": name, "ID": sid, "Port": 10000 + i,
                           "Check": {"TTL": "10s", "Status": "passing"}})
        # one extra instance per name that only the changer touches (heartbeats would
        # otherwise undo its changes and cause wake-ups we could not attribute)
        for n in range(NAMES):
            bodies.append({"Name": f"bench-{n}", "ID": f"bench-{n}-flap", "Port": 9999,
                           "Check": {"TTL": "1h", "Status": "passing"}})
        for body in bodies:
            async with http.put(f"{self.url}/v1/agent/service/register", json=body) as r:
                assert r.status == 200, await r.text()
        # warm-up: the first "ok" note changes each check's output; do it before measuring
        for i in range(self.services):
            async with http.put(f"{self.url}/v1/agent/check/pass/service:{self.sid(i)[1]}"
                                "?note=ok") as r:
                assert r.status == 200, await r.text()

    def conn(self) -> RawConn:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return RawConn(host, int(port))

    async def heartbeat(self, i: int) -> None:
        _, sid = self.sid(i)
        conn = self.conn()
        await asyncio.sleep(random.random())  # spread the beats over the second
        next_at = time.monotonic()
        path = f"/v1/agent/check/pass/service:{sid}?note=ok"
        while time.monotonic() < self.stop_at:
            t0 = time.monotonic()
            try:
                status, _, _ = await conn.request("PUT", path)
                ok = status == 200
            except (OSError, asyncio.IncompleteReadError):
                ok = False
                conn.close()
                conn = self.conn()
            self.requests += 1
            if ok:
                self.hb_lat.append(time.monotonic() - t0)
            else:
                self.hb_errors += 1
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()

    async def watcher(self, w: int) -> None:
        name = f"bench-{w % NAMES}"
        path = f"/v1/health/service/{name}?passing"
        conn = self.conn()
        index = 0
        while time.monotonic() < self.stop_at:
            q = f"{path}&index={index}&wait=5s" if index else path
            _, headers, _ = await conn.request("GET", q)
            got = time.monotonic()
            new_index = int(headers.get("x-consul-index", "0"))
            self.requests += 1
            if index and new_index != index:
                changed = self.last_change.get(name)
                if changed is not None:
                    self.wakes.append(got - changed)
            elif index:
                self.timeouts += 1
            index = new_index
        conn.close()

    async def changer(self) -> None:
        conn = self.conn()
        await asyncio.sleep(1.0)
        while time.monotonic() < self.stop_at - 1.0:
            name = f"bench-{random.randrange(NAMES)}"
            # a status change (the flap instance leaves or rejoins ?passing) moves the index
            # and wakes that service's watchers only; an output-only change would not:
            # Consul defers it by check_update_interval, and so does the catalog
            status = "passing" if self.flap_warning.get(name) else "warning"
            self.flap_warning[name] = status == "warning"
            body = json.dumps({"Status": status, "Output": f"change {self.changes}"})
            self.last_change[name] = time.monotonic()
            await conn.request("PUT", f"/v1/agent/check/update/service:{name}-flap",
                               body.encode())
            self.requests += 1
            self.changes += 1
            await asyncio.sleep(self.change_every)
        conn.close()

    async def run_heartbeats(self, first: int, last: int) -> dict:
        """Heartbeat instances [first, last) until stop_at (runs in a child process)."""
        await asyncio.gather(*(self.heartbeat(i) for i in range(first, last)))
        return {"lat": self.hb_lat, "errors": self.hb_errors, "requests": self.requests}

    async def run_watchers(self) -> None:
        await asyncio.gather(self.changer(), *(self.watcher(w) for w in range(self.watchers)))
        status, _, body = await self.conn().request("GET", "/v1/agent/self")
        # the embedded catalog reports its own wake latency; Consul has no such stats
        self.server_stats = json.loads(body).get("Stats", {}).get("catalog", {})

    async def register_all(self) -> None:
        async with aiohttp.ClientSession() as http:
            await self.setup(http)

    def run(self, hb_procs: int) -> dict:
        """Heartbeats in child processes (the client must not be the bottleneck), watchers
        and the changer here; CLOCK_MONOTONIC is system-wide, so latencies compare."""
        asyncio.run(self.register_all())
        self.stop_at = time.monotonic() + self.duration
        ctx = mp.get_context("fork")
        queue: mp.Queue = ctx.Queue()
        step = -(-self.services // hb_procs)
        procs = [ctx.Process(target=_hb_child, args=(self, lo, min(lo + step, self.services),
                                                     queue), daemon=True)
                 for lo in range(0, self.services, step)]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        asyncio.run(asyncio.wait_for(self.run_watchers(), self.duration + 15))
        for _ in procs:
            part = queue.get(timeout=30)
            self.hb_lat += part["lat"]
            self.hb_errors += part["errors"]
            self.requests += part["requests"]
        for p in procs:
            p.join(10)
        elapsed = time.monotonic() - t0
        return {
            "services": self.services, "watchers": self.watchers,
            "duration_s": self.duration, "wall_s": round(elapsed, 2),
            "requests": self.requests,
            # over the load window; after it only the watchers' last long-polls finish
            "requests_per_s": round(self.requests / self.duration, 1),
            "heartbeats": len(self.hb_lat), "heartbeat_errors": self.hb_errors,
            "heartbeat_p50_ms": round(_pct(self.hb_lat, 50) * 1000, 2),
            "heartbeat_p99_ms": round(_pct(self.hb_lat, 99) * 1000, 2),
            "changes": self.changes, "wakes": len(self.wakes),
            "wake_median_ms": round(statistics.median(self.wakes) * 1000, 2)
            if self.wakes else None,
            "wake_p99_ms": round(_pct(self.wakes, 99) * 1000, 2) if self.wakes else None,
            "watch_timeouts": self.timeouts,
            "server_wake_p50_ms": float(self.server_stats.get("wake_p50_ms", "nan")),
            "server_wake_p99_ms": float(self.server_stats.get("wake_p99_ms", "nan")),
        }


def _hb_child(bench: Bench, first: int, last: int, queue: mp.Queue) -> None:
    queue.put(asyncio.run(bench.run_heartbeats(first, last)))


def start_consul(binary: str, port: int, log: Any) -> subprocess.Popen:
    """A Consul dev agent on loopback, random ports, at WARN (a dev agent logs at DEBUG, which
    alone slows it down under this load), allowed more than 200 connections per client."""
    ports = [free_port() for _ in range(4)]
    return subprocess.Popen(
        [binary, "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1",
         "-http-port", str(port), "-grpc-port", "-1", "-dns-port", "-1",
         "-serf-lan-port", str(ports[0]), "-serf-wan-port", str(ports[1]),
         "-server-port", str(ports[2]), "-node", "bench", "-log-level", "warn",
         "-hcl", "limits { http_max_conns_per_client = 4000 }"],
        stdout=log, stderr=log, cwd="/tmp")


def _ready(port: int, proc: subprocess.Popen | None, deadline: float) -> None:
    """Wait until the agent answers with a leader (Consul elects itself within ~1 s)."""
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader",
                                        timeout=1) as r:
                if r.status == 200 and r.read().strip() not in (b"", b'""'):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"nothing answers on 127.0.0.1:{port}")
        time.sleep(0.1)


def run_target(target: str, args: argparse.Namespace) -> dict:
    """One benchmark run against ``catalog`` (started here), ``consul`` (a dev agent started
    from --consul-bin) or ``port`` (whatever already listens on --port)."""
    port = args.port if target == "port" else free_port()
    log = open(os.devnull, "wb")
    proc: subprocess.Popen | None = None
    catalog: LocalCatalog | None = None
    if target == "catalog":  # started (and waited for) the one way the lab and tests do
        catalog = LocalCatalog(Path(os.devnull), "--node", "bench", port=port, cwd=ROOT)
        proc = catalog.start(timeout=30).proc
    elif target == "consul":
        proc = start_consul(args.consul_bin, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        if catalog is None:
            _ready(port, proc, time.monotonic() + 30)
        pid = proc.pid if proc is not None else _pid_listening(port)
        ps = psutil.Process(pid)
        cpu0, t0 = ps.cpu_times(), time.monotonic()
        result = Bench(url, args.services, args.watchers, args.duration,
                       args.change_every).run(args.heartbeat_procs)
        cpu1, t1 = ps.cpu_times(), time.monotonic()
        busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        result["server"] = " ".join(ps.cmdline()[:3])
        result["server_cpu_percent"] = round(100 * busy / (t1 - t0), 1)
        result["server_rss_mb"] = round(ps.memory_info().rss / 2**20, 1)
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    finally:
        if catalog is not None:
            catalog.stop(grace=10)
        elif proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
    result["machine_cpus"] = os.cpu_count()
    return result


def _median_of(runs: list[dict]) -> dict:
    """Each numeric metric's median over the rounds; other values from the first round."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        values = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and len(values) == len(runs):
            out[k] = round(statistics.median(values), 2)
    if len(runs) > 1:
        out["rounds"] = len(runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--change-every", type=float, default=0.25)
    ap.add_argument("--heartbeat-procs", type=int, default=2)
    ap.add_argument("--against", default="catalog",
                    help="comma-separated: catalog (an embedded catalog started here), consul "
                         "(a dev agent started from --consul-bin), port (what listens on --port)")
    ap.add_argument("--consul-bin", default="/opt/consul/bin/consul")
    ap.add_argument("--port", type=int, default=0,
                    help="use a catalog or agent already running on this loopback port")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the targets alternately this many times; the table shows each "
                         "metric's median over the rounds (a shared machine's load drifts)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "catalog.json"))
    args = ap.parse_args()
    args.duration = min(args.duration, 120.0)  # bounded, always
    targets = [t.strip() for t in args.against.split(",") if t.strip()]
    if args.port and targets == ["catalog"]:
        targets = ["port"]
    rounds: dict[str, list[dict]] = {t: [] for t in targets}
    for _ in range(max(1, min(args.rounds, 10))):
        for t in targets:
            rounds[t].append(run_target(t, args))
    results = {t: _median_of(runs) for t, runs in rounds.items()}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = results[targets[0]] if len(targets) == 1 else dict(results)
    if args.rounds > 1:
        data = {"median": data, "rounds": rounds}
    out.write_text(json.dumps(data, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    width = max(len(k) for k in keys)
    cols = [max(len(t), *(len(str(r.get(k))) for k in keys)) for t, r in results.items()]
    print(f"{'metric':<{width}}  " + "  ".join(f"{t:<{c}}" for t, c in zip(targets, cols,
                                                                           strict=True)))
    for k in keys:
        print(f"{k:<{width}}  " + "  ".join(f"{results[t].get(k, '-')!s:<{c}}"
                                            for t, c in zip(targets, cols, strict=True)))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
