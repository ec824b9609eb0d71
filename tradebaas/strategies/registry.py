"""The strategy registry: names -> classes. Adding a strategy is one file plus one line in ``_STRATEGIES``.

Modules are imported lazily, so that importing the registry (the engine, the CLI) does not import every strategy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tradebaas.errors import UserError

if TYPE_CHECKING:
    from tradebaas.strategies.base import Strategy

_STRATEGIES: dict[str, str] = {
    "razor": "tradebaas.strategies.razor:Razor",
    "ema_cross": "tradebaas.strategies.ema_cross:EmaCross",
}


class UnknownStrategyError(UserError):
    """No strategy of that name is registered."""


def available() -> list[str]:
    """The registered strategy names, sorted."""
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered under ``name`` (case-insensitive, ``-`` treated as ``_``)."""
    key = str(name).strip().lower().replace("-", "_")
    target = _STRATEGIES.get(key)
    if target is None:
        raise UnknownStrategyError(f"unknown strategy {name!r} (known: {', '.join(available())})")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def resolve(strategy: str | type[Strategy]) -> type[Strategy]:
    """A strategy given by name or as a class -> the class."""
    return get_strategy(strategy) if isinstance(strategy, str) else strategy
