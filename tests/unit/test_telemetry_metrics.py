"""Our Prometheus text exposition writes what prometheus_client wrote (the reference, when
it is installed: it is a test dependency only), and telemetry's metrics keep their names."""

from __future__ import annotations

import pytest

from autopilot.telemetry_metrics import Counter, Gauge, Histogram, Registry, Summary, go_float

pytestmark = pytest.mark.timeout(30)


def test_go_float() -> None:
    assert [go_float(v) for v in (1, 0.25, 1e7, 123456789.0, float("inf"), -float("inf"))] == [
        "1.0", "0.25", "1e+07", "1.23456789e+08", "+Inf", "-Inf"]
    assert go_float(float("nan")) == "NaN"


def _fill(mod: object, registry: object) -> None:
    c = mod.Counter("hits", "Hits \\ with\nnewline", registry=registry)  # type: ignore[attr-defined]
    c.inc(3)
    lc = mod.Counter("ev_total", "Events", ["code", "src"], registry=registry)  # type: ignore[attr-defined]
    lc.labels("A", 'q"uote\\').inc()
    lc.labels("B", "x").inc(2.5)
    g = mod.Gauge("temp", "t", registry=registry)  # type: ignore[attr-defined]
    g.set(1e7)
    h = mod.Histogram("lat", "l", registry=registry)  # type: ignore[attr-defined]
    for v in (0.001, 0.3, 20):
        h.observe(v)
    s = mod.Summary("size", "s", registry=registry)  # type: ignore[attr-defined]
    s.observe(512)


def test_same_text_as_prometheus_client() -> None:
    prom = pytest.importorskip("prometheus_client")
    prom.disable_created_metrics()
    theirs = prom.CollectorRegistry()
    _fill(prom, theirs)
    ours = Registry()
    import autopilot.telemetry_metrics as mod

    _fill(mod, ours)
    assert ours.exposition() == prom.generate_latest(theirs).decode()


def test_duplicate_names_refused() -> None:
    r = Registry()
    Gauge("a", "a", registry=r)
    with pytest.raises(ValueError, match="Duplicated"):
        Gauge("a", "a", registry=r)
    Summary("b", "b", registry=r)
    with pytest.raises(ValueError, match="Duplicated"):
        Gauge("b_count", "x", registry=r)
    with pytest.raises(ValueError):
        Counter("c", "c", registry=r).inc(-1)
    assert "le=\"+Inf\"" in (Histogram("d", "d", registry=r) and r.exposition())


def test_supervisor_with_telemetry_does_not_import_prometheus_client() -> None:
    import subprocess
    import sys

    code = ("import sys, autopilot.telemetry; "
            "print('prometheus_client' in sys.modules, 'aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20, check=True).stdout.split()
    assert out == ["False", "False"]


def test_family_builders_same_text_as_prometheus_client() -> None:
    prom = pytest.importorskip("prometheus_client")
    import autopilot.telemetry_metrics as ours

    def families(core: object) -> list:
        c = core.CounterMetricFamily("fn_cold", "Cold starts", labels=["function"])  # type: ignore[attr-defined]
        c.add_metric(["f"], 3)
        g = core.GaugeMetricFamily("fn_inst", "Instances", labels=["function"])  # type: ignore[attr-defined]
        g.add_metric(["f"], 1)
        h = core.HistogramMetricFamily("fn_dur", "Durations", labels=["function"])  # type: ignore[attr-defined]
        h.add_metric(["f"], [("0.1", 1), ("1.0", 2), ("+Inf", 3)], 4.5)
        return [c, g, h]

    class Fixed:
        def __init__(self, fams: list) -> None:
            self.fams = fams

        def collect(self) -> list:
            return self.fams

    theirs = prom.CollectorRegistry()
    import prometheus_client.core

    theirs.register(Fixed(families(prometheus_client.core)))
    mine = ours.Registry()
    mine.register(Fixed(families(ours)))
    assert mine.exposition() == prom.generate_latest(theirs).decode()
