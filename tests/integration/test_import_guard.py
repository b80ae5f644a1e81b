"""The supervisor imports only what its config uses (issue 12's CI guard; not a timing test).

Each case runs a real supervisor (`python -m autopilot run`, the container entrypoint) with
a small wrapper that, once the first job runs and a health check has passed, writes the
supervisor's ``sys.modules`` to a file and asks for a normal shutdown. The case fails when a
module the config does not need was imported: a web framework at all, Jinja2 without
templates, py-consul/requests without templates or an election (registrations and watches
speak HTTP on asyncio streams, and so do the election's lock and session calls),
prometheus_client or click ever, ``ssl`` unless Consul is reached over https (asyncio would
load it otherwise: `autopilot.lazyssl`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(90)

#: never in a supervisor, whatever the config
NEVER = {"aiohttp", "prometheus_client", "click", "yarl", "multidict"}
DISCOVERY = {"consul", "requests", "urllib3"}
TEMPLATES = {"jinja2"}
#: only for a TLS connection (Consul over https)
TLS = {"ssl", "_ssl"}
#: interface addresses come from rtnetlink (autopilot/discovery/netlink.py)
PSUTIL = {"psutil"}
#: autopilot logs through autopilot.logs (structlog took 1.8 MB); the rest is loaded only
#: when used: ctypes (prctl goes through _ctypes alone), difflib (a config with unknown
#: keys), urllib.parse (a control request with a % escape), random (a retry's jitter),
#: ipaddress (a static address, a CIDR or a function job)
LAZY = {"structlog", "ctypes", "difflib", "urllib", "random", "ipaddress"}
#: asyncio imports inspect (with ast and dis: 0.95 MB) but a supervisor never reads it on
#: Python 3.11 (autopilot.lazyinspect; 3.12's dataclasses does); json is loaded by the first
#: control answer, JSON log line or quoted dict value (0.2 MB)
LAZY_311 = {"inspect", "ast", "dis", "json"} if sys.version_info < (3, 12) else {"json"}
#: shlex splits a command given as a string (this job's is a list); _json quotes a log value
#: with spaces or symbols (none in this run)
LAZY_ONE_JOB = {"shlex", "_json"}

WRAPPER = textwrap.dedent("""
    import builtins, os, runpy, signal, sys, threading, time
    out, marker = os.environ.pop("GUARD_OUT"), os.environ.pop("GUARD_MARKER")
    compiled = []  # who called compile(): its first call builds the AST types (0.2 MB)
    _compile = builtins.compile
    def compile(source, filename, *args, **kwargs):
        if not str(filename).endswith(".py"):  # not an import from source (no bytecode here)
            compiled.append(repr(source)[:80] + " " + str(filename))
        return _compile(source, filename, *args, **kwargs)
    builtins.compile = compile
    with open(out + ".site", "w") as fh:  # what the interpreter's start-up loaded (.pth hooks)
        fh.write("\\n".join(sorted(k for k, v in sys.modules.items() if v is not None)))
    def dump():
        while not os.path.exists(marker):
            time.sleep(0.05)
        time.sleep(1.5)  # a few health checks, heartbeats and watch polls
        with open(out + ".tmp", "w") as fh:
            # an entry set to None is an import blocked on purpose (autopilot.lazyssl), a
            # DeferredModule one whose code has not run (autopilot.lazyinspect)
            fh.write("\\n".join(sorted(k for k, v in sys.modules.items() if v is not None
                                        and type(v).__name__ != "DeferredModule")))
        with open(out + ".threads", "w") as fh:
            fh.write("\\n".join(t.name for t in threading.enumerate()))
        with open(out + ".compiled", "w") as fh:
            fh.write("\\n".join(compiled))
        os.rename(out + ".tmp", out)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=dump, daemon=True).start()
    sys.argv = ["autopilot", *sys.argv[1:]]
    runpy.run_module("autopilot", run_name="__main__")
""")


@pytest.fixture
def shortdir() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="apguard", dir="/tmp")  # a unix socket path is short
    yield Path(d)
    for p in Path(d).iterdir():
        p.unlink()
    os.rmdir(d)


def threads_of(tmp: Path) -> list[str]:
    """The names of the threads the last `modules_of` run had (the wrapper's own included)."""
    return (tmp / "modules.threads").read_text().split("\n")


def modules_of(tmp: Path, body: str, env_clean: dict[str, str], full: bool = False) -> set[str]:
    """Top-level packages (``full``: every module) the supervisor had imported while
    running ``body``."""
    marker, out = tmp / "started", tmp / "modules"
    cfg = tmp / "ap.json5"
    cfg.write_text("{" + body.replace("@DIR@", str(tmp)).replace("@MARKER@", str(marker))
                   + "}")
    env = {**env_clean, "GUARD_OUT": str(out), "GUARD_MARKER": str(marker)}
    log = (tmp / "ap.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "run", str(cfg)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: out.exists() or proc.poll() is not None, timeout=60,
                 message="the supervisor to start its jobs")
        assert out.exists(), f"autopilot exited {proc.returncode}: {(tmp / 'ap.log').read_text()}"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        log.close()
    names = set(out.read_text().split())
    return names if full else {m.split(".")[0] for m in names}


def compiled_of(tmp: Path) -> list[str]:
    """What the last `modules_of` run passed to ``compile()`` (a ``typing.ForwardRef`` made
    by a TypedDict or NamedTuple class at run time does, for one)."""
    return [c for c in (tmp / "modules.compiled").read_text().split("\n") if c]


def site_modules(tmp: Path) -> set[str]:
    """Top-level packages the interpreter had loaded before autopilot ran (this machine's
    pyenv ``site`` loads urllib, random and ipaddress through its .pth hooks; an image's
    Debian python3 loads none of them)."""
    return {m.split(".")[0] for m in (tmp / "modules.site").read_text().split()}


JOB = ('{name: "app", exec: ["sh", "-c", "touch @MARKER@; exec sleep 60"],'
       ' health: {exec: ["true"], interval: "200ms", ttl: 5}}')


def test_one_job(shortdir: Path, env_clean: dict[str, str]) -> None:
    full = modules_of(shortdir, f'control: {{socket: "@DIR@/s"}}, jobs: [{JOB}]', env_clean,
                      full=True)
    mods = {m.split(".")[0] for m in full}
    assert "autopilot" in mods and "asyncio" in mods  # the wrapper saw a real supervisor
    # the control socket listens; its HTTP server and routes load with a first connection
    assert "autopilot.control.server" in full
    assert not full & {"autopilot.control.httpd", "autopilot.control.routes"}
    # the validator's sections for keys this config does not have are not imported
    optional = {f"autopilot.config.validate.{s}" for s in
                ("consul", "election", "function", "watches", "telemetry", "templates")}
    assert "autopilot.config.validate.jobs" in full and not full & optional
    unwanted = NEVER | DISCOVERY | TEMPLATES | TLS | PSUTIL | (
        (LAZY | LAZY_311 | LAZY_ONE_JOB) - site_modules(shortdir))
    assert not mods & unwanted, sorted(mods & unwanted)
    # the first compile() of a process builds the interpreter's AST types, 0.2 MB (dataclasses
    # exec their methods' source, which does not): a TypedDict class at run time did it
    assert compiled_of(shortdir) == []


def test_no_module_imports_structlog() -> None:
    """Every module logs through autopilot.logs: a structlog logger would be unconfigured
    (another format) and would bring structlog's 1.8 MB back into every supervisor."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "autopilot").rglob("*.py")
                 if "import structlog" in p.read_text()]
    assert offenders == []


def test_telemetry_without_discovery(shortdir: Path, env_clean: dict[str, str]) -> None:
    port = free_port()
    mods = modules_of(shortdir, f'control: {{socket: "@DIR@/s"}}, jobs: [{JOB}], telemetry: '
                      f'{{port: {port}, interfaces: ["static:127.0.0.1"]}}', env_clean)
    unwanted = NEVER | DISCOVERY | TEMPLATES | TLS | PSUTIL | {"structlog", "ctypes"}
    assert not mods & unwanted, sorted(mods & unwanted)


def test_discovery_and_telemetry(catalog: object, shortdir: Path,
                                 env_clean: dict[str, str]) -> None:
    port = free_port()
    # an interface by name: its address is looked up (rtnetlink, not psutil)
    job = JOB.replace('name: "app",', 'name: "app", port: 8080, interfaces: ["lo"],')
    full = modules_of(shortdir, f'consul: "{catalog.address}", control: {{socket: "@DIR@/s"}},'  # type: ignore[attr-defined]
                      f' jobs: [{job}], watches: [{{name: "app", interval: 1}}], telemetry: '
                      f'{{port: {port}, interfaces: ["static:127.0.0.1"]}}', env_clean, full=True)
    mods = {m.split(".")[0] for m in full}
    assert "autopilot.discovery.transport" in full  # discovery on: its transport runs
    # registrations and watches speak HTTP on asyncio streams: no py-consul, no requests;
    # inspect stays out on 3.11 too (a dataclass without a docstring would load it)
    unwanted = NEVER | TEMPLATES | DISCOVERY | TLS | PSUTIL | {"structlog", "ctypes"} | (
        (LAZY_311 - {"json"}) - site_modules(shortdir))
    assert not mods & unwanted, sorted(mods & unwanted)


def test_templates_load_jinja2(catalog: object, shortdir: Path,
                               env_clean: dict[str, str]) -> None:
    (shortdir / "t.j2").write_text("{{ 1 + 1 }}\n")
    mods = modules_of(shortdir, f'consul: "{catalog.address}", control: {{socket: "@DIR@/s"}}, '  # type: ignore[attr-defined]
                      f'templates: [{{source: "@DIR@/t.j2", destination: "@DIR@/t.out"}}], '
                      f'jobs: [{JOB}]', env_clean)
    assert "jinja2" in mods
    assert not mods & NEVER, sorted(mods & NEVER)


def test_https_consul_loads_ssl_and_registers(catalog: object, shortdir: Path,
                                              env_clean: dict[str, str]) -> None:
    """Consul over https: ``ssl`` is loaded after asyncio kept it out, and asyncio's TLS
    works with it (the job starts only once its service is passing in the catalog, which
    the supervisor registered through the TLS front)."""
    trustme = pytest.importorskip("trustme")
    import ssl

    from tests.integration.discovery_helpers import Forwarder

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(shortdir / "ca.pem"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    front = Forwarder(server_ctx, catalog.port).start()  # type: ignore[attr-defined]
    plain = catalog.address  # type: ignore[attr-defined]
    (shortdir / "registered.py").write_text(textwrap.dedent(f"""
        import json, time, urllib.request
        url = "http://{plain}/v1/health/service/app?passing"
        while True:
            with urllib.request.urlopen(url, timeout=2) as r:
                if json.load(r):
                    break
            time.sleep(0.1)
    """))
    job = ('{name: "app", port: 8080, interfaces: ["static:127.0.0.1"], exec: ["sh", "-c", '
           f'"{sys.executable} @DIR@/registered.py && touch @MARKER@ && exec sleep 60"], '
           'health: {exec: ["true"], interval: "200ms", ttl: 5}}')
    try:
        mods = modules_of(shortdir, f'consul: {{address: "https://{front.address}", tls: '
                          f'{{cafile: "@DIR@/ca.pem"}}}}, jobs: [{job}]', env_clean)
    finally:
        front.stop()
    assert TLS <= mods, sorted(mods)
    assert not mods & (NEVER | TEMPLATES | DISCOVERY), sorted(mods & (NEVER | TEMPLATES | DISCOVERY))



def test_election_without_py_consul_or_threads(catalog: object, shortdir: Path,
                                               env_clean: dict[str, str]) -> None:
    """An election's sessions and lock go through the asyncio transport: the job is
    promoted (its promote hook starts it), and neither py-consul nor a worker thread was
    needed for it."""
    job = ('{name: "app", port: 8080, interfaces: ["static:127.0.0.1"], '
           'exec: ["sleep", "60"], health: {exec: ["true"], interval: "200ms", ttl: 5}, '
           'election: {lockDelay: "0s", promote: ["touch", "@MARKER@"]}}')
    mods = modules_of(shortdir, f'consul: "{catalog.address}", control: {{socket: "@DIR@/s"}},'  # type: ignore[attr-defined]
                      f' jobs: [{job}]', env_clean, full=True)
    assert "autopilot.election.lock" in mods  # the election ran (and promoted us)
    top = {m.split(".")[0] for m in mods}
    unwanted = NEVER | TEMPLATES | DISCOVERY | TLS | PSUTIL
    assert not top & unwanted, sorted(top & unwanted)
    assert [t for t in threads_of(shortdir) if t.startswith("consul")] == []


def test_supervisor_dataclasses_have_docstrings() -> None:
    """``dataclass`` makes a docstring from ``inspect.signature`` for a class without one,
    which loads ``inspect``, ``ast`` and ``dis`` (about 1 MB on Python 3.11) that
    `autopilot.lazyinspect` keeps out of the supervisor. Checked in the source of every
    module a supervisor may load (the lab and the catalog run in processes of their own)."""
    import ast

    missing = []
    for path in sorted((ROOT / "autopilot").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("autopilot/lab/", "autopilot/catalog/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.ClassDef) and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list) \
                    and ast.get_docstring(node) is None:
                missing.append(f"{rel}:{node.lineno} {node.name}")
    assert missing == []
