"""What the control server and telemetry need from the supervisor, as typing Protocols.

The control socket and telemetry are written against these, not against the ``Supervisor``
class, so they import none of the supervisor's machinery and a test can hand them a small
stand-in. Every member listed here must exist (no ``getattr`` probing): ``telemetry`` is
None when telemetry is off, ``components`` may be empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from autopilot.config.model import JobConfig
    from autopilot.context import Context


class JobView(Protocol):
    """The job facts control and telemetry read (``autopilot.jobs.job.Job`` has them)."""

    name: str
    cfg: JobConfig
    status: str
    pid: int | None
    runs: int
    last_exit: int | None


class MetricSink(Protocol):
    """Telemetry as the control server sees it: validate, then apply, a metric update."""

    def check_metric(self, name: str, value: Any) -> float: ...

    def put_metric(self, name: str, value: Any) -> None: ...


class SupervisorAPI(Protocol):
    """The supervisor's API for control and telemetry (docs/architecture.md, "Supervisor").

    Methods may return a value or an awaitable (a test stand-in may be async)."""

    ctx: Context
    jobs: dict[str, Any]  # name -> JobView
    telemetry: MetricSink | None
    maintenance: bool
    shutting_down: bool
    components: Sequence[Any]

    def reload(self) -> Awaitable[None]: ...

    def putenv(self, mapping: dict[str, Any]) -> Any: ...

    def set_maintenance(self, enabled: bool) -> Any: ...

    def put_metric(self, name: str, value: Any) -> Any: ...

    def status(self) -> Any: ...

    def job_action(self, name: str, action: str, signal: Any = None) -> Awaitable[None]: ...
