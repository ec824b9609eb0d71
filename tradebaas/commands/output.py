"""What the CLI prints: the numbers of ``tradebaas.numbers`` (no float noise) in JSON and CSV as in tables, so a
script reads what a person sees."""

from __future__ import annotations

import json
from typing import Any

from tradebaas.numbers import clean, clean_number, number_text

__all__ = ["clean", "clean_number", "dumps", "number_text"]


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON of ``value`` with cleaned numbers (``indent=2`` unless given)."""
    kwargs.setdefault("indent", 2)
    return json.dumps(clean(value), **kwargs)
