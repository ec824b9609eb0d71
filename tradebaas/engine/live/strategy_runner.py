"""One strategy in the live loop: candles in, decisions journaled, intents handed to the order manager.

The runner does for a live strategy exactly what the backtester does for a historical one (same strategy class,
same ``StrategyContext`` bookkeeping helpers from ``strategies/base.py``); only the source of candles (exchange
chart bars, closed by exchange time) and the execution of intents (real orders) differ. Its context is loaded
from the journal at construction and saved with every decision and every trade event, so daily limits,
cooldowns and the open position survive a restart.
"""

from __future__ import annotations

import logging
from typing import Any

from tradebaas.domain import Candle
from tradebaas.engine.core.candles import CandleBuilder
from tradebaas.engine.core.tradebook import Trade, TradeState
from tradebaas.engine.journal.store import Store, StrategyRow, position_view
from tradebaas.engine.live.order_manager import OrderManager
from tradebaas.instruments import Instrument
from tradebaas.strategies.base import (
    Enter,
    Exit,
    MoveStop,
    StrategyContext,
    record_close,
    record_entry,
    record_error,
    roll_day,
)
from tradebaas.strategies.registry import get_strategy

log = logging.getLogger("tradebaas.engine.live.strategy_runner")

#: History loaded from the exchange at start so the strategy is warm at once (Razor needs 21, keeps 150).
WARMUP_CANDLES = 240


class StrategyRunner:
    """Feeds one strategy. ``active`` is False while the strategy is stopped or waiting for a person; the
    context is maintained either way (a stopped strategy's bracketed position can still close on the exchange)."""

    def __init__(self, row: StrategyRow, instrument: Instrument, store: Store, orders: OrderManager) -> None:
        self.id = row.id
        self.name = row.name
        self.instrument = instrument
        self.store = store
        self.orders = orders
        self.strategy = get_strategy(row.name)(row.config)
        self.interval_ms = int(getattr(self.strategy, "interval_ms", 60_000))
        self.context = StrategyContext(instrument)
        store.load_context(self.id, self.context)
        open_trades = store.open_trades(self.id)
        self.context.position = next((p for p in map(position_view, open_trades) if p is not None), None)
        self.builder = CandleBuilder(self.interval_ms)
        self.active = False
        self.warm = False
        self.last_price: float | None = None
        self.last_decision: dict[str, Any] | None = store.last_decision(self.id)

    # -- life ------------------------------------------------------------------------------------------------
    def warm_up(self, candles: list[Candle]) -> None:
        """Feed closed history candles (oldest first) with ``warming_up`` set; then ``on_start``."""
        self.strategy = get_strategy(self.name)(self.strategy.config)  # fresh indicators on every (re)start
        self.builder = CandleBuilder(self.interval_ms)
        self.context.warming_up = True
        for candle in candles:
            self.strategy.on_candle(candle, self.context)
        self.context.warming_up = False
        if candles:
            self.builder.prime(candles[-1])
            self.last_price = candles[-1].close
        self.strategy.on_start(self.context)
        self.warm = True

    # -- market data -----------------------------------------------------------------------------------------
    def closed_by_bar(self, bar: Candle) -> list[Candle]:
        return self.builder.on_bar(bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume)

    def closed_by_time(self, ts_ms: int, price: float | None) -> list[Candle]:
        if price is not None:
            self.last_price = price
        return self.builder.on_event(ts_ms)

    async def on_candle(self, candle: Candle, publish: Any, closed_at: float | None = None) -> None:
        """Decide on one closed candle and carry out the intents (caller holds the supervisor's lock)."""
        if not self.active or not self.warm:
            return
        close_ts = candle.ts_ms + self.interval_ms
        roll_day(self.context, close_ts)
        # context.position is kept current by on_trade_event (every change of a trade of ours goes through it),
        # so the hot path reads no journal before deciding.
        decision = self.strategy.on_candle(candle, self.context)
        record = decision.as_dict()
        record["candle"] = {"ts_ms": candle.ts_ms, "open": candle.open, "high": candle.high, "low": candle.low,
                            "close": candle.close, "volume": candle.volume}
        action = ",".join(type(i).__name__.lower() for i in decision.intents)

        def journal(conn: Any) -> None:
            self.store.save_decision(self.id, record, action, conn)
            self.store.save_context(self.id, self.context, conn, last_candle_ts_ms=candle.ts_ms)

        # An entry journals its trade before the order goes out and the decision that caused it right after the
        # exchange answered (OrderManager.enter writes it exactly once, whatever happens). Any other decision is
        # journaled at once.
        deferred = bool(decision.intents) and isinstance(decision.intents[0], Enter)
        if not deferred:
            with self.store.journal.transaction() as conn:
                journal(conn)
        self.last_decision = record
        for intent in decision.intents:
            handed_over = await self._execute(intent, candle, close_ts, closed_at, journal if deferred else None)
            deferred = deferred and not handed_over
        if deferred:  # the entry was not attempted (a trade is open): journal the decision on its own
            with self.store.journal.transaction() as conn:
                journal(conn)
        publish(f"strategy.{self.id}", {"type": "decision", "decision": record})

    async def _execute(self, intent: Enter | MoveStop | Exit, candle: Candle, close_ts: int,
                       closed_at: float | None, journal: Any) -> bool:
        """Carry out one intent; True when the decision's journaling was handed to the order manager."""
        if isinstance(intent, Enter):
            if self.store.open_trades(self.id):
                log.info("%s: a trade is open; ignoring a second entry", self.id)
                return False
            price = self.last_price or candle.close
            await self.orders.enter(self.id, self.instrument, intent, close_ts, price, closed_at, journal)
            return journal is not None
        trade = self._open_trade()
        if trade is None:
            return False
        if isinstance(intent, MoveStop):
            await self.orders.move_stop(trade, intent)
        elif isinstance(intent, Exit):
            await self.orders.close(trade, intent.reason or "exit")
        return False

    # -- trade events ----------------------------------------------------------------------------------------
    def on_trade_event(self, trade: Trade, before: Trade | None, now_ts_ms: int) -> None:
        """Keep the context in step with the trade (entry filled, stop moved, closed, failed) and persist it."""
        cooldown = int(getattr(self.strategy, "cooldown_ms", 0))
        was_filled = before is not None and before.entry_filled > 0
        if trade.state is TradeState.FAILED and (before is None or before.state is not TradeState.FAILED):
            record_error(self.context, now_ts_ms)
        elif trade.state is TradeState.CLOSED and (before is None or before.state is not TradeState.CLOSED):
            if not was_filled and trade.entry_filled > 0 and before is not None:
                roll_day(self.context, trade.entry_ts_ms)
                self.context.trades_today += 1
            record_close(self.context, trade.exit_ts_ms or now_ts_ms, cooldown)
        elif trade.entry_filled > 0 and not was_filled and before is not None:
            view = position_view(trade)
            if view is not None:
                record_entry(self.context, view, trade.entry_ts_ms, cooldown)
        else:
            self._refresh_position()
        with self.store.journal.transaction() as conn:
            self.store.save_context(self.id, self.context, conn)

    def _refresh_position(self) -> None:
        trade = self._open_trade()
        self.context.position = position_view(trade) if trade is not None else None

    def _open_trade(self) -> Trade | None:
        return next((t for t in self.store.open_trades(self.id) if t.entry_filled > 0), None)
