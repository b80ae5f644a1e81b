"""Run py-consul's own test suite against ``autopilot catalog`` and a real Consul.

    python3 tests/pyconsul/run_suite.py --checkout /path/to/py-consul [--python PY] \\
        [--consul /opt/consul/bin/consul] [--only catalog|consul] [-- pytest args]

The checkout (github.com/criteo/py-consul at the tag matching the installed py-consul,
v1.7.1) is copied to a temporary directory, its Docker ``conftest.py`` is replaced by
``conftest_fixture.py`` and pytest runs once per target. The script prints the counts per
target and every test that passes on Consul 1.10 but not on the catalog (that list must be
empty, or the test is listed in docs/catalog.md with the reason). ``--python`` must have
pytest-asyncio (py-consul's suite needs it; autopilot's does not). Needs the network for
nothing; CI does not run it because it cannot fetch py-consul.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def outcomes(junit: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [c.tag for c in case]
        out[name] = ("failed" if "failure" in kinds or "error" in kinds
                     else "skipped" if "skipped" in kinds else "passed")
    return out


def run(target: str, checkout: Path, python: str, consul: str,
        extra: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "py-consul"
        shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git"))
        shutil.copy(HERE / "conftest_fixture.py", work / "conftest.py")
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYCONSUL_TARGET": target, "CONSUL_BIN": consul,
               "PYTHONPATH": f"{work}{os.pathsep}{REPO}"}
        subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-o", "addopts=", "--junitxml", str(junit), "tests", *extra],
                       cwd=work, env=env, check=False)
        return outcomes(junit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", required=True, type=Path)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--consul", default="/opt/consul/bin/consul")
    ap.add_argument("--only", choices=("catalog", "consul"))
    ap.add_argument("--out", type=Path, help="write the outcomes as JSON here")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    targets = [args.only] if args.only else ["consul", "catalog"]
    res = {t: run(t, args.checkout, args.python, args.consul, args.extra) for t in targets}
    for t, r in res.items():
        counts = {k: sum(1 for v in r.values() if v == k)
                  for k in ("passed", "failed", "skipped")}
        print(f"{t:8} {len(r)} tests: {counts}")
    if len(res) == 2:
        missing = sorted(n for n, v in res["consul"].items()
                         if v == "passed" and res["catalog"].get(n) != "passed")
        print(f"pass on Consul 1.10 but not on the catalog: {len(missing)}")
        for n in missing:
            print("  ", n)
        extra_pass = sorted(n for n, v in res["catalog"].items()
                            if v == "passed" and res["consul"].get(n) != "passed")
        print(f"pass on the catalog but not on Consul 1.10: {len(extra_pass)}")
        for n in extra_pass:
            print("  ", n)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
