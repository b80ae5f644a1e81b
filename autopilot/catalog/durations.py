"""Go-style durations for the catalog: the names its modules use for the shared parser and
writer in `autopilot.durations` (nanoseconds, Go's error texts)."""

from autopilot.durations import SECOND, DurationError
from autopilot.durations import format_go_ns as format_duration
from autopilot.durations import parse_go_ns as parse_duration

__all__ = ["SECOND", "DurationError", "format_duration", "parse_duration"]
