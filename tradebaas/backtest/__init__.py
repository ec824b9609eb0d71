"""Backtests with the live strategy code: ``backtester`` (``backtest``), ``sweep``, ``data``, ``vectorized``, ``cli``.

Why this package is callable: ``tb.backtest`` is meant to be the function ``backtester.backtest`` (``tradebaas``
exposes it lazily), but importing any submodule (``from tradebaas.backtest.data import load_default``) makes
Python set the attribute ``tradebaas.backtest`` to this *package*, shadowing the function. Calling the package
forwards to ``backtester.backtest``, so ``tb.backtest(...)`` works whichever was imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .backtester import backtest

        return backtest(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
