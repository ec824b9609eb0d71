"""Keeping the cyclic garbage collector's full collections short in the long-running processes (engine, simulator).

A full collection walks every object the collector tracks, with the process stopped: in the engine, modules,
pandas and pyarrow alone are ~70,000 objects (20-45 ms), and what is loaded or built later (lazily imported
modules, a hundred strategies' histories and indicator state) took a full collection to 66 ms in the scale
benchmark, once or twice a minute, with every decision of that moment waiting behind it (issue 15).

``freeze_long_lived`` moves everything alive now out of the collector's sight (``gc.freeze``) and does so again
after every full collection: what survived one has shown that it lives long, and the next full collection walks
only what came after. Reference counting still frees a frozen object the moment it is no longer used; only a
*cycle* of frozen objects that later becomes garbage would stay (the memory benchmark watches 24 simulated hours
for that: flat).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any


def freeze_long_lived(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Freeze now and after every full collection (on ``loop``, once the collection is over). Returns what undoes
    it (for tests: the processes keep it for life)."""
    gc.freeze()

    def after_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2 and not loop.is_closed():
            loop.call_soon_threadsafe(gc.freeze)

    gc.callbacks.append(after_collection)

    def undo() -> None:
        gc.callbacks.remove(after_collection)
        gc.unfreeze()

    return undo
