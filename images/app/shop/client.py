"""`python3 -m shop.client URL --seconds N`: a workshop client that keeps counting.

One sequential writer (POST /visit, standard library only), so every acknowledged count must
be larger than the one before: a repeat or a step back means an acknowledged increment was
lost. Prints a summary and exits 1 if that ever happened, so a lab can break the cluster
while this runs and see the answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def visit(url: str, timeout: float) -> tuple[int, dict]:
    req = urllib.request.Request(url.rstrip("/") + "/visit", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:
            return exc.code, {"error": body[:80].decode(errors="replace")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the shop, e.g. http://localhost:8080")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to keep writing")
    p.add_argument("--interval", type=float, default=0.02, help="pause between writes")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout")
    args = p.parse_args(argv)

    acked: list[tuple[float, int, str]] = []
    refused = failed = 0
    start = last_ok = time.monotonic()
    longest_gap = 0.0
    servers: list[str] = []
    deadline = start + args.seconds
    while time.monotonic() < deadline:
        try:
            status, body = visit(args.url, args.timeout)
        except (OSError, ValueError):
            failed += 1
        else:
            if status == 200:
                now = time.monotonic()
                longest_gap = max(longest_gap, now - last_ok)
                last_ok = now
                acked.append((now, int(body["count"]), body.get("redis", "?")))
                if not servers or servers[-1] != body.get("redis"):
                    servers.append(body.get("redis", "?"))
            else:
                refused += 1
        time.sleep(args.interval)
    longest_gap = max(longest_gap, time.monotonic() - last_ok)
    counts = [c for _, c, _ in acked]
    lost = [(a, b) for a, b in zip(counts, counts[1:], strict=False) if b <= a]
    print(f"writes: {len(acked)} acknowledged, {refused} refused, {failed} failed to connect")
    if counts:
        print(f"count went from {counts[0]} to {counts[-1]}")
    print(f"redis primaries written to, in order: {' -> '.join(servers) or 'none'}")
    print(f"longest time without an acknowledged write: {longest_gap:.1f} s")
    print(f"acknowledged counts strictly increasing: {'no' if lost else 'yes'}")
    if lost:
        print(f"LOST acknowledged increments at: {lost[:5]}")
    return 1 if lost or not acked else 0


if __name__ == "__main__":
    sys.exit(main())
