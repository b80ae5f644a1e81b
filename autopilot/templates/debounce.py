"""Quiescence, as consul-template does it: render once changes stop for ``min`` seconds,
but no later than ``max`` seconds after the first change of the burst."""

from __future__ import annotations


class Debouncer:
    def __init__(self, wait_min: float = 0.0, wait_max: float = 0.0) -> None:
        self.min = max(0.0, wait_min)
        # consul-template: a min without a max means max = 4 × min
        self.max = max(wait_max, self.min) if wait_max > 0 else 4 * self.min
        self.first: float | None = None
        self.last: float | None = None

    def change(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def pending(self) -> bool:
        return self.first is not None

    def due(self) -> float | None:
        """When the pending burst should be rendered (a monotonic time), or None."""
        if self.first is None or self.last is None:
            return None
        if self.min <= 0:
            return self.last
        return min(self.last + self.min, self.first + self.max)

    def ready(self, now: float) -> bool:
        due = self.due()
        return due is not None and now >= due

    def fire(self) -> None:
        self.first = self.last = None
