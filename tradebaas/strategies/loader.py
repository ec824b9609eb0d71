"""Turning strategy source text into a strategy class: load it, find the class, check it keeps the strategy API.

Strategies come from many places (built-ins, files in ``TRADEBAAS_HOME/strategies/``, installed packages, sources
deployed from a notebook); whatever the place, the code that runs is source text, and its *code version* is the
sha256 of that text. Loading executes user code: it happens in the engine only for versions that passed vetting
(``tradebaas.strategies.vet``, in a subprocess), and a failure here is an error the caller reports (with the
traceback), never a crash of the caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import re
import sys
import traceback
import types
from typing import Any

from tradebaas.errors import UserError

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class StrategyLoadError(UserError):
    """The source could not be executed (syntax error, failing import, an exception at module level)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class StrategyApiError(UserError):
    """The class does not keep the strategy API (``tradebaas/strategies/base.py``)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def source_version(source: str) -> str:
    """The code version of ``source``: sha256 hex of its UTF-8 bytes (the name it is stored under)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def module_from_source(source: str, module_name: str, filename: str) -> types.ModuleType:
    """Execute ``source`` as a fresh module called ``module_name`` (registered in ``sys.modules`` while it loads,
    and after, so dataclasses, pickling and ``inspect`` find it). ``filename`` appears in tracebacks."""
    module = types.ModuleType(module_name)
    module.__file__ = filename
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        code = compile(source, filename, "exec")
        exec(code, module.__dict__)  # noqa: S102 - running the user's strategy is the point
    except BaseException as exc:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        if isinstance(exc, KeyboardInterrupt):
            raise
        details = "".join(traceback.format_exception(exc))
        raise StrategyLoadError(f"{filename} failed to load: {type(exc).__name__}: {exc}", details) from None
    return module


def is_strategy_class(obj: Any) -> bool:
    return inspect.isclass(obj) and callable(getattr(obj, "on_candle", None)) and isinstance(
        getattr(obj, "params", None), tuple)


def strategy_classes(module: types.ModuleType) -> list[type]:
    """The strategy classes *defined* in ``module`` (imported ones, such as ``BaseStrategy``, do not count)."""
    return [obj for obj in vars(module).values()
            if is_strategy_class(obj) and getattr(obj, "__module__", None) == module.__name__]


def pick_class(module: types.ModuleType, name: str | None = None) -> type:
    """The module's strategy class: the only one, or the one whose ``name`` (or class name) is ``name``."""
    found = strategy_classes(module)
    if name is not None:
        match = [c for c in found if getattr(c, "name", "") == name or c.__name__ == name]
        if len(match) == 1:
            return match[0]
        if not match and len(found) == 1:
            return found[0]  # deployed under another name: the one class it has
    elif len(found) == 1:
        return found[0]
    names = ", ".join(sorted(getattr(c, "name", "") or c.__name__ for c in found)) or "none"
    wanted = f" named {name!r}" if name else ""
    raise StrategyApiError(f"{module.__file__}: expected one strategy class{wanted} (a class with `params` and "
                           f"`on_candle`, e.g. a subclass of tradebaas.strategies.base.BaseStrategy); found: {names}")


def check_api(cls: type) -> None:
    """Raise ``StrategyApiError`` unless ``cls`` keeps the strategy API well enough to be run by the engine."""
    from tradebaas.strategies.base import Param
    from tradebaas.strategies.params import validate_config

    where = f"strategy class {cls.__name__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise StrategyApiError(f"{where}: `name` must be 1-32 letters, digits, '_' or '-' (got {name!r})")
    params = getattr(cls, "params", None)
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        raise StrategyApiError(f"{where}: `params` must be a tuple of tradebaas.strategies.base.Param")
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise StrategyApiError(f"{where}: parameter {p.name!r} is declared twice")
        seen.add(p.name)
    on_candle = getattr(cls, "on_candle", None)
    if not callable(on_candle):
        raise StrategyApiError(f"{where}: `on_candle(candle, context)` is missing")
    try:
        inspect.signature(on_candle).bind(object(), object(), object())
    except TypeError:
        raise StrategyApiError(f"{where}: `on_candle` must take (self, candle, context)") from None
    try:
        cls(validate_config(cls, {}))
    except UserError as exc:
        raise StrategyApiError(f"{where}: its default config is refused: {exc}") from None
    except Exception as exc:
        raise StrategyApiError(f"{where}: constructing it with its default config raised {type(exc).__name__}: {exc}",
                               "".join(traceback.format_exception(exc))) from None


def load_class(source: str, module_name: str, filename: str, name: str | None = None) -> type:
    """Load ``source``, pick its strategy class (``name``), check the API; the class, or a load/API error."""
    cls = pick_class(module_from_source(source, module_name, filename), name)
    check_api(cls)
    # how a process of its own loads the same class again (tradebaas.engine.live.strategy_process)
    with contextlib.suppress(AttributeError, TypeError):
        cls.__tradebaas_source__ = (source, module_name, filename, cls.__name__)  # type: ignore[attr-defined]
    return cls
