"""Run a scenario (a list of request steps) against a Consul-compatible HTTP API and record
what it answered; compare two recordings with only the must-differ parts normalised.

The same runner records against a real Consul 1.10.12 dev agent (``recorder.py``, on a
machine that has the binary) and replays against ``autopilot catalog`` in CI
(``test_reference_replay.py``), so both sides are driven by identical requests and timing.

A step is a plain dict (see ``scenarios.py``):

- ``name``, ``method`` (GET), ``path`` (``{var}`` substituted), ``body`` (JSON) or ``raw``
  (bytes as text), ``token`` (sent as ``X-Consul-Token``), ``headers``;
- ``compare``: ``"full"`` (default), ``"status"``, ``"shape"`` (keys and JSON types only) or
  ``{"pick": [paths], "shape": [paths]}`` for bodies too different to compare whole
  (``agent/self``);
- ``save``: ``{"var": "body.ID" | "body" | "header.X-Consul-Index"}``;
- ``pause``: seconds to sleep before the step (lock-delay, TTL scenarios);
- ``blocking``: ``{"after": s, "trigger": [steps]}``: the request is sent, the trigger steps
  run ``after`` seconds later, and the step records whether the request returned because of
  the write (``"woke": "write"``) or at the end of its ``wait`` (``"woke": "timeout"``);
- ``poll``: ``{"until": "status:404" | "body:null" | "body:[]", "every": s, "max": s,
  "within": [lo, hi]}``: the request is repeated until the condition holds; the elapsed time
  is recorded and classified against ``within``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import requests

#: response headers compared between recordings (others: Date, lengths... must differ)
HEADERS = ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
           "X-Consul-Default-Acl-Policy", "X-Consul-Effective-Consistency",
           "X-Consul-ContentHash")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: body keys whose values are raft indexes (LockIndex is a count, it stays)
INDEX_KEYS = {"CreateIndex", "ModifyIndex", "Index"}


def _subst(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: str(env.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [_subst(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, env) for k, v in value.items()}
    return value


def _decode(resp: requests.Response) -> Any:
    text = resp.content.decode("utf-8", "replace")
    if "json" in resp.headers.get("Content-Type", ""):
        try:
            return {"json": json.loads(text)}
        except ValueError:
            pass
    return {"text": text}


class Runner:
    def __init__(self, url: str, verify: Any = True) -> None:
        self.url = url.rstrip("/")
        self.env: dict[str, str] = {}
        self.http = requests.Session()
        self.http.verify = verify

    def send(self, step: dict[str, Any], timeout: float = 30) -> requests.Response:
        headers = dict(step.get("headers") or {})
        if step.get("token"):
            headers["X-Consul-Token"] = step["token"]
        kw: dict[str, Any] = {"headers": headers, "timeout": timeout}
        if "body" in step:
            kw["data"] = json.dumps(_subst(step["body"], self.env)).encode()
        elif "raw" in step:
            kw["data"] = _subst(step["raw"], self.env).encode()
        return self.http.request(step.get("method", "GET"),
                                 self.url + _subst(step["path"], self.env), **kw)

    def record(self, resp: requests.Response) -> dict[str, Any]:
        return {"status": resp.status_code,
                "headers": {h: resp.headers[h] for h in HEADERS if h in resp.headers},
                **_decode(resp)}

    def _save(self, step: dict[str, Any], resp: requests.Response) -> None:
        for var, where in (step.get("save") or {}).items():
            if where.startswith("header."):
                self.env[var] = resp.headers.get(where[7:], "")
                continue
            data: Any = resp.json()
            for part in where.split(".")[1:]:
                data = data[int(part)] if isinstance(data, list) else data[part]
            self.env[var] = data

    def run_step(self, step: dict[str, Any]) -> dict[str, Any]:
        if step.get("pause"):
            time.sleep(step["pause"])
        out: dict[str, Any] = {"name": step["name"], "method": step.get("method", "GET"),
                               "path": step["path"]}
        if "blocking" in step:
            out.update(self._blocking(step))
        elif "poll" in step:
            out.update(self._poll(step))
        else:
            resp = self.send(step)
            out["response"] = self.record(resp)
            self._save(step, resp)
        return out

    def _blocking(self, step: dict[str, Any]) -> dict[str, Any]:
        spec = step["blocking"]
        box: dict[str, Any] = {}

        def go() -> None:
            box["resp"] = self.send(step, timeout=60)
            box["at"] = time.monotonic()

        t = threading.Thread(target=go)
        t0 = time.monotonic()
        t.start()
        time.sleep(spec.get("after", 0.5))
        written = time.monotonic()
        triggers = [self.run_step(s) for s in spec.get("trigger", [])]
        t.join(60)
        resp = box["resp"]
        woke = "write" if box["at"] - written < 0.75 and spec.get("trigger") else "timeout"
        if box["at"] < written:
            woke = "before-write"
        self._save(step, resp)
        return {"response": self.record(resp), "triggers": triggers, "woke": woke,
                "returned_after_s": round(box["at"] - t0, 3),
                "after_write_ms": round((box["at"] - written) * 1000, 1)}

    def _poll(self, step: dict[str, Any]) -> dict[str, Any]:
        spec = step["poll"]
        kind, _, want = spec["until"].partition(":")
        t0 = time.monotonic()
        while True:
            resp = self.send(step)
            if kind == "status" and str(resp.status_code) == want:
                break
            if kind == "body" and resp.ok and resp.json() == json.loads(want):
                break
            if time.monotonic() - t0 > spec["max"]:
                break
            time.sleep(spec.get("every", 0.1))
        elapsed = time.monotonic() - t0
        lo, hi = spec["within"]
        return {"response": self.record(resp), "elapsed_s": round(elapsed, 2),
                "in_window": lo <= elapsed <= hi}

    def run(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.run_step(s) for s in steps]


# ---- normalisation and comparison ------------------------------------------------------------
def normalise(value: Any, node: str | None = None) -> Any:
    """Replace what must differ between two agents: UUIDs, raft indexes, the node name."""
    if isinstance(value, dict):
        return {k: ("<index>" if k in INDEX_KEYS and isinstance(v, int)
                    else "<hash>" if k == "ContentHash" else normalise(v, node))
                for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, node) for v in value]
    if isinstance(value, str):
        value = UUID.sub("<uuid>", value)
        if node:
            value = value.replace(node, "<node>")
        return value
    return value


def shape(value: Any) -> Any:
    """Keys and JSON types only."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def _sorted_lists(value: Any) -> Any:
    """Lists sorted: Consul builds catalog/services' tag lists from Go maps (their order
    changes from call to call) and lists sessions by their random IDs."""
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_sorted_lists(v) for v in value), key=lambda v: json.dumps(v,
                                                                                  sort_keys=True))
    return value


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return "<missing>"
        data = data[part]
    return data


def _headers(rec: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in rec["headers"].items():
        if k == "X-Consul-Index":
            v = "<index>"
        elif k == "X-Consul-ContentHash":
            v = "<hash>"
        elif k == "Content-Type":
            v = v.split(";")[0]
        out[k] = v
    return out


def view(step: dict[str, Any], rec: dict[str, Any], node: str) -> Any:
    """What of a recorded step is compared, after normalisation."""
    resp = rec["response"]
    compare = step.get("compare", "full")
    out: dict[str, Any] = {"status": resp["status"]}
    if "woke" in rec:
        out["woke"] = rec["woke"]
    if "in_window" in rec:
        out["in_window"] = rec["in_window"]
    if compare == "status":
        return out
    body = resp.get("json", resp.get("text"))
    out["headers"] = _headers(resp)
    if "blocking" in step:
        # Consul 1.10 answers a woken blocking health query with KnownLeader false;
        # that is a leader-forwarding detail of a real cluster, not the catalog's to copy
        out["headers"].pop("X-Consul-KnownLeader", None)
    if compare == "full":
        out["body"] = normalise(body, node)
        if step.get("unordered"):
            out["body"] = _sorted_lists(out["body"])
    elif compare == "shape":
        out["body"] = shape(body)
    else:
        out["pick"] = {p: normalise(_at(body, p), node) for p in compare.get("pick", [])}
        out["shape"] = {p: shape(_at(body, p)) for p in compare.get("shape", [])}
    for i, (tstep, trec) in enumerate(zip(step.get("blocking", {}).get("trigger", []),
                                          rec.get("triggers", []), strict=False)):
        out[f"trigger{i}"] = view(tstep, trec, node)
    return out


def diff_paths(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two views differ, as ``path: consul -> catalog`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{where}.{k}" if where else str(k)
            if k not in a:
                out.append(f"{p}: <absent> -> {json.dumps(b[k])[:200]}")
            elif k not in b:
                out.append(f"{p}: {json.dumps(a[k])[:200]} -> <absent>")
            else:
                out += diff_paths(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in diff_paths(x, y, f"{where}[{i}]")]
    if a != b:
        return [f"{where}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"]
    return []
