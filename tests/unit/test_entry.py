"""Every entry point starts the supervisor through `autopilot.entry.supervise`, so ``ssl`` and
``inspect`` stay out of it (tests/integration/test_import_guard.py checks a running one)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(60)

#: runs an entry point on a config that does not exist (the supervisor module and asyncio are
#: loaded, the config is refused), then prints what became of ssl and inspect
PROBE = textwrap.dedent("""
    import sys
    sys.argv = {argv!r}
    try:
        {call}
    except SystemExit as exc:
        code = exc.code
    inspect = sys.modules.get("inspect")
    print(code, "asyncio" in sys.modules, sys.modules.get("ssl", "absent") is None,
          type(inspect).__name__ if inspect is not None else "absent")
""")


@pytest.mark.parametrize("argv, call", [
    (["autopilot", "run", "/nonexistent/autopilot.json5"],
     "from autopilot.__main__ import entry; entry()"),
    (["containerpilot", "-config", "/nonexistent/autopilot.json5"],
     "from autopilot.containerpilot import main; main()"),
])
def test_an_entry_point_keeps_ssl_and_inspect_out(argv: list[str], call: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, call=call)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "no such config file" in proc.stderr
    code, asyncio_loaded, ssl_blocked, inspect_type = proc.stdout.split()
    assert code == "2"
    assert asyncio_loaded == "True"  # the supervisor was imported, not refused earlier
    assert ssl_blocked == "True"
    if sys.version_info < (3, 12):  # 3.12's dataclasses reads inspect (autopilot.lazyinspect)
        assert inspect_type == "DeferredModule"


def test_only_the_entry_module_imports_run_supervisor() -> None:
    """A new entry point that imported the supervisor itself would load ssl and inspect."""
    users = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "autopilot").rglob("*.py"))
             if re.search(r"import[^\n]*\brun_supervisor\b", path.read_text())]
    assert users == ["autopilot/entry.py"]
