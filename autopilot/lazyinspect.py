"""Keep ``inspect`` (with ``ast`` and ``dis``) out of a supervisor that never needs it.

``asyncio`` imports ``inspect`` as it loads (``coroutines``, ``format_helpers``, ``tasks``)
and ``dataclasses`` does too, but none of them touches it while loading: they call it later,
on paths a running supervisor does not take (debug mode, ``run_in_executor``, a dataclass
without a docstring), except one: ``loop.add_signal_handler`` refuses a coroutine function
through ``asyncio.coroutines.iscoroutinefunction``, which asks
``inspect.iscoroutinefunction``. ``inspect`` with ``ast`` and ``dis`` is about 0.95 MB of
resident memory on Debian's python3 3.11 (docs/performance.md): 6 % of a one-job
supervisor, spent on a module it calls six times at start-up (one per signal handler).

So the ``autopilot run`` entrypoint calls `defer` before anything imports ``asyncio``: it puts
a placeholder in ``sys.modules["inspect"]`` (a real module object with the real module's
spec, file and name) that turns itself into the real ``inspect`` the first time anyone reads
an attribute it does not have yet, exactly as ``importlib.util.LazyLoader`` does (the
stdlib's lazy loader cannot be used as is: in CPython 3.11 every ``import inspect``
statement reads ``inspect.__spec__`` and thereby loads it). From then on it *is* the real
module (same object, its class set back to ``ModuleType``), so code that imported it early
sees every name.

One name answers before that: ``iscoroutinefunction``. For a plain Python function, or a
method bound to one, it gives ``inspect``'s own answer (the code's ``CO_COROUTINE`` flag;
Python 3.12's ``markcoroutinefunction`` sets an attribute, and a function with that
attribute goes to the real ``inspect``); anything else (a ``functools.partial``, a builtin,
a callable object) loads the real ``inspect`` and asks it. tests/unit/test_lazyinspect.py
compares both on a set of callables, and tests/integration/test_import_guard.py fails if a
one-job supervisor loads ``inspect`` again. Where ``inspect`` is already imported when
`defer` runs (another entrypoint, a test), nothing changes.

The saving is CPython 3.11's (Debian 12's python3, what the images run): from 3.12 on,
``dataclasses`` reads ``inspect.get_annotations`` for every dataclass, so ``inspect`` loads
with autopilot's first dataclass, through the placeholder, as an ordinary import would.
"""

from __future__ import annotations

import sys
import threading
import types
from importlib.util import find_spec, module_from_spec
from typing import Any

NAME = "inspect"
#: ``inspect.CO_COROUTINE`` (``Include/cpython/code.h``: stable since Python 3.5)
CO_COROUTINE = 0x0080

_lock = threading.RLock()


class DeferredModule(types.ModuleType):
    """A module whose code runs at the first read of a name it does not have yet."""

    def __getattr__(self, attr: str) -> Any:
        """Only called for a missing attribute: load the real module, then read it."""
        _load(self)
        return types.ModuleType.__getattribute__(self, attr)


def _load(module: types.ModuleType) -> None:
    """Run the real module's code in ``module`` (once, whichever thread asks first)."""
    with _lock:
        if type(module) is not DeferredModule:
            return  # loaded meanwhile (or being loaded by this very thread: see below)
        # From here on ``module`` is an ordinary module: a read of a name its code has not
        # defined yet (a circular import during its own execution) fails as for any module
        # being imported, instead of loading it a second time.
        module.__class__ = types.ModuleType
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]  # the next import starts afresh
            raise


def _plain_function(obj: Any) -> types.FunctionType | None:
    """``obj`` as a plain Python function (unwrapping bound methods, as ``inspect`` does),
    or None when only ``inspect`` itself can tell (a partial, a builtin, an object with
    ``__call__``, a function marked by ``inspect.markcoroutinefunction``)."""
    while type(obj) is types.MethodType:
        obj = obj.__func__
    if type(obj) is not types.FunctionType:
        return None
    if getattr(obj, "_is_coroutine_marker", None) is not None:
        return None
    return obj


def iscoroutinefunction(obj: Any) -> bool:
    """``inspect.iscoroutinefunction(obj)`` without loading ``inspect`` for a plain
    function or bound method (asyncio's ``add_signal_handler`` check)."""
    func = _plain_function(obj)
    if func is not None:
        return bool(func.__code__.co_flags & CO_COROUTINE)
    module = sys.modules.get(NAME)
    if type(module) is DeferredModule:
        _load(module)  # its code defines the real iscoroutinefunction over this one
    import inspect

    if inspect.iscoroutinefunction is iscoroutinefunction:  # pragma: no cover
        raise RuntimeError("inspect was not loaded")  # never recurse into ourselves
    return bool(inspect.iscoroutinefunction(obj))


def defer() -> bool:
    """Put the ``inspect`` placeholder in ``sys.modules``; False (no effect) when
    ``inspect`` is already imported or cannot be found."""
    if NAME in sys.modules:
        return type(sys.modules[NAME]) is DeferredModule
    spec = find_spec(NAME)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return False
    module = module_from_spec(spec)  # sets __name__, __spec__, __file__, __loader__ …
    module.__class__ = DeferredModule
    # the one name read early: its real definition replaces it when the module loads
    module.iscoroutinefunction = iscoroutinefunction  # type: ignore[attr-defined]
    sys.modules[NAME] = module
    return True


def deferred() -> bool:
    """Is ``inspect`` still the placeholder (its code not run)?"""
    return type(sys.modules.get(NAME)) is DeferredModule
