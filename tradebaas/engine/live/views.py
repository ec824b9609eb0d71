"""The answers about strategies and positions (docs/rpc.md's ``Strategy`` and ``Position``), built from the journal.

Why a module of its own: the same shapes are answered over RPC (``engine/api.py``) and pushed as events by the
live loop (``strategies``, ``strategy.<id>``, ``positions``); one function per shape keeps them identical. They read
the journal's store and the last ticker of each instrument (for the mark price and floating PnL), nothing else.

While a position is open its mark price and floating PnL move with every ticker, but nothing else happens to it:
:class:`MarkPushes` decides when the live loop re-publishes the open positions of an instrument (``positions``
channel, the same ``Position`` shape) so that a panel's numbers move about twice a second, never once per tick,
and never while flat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tradebaas.domain import StrategyState, Ticker
from tradebaas.engine.core.tradebook import Trade
from tradebaas.engine.journal.database import now_ms
from tradebaas.engine.journal.store import ORPHAN, Store, position_view
from tradebaas.fillmodel import floating_pnl
from tradebaas.instruments import Instrument
from tradebaas.strategies.registry import available as builtin_names


def position_row(trade: Trade, instruments: Mapping[str, Instrument], tickers: Mapping[str, Ticker]) -> dict[str, Any] | None:
    """The open position of ``trade`` (None when it holds none), valued at the instrument's last mark price."""
    view = position_view(trade)
    if view is None:
        return None
    inst = instruments.get(trade.instrument)
    ticker = tickers.get(trade.instrument)
    mark = ticker.mark_price if ticker else None
    floating = floating_pnl(inst, trade.signed_open_amount, trade.entry_price, mark) if inst and mark else 0.0
    return {
        "strategy_id": trade.strategy_id, "trade_id": trade.trade_id, "instrument": trade.instrument,
        "direction": trade.direction.value, "amount": trade.open_amount, "entry_price": trade.entry_price,
        "stop_price": trade.stop_price, "take_price": trade.take_price, "mark_price": mark,
        "floating_pnl": floating, "currency": trade.currency, "opened_ts_ms": trade.entry_ts_ms,
    }


def open_positions(trades: Iterable[Trade], instruments: Mapping[str, Instrument],
                   tickers: Mapping[str, Ticker]) -> list[dict[str, Any]]:
    """The ``Position`` rows of ``trades`` that hold a position (pending entries and closed trades hold none),
    valued at each instrument's last mark price."""
    return [row for trade in trades if (row := position_row(trade, instruments, tickers)) is not None]


class MarkPushes:
    """When to push the open positions of an instrument again with a fresh mark price and floating PnL.

    Pure (the caller passes ``now_s``, any monotonic seconds): an instrument is due when nothing was pushed for it
    for ``interval_s``; :meth:`pushed` records a push. The caller looks for open positions only when due, and
    records a push only when it had some, so a position that opens is shown at the next ticker. With tickers
    arriving every 100 ms and ``interval_s`` 0.5, a panel sees its numbers move twice a second.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def due(self, instrument: str, now_s: float) -> bool:
        last = self._last.get(instrument)
        return last is None or now_s - last >= self.interval_s

    def pushed(self, instrument: str, now_s: float) -> None:
        self._last[instrument] = now_s


def strategy_info(store: Store, strategy_id: str, instruments: Mapping[str, Instrument],
                  tickers: Mapping[str, Ticker]) -> dict[str, Any] | None:
    """One strategy with its state, PnL and open position; None if the journal has no such strategy."""
    row = store.strategy(strategy_id)
    if row is None:
        return None
    pnl = store.pnl(strategy_id)
    open_trade = next((t for t in store.open_trades(strategy_id) if t.entry_filled > 0), None)
    position = position_row(open_trade, instruments, tickers) if open_trade else None
    inst = instruments.get(row.instrument)
    started = row.started_ts_ms if row.state is StrategyState.RUNNING else None
    stored = store.version(row.code_version) if row.code_version else None
    return {
        "version": row.code_version, "config_version": row.config_version,
        "source": stored.source_kind if stored else (
            "builtin" if row.name in builtin_names() else ORPHAN if row.name == ORPHAN else "entry_point"),
        "error": row.error,
        "id": row.id, "name": row.name, "instrument": row.instrument, "state": row.state.value,
        "desired_state": row.desired_state.value, "state_reason": row.state_reason, "config": row.config,
        "created_ts_ms": row.created_ts_ms, "started_ts_ms": row.started_ts_ms,
        "uptime_s": round((now_ms() - started) / 1000, 1) if started else 0.0,
        "trades": pnl["trades"],
        "pnl": {"realized": pnl["realized"], "fees": pnl["fees"], "net": pnl["net"],
                "floating": position["floating_pnl"] if position else 0.0,
                "currency": inst.settlement_currency if inst else ""},
        "position": position,
    }
