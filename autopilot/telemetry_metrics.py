"""The Prometheus text exposition (format 0.0.4) telemetry serves, without prometheus_client.

Why our own: prometheus_client cost the supervisor about 4 MB of memory and 60 modules for
four metric kinds and three process collectors. This module writes the same text
prometheus_client wrote (same names, ``HELP``/``TYPE`` lines, label escaping, float
formatting, default histogram buckets, counters exposed as ``<name>_total`` — telemetry
renames them back to ContainerPilot's names), and nothing else: no ``_created`` series, no
summary quantiles (prometheus_client never had them either).
"""

from __future__ import annotations

import gc
import math
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INF = float("inf")
DEFAULT_BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0, INF)

Sample = tuple[str, dict[str, str], float]  # (sample name, labels, value)


def go_float(value: float) -> str:
    """A float as Go's Prometheus client writes it (``+Inf``, ``1e+06``, ``2.0``)."""
    d = float(value)
    if d == INF:
        return "+Inf"
    if d == -INF:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class Family:
    """One metric family at scrape time: name, type, help and its samples."""

    def __init__(self, name: str, kind: str, doc: str, samples: Iterable[Sample]) -> None:
        self.name, self.kind, self.doc, self.samples = name, kind, doc, list(samples)

    def render(self, out: list[str]) -> None:
        shown = f"{self.name}_total" if self.kind == "counter" else self.name
        out.append(f"# HELP {shown} {_escape_help(self.doc)}\n# TYPE {shown} {self.kind}\n")
        for name, labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                out.append(f"{name}{{{text}}} {go_float(value)}\n")
            else:
                out.append(f"{name} {go_float(value)}\n")


class Registry:
    """Collectors in registration order; a name clash is a ValueError (as prometheus_client)."""

    def __init__(self) -> None:
        self._collectors: list[Any] = []
        self._names: set[str] = set()

    def register(self, collector: Any, names: Sequence[str] = ()) -> None:
        clash = self._names.intersection(names)
        if clash:
            raise ValueError(f"Duplicated timeseries in CollectorRegistry: {clash}")
        self._names.update(names)
        self._collectors.append(collector)

    def families(self) -> list[Family]:
        return [f for c in self._collectors for f in c.collect()]

    def exposition(self) -> str:
        out: list[str] = []
        for family in self.families():
            family.render(out)
        return "".join(out)


class _Metric:
    """A named metric, optionally with label names; ``labels(...)`` gives a child."""

    kind = ""
    suffixes: tuple[str, ...] = ("",)

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (),
                 registry: Registry | None = None) -> None:
        if self.kind == "counter" and name.endswith("_total"):
            name = name[:-6]
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        if registry is not None:
            registry.register(self, [self.name + s for s in self.suffixes])

    def labels(self, *values: str) -> Any:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Any:
        return _Value()

    def _only(self) -> Any:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels: use labels(...)")
        return self._children[()]

    def collect(self) -> list[Family]:
        samples: list[Sample] = []
        for key, child in self._children.items():
            samples.extend(self._samples(dict(zip(self.labelnames, key, strict=True)), child))
        return [Family(self.name, self.kind, self.doc, samples)]

    def _samples(self, labels: dict[str, str], child: Any) -> list[Sample]:
        return [(self.name, labels, child.value)]


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class Counter(_Metric):
    kind = "counter"
    suffixes = ("_total",)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def _samples(self, labels: dict[str, str], child: Any) -> list[Sample]:
        return [(f"{self.name}_total", labels, child.value)]


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float) -> None:
        self._only().set(value)


class _Observed:
    __slots__ = ("count", "sum", "buckets")

    def __init__(self, bounds: int) -> None:
        self.count, self.sum, self.buckets = 0.0, 0.0, [0.0] * bounds


class Summary(_Metric):
    """Count and sum of observations (no quantiles, as prometheus_client's Summary)."""

    kind = "summary"
    suffixes = ("_count", "_sum")
    bounds: tuple[float, ...] = ()

    def _new_child(self) -> Any:
        return _Observed(len(self.bounds))

    def observe(self, value: float) -> None:
        child = self._only()
        child.count += 1
        child.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                child.buckets[i] += 1

    def _samples(self, labels: dict[str, str], child: Any) -> list[Sample]:
        return [(f"{self.name}_count", labels, child.count),
                (f"{self.name}_sum", labels, child.sum)]


class Histogram(Summary):
    kind = "histogram"
    suffixes = ("_bucket", "_count", "_sum")
    bounds = DEFAULT_BUCKETS

    def _samples(self, labels: dict[str, str], child: Any) -> list[Sample]:
        out: list[Sample] = [(f"{self.name}_bucket", {**labels, "le": go_float(b)}, n)
                             for b, n in zip(self.bounds, child.buckets, strict=True)]
        return out + super()._samples(labels, child)


class Collector:
    """Families computed at scrape time by ``fn`` (for values that live elsewhere)."""

    def __init__(self, fn: Callable[[], list[Family]]) -> None:
        self.collect = fn


def process_families() -> list[Family]:
    """prometheus_client's process, platform and GC collectors (Linux /proc)."""
    out: list[Family] = []
    try:
        with open("/proc/self/stat", "rb") as fh:
            parts = fh.read().split(b")")[-1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/stat", "rb") as fh:
            btime = next(float(line.split()[1]) for line in fh if line.startswith(b"btime"))
        out += [
            Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                   [("process_virtual_memory_bytes", {}, float(parts[20]))]),
            Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                   [("process_resident_memory_bytes", {}, float(parts[21]) * page)]),
            Family("process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds.",
                   [("process_start_time_seconds", {}, float(parts[19]) / ticks + btime)]),
            Family("process_cpu_seconds", "counter", "Total user and system CPU time spent in "
                   "seconds.", [("process_cpu_seconds_total", {},
                                 (float(parts[11]) + float(parts[12])) / ticks)]),
        ]
        out.append(Family("process_open_fds", "gauge", "Number of open file descriptors.",
                          [("process_open_fds", {}, float(len(os.listdir("/proc/self/fd"))))]))
        with open("/proc/self/limits", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    out.append(Family("process_max_fds", "gauge",
                                      "Maximum number of open file descriptors.",
                                      [("process_max_fds", {}, float(line.split()[3]))]))
    except (OSError, ValueError, IndexError, StopIteration):
        pass  # not Linux, or /proc not mounted: no process_* series
    major, minor, patch = platform.python_version_tuple()
    out.append(Family("python_info", "gauge", "Python platform information", [(
        "python_info", {"implementation": platform.python_implementation(), "major": major,
                        "minor": minor, "patchlevel": patch,
                        "version": platform.python_version()}, 1.0)]))
    stats = gc.get_stats()
    for name, key, doc in (
            ("python_gc_objects_collected", "collected", "Objects collected during gc"),
            ("python_gc_objects_uncollectable", "uncollectable",
             "Uncollectable objects found during GC"),
            ("python_gc_collections", "collections",
             "Number of times this generation was collected")):
        out.append(Family(name, "counter", doc, [(f"{name}_total", {"generation": str(g)},
                                                  float(s[key])) for g, s in enumerate(stats)]))
    return out


class _FamilyBuilder(Family):
    """prometheus_client's ``*MetricFamily`` call shape (``add_metric(labels, …)``), for
    collectors that compute their values at scrape time (e.g. function jobs)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        if self.kind == "counter" and name.endswith("_total"):
            name = name[:-6]
        super().__init__(name, self.kind, documentation, [])
        self.labelnames = tuple(labels)

    def _labels(self, values: Sequence[str]) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))


class CounterMetricFamily(_FamilyBuilder):
    kind = "counter"

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((f"{self.name}_total", self._labels(labels), float(value)))


class GaugeMetricFamily(_FamilyBuilder):
    kind = "gauge"

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append((self.name, self._labels(labels), float(value)))


class HistogramMetricFamily(_FamilyBuilder):
    kind = "histogram"

    def add_metric(self, labels: Sequence[str], buckets: Sequence[tuple[str, float]],
                   sum_value: float | None) -> None:
        """``buckets``: cumulative ``(le, count)`` pairs ending with ``+Inf``."""
        base = self._labels(labels)
        for le, n in buckets:
            self.samples.append((f"{self.name}_bucket", {**base, "le": le}, float(n)))
        if sum_value is not None and buckets and float(buckets[0][0]) >= 0:
            self.samples.append((f"{self.name}_count", base, float(buckets[-1][1])))
            self.samples.append((f"{self.name}_sum", base, float(sum_value)))
