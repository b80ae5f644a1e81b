"""autopilot.catalog.local: the one way the lab, the tests and the benchmarks start a catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopilot.catalog.local import CatalogNotReady, LocalCatalog, answers

pytestmark = pytest.mark.timeout(60)


def test_starts_answers_and_stops(tmp_path: Path) -> None:
    with LocalCatalog(tmp_path / "cat.log") as cat:
        assert answers(cat.address)
        proc = cat.proc
    assert proc is not None and proc.poll() is not None
    assert not answers(cat.address)


def test_a_catalog_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    cat = LocalCatalog(tmp_path / "cat.log", "--no-such-flag")
    with pytest.raises(CatalogNotReady, match=r"exited \(2\); see .*cat\.log"):
        cat.start()
    assert "no-such-flag" in (tmp_path / "cat.log").read_text()
