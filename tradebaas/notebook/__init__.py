"""Notebook layer: the ControlPanel widget and its pure building blocks (rendering, forms, coalescing).

Only the RPC client and analytics are used from here (never the engine), so a kernel that imports this stays a
pure client of the engine.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ControlPanel"]


def __getattr__(name: str) -> Any:
    # ipywidgets is imported only when a panel is wanted, so scripts and reports that use the client stay light.
    if name == "ControlPanel":
        from tradebaas.notebook.panel import ControlPanel

        return ControlPanel
    raise AttributeError(f"module 'tradebaas.notebook' has no attribute {name!r}")
