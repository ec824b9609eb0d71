"""Rules a strategy must pass before it may trade: pure functions, so each rule is a plain test.

The size rule. A strategy names the config key of its order size in ``size_param`` (a class attribute; default
``"tradeSize"``, a USD notional, what ``Enter.notional_usd`` carries); the rule applies when the class declares a
parameter of that name and is skipped otherwise (a strategy that sizes its orders some other way). Orders are
sized to the *nearest* multiple of the instrument's ``min_trade_amount`` and never below one of them
(``Instrument.amount_for_notional``), so a size that rounds to nothing (``tradeSize=0``, or 40 USD of
BTC_USDC-PERPETUAL at 100 000 USD) would trade a whole minimum amount: more than was asked for, with nobody told.
Such a size is refused, with the minimum in the message. A size that rounds to one or more steps is what the
sizing rule means to trade and passes. For a linear instrument (amount in BTC) the check needs a price: the
caller passes the best one it has (the last ticker, else the exchange's), and with none the start is refused
(money-moving code fails closed).

The shared-instrument rule. Deribit keeps one position per instrument and account: two strategies on one
instrument net into one position, and a reduce-only stop of one cannot protect the other's side. So a strategy
may not start on an instrument another strategy of ours still trades (running, starting, waiting for a person)
or still holds a position on (a stopped strategy whose position kept its brackets), unless the user opts in
(``allow_shared_instrument``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from tradebaas.domain import StrategyState
from tradebaas.instruments import Instrument

DEFAULT_SIZE_PARAM = "tradeSize"
#: States in which a strategy trades (or is about to, or holds a position a person must decide about).
ACTIVE_STATES = frozenset({StrategyState.RUNNING, StrategyState.STARTING, StrategyState.NEEDS_ATTENTION})


def size_param(cls: type) -> str | None:
    """The config key of ``cls``'s order size (USD notional), or None when it declares no such parameter."""
    name = getattr(cls, "size_param", DEFAULT_SIZE_PARAM)
    declared = {getattr(p, "name", None) for p in getattr(cls, "params", ())}
    return name if isinstance(name, str) and name in declared else None


def least_size_usd(instrument: Instrument, price: float | None) -> float | None:
    """The smallest USD notional that rounds to one ``min_trade_amount`` (half of it: sizes round to the nearest
    step); None for a linear instrument without a price."""
    if instrument.is_inverse:
        return instrument.min_trade_amount / 2
    if price is None or price <= 0:
        return None
    return instrument.min_trade_amount * price / 2


def size_problem(cls: type, config: Mapping[str, Any], instrument: Instrument, price: float | None) -> str | None:
    """Why ``config``'s order size cannot trade on ``instrument`` at ``price`` (None: it can, or the class has no
    size parameter)."""
    key = size_param(cls)
    if key is None or config.get(key) is None:
        return None
    try:
        size = float(config[key])
    except (TypeError, ValueError):
        return f"{key} must be a number (USD), got {config[key]!r}"
    step = instrument.min_trade_amount
    unit = "USD" if instrument.is_inverse else instrument.base_currency
    least = least_size_usd(instrument, price)
    if least is None:
        return (f"cannot check {key} against the minimum order of {instrument.name} ({step:g} {unit}): no price of "
                f"{instrument.name} is known yet (the exchange is not connected); try again once "
                "`tradebaas engine status` shows the exchange connected")
    if size >= least:
        return None
    if instrument.is_inverse or price is None:
        minimum = f"{step:g} USD"
    else:
        minimum = f"{step:g} {unit}, about {step * price:.2f} USD at {price:g}"
    return (f"{key} {size:g} USD is below the minimum order of {instrument.name}: {minimum}; sizes round to the "
            f"nearest {step:g} {unit}, so {key} must be at least {_up(least)}")


def _up(value: float) -> str:
    """``value`` rounded up to cents, as text (a bound a person can type and that passes)."""
    return f"{math.ceil(round(value * 100, 6)) / 100:g}"


def shared_instrument_problem(instrument: str, strategies: Iterable[tuple[str, str, StrategyState]],
                              holding: Iterable[str], own_id: str | None = None) -> str | None:
    """Why a strategy should not (also) trade ``instrument``: the other strategies of ours that trade it or hold a
    position on it. ``strategies`` are ``(id, instrument, state)``, ``holding`` the ids of strategies with an open
    trade on ``instrument``; ``own_id`` (the strategy itself) is left out. None when the instrument is free."""
    holding = set(holding)
    others: list[str] = []
    for sid, inst, state in strategies:
        if sid == own_id or inst != instrument:
            continue
        if state in ACTIVE_STATES:
            others.append(f"{sid} ({state.value})")
        elif sid in holding:
            others.append(f"{sid} ({state.value}, with an open position)")
    if not others:
        return None
    return (f"{instrument} is already traded by {', '.join(others)}: Deribit nets every position of the account "
            "on one instrument, so two strategies there share one position and one's stop cannot protect the "
            "other's side. Stop the other first, choose another instrument, or opt in with "
            "allow_shared_instrument (CLI --allow-shared-instrument)")
