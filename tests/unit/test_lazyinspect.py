"""`autopilot.lazyinspect`: the placeholder answers as ``inspect`` would and becomes the real
module at the first other read (docs/performance.md, issue 12's memory target)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest

from autopilot import lazyinspect
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(60)


def plain() -> None:
    pass


async def coro() -> None:
    pass


async def agen() -> Any:
    yield 1


def gen() -> Any:
    yield 1


class Thing:
    def method(self) -> None:
        pass

    async def amethod(self) -> None:
        pass

    @staticmethod
    def static() -> None:
        pass

    @classmethod
    async def aclass(cls) -> None:
        pass

    def __call__(self) -> None:
        pass


def callables() -> list[Any]:
    thing = Thing()
    out: list[Any] = [plain, coro, agen, gen, lambda: None, thing.method, thing.amethod,
                      Thing.static, Thing.aclass, Thing.method, thing, Thing, len, print,
                      functools.partial(coro), functools.partial(plain), "not callable",
                      None, types.coroutine(gen), asyncio.sleep, Thing().__call__]
    marked = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if marked is not None:
        def sync_marked() -> None:
            pass
        out.append(marked(sync_marked))
    return out


def stable_id(obj: Any) -> str:
    """A test ID without memory addresses (pytest-xdist workers must collect the same IDs)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))


@pytest.mark.parametrize("obj", callables(), ids=stable_id)
def test_iscoroutinefunction_agrees_with_inspect(obj: Any) -> None:
    assert lazyinspect.iscoroutinefunction(obj) is inspect.iscoroutinefunction(obj)


def test_co_coroutine_is_inspects() -> None:
    assert lazyinspect.CO_COROUTINE == inspect.CO_COROUTINE


def test_no_effect_when_inspect_is_loaded() -> None:
    assert "inspect" in sys.modules
    assert lazyinspect.defer() is False
    assert sys.modules["inspect"] is inspect and not lazyinspect.deferred()


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (``inspect`` not yet imported there)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_asyncio_runs_and_handles_signals_without_loading_inspect() -> None:
    """asyncio loads, an event loop installs signal handlers (and still refuses a coroutine
    function), and ``inspect``, ``ast`` and ``dis`` stay out."""
    out = run_fresh("""
        import sys
        if "inspect" in sys.modules:  # an interpreter whose site loads it: nothing to test
            print("skip"); raise SystemExit
        from autopilot import lazyinspect
        assert lazyinspect.defer() is True
        import asyncio, dataclasses, signal
        async def main():
            loop = asyncio.get_running_loop()
            def handler(*args): pass
            loop.add_signal_handler(signal.SIGUSR1, handler, 1)
            loop.add_signal_handler(signal.SIGUSR2, lambda: None)
            async def c(): pass
            try:
                loop.add_signal_handler(signal.SIGHUP, c)
            except TypeError:
                pass
            else:
                raise AssertionError("a coroutine function was accepted")
            await asyncio.sleep(0)
        asyncio.run(main())
        assert lazyinspect.deferred(), "asyncio loaded inspect"
        print(sorted(m for m in ("ast", "dis") if m in sys.modules))
        @dataclasses.dataclass
        class D:
            '''documented: dataclasses does not call inspect.signature'''
            x: int = 1
        assert D(2).x == 2
        # Python 3.12+ dataclasses reads inspect.get_annotations for every class: loaded
        # there (no saving, nothing broken); 3.11 (the images) leaves it out
        assert lazyinspect.deferred() is (sys.version_info < (3, 12)), sys.version_info
    """)
    assert out.strip() in ("[]", "skip")


def test_first_read_loads_the_real_module() -> None:
    out = run_fresh("""
        import sys, types
        if "inspect" in sys.modules:
            print("skip"); raise SystemExit
        from autopilot import lazyinspect
        lazyinspect.defer()
        import inspect
        placeholder = inspect
        def f(a, b=2): pass
        assert str(inspect.signature(f)) == "(a, b=2)"  # a read: loads inspect
        assert not lazyinspect.deferred()
        assert sys.modules["inspect"] is placeholder and type(placeholder) is types.ModuleType
        assert inspect.iscoroutinefunction is not lazyinspect.iscoroutinefunction
        from inspect import getsource, isawaitable  # every name is there
        import ast
        assert "ast" in sys.modules
        print("ok")
    """)
    assert out.strip() in ("ok", "skip")


def test_a_case_it_cannot_tell_loads_inspect() -> None:
    out = run_fresh("""
        import functools, sys
        if "inspect" in sys.modules:
            print("skip"); raise SystemExit
        from autopilot import lazyinspect
        lazyinspect.defer()
        import inspect
        async def c(): pass
        assert inspect.iscoroutinefunction(c) and lazyinspect.deferred()
        assert inspect.iscoroutinefunction(functools.partial(c))  # a partial: the real one
        assert not lazyinspect.deferred()
        print("ok")
    """)
    assert out.strip() in ("ok", "skip")
