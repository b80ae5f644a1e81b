"""Function cold starts: autopilot's function jobs against the handler's own start, an
OpenFaaS-classic-watchdog-style model and a Knative-style scale-to-zero, in one run.

Not a test. Run: ``python -m bench.functions [--trials 15] [--burst 16]`` (about a minute).
Prints tables and writes bench/results/functions.json. See bench/functions/README.md.

Measured (real processes and sockets on loopback, the same handler everywhere,
autopilot/lab/examples/functions/hello.py):

- *handler's own start*: the bench itself activates the handler the systemd way (fork, the
  socket at fd 3, LISTEN_PID, exec) with a request already waiting in the socket's backlog;
  time from the fork to the complete answer. Nothing of autopilot is involved. Its trials
  alternate with autopilot's cold trials, so load drift weighs on both alike.
- *autopilot cold*: the same request sent to a function job at zero instances (autopilot's
  socket, its bash shim, its relay); added cold start = autopilot cold - handler's own start.
- *warm*: a request to a running handler, directly and through autopilot (the relay's cost).
- *scale from zero*: ``--burst`` requests at once at zero instances, ``--rounds`` times;
  every failure counted.
- *watchdog*: the bench's own HTTP server forks the handler for every request
  (``hello.py --stdio``: query in ``Http_Query``, answer on stdout), sequentially and in a burst.

Modelled (``trace``): a seeded request trace replayed through three scale policies with the
cold/warm latencies measured above: autopilot (idleTimeout), Knative (scale to zero after a
60 s stable window without requests; a pod's scheduling and the activator's hop are not
modelled, so its latency here is a lower bound), and the watchdog (every request cold).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from autopilot.catalog.local import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "bench" / "results" / "functions.json"
HANDLER = str(ROOT / "autopilot" / "lab" / "examples" / "functions" / "hello.py")
REQUEST = b"GET /?name=bench HTTP/1.0\r\nHost: bench\r\nConnection: close\r\n\r\n"
KNATIVE_WINDOW = 60.0
TARGET_ADDED_MS = 50.0


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summary(values: list[float]) -> dict[str, Any]:
    s = sorted(values)
    return {"n": len(s), "median_ms": ms(statistics.median(s)), "min_ms": ms(s[0]),
            "p90_ms": ms(s[min(len(s) - 1, int(len(s) * 0.9))]), "max_ms": ms(s[-1])}


def request(port: int, timeout: float = 30.0) -> bytes:
    """One HTTP/1.0 request; the whole answer (raises on a refused or empty answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(REQUEST)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"bad answer: {answer[:80]!r}")
    return answer


# -- the handler's own start: systemd-style activation done by the bench ---------------------
def direct_cold(trials: int) -> tuple[list[float], list[float]]:
    """(cold, warm) latencies of the handler activated by the bench itself."""
    cold, warm = [], []
    for _ in range(trials):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        port = lsock.getsockname()[1]
        client = socket.socket()
        client.settimeout(30)
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: what systemd does between fork and exec
            try:
                if lsock.fileno() != 3:
                    os.dup2(lsock.fileno(), 3)
                os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)  # its request log is not the bench's output
                env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()),
                           LISTEN_FDNAMES="hello")
                os.execvpe("python3", ["python3", HANDLER], env)
            finally:
                os._exit(127)
        try:
            client.connect(("127.0.0.1", port))  # waits in the backlog
            client.sendall(REQUEST)
            while client.recv(65536):
                pass
            cold.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            request(port)
            warm.append(time.perf_counter() - t1)
        finally:
            client.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            lsock.close()
    return cold, warm


# -- autopilot's function job ----------------------------------------------------------------
class Autopilot:
    def __init__(self, tmp: Path, idle: str, cap: int) -> None:
        self.port, self.tel = free_port(), free_port()
        cfg = {"control": {"socket": str(tmp / "ap.sock")}, "logging": {"level": "WARN"},
               "jobs": [{"name": "hello", "exec": ["python3", HANDLER], "port": self.port,
                         "interfaces": ["static:127.0.0.1"],
                         "function": {"idleTimeout": idle, "maxConcurrency": cap,
                                      "bind": "127.0.0.1"}}],
               "telemetry": {"port": self.tel, "interfaces": ["static:127.0.0.1"]}}
        path = tmp / "fn.json5"
        path.write_text(json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "autopilot", "run", str(path)],
                                     env=env, stdout=(tmp / "ap.log").open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        # until the function's socket listens (a probe connection would be an invocation)
        while not self.listening(self.port) or not self.listening(self.tel):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("autopilot did not start: " +
                                   (tmp / "ap.log").read_text()[-2000:])
            time.sleep(0.05)

    def listening(self, port: int) -> bool:
        try:
            conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)

    def handlers(self) -> int:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return 0
        alive = 0
        for p in kids:
            try:
                alive += p.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                pass  # gone since the listing
        return alive

    def wait_zero(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.handlers():
            if time.monotonic() > deadline:
                raise RuntimeError("the handler was not stopped after idleTimeout")
            time.sleep(0.01)

    def metrics(self) -> str:
        with socket.create_connection(("127.0.0.1", self.tel), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def autopilot_trials(tmp: Path, trials: int, burst: int, rounds: int) -> dict[str, Any]:
    ap = Autopilot(tmp, idle="150ms", cap=burst)
    try:
        cold, warm, d_cold, d_warm = [], [], [], []
        for _ in range(trials):
            # interleaved with the handler's own start, so a change of the machine's load
            # during the run weighs on both sides alike
            c, w = direct_cold(1)
            d_cold += c
            d_warm += w
            ap.wait_zero()
            t0 = time.perf_counter()
            request(ap.port)
            cold.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            request(ap.port)
            warm.append(time.perf_counter() - t1)
        failures, ok, burst_lat = [], 0, []
        with cf.ThreadPoolExecutor(burst) as pool:
            for _ in range(rounds):
                ap.wait_zero()

                def timed() -> float:
                    t = time.perf_counter()
                    request(ap.port)
                    return time.perf_counter() - t

                for fut in [pool.submit(timed) for _ in range(burst)]:
                    try:
                        burst_lat.append(fut.result())
                        ok += 1
                    except Exception as exc:  # noqa: BLE001 - counted, that is the figure
                        failures.append(repr(exc))
        metrics = {line.split(" ")[0]: float(line.split(" ")[1])
                   for line in ap.metrics().splitlines()
                   if line.startswith("autopilot_function_") and " " in line}
    finally:
        ap.stop()
    return {"cold": cold, "warm": warm, "direct_cold": d_cold, "direct_warm": d_warm,
            "burst": burst_lat, "burst_ok": ok,
            "burst_failed": failures, "metrics": metrics}


# -- the watchdog model: a process per request -----------------------------------------------
async def _watchdog_server(host: str) -> tuple[asyncio.base_events.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        query = target.split("?", 1)[1] if "?" in target else ""
        proc = await asyncio.create_subprocess_exec(
            "python3", HANDLER, "--stdio", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, Http_Query=query))
        body, _ = await proc.communicate(b"")
        status = b"200 OK" if proc.returncode == 0 else b"502 Bad Gateway"
        writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0, backlog=1024)
    return server, server.sockets[0].getsockname()[1]


def watchdog_trials(trials: int, burst: int) -> dict[str, Any]:
    import threading

    loop = asyncio.new_event_loop()
    server, port = loop.run_until_complete(_watchdog_server("127.0.0.1"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        seq = []
        for _ in range(trials):
            t0 = time.perf_counter()
            request(port)
            seq.append(time.perf_counter() - t0)
        lat, failed = [], []
        with cf.ThreadPoolExecutor(burst) as pool:
            def timed() -> float:
                t = time.perf_counter()
                request(port)
                return time.perf_counter() - t

            for fut in [pool.submit(timed) for _ in range(burst)]:
                try:
                    lat.append(fut.result())
                except Exception as exc:  # noqa: BLE001
                    failed.append(repr(exc))
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    return {"sequential": seq, "burst": lat, "burst_failed": failed}


# -- the modelled trace ------------------------------------------------------------------------
def trace(seed: int, n: int) -> list[float]:
    """Arrival times: bursts of activity and quiet gaps (seeded, reproducible)."""
    rng = random.Random(seed)
    t, out = 0.0, []
    while len(out) < n:
        if rng.random() < 0.15:
            t += rng.uniform(30, 600)  # a quiet spell
        else:
            t += rng.expovariate(1 / 3.0)  # busy: a request every ~3 s
        out.append(t)
    return out


def replay(arrivals: list[float], keep: float | None, cold_s: float, warm_s: float,
           busy_s: float) -> dict[str, Any]:
    """One instance kept for ``keep`` seconds after each request (None: a process per
    request); cold starts, mean latency and instance-seconds over the trace."""
    colds, lat, inst = 0, [], 0.0
    alive_until = -1.0
    for t in arrivals:
        if keep is None or t > alive_until:
            colds += 1
            lat.append(cold_s)
            if keep is not None:
                inst += busy_s + keep
            else:
                inst += cold_s
        else:
            lat.append(warm_s)
            inst += t + keep - alive_until if keep is not None else 0.0
        if keep is not None:
            alive_until = t + keep
    return {"requests": len(arrivals), "cold_starts": colds,
            "cold_per_1000": round(1000 * colds / len(arrivals), 1),
            "mean_latency_ms": ms(statistics.mean(lat)),
            "instance_seconds": round(inst, 1),
            "span_s": round(arrivals[-1] - arrivals[0], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--burst", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="fnbench-") as tmp:
        auto = autopilot_trials(Path(tmp), args.trials, args.burst, args.rounds)
    d_cold, d_warm = auto["direct_cold"], auto["direct_warm"]
    wd = watchdog_trials(args.trials, args.burst)

    fig = {
        "handler_own_start": summary(d_cold),
        "autopilot_cold": summary(auto["cold"]),
        "direct_warm": summary(d_warm),
        "autopilot_warm": summary(auto["warm"]),
        "autopilot_burst_from_zero": summary(auto["burst"]),
        "watchdog_per_request": summary(wd["sequential"]),
        "watchdog_burst": summary(wd["burst"]),
    }
    added = statistics.median(auto["cold"]) - statistics.median(d_cold)
    relay = statistics.median(auto["warm"]) - statistics.median(d_warm)
    cold_s, warm_s = statistics.median(auto["cold"]), statistics.median(auto["warm"])
    arrivals = trace(args.seed, args.requests)
    models = {
        "autopilot idleTimeout 10s": replay(arrivals, 10.0, cold_s, warm_s, warm_s),
        "autopilot idleTimeout 60s": replay(arrivals, 60.0, cold_s, warm_s, warm_s),
        "knative stable window 60s": replay(arrivals, KNATIVE_WINDOW, cold_s, warm_s, warm_s),
        "watchdog (process per request)": replay(arrivals, None,
                                                 statistics.median(wd["sequential"]),
                                                 warm_s, warm_s),
    }
    result = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "load1": os.getloadavg()[0]},
        "args": vars(args) | {"json": str(args.json)},
        "figures": fig,
        "added_cold_start_ms": ms(added), "target_added_ms": TARGET_ADDED_MS,
        "target_met": ms(added) <= TARGET_ADDED_MS,
        "relay_overhead_warm_ms": ms(relay),
        "scale_from_zero": {"requests": args.burst * args.rounds, "ok": auto["burst_ok"],
                            "failed": len(auto["burst_failed"]),
                            "errors": auto["burst_failed"][:5]},
        "watchdog_burst_failed": len(wd["burst_failed"]),
        "autopilot_metrics": auto["metrics"],
        "model": models,
        "raw": {"handler_own_start": d_cold, "autopilot_cold": auto["cold"],
                "watchdog_per_request": wd["sequential"]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))

    print(f"\nmeasured ({args.trials} trials, burst {args.burst} x {args.rounds}), ms")
    print(f"{'figure':<28}{'median':>9}{'min':>9}{'p90':>9}{'max':>9}")
    for name, s in fig.items():
        print(f"{name:<28}{s['median_ms']:>9}{s['min_ms']:>9}{s['p90_ms']:>9}{s['max_ms']:>9}")
    print(f"\nadded cold start (autopilot cold - handler's own start): {ms(added)} ms "
          f"(target <= {TARGET_ADDED_MS:.0f} ms: {'met' if result['target_met'] else 'MISSED'})")
    print(f"relay overhead on a warm request: {ms(relay)} ms")
    sfz = result["scale_from_zero"]
    print(f"scale from zero: {sfz['ok']} ok, {sfz['failed']} failed of {sfz['requests']}")
    print(f"\nmodel: {args.requests} requests (seed {args.seed}) over "
          f"{models['knative stable window 60s']['span_s']} s")
    print(f"{'policy':<34}{'cold/1000':>10}{'mean ms':>10}{'instance-s':>12}")
    for name, m in models.items():
        print(f"{name:<34}{m['cold_per_1000']:>10}{m['mean_latency_ms']:>10}"
              f"{m['instance_seconds']:>12}")
    print(f"\nwrote {args.json}")
    return 0 if sfz["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
