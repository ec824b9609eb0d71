"""tradebaas: a Jupyter-centric research and live-trading environment for Deribit perpetuals.

The public Python API (see INTERFACE in the docs): ``connect``, ``ControlPanel``, ``backtest``, ``sweep``,
``stats``, ``compare`` (live vs backtest). Heavy modules are imported lazily so that ``import tradebaas`` stays cheap
in the engine and in kernels. ``%load_ext tradebaas`` registers the ``%%tradebaas_strategy`` cell magic
(docs/notebooks.md).
"""

from __future__ import annotations

from typing import Any

from tradebaas._version import __version__

__all__ = ["__version__", "connect", "connect_async", "ControlPanel", "backtest", "sweep", "stats", "compare"]

_LAZY = {
    "connect": ("tradebaas.rpc.client", "connect"),
    "connect_async": ("tradebaas.rpc.aclient", "connect_async"),
    "ControlPanel": ("tradebaas.notebook.panel", "ControlPanel"),
    "backtest": ("tradebaas.backtest.backtester", "backtest"),
    "sweep": ("tradebaas.backtest.sweep", "sweep"),
    "stats": ("tradebaas.analytics.stats", "stats"),
    "compare": ("tradebaas.analytics.compare", "compare"),
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tradebaas``: register the ``%%tradebaas_strategy`` cell magic (``tb.connect()`` and
    ``tb.ControlPanel`` also do it when they run inside IPython)."""
    from tradebaas.notebook.magic import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'tradebaas' has no attribute {name!r}")
