"""Print `ADDRESS PORT` of every passing instance of a service in the catalog, one a line.

The promote hook uses it (no-loss mode) to compare its replication offset with the other
healthy replicas'. Standard library only: it runs with whatever python3 the image has.
Usage: peers.py SERVICE  (catalog from CONSUL_HTTP_ADDR or CONSUL, token CONSUL_HTTP_TOKEN)
"""

import json
import os
import sys
import urllib.request

addr = os.environ.get("CONSUL_HTTP_ADDR") or os.environ.get("CONSUL") or "127.0.0.1:8500"
if "://" not in addr:
    addr = "http://" + addr
req = urllib.request.Request(f"{addr}/v1/health/service/{sys.argv[1]}?passing")
if os.environ.get("CONSUL_HTTP_TOKEN"):
    req.add_header("X-Consul-Token", os.environ["CONSUL_HTTP_TOKEN"])
with urllib.request.urlopen(req, timeout=1.0) as resp:
    for entry in json.load(resp):
        svc = entry["Service"]
        print(svc.get("Address") or entry["Node"]["Address"], svc["Port"])
