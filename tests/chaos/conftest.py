"""Chaos fixtures: a real lab (network + PID namespaces) per test, always torn down."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autopilot.lab import netns
from autopilot.lab.cluster import Lab
from tests.chaos.harness import stop_scenarios


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "chaos tests need root (network and PID namespaces, iptables)"
    missing = netns.missing_tools(True)
    if missing:
        return f"chaos tests need {', '.join(t for t, _ in missing)}"
    if shutil.which("flock") is None:
        return "chaos tests need flock (util-linux)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `chaos` (real namespaces) are skipped, with the reason, when not root."""
    reason = _skip_reason()
    for item in items:
        in_here = "tests/chaos/" in str(item.fspath).replace(os.sep, "/")
        if reason and in_here and item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.skip(reason=reason))


FAILED = pytest.StashKey[bool]()
FAILURE = pytest.StashKey[str]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[FAILED] = report.failed
        if report.failed:
            item.stash[FAILURE] = report.longreprtext


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Labs in a directory of their own (not pytest's tmp_path, which a concurrent pytest
    session may prune): removed after a pass, kept with its logs after a failure."""
    base = Path(tempfile.mkdtemp(prefix=f"ap-chaos-{request.node.name[:40]}-"))
    labs: list[Lab] = []

    def make(**kwargs: object) -> Lab:
        lab = Lab(base / f"lab{len(labs)}")
        labs.append(lab)
        kwargs.setdefault("net", None)  # a free lab network: others may run labs too
        lab.up(**kwargs)  # type: ignore[arg-type]
        return lab

    yield make
    stop_scenarios()  # a test that failed midway left its client writing
    failed = request.node.stash.get(FAILED, False)
    for lab in labs:
        if failed and lab.dir.exists():
            try:  # the namespaces go with `down`: what they looked like, beside the logs
                (lab.dir / "network.txt").write_text(lab.network_report())
            except Exception as exc:  # noqa: BLE001 - never hide the test's own failure
                (lab.dir / "network.txt").write_text(f"no report: {exc!r}\n")
        lab.down()
    if failed:
        # the failure next to the logs: a flaky run's output is often gone (piped, a loop
        # that kept only its exit status) while the kept lab stays (one under load in
        # session 5 kept its logs but not which assertion failed)
        (base / "failure.txt").write_text(request.node.stash.get(FAILURE, ""))
        print(f"\nlab logs kept in {base} (the failure: {base / 'failure.txt'})")
    else:
        shutil.rmtree(base, ignore_errors=True)
