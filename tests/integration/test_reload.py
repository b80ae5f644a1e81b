"""Reload keeps unchanged jobs (same PID, same counters), restarts changed ones, stops
removed ones, starts new ones; a bad config changes nothing. In-process, real config files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from autopilot.config.model import ConfigError
from autopilot.supervisor import load_config
from tests.helpers import stays
from tests.unit.job_harness import BareSupervisor, run, until

pytestmark = pytest.mark.timeout(30)


def write(path: Path, jobs: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"logging": {"level": "DEBUG"}, "jobs": jobs}))


def test_reload_diffs_jobs(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json5"
    v1 = [
        {"name": "pre", "exec": ["true"]},
        {"name": "keep", "exec": ["sleep", "30"], "restarts": "unlimited",
         "health": {"exec": ["true"], "interval": 1, "ttl": 5}},
        {"name": "change", "exec": ["sleep", "30"]},
        {"name": "gone", "exec": ["sleep", "30"]},
    ]
    write(cfg, v1)
    os.environ["AP_RELOAD_ARG"] = "31"

    async def main() -> None:
        sup = BareSupervisor(load_config(str(cfg)), str(cfg))
        import asyncio
        task = asyncio.ensure_future(sup.run())
        await until(lambda: all(sup.jobs.get(n) and sup.jobs[n].pid
                                for n in ("keep", "change", "gone")), 5)
        await until(lambda: sup.jobs["pre"].done, 5)
        keep, pre = sup.jobs["keep"], sup.jobs["pre"]
        keep_pid, change_pid = keep.pid, sup.jobs["change"].pid
        gone = sup.jobs["gone"]

        v2 = [dict(j) for j in v1 if j["name"] != "gone"]
        v2[2] = {"name": "change", "exec": ["sleep", "{{ .AP_RELOAD_ARG }}"]}
        v2.append({"name": "new", "exec": ["sleep", "30"]})
        write(cfg, v2)
        await sup.reload()
        assert sup.jobs["keep"] is keep and keep.pid == keep_pid and keep.runs == 1
        assert sup.jobs["pre"] is pre and pre.runs == 1  # a completed job is not re-run
        assert gone.done and "gone" not in sup.jobs
        await until(lambda: sup.jobs["change"].pid not in (None, change_pid), 5, "changed job")
        assert sup.jobs["change"].cfg.exec == ["sleep", "31"]  # rendered from os.environ
        await until(lambda: sup.jobs["new"].pid, 5, "new job started")
        assert list(sup.jobs) == ["pre", "keep", "change", "new"]
        codes = [str(e) for e in sup.ctx.bus.history]
        assert "stopped:gone" in codes and "stopped:change" in codes
        assert "stopping:keep" not in codes

        # putenv then reload: the template sees the new value
        sup.putenv({"AP_RELOAD_ARG": "32"})
        pid31 = sup.jobs["change"].pid
        await sup.reload()
        await until(lambda: sup.jobs["change"].pid not in (None, pid31), 5, "re-rendered job")
        assert sup.jobs["change"].cfg.exec == ["sleep", "32"] and keep.pid == keep_pid

        # a broken config: ConfigError, and nothing changes
        cfg.write_text("{jobs: [ {name: 'x', exec: }")
        before = {n: j.pid for n, j in sup.jobs.items()}
        with pytest.raises(ConfigError):
            await sup.reload()
        assert {n: j.pid for n, j in sup.jobs.items()} == before
        assert sup.reloads == 2

        sup.request_shutdown("test")
        assert await task == 0
        assert all(j.done for j in sup.jobs.values())

    try:
        run(main)
    finally:
        os.environ.pop("AP_RELOAD_ARG", None)


def test_reload_replacing_every_job_keeps_running(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json5"
    write(cfg, [{"name": "one", "exec": ["sleep", "30"]}])

    async def main() -> None:
        import asyncio
        sup = BareSupervisor(load_config(str(cfg)), str(cfg))
        task = asyncio.ensure_future(sup.run())
        await until(lambda: sup.jobs.get("one") and sup.jobs["one"].pid, 5)
        write(cfg, [{"name": "two", "exec": ["sleep", "30"]}])
        await sup.reload()
        await until(lambda: sup.jobs["two"].pid, 5, "new job")
        await stays(lambda: not sup.shutting_down and list(sup.jobs) == ["two"], 0.2,
                    "nothing changed")
        sup.request_shutdown("test")
        assert await task == 0

    run(main)
