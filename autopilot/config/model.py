"""The typed configuration every runtime component reads.

The loader (``autopilot.config.load``) turns a ContainerPilot v3 JSON5 file into these
dataclasses; nothing else in autopilot looks at raw JSON. Durations are floats in seconds.
Field names are Python spellings of the JSON keys (``stopTimeout`` -> ``stop_timeout``).
Fields marked *autopilot* do not exist in ContainerPilot v3.
"""

from __future__ import annotations

import dataclasses
from _thread import get_ident
from dataclasses import field
from typing import Any, Literal, TypeVar, dataclass_transform

UNLIMITED = -1  # `restarts: "unlimited"`

_T = TypeVar("_T")
#: class -> (names shown by repr, names compared by ==), in field order
_NAMES: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}
_IN_REPR: set[tuple[int, int]] = set()


def _names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = _NAMES.get(cls)
    if names is None:
        fields = dataclasses.fields(cls)
        names = _NAMES[cls] = (tuple(f.name for f in fields if f.repr),
                               tuple(f.name for f in fields if f.compare))
    return names


class _Record:
    """``repr`` and ``==`` of the config classes, written once here instead of generated
    (source text compiled at import) for each of them by ``dataclass``: about 65 KB of
    every supervisor's memory (docs/performance.md). They answer as ``dataclass``'s own
    (tests/unit/test_config_model.py compares them on every class): ``Name(a=1, b='x')``,
    ``...`` for an object already being shown (a cycle), and ``==`` between objects of
    the same class comparing the fields as tuples; objects are unhashable, as
    ``dataclass(eq=True)`` leaves them."""

    __slots__ = ()

    def __repr__(self) -> str:
        key = (id(self), get_ident())
        if key in _IN_REPR:
            return "..."
        _IN_REPR.add(key)
        try:
            shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _names(type(self))[0])
        finally:
            _IN_REPR.discard(key)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = _names(type(self))[1]
        return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n)
                                                                for n in names)

    __hash__ = None  # type: ignore[assignment]


@dataclass_transform(field_specifiers=(field,))  # type checkers: a dataclass decorator
def dataclass(cls: type[_T]) -> type[_T]:
    """``dataclasses.dataclass`` for a config class: its ``__init__`` generated, ``repr``
    and ``==`` from `_Record` (the class must derive from it)."""
    assert issubclass(cls, _Record), cls
    return dataclasses.dataclass(repr=False, eq=False)(cls)

Status = Literal["passing", "warning", "critical"]


@dataclass
class TLSConfig(_Record):
    """The `consul.tls` block: CA, client certificate, verification, server name."""

    cafile: str | None = None
    capath: str | None = None
    clientcert: str | None = None
    clientkey: str | None = None
    servername: str | None = None
    verify: bool = True  # autopilot: on by default (ContainerPilot: off)


@dataclass
class ConsulConfig(_Record):
    """The `consul` block (or its string form): the agent's address, scheme, token, TLS."""

    address: str = "127.0.0.1:8500"  # host:port
    scheme: str = "http"
    token: str | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass
class LoggingConfig(_Record):
    """The `logging` block: level, format (default, text, json) and output."""

    level: str = "INFO"  # DEBUG INFO WARN ERROR FATAL PANIC
    format: str = "default"  # default | text | json
    output: str = "stdout"  # stdout | stderr | file path


@dataclass
class HealthConfig(_Record):
    """A job's `health` block: the check command, its interval, timeout and TTL."""

    exec: list[str] | None = None  # None: blind TTL heartbeats
    interval: float = 0.0  # seconds, > 0
    ttl: float = 0.0  # seconds, > 0
    timeout: float | None = None  # defaults to interval
    logging_raw: bool = False
    #: autopilot: consecutive failed checks before the job turns unhealthy (Kubernetes'
    #: failureThreshold); the ones before are only logged, and no heartbeat is sent for them
    failure_threshold: int = 1


@dataclass
class WhenConfig(_Record):
    """A job's `when` block: what starts it (see autopilot/jobs/trigger.py)."""

    #: event sources; None means the job starts on {startup, global}.
    #: A list (autopilot) waits for the event from any/all of them (``source_mode``).
    #: The loader normalizes: ``source: "SIGHUP"`` alone becomes ``each="signal"`` (it
    #: matches ``Event("signal", "SIGHUP")``); a global code (startup, shutdown,
    #: enterMaintenance, exitMaintenance) with no source gets ``source=["global"]``.
    source: list[str] | None = None
    source_mode: Literal["any", "all"] = "any"
    once: str | None = None
    each: str | None = None
    interval: float | None = None
    timeout: float | None = None


@dataclass
class JobConsulConfig(_Record):
    """A job's `consul` block: registration options Consul takes per service."""

    enable_tag_override: bool = False
    deregister_critical_service_after: str | None = None  # Consul duration string, e.g. "10m"


@dataclass
class BackoffConfig(_Record):
    """autopilot: delay between restarts, doubling from ``initial`` up to ``max``."""

    initial: float = 0.0
    max: float = 0.0
    reset_after: float = 60.0  # a run this long resets the delay


@dataclass
class ElectionConfig(_Record):
    """autopilot: leader election for this job's service (see docs/stateful.md)."""

    key: str | None = None  # default service/<name>/leader
    session_ttl: float = 10.0  # Consul's minimum is 10 s
    lock_delay: float = 1.0
    renew_interval: float | None = None  # default session_ttl / 3
    primary_tag: str = "primary"
    replica_tag: str = "replica"
    promote: list[str] | None = None  # hook run on election (before the role is announced)
    demote: list[str] | None = None  # hook run on demotion / hand-over
    hook_timeout: float = 10.0
    # data safety (docs/stateful.md#data-safety); without them the election is as before
    identity: list[str] | None = None  # prints the data incarnation; checked before adoption
    position: list[str] | None = None  # prints how far this node's data goes (candidacy)
    detach: list[str] | None = None  # a follower stops replicating from a deposed primary
    successor: list[str] | None = None  # a primary handing over names who takes over
    maximum_lag_on_failover: int = 0  # bytes behind the best live candidate; 0: no limit
    candidacy_timeout: float = 2.0  # how long the best candidate waits for its peers' posts
    state_dir: str | None = None  # where the highest epoch seen is kept (None: the default)
    no_leader_tolerance: float | None = None  # None: sessionTTL - margin; 0: none


@dataclass
class FunctionConfig(_Record):
    """autopilot: the job is a function (see docs/functions.md): autopilot holds its socket,
    starts the handler on the first connection and stops it after ``idle_timeout``."""

    idle_timeout: float = 60.0  # seconds without a connection before the handler stops
    max_concurrency: int = 16  # connections handled at once; the rest wait in the backlog
    bind: str = "0.0.0.0"  # the address the public socket listens on
    backlog: int = 1024  # the public socket's listen backlog
    fd_name: str = ""  # LISTEN_FDNAMES; default: the job's name


@dataclass
class JobConfig(_Record):
    """One entry of `jobs`, validated and with ContainerPilot's defaults applied."""

    name: str
    exec: list[str] | None = None
    port: int = 0
    initial_status: Status | None = None
    interfaces: list[str] = field(default_factory=lambda: ["eth0:inet", "inet"])
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # autopilot
    consul: JobConsulConfig | None = None
    health: HealthConfig | None = None
    when: WhenConfig = field(default_factory=WhenConfig)
    timeout: float | None = None  # exec timeout; defaults to when.interval for periodic jobs
    stop_timeout: float = 5.0  # autopilot: SIGTERM -> SIGKILL escalation, and stopping-hook wait
    stop_signal: str = "SIGTERM"  # autopilot
    restarts: int = 0  # UNLIMITED or a count of extra starts
    backoff: BackoffConfig = field(default_factory=BackoffConfig)  # autopilot
    logging_raw: bool = False
    env: dict[str, str] = field(default_factory=dict)  # autopilot
    user: str | None = None  # autopilot
    group: str | None = None  # autopilot
    workdir: str | None = None  # autopilot
    election: ElectionConfig | None = None  # autopilot
    function: FunctionConfig | None = None  # autopilot

    @property
    def periodic(self) -> bool:
        return self.when.interval is not None

    @property
    def service_id(self) -> str:
        """Filled in at runtime: <name>-<hostname>; see discovery."""
        import socket

        return f"{self.name}-{socket.gethostname()}"


@dataclass
class WatchConfig(_Record):
    """One entry of `watches`: a Consul service whose membership is watched."""

    name: str
    interval: float = 0.0
    tag: str | None = None
    dc: str | None = None
    #: autopilot: "service" (ContainerPilot), "key" or "keyprefix" (a Consul KV watch)
    kind: Literal["service", "key", "keyprefix"] = "service"
    key: str | None = None

    @property
    def source(self) -> str:
        return f"watch.{self.name}"


@dataclass
class MetricConfig(_Record):
    """One metric of `telemetry.metrics`, fed by `autopilot ctl metric` (putmetric)."""

    namespace: str = ""
    subsystem: str = ""
    name: str = ""
    help: str = ""
    type: Literal["counter", "gauge", "histogram", "summary"] = "counter"

    @property
    def full_name(self) -> str:
        return f"{self.namespace}_{self.subsystem}_{self.name}"


@dataclass
class ReadinessConfig(_Record):
    """autopilot: what `/ready` requires (Kubernetes readiness)."""

    mode: Literal["all", "job", "role"] = "all"
    job: str | None = None
    role: str | None = None


@dataclass
class TelemetryConfig(_Record):
    """The `telemetry` block: the Prometheus endpoint's port, interfaces and metrics."""

    port: int = 9090
    interfaces: list[str] = field(default_factory=lambda: ["eth0:inet", "inet"])
    tags: list[str] = field(default_factory=list)
    metrics: list[MetricConfig] = field(default_factory=list)
    ready: ReadinessConfig = field(default_factory=ReadinessConfig)


@dataclass
class ControlConfig(_Record):
    """The `control` block: the control socket's path."""

    socket: str = "/var/run/containerpilot.socket"
    mode: int = 0o600  # autopilot
    group: str | None = None  # autopilot


@dataclass
class TemplateConfig(_Record):
    """autopilot: a Jinja2 file rendered from the catalog (see docs/stateful.md)."""

    source: str
    destination: str
    wait_min: float = 0.0
    wait_max: float = 0.0
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None
    command: list[str] | None = None
    command_timeout: float = 30.0


@dataclass
class Config(_Record):
    """A whole validated config (autopilot/config/loader.py builds it)."""

    path: str = ""
    consul: ConsulConfig | None = None  # None: discovery switched off
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stop_timeout: float = 5.0
    jobs: list[JobConfig] = field(default_factory=list)
    watches: list[WatchConfig] = field(default_factory=list)
    telemetry: TelemetryConfig | None = None
    control: ControlConfig = field(default_factory=ControlConfig)
    templates: list[TemplateConfig] = field(default_factory=list)
    #: autopilot: the job whose exit status becomes autopilot's (see docs/configuration.md)
    main_job: str | None = None
    #: autopilot: things that load but are probably mistakes ("file:line: path: message");
    #: the supervisor logs them at startup
    warnings: list[str] = field(default_factory=list)

    def job(self, name: str) -> JobConfig | None:
        return next((j for j in self.jobs if j.name == name), None)


class ConfigError(Exception):
    """A config that cannot be used; the message names file, line/column or field path."""

    def __init__(self, message: str, path: str = "", errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: every problem found, one line each (the message joins them)
        self.errors = errors if errors is not None else [message]
