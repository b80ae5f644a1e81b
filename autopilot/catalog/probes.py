"""Active checks the catalog runs itself: HTTP (2xx passing, 429 warning, else critical)
and TCP (connect succeeds -> passing), as a Consul agent does for ``HTTP``/``TCP`` checks."""

from __future__ import annotations

import asyncio

import aiohttp

from autopilot.catalog.registry import CRITICAL, PASSING, WARNING, Check

OUTPUT_MAX = 4096


async def run_probe(http: aiohttp.ClientSession, chk: Check,
                    timeout: float) -> tuple[str, str]:
    """Probe once; return (status, output). Never raises except on cancellation."""
    d = chk.definition
    try:
        if chk.type == "tcp":
            host, _, port = d["TCP"].rpartition(":")
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout)
            writer.close()
            return PASSING, f"TCP connect {d['TCP']}: Success"
        headers = {k: (v[0] if isinstance(v, list) and v else str(v))
                   for k, v in (d.get("Header") or {}).items()}
        async with http.request(
                d.get("Method", "GET"), d["HTTP"], headers=headers,
                data=d.get("Body") or None, ssl=False if d.get("TLSSkipVerify") else None,
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = (await resp.content.read(OUTPUT_MAX)).decode("utf-8", "replace")
            out = (f"HTTP {d.get('Method', 'GET')} {d['HTTP']}: {resp.status} "
                   f"{resp.reason} Output: {body}")
            if 200 <= resp.status < 300:
                return PASSING, out
            return (WARNING if resp.status == 429 else CRITICAL), out
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure makes the check critical
        return CRITICAL, f"{chk.type.upper()} check {chk.id} failed: {exc!r}"
