"""The catalog as the PostgreSQL hooks need it: the lock holder, the members, a few KV keys.

hook.sh is a shell script; this is the one place it reads JSON. Standard library only (it
runs with whatever python3 the image has). Catalog address from CONSUL_HTTP_ADDR or CONSUL,
token CONSUL_HTTP_TOKEN.

  catalog.py leader KEY            ADDRESS PORT PROMOTED(1|0) SERVICE_ID of the holder, or
                                   nothing (exit 3) while nobody holds the lock
  catalog.py cluster KEY INITKEY   INIT(1|0) then the `leader` line (or "- - 0 -"): one call
                                   for a node that has no data yet
  catalog.py members SERVICE JOB   NAME ADDRESS PORT STATUS TAGS NODATA, one line per
                                   instance (NAME: the service ID minus "JOB-", "-" -> "_":
                                   the node's application_name and replication slot; NODATA
                                   1 when its check fails saying it has no data yet)
  catalog.py view SERVICE JOB KEY  KEY's value on one line ("-" if none), then `members`:
                                   what a promote hook needs, in one call
  catalog.py view-put SERVICE JOB KEY
                                   `view`, then a line "--"; then reads one line from stdin
                                   and, if it is not empty, stores it in KEY and prints
                                   "stored" (exit 4 if that failed): a promote hook reads,
                                   decides and publishes with one process start
  catalog.py get KEY               the raw value (exit 3 when the key does not exist)
  catalog.py put KEY [--cas N]     store stdin; exit 4 when a check-and-set fails
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request

ADDR = os.environ.get("CONSUL_HTTP_ADDR") or os.environ.get("CONSUL") or "127.0.0.1:8500"
if "://" not in ADDR:
    ADDR = "http://" + ADDR
TIMEOUT = float(os.environ.get("PG_CATALOG_TIMEOUT", "2"))


def call(path: str, method: str = "GET", data: bytes | None = None) -> bytes:
    req = urllib.request.Request(f"{ADDR}{path}", data=data, method=method)
    if os.environ.get("CONSUL_HTTP_TOKEN"):
        req.add_header("X-Consul-Token", os.environ["CONSUL_HTTP_TOKEN"])
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        return resp.read()


def kv_entry(key: str) -> dict | None:
    try:
        return json.loads(call(f"/v1/kv/{key}"))[0]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def node_name(service_id: str, job: str) -> str:
    return service_id.removeprefix(f"{job}-").replace("-", "_").replace(".", "_")


def main(argv: list[str]) -> int:
    verb = argv[1] if len(argv) > 1 else ""
    if verb == "leader" and len(argv) == 3:
        entry = kv_entry(argv[2])
        if not entry or not entry.get("Session"):
            return 3
        value = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
        print(value.get("address", ""), value.get("port", ""),
              1 if value.get("promoted") else 0, value.get("service_id", ""))
        return 0
    if verb == "cluster" and len(argv) == 4:
        init = 1 if kv_entry(argv[3]) is not None else 0
        entry = kv_entry(argv[2])
        if not entry or not entry.get("Session"):
            print(init, "-", "-", 0, "-")
            return 0
        value = json.loads(base64.b64decode(entry.get("Value") or b"") or b"{}")
        print(init, value.get("address", "-"), value.get("port", "-"),
              1 if value.get("promoted") else 0, value.get("service_id", "-"))
        return 0
    if verb == "view" and len(argv) == 5:
        entry = kv_entry(argv[4])
        value = base64.b64decode(entry.get("Value") or b"").decode() if entry else ""
        print(value.replace("\n", " ") or "-")
        return main(argv[:1] + ["members", argv[2], argv[3]])
    if verb == "view-put" and len(argv) == 5:
        rc = main(argv[:1] + ["view", argv[2], argv[3], argv[4]])
        print("--", flush=True)
        line = sys.stdin.buffer.readline().strip()
        if not line:
            return rc
        if not json.loads(call(f"/v1/kv/{argv[4]}", "PUT", line)):
            return 4
        print("stored", flush=True)
        return rc
    if verb == "members" and len(argv) == 4:
        order = {"passing": 0, "warning": 1, "critical": 2}
        for e in json.loads(call(f"/v1/health/service/{argv[2]}")):
            svc = e["Service"]
            own = [c for c in e.get("Checks", []) if c.get("ServiceID")]
            worst = max([c["Status"] for c in own] or ["passing"], key=lambda s: order.get(s, 3))
            # only a failing "no data yet" check counts: the catalog (like Consul) defers an
            # output-only change of a passing check, so a passing check's output can be
            # minutes old (the bootstrap node's "no cluster yet" outlives its initdb)
            nodata = any(c.get("Status") == "critical"
                         and str(c.get("Output", "")).startswith("no data yet") for c in own)
            print(node_name(svc["ID"], argv[3]), svc.get("Address") or e["Node"]["Address"],
                  svc["Port"], worst, ",".join(svc.get("Tags") or []) or "-", int(nodata))
        return 0
    if verb == "get" and len(argv) == 3:
        entry = kv_entry(argv[2])
        if entry is None:
            return 3
        sys.stdout.write(base64.b64decode(entry.get("Value") or b"").decode())
        return 0
    if verb == "put" and len(argv) in (3, 5):
        query = f"?cas={int(argv[4])}" if len(argv) == 5 and argv[3] == "--cas" else ""
        ok = json.loads(call(f"/v1/kv/{argv[2]}{query}", "PUT", sys.stdin.buffer.read()))
        return 0 if ok else 4
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        print(f"catalog.py: {exc}", file=sys.stderr)
        sys.exit(1)
