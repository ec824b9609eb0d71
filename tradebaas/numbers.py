"""Numbers as people read them: without binary float noise, positional, the same in logs, tables, JSON and CSV.

Why: the journal's numbers come out of float arithmetic (fees summed fill by fill, average prices), so a PnL that
is 0.286255 to every digit that means anything is stored as ``0.28625500000000004``. Printing that to a person
(or into a CSV a person opens) suggests a precision nobody has. ``clean_number`` rounds to 12 significant digits
(far beyond any price tick, amount step or fee), which removes the noise of the last bits and nothing else;
``number_text`` then writes it positionally (``0.0000485``, not ``4.85e-05``). Used by the CLI's output
(``tradebaas.commands.output``) and the engine log's trade lines (``engine/live/tradelog.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

#: Digits kept: a BTC price with 0.5 ticks needs 7, a BTC amount 4, a fee in BTC about 10.
SIGNIFICANT_DIGITS = 12


def clean_number(value: float) -> float:
    """``value`` rounded to ``SIGNIFICANT_DIGITS`` significant digits (NaN and infinities unchanged)."""
    if not math.isfinite(value):
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def clean(value: Any) -> Any:
    """``value`` with every float inside (dicts, lists, tuples) cleaned; other values unchanged."""
    if isinstance(value, float):
        return clean_number(value)
    if isinstance(value, Mapping):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def number_text(value: float) -> str:
    """A float as a person reads it: cleaned, positional (``0.0000485``), ``97000.0`` as ``97000``, ``-0.0`` as
    ``0``."""
    cleaned = clean_number(value)
    if not math.isfinite(cleaned):
        return str(cleaned)
    if cleaned == 0:
        return "0"
    text = repr(cleaned)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text.removesuffix(".0")
