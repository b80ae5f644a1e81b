"""Catalog-driven templates against the real catalog: re-render on change, debounce,
atomic replacement under a reader, errors keep the old file, `autopilot template`."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from autopilot import events as ev
from autopilot.config.model import Config, ConsulConfig, TemplateConfig
from autopilot.context import Context
from autopilot.discovery.client import ConsulClient
from autopilot.templates import Template, components
from tests.helpers import CatalogProcess, autopilot_cmd, stays, until

NGINX = """\
upstream app {
{% for s in service("app") %}  server {{ s.Address }}:{{ s.Port }};
{% else %}  server 127.0.0.1:65535 down; # no backend
{% endfor %}}
"""


def register(cat: CatalogProcess, sid: str, port: int, status: str = "passing") -> None:
    requests.put(cat.url + "/v1/agent/service/register", timeout=5, json={
        "ID": sid, "Name": "app", "Port": port, "Address": "127.0.0.1",
        "Check": {"CheckID": f"service:{sid}", "TTL": "60s", "Status": status}},
    ).raise_for_status()


def deregister(cat: CatalogProcess, sid: str) -> None:
    requests.put(f"{cat.url}/v1/agent/service/deregister/{sid}", timeout=5).raise_for_status()


def put_key(cat: CatalogProcess, key: str, value: str) -> None:
    requests.put(f"{cat.url}/v1/kv/{key}", data=value.encode(), timeout=5).raise_for_status()


class Harness:
    def __init__(self, cat: CatalogProcess | None, tmp: Path, text: str, **cfg: Any) -> None:
        self.src = tmp / "tpl.j2"
        self.src.write_text(text)
        self.dest = tmp / "out" / "app.conf"
        self.tcfg = TemplateConfig(source=str(self.src), destination=str(self.dest), **cfg)
        consul = ConsulConfig(address=cat.address) if cat else None
        config = Config(consul=consul, templates=[self.tcfg])
        self.ctx = Context(config=config, bus=ev.EventBus(),
                           consul=ConsulClient(consul) if consul else None, hostname="h1")
        self.events: list[tuple[float, ev.Event]] = []
        self.ctx.bus.add_listener(lambda e: self.events.append((time.monotonic(), e)))
        self.tpl: Template = components(self.ctx)[0]

    def text(self) -> str:
        return self.dest.read_text() if self.dest.exists() else ""

    def codes(self, code: str) -> list[ev.Event]:
        return [e for _, e in self.events if e.code == code and e.source == "template.app.conf"]

    async def close(self) -> None:
        await self.tpl.stop()
        if self.ctx.consul is not None:
            self.ctx.consul.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_rerendered_on_membership_change_and_empty_set(catalog: CatalogProcess, tmp_path: Path):
    reloads = tmp_path / "reloads"

    async def scenario() -> None:
        register(catalog, "app-1", 8001)
        h = Harness(catalog, tmp_path, NGINX, mode=0o640,
                    command=["sh", "-c", f"echo reload >> {reloads}"])
        try:
            await h.tpl.start()  # the first render is in place when start() returns
            assert h.text() == "upstream app {\n  server 127.0.0.1:8001;\n}\n"
            assert (h.dest.stat().st_mode & 0o777) == 0o640
            await until(lambda: reloads.exists(), 5, "the reload command")
            # a member joins: re-rendered (blocking query, not polling) and reloaded
            t0 = time.monotonic()
            register(catalog, "app-2", 8002)
            await until(lambda: "8002" in h.text(), 3, "re-render on join")
            assert time.monotonic() - t0 < 1.0
            assert h.text() == ("upstream app {\n  server 127.0.0.1:8001;\n"
                                "  server 127.0.0.1:8002;\n}\n")
            await until(lambda: len(reloads.read_text().split()) == 2, 5, "second reload")
            # a member's check goes critical: it leaves the passing set
            requests.put(f"{catalog.url}/v1/agent/check/fail/service:app-1",
                         timeout=5).raise_for_status()
            await until(lambda: "8001" not in h.text(), 3, "re-render on failing check")
            # everybody leaves: a valid "no backend" file, not a broken one
            deregister(catalog, "app-1")
            deregister(catalog, "app-2")
            await until(lambda: "no backend" in h.text(), 3, "empty set")
            assert h.text() == "upstream app {\n  server 127.0.0.1:65535 down; # no backend\n}\n"
            await until(lambda: len(reloads.read_text().split()) == 4, 5, "fourth reload")
            assert len(h.codes(ev.CHANGED)) == 4 and not h.codes(ev.ERROR)
            # an unrelated change (another service) does not rewrite nor reload
            writes = h.tpl.writes
            requests.put(catalog.url + "/v1/agent/service/register", timeout=5,
                         json={"ID": "other", "Name": "other", "Port": 1}).raise_for_status()
            await stays(lambda: h.tpl.writes == writes and len(reloads.read_text().split()) == 4, 0.5,
                        "nothing changed")
        finally:
            await h.close()

    run(scenario)


@pytest.mark.timeout(30)
def test_reader_never_sees_partial_file_while_rerendering(catalog: CatalogProcess,
                                                          tmp_path: Path):
    body = "BEGIN {{ key('gen') }}\n{% for i in range(5000) %}line {{ key('gen') }} {{ i }}\n" \
           "{% endfor %}END {{ key('gen') }}\n"

    async def scenario() -> None:
        put_key(catalog, "gen", "0")
        h = Harness(catalog, tmp_path, body)
        bad: list[str] = []
        reads = 0
        stop = threading.Event()

        def reader() -> None:
            nonlocal reads
            while not stop.is_set():
                text = h.dest.read_text()
                reads += 1
                lines = text.splitlines()
                gen = lines[0].split()[1] if lines else "?"
                if (len(lines) != 5002 or lines[-1] != f"END {gen}"
                        or any(ln.split()[1] != gen for ln in lines[1:-1])):
                    bad.append(text[:40])

        try:
            await h.tpl.start()
            assert h.text().startswith("BEGIN 0\n")
            t = threading.Thread(target=reader, daemon=True)
            t.start()
            for gen in range(1, 41):
                put_key(catalog, "gen", str(gen))
                await until(lambda g=gen: h.text().startswith(f"BEGIN {g}\n"), 5,
                            f"generation {gen}")
            await until(lambda: h.tpl.writes == 41, 2, "41 writes")  # counted after the rename
            stop.set()
            t.join(5)
            assert reads > 40 and bad == []
            leftovers = [p.name for p in h.dest.parent.iterdir() if p.name != "app.conf"]
            assert leftovers == []
        finally:
            stop.set()
            await h.close()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_debounce_quiescence_and_max(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        put_key(catalog, "k", "0")
        h = Harness(catalog, tmp_path, "v={{ key('k') }}\n", wait_min=0.4, wait_max=1.5)
        try:
            await h.tpl.start()
            assert h.text() == "v=0\n" and h.tpl.renders == 1
            # a burst of changes faster than `min`: one render, with the last value
            for i in range(1, 6):
                put_key(catalog, "k", str(i))
                await asyncio.sleep(0.05)
            await until(lambda: h.text() == "v=5\n", 3, "the burst rendered")
            # the file is written just before the render is counted
            await until(lambda: h.tpl.renders >= 2, 3, "the burst's render counted")
            await stays(lambda: h.tpl.renders == 2, 0.6, "nothing changed")
            # changes that never quiet down are rendered at `max` after the first one
            t0 = time.monotonic()
            i = 100
            while time.monotonic() - t0 < 2.2:
                put_key(catalog, "k", str(i))
                i += 1
                await asyncio.sleep(0.2)
            await until(lambda: h.tpl.renders >= 3, 1, "a render at `max`")
            first = next(t for t, e in h.events if e.code == ev.CHANGED and t > t0)
            assert 1.3 < first - t0 < 2.0
        finally:
            await h.close()

    run(scenario)


@pytest.mark.timing
@pytest.mark.timeout(30)
def test_render_error_keeps_previous_file(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        put_key(catalog, "div", "0")
        h = Harness(catalog, tmp_path, "{{ 100 // (key('div') | int) }}\n")
        try:
            await h.tpl.start()  # the very first render fails: no file, an error
            assert h.text() == "" and h.codes(ev.ERROR)
            await asyncio.sleep(2.0)  # retries back off (0.5 s, 1 s, 2 s...)
            t0 = time.monotonic()
            put_key(catalog, "div", "5")  # what the failed render read is watched
            await until(lambda: h.text() == "20\n", 3, "the first good render")
            assert time.monotonic() - t0 < 1.0
            errors = len(h.codes(ev.ERROR))
            put_key(catalog, "div", "0")  # ZeroDivisionError while rendering
            await until(lambda: len(h.codes(ev.ERROR)) > errors, 3, "an error event")
            assert "division" in h.codes(ev.ERROR)[-1].detail
            assert h.text() == "20\n"
            put_key(catalog, "div", "4")
            await until(lambda: h.text() == "25\n", 3, "recovery")
        finally:
            await h.close()

    run(scenario)


@pytest.mark.timeout(30)
def test_syntax_error_and_unreachable_catalog(tmp_path: Path):
    async def scenario() -> None:
        dead = CatalogProcess(tmp_path)  # never started: nobody listens on its port
        h = Harness(dead, tmp_path, "{{ service('app') | length }}\n")
        h.dest.parent.mkdir()
        h.dest.write_text("previous\n")
        try:
            await h.tpl.start()
            assert h.codes(ev.ERROR) and h.text() == "previous\n"
        finally:
            await h.close()
        h = Harness(None, tmp_path, "{% for %}")
        try:
            await h.tpl.start()
            assert "render failed" in h.codes(ev.ERROR)[0].detail
            assert h.text() == "previous\n"
        finally:
            await h.close()

    run(scenario)


@pytest.mark.timeout(30)
def test_leader_function_follows_the_lock(catalog: CatalogProcess, tmp_path: Path):
    async def scenario() -> None:
        register(catalog, "db-1", 5432)
        sess = requests.put(catalog.url + "/v1/session/create", timeout=5,
                            json={"LockDelay": "0s", "TTL": "30s"}).json()["ID"]
        h = Harness(catalog, tmp_path, "{% set l = leader('db') %}"
                                       "{{ l.address ~ ':' ~ l.port if l else 'none' }}\n")
        try:
            await h.tpl.start()
            assert h.text() == "none\n"
            r = requests.put(f"{catalog.url}/v1/kv/service/db/leader?acquire={sess}", timeout=5,
                             json={"node": "n1", "address": "10.0.0.7", "port": 5432})
            assert r.json() is True
            await until(lambda: h.text() == "10.0.0.7:5432\n", 3, "the leader")
            requests.put(f"{catalog.url}/v1/kv/service/db/leader?release={sess}", timeout=5)
            await until(lambda: h.text() == "none\n", 3, "no leader")
        finally:
            await h.close()

    run(scenario)


@pytest.mark.timeout(30)
def test_autopilot_template_command(catalog: CatalogProcess, tmp_path: Path, env_clean):
    register(catalog, "app-1", 8001)
    src = tmp_path / "nginx.j2"
    src.write_text(NGINX)
    out = subprocess.run(autopilot_cmd("template", str(src), "--consul", catalog.address),
                         capture_output=True, text=True, timeout=20, env=env_clean)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "upstream app {\n  server 127.0.0.1:8001;\n}\n"
    dest = tmp_path / "o" / "nginx.conf"
    env = {**env_clean, "CONSUL_HTTP_ADDR": catalog.address}
    out = subprocess.run(autopilot_cmd("template", str(src), "--out", str(dest)),
                         capture_output=True, text=True, timeout=20, env=env)
    assert out.returncode == 0, out.stderr
    assert dest.read_text() == "upstream app {\n  server 127.0.0.1:8001;\n}\n"
    src.write_text("{{ nosuch('x') }}")
    out = subprocess.run(autopilot_cmd("template", str(src), "--consul", catalog.address),
                         capture_output=True, text=True, timeout=20, env=env_clean)
    assert out.returncode == 1 and "nosuch" in out.stderr and out.stdout == ""


@pytest.mark.timeout(40)
def test_supervisor_renders_template_from_config(catalog: CatalogProcess, tmp_path: Path,
                                                 env_clean):
    """`autopilot run` wiring: a relative source, the first file before jobs start, a
    re-render on a membership change, the reload command, and a job hooked on the
    template's `changed` event."""
    (tmp_path / "up.j2").write_text(NGINX)
    dest = tmp_path / "up.conf"
    reloads = tmp_path / "reloads"
    hooked = tmp_path / "hooked"
    cfg = tmp_path / "ap.json5"
    cfg.write_text(f"""{{
  consul: "{catalog.address}",
  control: {{socket: "{tmp_path}/ap.sock"}},
  templates: [{{source: "up.j2", destination: "{dest}", wait: "100ms:1s",
               command: ["sh", "-c", "echo r >> {reloads}"]}}],
  jobs: [
    {{name: "first", exec: ["sh", "-c", "cat {dest} > {tmp_path}/seen-at-start"]}},
    {{name: "hook", exec: ["sh", "-c", "echo h >> {hooked}"],
      when: {{source: "template.up.conf", each: "changed"}}}},
  ],
}}""")
    proc = subprocess.Popen(autopilot_cmd("run", str(cfg)), env=env_clean,
                            stdout=(tmp_path / "ap.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        from tests.helpers import wait_for

        # the file was there when the first job started (cat would fail otherwise)
        wait_for(lambda: "no backend" in (tmp_path / "seen-at-start").read_text(), timeout=15,
                 message="the first job to see the rendered file")
        register(catalog, "app-1", 8001)
        wait_for(lambda: "8001" in dest.read_text(), timeout=5, message="re-render")
        wait_for(lambda: reloads.exists() and len(reloads.read_text().split()) == 2,
                 timeout=5, message="two reloads")
        wait_for(lambda: hooked.exists() and hooked.read_text().split() == ["h"], timeout=5,
                 message="the job hooked on the template's changed event")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
