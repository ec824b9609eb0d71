"""How much time a strategy's code may take: per live decision, and when a new version is vetted.

From ``[strategies]`` in ``tradebaas.toml`` (all optional)::

    [strategies]
    warn_ms = 200          # a live decision slower than this is logged
    stop_ms = 5000         # a live decision slower than this stops the strategy (state "error")
    vet_budget_ms = 20     # vetting refuses a version whose mean or p99 time per candle is above this
    vet_timeout_s = 180    # vetting that takes longer than this refuses the version

Why budgets at all: a strategy that takes seconds per one-minute candle is either broken or will be; the engine
says so early (vetting), warns while it trades, and stops it before it can hold anything else up.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields

from tradebaas.errors import UserError
from tradebaas.home import Home


@dataclass(slots=True, frozen=True)
class Budgets:
    warn_ms: float = 200.0
    stop_ms: float = 5_000.0
    vet_budget_ms: float = 20.0
    vet_timeout_s: float = 180.0


def load_budgets(home: Home) -> Budgets:
    """The budgets of ``home``'s ``tradebaas.toml`` (defaults when absent); a bad value is a clear error."""
    path = home.config_file
    if not path.exists():
        return Budgets()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("strategies", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return Budgets()  # the report service says what is wrong with the file
    known = [f.name for f in fields(Budgets)]
    if not isinstance(table, dict):
        raise UserError(f"{path}: [strategies] must be a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{path} [strategies]: unknown key(s) {unknown} (known: {', '.join(known)})")
    for key, value in table.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{path} [strategies] {key} must be a positive number, got {value!r}")
    return Budgets(**{k: float(v) for k, v in table.items()})
