"""Templates: pure logic (debounce, atomic writes, the template functions)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import jinja2
import pytest

from autopilot.templates.debounce import Debouncer
from autopilot.templates.deps import Dep, normalise_service
from autopilot.templates.render import make_environment, render
from autopilot.templates.write import write_if_changed

pytestmark = pytest.mark.timeout(20)


# ---- debounce ------------------------------------------------------------------------

def test_debounce_zero_min_renders_at_once():
    d = Debouncer(0, 0)
    assert d.due() is None and not d.ready(0)
    d.change(5.0)
    assert d.ready(5.0)
    d.fire()
    assert not d.pending


def test_debounce_quiescence_and_max():
    d = Debouncer(1.0, 3.0)
    d.change(0.0)
    assert d.due() == 1.0
    d.change(0.8)  # a change inside the quiet window pushes the render out
    assert d.due() == pytest.approx(1.8)
    for t in (1.6, 2.4, 2.9):  # a steady stream of changes...
        d.change(t)
    assert d.due() == 3.0  # ...is rendered at the latest max after the first change
    assert not d.ready(2.99) and d.ready(3.0)


def test_debounce_min_without_max_defaults_to_four_times_min():
    assert Debouncer(0.5, 0).max == 2.0


# ---- atomic writes ---------------------------------------------------------------------

def test_write_only_when_changed_and_mode(tmp_path: Path):
    dest = tmp_path / "sub" / "out.conf"
    assert write_if_changed(str(dest), "a\n", mode=0o640) is True
    assert dest.read_text() == "a\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    inode = dest.stat().st_ino
    assert write_if_changed(str(dest), "a\n", mode=0o640) is False
    assert dest.stat().st_ino == inode  # untouched
    assert write_if_changed(str(dest), "b\n", mode=0o600) is True
    assert dest.read_text() == "b\n" and dest.stat().st_ino != inode  # replaced by rename
    assert [p.name for p in dest.parent.iterdir()] == ["out.conf"]  # no temp files left


def test_write_owner_group_numeric(tmp_path: Path):
    dest = tmp_path / "owned"
    write_if_changed(str(dest), "x", owner=str(os.getuid()), group=str(os.getgid()))
    assert dest.stat().st_uid == os.getuid()


def test_write_unknown_owner_fails_and_keeps_old(tmp_path: Path):
    dest = tmp_path / "f"
    dest.write_text("old")
    with pytest.raises(KeyError):
        write_if_changed(str(dest), "new", owner="no-such-user-autopilot")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_reader_never_sees_partial_file(tmp_path: Path):
    """Many rewrites of a large file while a reader loops: every read is one whole version."""
    dest = tmp_path / "big"
    versions = {i: (f"v{i}\n" * 20000) for i in range(40)}
    write_if_changed(str(dest), versions[0])
    bad: list[int] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            data = dest.read_text()
            reads += 1
            if data not in versions.values():
                bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 40):
        write_if_changed(str(dest), versions[i])
    done.set()
    t.join(10)
    assert reads > 0 and bad == []


# ---- rendering -------------------------------------------------------------------------

SERVICE_ENTRIES = [
    {"Node": {"Node": "n2", "Address": "10.0.0.2"},
     "Service": {"ID": "app-b", "Service": "app", "Address": "", "Port": 81, "Tags": ["replica"]},
     "Checks": [{"Status": "passing"}, {"Status": "warning"}]},
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "app-a", "Service": "app", "Address": "10.1.1.1", "Port": 80,
                 "Tags": ["primary"], "Meta": {"v": "1"}},
     "Checks": [{"Status": "passing"}]},
]


def _tpl(tmp_path: Path, text: str) -> str:
    src = tmp_path / "t.j2"
    src.write_text(text)
    return str(src)


def test_normalise_service_sorted_with_node_address_fallback():
    out = normalise_service(SERVICE_ENTRIES)
    assert [s["ID"] for s in out] == ["app-a", "app-b"]
    assert out[0] == {"ID": "app-a", "Name": "app", "Address": "10.1.1.1", "Port": 80,
                      "Tags": ["primary"], "Meta": {"v": "1"}, "Node": "n1", "Status": "passing"}
    assert out[1]["Address"] == "10.0.0.2" and out[1]["Status"] == "warning"


def test_render_functions_and_recorded_deps(tmp_path: Path):
    data = {
        Dep("service", "app"): normalise_service(SERVICE_ENTRIES),
        Dep("key", "cfg/x"): {"Value": "42", "Session": None, "LockIndex": 0},
        Dep("key", "cfg/missing"): None,
        Dep("tree", "cfg/t"): [{"Key": "cfg/t/a", "Name": "a", "Value": "1"}],
        Dep("key", "service/db/leader"): {
            "Value": '{"node": "n9", "address": "10.9.9.9", "port": 5432, "service_id": "db-n9"}',
            "Session": "s1", "LockIndex": 3},
    }
    src = _tpl(tmp_path, (
        "{% for s in service('app') %}{{ s.Address }}:{{ s.Port }} {% endfor %}\n"
        "x={{ key('cfg/x') }} m={{ keyOrDefault('cfg/missing', 'dflt') }} k=[{{ key('cfg/missing') }}]\n"
        "{% for e in tree('cfg/t') %}{{ e.Name }}={{ e.Value }}{% endfor %}\n"
        "{% set l = leader('db') %}leader={{ l.address }}:{{ l.port }}@{{ l.epoch }}\n"
        "home={{ env('AP_TEST_HOME', 'none') }} {{ env.AP_TEST_X }} host={{ node.hostname }}\n"))
    text, used = render(make_environment(src), src, data.__getitem__, node={"hostname": "h1", "ips": []},
                        environ={"AP_TEST_X": "y"})
    assert text == ("10.1.1.1:80 10.0.0.2:81 \nx=42 m=dflt k=[]\na=1\n"
                    "leader=10.9.9.9:5432@3\nhome=none y host=h1\n")
    assert used == set(data)


def test_leader_none_when_key_not_held(tmp_path: Path):
    src = _tpl(tmp_path, "{{ leader('db') is none }}")
    fetch = {Dep("key", "service/db/leader"): {"Value": "{}", "Session": None, "LockIndex": 2}}
    assert render(make_environment(src), src, fetch.__getitem__, node={})[0] == "True"


def test_empty_backend_set_renders_fallback(tmp_path: Path):
    src = _tpl(tmp_path, (
        "upstream app {\n{% for s in service('app') %}  server {{ s.Address }}:{{ s.Port }};\n"
        "{% else %}  server 127.0.0.1:65535 down;\n{% endfor %}}\n"))
    text, _ = render(make_environment(src), src, {Dep("service", "app"): []}.__getitem__, node={})
    assert text == "upstream app {\n  server 127.0.0.1:65535 down;\n}\n"


def test_render_errors_raise(tmp_path: Path):
    src = _tpl(tmp_path, "{{ nosuchfunction('x') }}")
    with pytest.raises(jinja2.UndefinedError):
        render(make_environment(src), src, {}.__getitem__, node={})
    src = _tpl(tmp_path, "{% for x in %}")
    with pytest.raises(jinja2.TemplateSyntaxError):
        render(make_environment(src), src, {}.__getitem__, node={})
