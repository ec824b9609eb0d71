"""One strategy in the live loop: candles in, decisions journaled, intents handed to the order manager.

The runner does for a live strategy exactly what the backtester does for a historical one (same strategy class,
same ``StrategyContext`` bookkeeping helpers from ``strategies/base.py``); only the source of candles (exchange
chart bars, closed by exchange time) and the execution of intents (real orders) differ. Its context is loaded
from the journal at construction and saved with every decision and every trade event, so daily limits,
cooldowns and the open position survive a restart.

Versions and swaps (``tradebaas.backtest.backtester`` swaps, mirrored exactly): every decision and every trade
carries the strategy's name, code version and config version. ``request_swap`` (``strategy.upgrade`` /
``strategy.set``) takes effect at the first candle whose start is at or after the swap's ``from_ts_ms``, before the
strategy decides on it: a new instance is warmed up on the last ``history`` closed candles (``warming_up`` on the
*same* context: position, counters and cooldowns stay), ``on_start`` runs, then it decides on that candle.

Faults stay inside the strategy: an exception from the strategy's code (warm-up, ``on_start``, ``on_candle``) or a
decision slower than the hard budget raises ``StrategyFault``; the supervisor then puts the strategy in ``error``
with the traceback. Strategies that are not built into tradebaas decide in a process of their own (one per runner,
``strategy_process``), so a slow one holds only itself up, even when it computes in pure Python; built-ins decide
on the loop (they are fast, and the latency of the order path matters). A decision slower than the warning budget
is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

from tradebaas.domain import Candle
from tradebaas.engine.core.candles import CandleBuilder
from tradebaas.engine.core.tradebook import Trade, TradeState
from tradebaas.engine.journal.rows import StrategyRow
from tradebaas.engine.journal.store import Store, position_view
from tradebaas.engine.live import tradelog
from tradebaas.engine.live.budgets import Budgets
from tradebaas.engine.live.decisions import DecisionBatch
from tradebaas.engine.live.order_manager import OrderManager
from tradebaas.engine.live.strategy_process import ProcessLost, StrategyProcess, StrategyRaised, class_ref
from tradebaas.engine.process.logs import strategy_extra
from tradebaas.instruments import Instrument
from tradebaas.strategies.base import (
    Decision,
    Enter,
    Exit,
    MoveStop,
    StrategyContext,
    record_close,
    record_entry,
    record_error,
    roll_day,
    started_instance,
)

log = logging.getLogger("tradebaas.engine.live.strategy_runner")

#: History loaded from the exchange at start so the strategy is warm at once (Razor needs 21, keeps 150). A
#: version whose vetting measured a longer warm-up gets that instead.
WARMUP_CANDLES = 240


class StrategyFault(Exception):
    """The strategy's own code failed (an exception, or a decision over the hard budget)."""

    def __init__(self, reason: str, details: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass(slots=True, frozen=True)
class Swap:
    """A new code and/or config version, from the candle starting at ``from_ts_ms`` on."""

    cls: type
    config: dict[str, Any]
    code_version: str
    config_version: int
    from_ts_ms: int
    apply_to_open: bool = False


class StrategyRunner:
    """Feeds one strategy. ``active`` is False while the strategy is stopped or waiting for a person; the
    context is maintained either way (a stopped strategy's bracketed position can still close on the exchange)."""

    def __init__(self, row: StrategyRow, instrument: Instrument, store: Store, orders: OrderManager, cls: type, *,
                 warmup_candles: int = WARMUP_CANDLES, isolated: bool = False, budgets: Budgets | None = None) -> None:
        self.id = row.id
        self.name = row.name
        self.instrument = instrument
        self.store = store
        self.orders = orders
        self.cls = cls
        self.config = dict(row.config)
        self.code_version = row.code_version
        self.config_version = row.config_version
        self.strategy: Any = cls(self.config)
        self.interval_ms = int(getattr(self.strategy, "interval_ms", 60_000))
        self.warmup_candles = max(WARMUP_CANDLES, int(warmup_candles))
        self.history: deque[Candle] = deque(maxlen=self.warmup_candles)
        self.context = StrategyContext(instrument)
        store.load_context(self.id, self.context)
        open_trades = store.open_trades(self.id)
        self.context.position = next((p for p in map(position_view, open_trades) if p is not None), None)
        self.builder = CandleBuilder(self.interval_ms)
        self.active = False
        self.warm = False
        self.last_price: float | None = None
        self.last_decision: dict[str, Any] | None = store.last_decision(self.id)
        self.pending: Swap | None = None
        #: The skip reason of the last decision: a skip is logged when it starts, not on every candle it lasts.
        self.last_skip = ""
        self.budgets = budgets or Budgets()
        self._process: StrategyProcess | None = StrategyProcess(row.id) if isolated else None

    # -- life ------------------------------------------------------------------------------------------------
    async def warm_up(self, candles: list[Candle]) -> None:
        """Feed closed history candles (oldest first) with ``warming_up`` set; then ``on_start`` (in the strategy's
        own process when it has one). Raises ``StrategyFault`` when the strategy's code fails."""
        self.builder = CandleBuilder(self.interval_ms)
        self.history.clear()
        self.history.extend(candles)
        await self._run("start", list(candles), budget_ms=self._warmup_budget_ms())
        if candles:
            self.builder.prime(candles[-1])
            self.last_price = candles[-1].close
        self.warm = True

    def _warmup_budget_ms(self) -> float:
        return self.budgets.stop_ms * (1 + len(self.history))

    def _fresh_instance(self, candles: list[Candle], context: StrategyContext) -> None:
        """A new instance of the current class and config, warmed on ``candles``, started (same context)."""
        self.strategy = started_instance(self.cls, self.config, candles, context)

    def extend_history(self, warmup_candles: int) -> None:
        """Keep at least ``warmup_candles`` closed candles for swaps (a new version may need a longer warm-up)."""
        if warmup_candles > self.warmup_candles:
            self.warmup_candles = warmup_candles
            self.history = deque(self.history, maxlen=warmup_candles)

    def due_swap(self, candle: Candle) -> Swap | None:
        """The pending swap that takes effect on ``candle`` (the supervisor moves an open position's brackets for
        one with ``apply_to_open`` before the new version decides, as the backtest does)."""
        swap = self.pending
        return swap if swap is not None and candle.ts_ms >= swap.from_ts_ms else None

    def open_trade(self) -> Trade | None:
        return self._open_trade()

    def request_swap(self, swap: Swap) -> None:
        """Take ``swap``'s code and config from its candle on (a later request replaces an earlier pending one:
        only the newest config counts, as in the journal's segments)."""
        self.pending = swap

    def _take_swap(self, candle: Candle) -> bool:
        """Make a swap due on ``candle`` the current code and config; True when there was one (the caller then
        starts a fresh instance of it, warmed on the history)."""
        swap = self.due_swap(candle)
        if swap is None:
            return False
        self.pending = None
        self.cls, self.config = swap.cls, dict(swap.config)
        self.code_version, self.config_version = swap.code_version, swap.config_version
        log.info("now deciding with code %s, config version %d", swap.code_version[:12], swap.config_version,
                 extra=strategy_extra(self.id))
        return True

    def _decide_inline(self, candle: Candle) -> Decision:
        """A built-in's decision, on the loop (after a due swap)."""
        if self._take_swap(candle):
            self._fresh_instance(list(self.history), self.context)
        return self.strategy.on_candle(candle, self.context)

    async def _decide_in_process(self, candle: Candle) -> Decision:
        """A decision in the strategy's process; a due swap, or a process that lost its instance (killed at its
        budget, crashed, a request cancelled half-way), first starts one warmed on the history."""
        process = self._process
        assert process is not None
        if self._take_swap(candle) or not process.started:
            await process.start(class_ref(self.cls), self.config, list(self.history), self.context)
        return await process.decide(candle, self.context)

    async def prepare(self) -> None:
        """Start the strategy's process ahead of its warm-up (the supervisor does it before taking its lock, so the
        other strategies do not wait for a Python start)."""
        if self._process is not None:
            await self._process.prepare()

    @property
    def isolated(self) -> bool:
        """Whether the strategy decides in a process of its own (code not built into tradebaas)."""
        return self._process is not None

    def close(self) -> None:
        """End the strategy's process, if it has one (a decision still running there is abandoned; a fresh
        process, warmed on the history, serves the strategy when it decides again)."""
        if self._process is not None:
            self._process.kill()

    async def aclose(self) -> None:
        """``close``, and wait until the process is gone (the engine's stop: nothing outlives it)."""
        if self._process is not None:
            await self._process.aclose()

    # -- market data -----------------------------------------------------------------------------------------
    def closed_by_bar(self, bar: Candle) -> list[Candle]:
        return self.builder.on_bar(bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume)

    def closed_by_time(self, ts_ms: int, price: float | None) -> list[Candle]:
        if price is not None:
            self.last_price = price
        return self.builder.on_event(ts_ms)

    def next_candle_start(self) -> int:
        """Start of the next candle this strategy decides on (where a swap begins): the one after the last closed
        candle it saw, by exchange time."""
        return self.history[-1].ts_ms + self.interval_ms if self.history else 0

    async def decide(self, candle: Candle) -> Decision:
        """The strategy's decision on one closed candle (after a due swap). Raises ``StrategyFault``."""
        roll_day(self.context, candle.ts_ms + self.interval_ms)
        swapping = self.pending is not None and candle.ts_ms >= self.pending.from_ts_ms
        budget_ms = self._warmup_budget_ms() if swapping else self.budgets.stop_ms
        started = time.perf_counter()
        decision = await self._run("decide", candle, budget_ms=budget_ms)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        self.history.append(candle)
        if elapsed_ms > budget_ms:
            raise StrategyFault(f"a decision took {elapsed_ms:.0f} ms, over the hard budget of {budget_ms:g} ms",
                                f"on the candle of {candle.ts_ms}")
        if elapsed_ms > self.budgets.warn_ms and not swapping:
            log.warning("a decision took %.0f ms (warning budget %g ms)", elapsed_ms, self.budgets.warn_ms,
                        extra=strategy_extra(self.id))
        if not isinstance(decision, Decision):
            raise StrategyFault(f"on_candle returned {type(decision).__name__}, not a Decision", "")
        return decision

    async def _run(self, op: str, arg: Any, *, budget_ms: float) -> Any:
        """``op`` ("start": a fresh instance warmed on the candles ``arg``; "decide": the decision on the candle
        ``arg``): on the loop for a built-in, else in the strategy's process with the hard budget as a timeout (the
        process is killed past it). Any failure of the strategy's code becomes ``StrategyFault``."""
        try:
            if self._process is None:
                return self._fresh_instance(arg, self.context) if op == "start" else self._decide_inline(arg)
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns the result of a future that completes as the
            # task is cancelled and swallows the cancel; the engine's shutdown then waited for this task forever
            # (found by bench/strategies.py: a stop right after a 300 ms strategy's decision)
            try:
                async with asyncio.timeout(budget_ms / 1000.0):
                    if op == "start":
                        return await self._process.start(class_ref(self.cls), self.config, arg, self.context)
                    return await self._decide_in_process(arg)
            except TimeoutError:
                raise StrategyFault(f"the strategy took longer than its hard budget of {budget_ms:g} ms; its "
                                    "process was ended", "") from None
        except StrategyRaised as exc:
            raise StrategyFault(f"the strategy raised {exc.type_name}: {exc.message}", exc.details) from None
        except ProcessLost as exc:
            raise StrategyFault(f"the strategy's process failed: {exc}", "") from None
        except StrategyFault:
            raise
        except Exception as exc:
            raise StrategyFault(f"the strategy raised {type(exc).__name__}: {exc}",
                                "".join(traceback.format_exception(exc))) from None

    async def execute(self, candle: Candle, decision: Decision, publish: Any, closed_at: float | None = None,
                      batch: DecisionBatch | None = None) -> None:
        """Journal ``decision`` and carry out its intents (caller holds the supervisor's lock). A decision without
        intents goes into ``batch`` when one is given (journaled and pushed with the others of the same market
        event: ``decisions.DecisionBatch``); one with intents is journaled and carried out here, called by the
        supervisor's ``_Intents`` task while the event's other strategies decide (``Supervisor._close_candles``)."""
        close_ts = candle.ts_ms + self.interval_ms
        # context.position is kept current by on_trade_event (every change of a trade of ours goes through it),
        # so the hot path reads no journal before deciding.
        record = decision.as_dict()
        record["candle"] = {"ts_ms": candle.ts_ms, "open": candle.open, "high": candle.high, "low": candle.low,
                            "close": candle.close, "volume": candle.volume}
        record["code_version"] = self.code_version
        record["config_version"] = self.config_version
        action = ",".join(type(i).__name__.lower() for i in decision.intents)

        def save_context(conn: Any) -> None:
            self.store.save_context(self.id, self.context, conn, last_candle_ts_ms=candle.ts_ms)

        journaled_at = [0.0]

        def journal(conn: Any) -> None:
            self.store.save_decision(self.id, record, action, conn)
            save_context(conn)
            journaled_at[0] = time.perf_counter()

        # An entry journals its trade before the order goes out and the decision that caused it right after the
        # exchange answered (OrderManager.enter writes it exactly once, whatever happens). Any other decision is
        # journaled at once.
        deferred = bool(decision.intents) and isinstance(decision.intents[0], Enter)
        line = tradelog.decision_line(record, self.last_skip, self.context.cooldown_until_ms)
        self.last_skip = str(decision.skipped or "")
        if line is not None:
            log.info("%s", line, extra=strategy_extra(self.id))
        self.last_decision = record
        push: dict[str, Any] = {"type": "decision", "decision": record}
        if batch is not None and not decision.intents:
            batch.add(save_context, f"strategy.{self.id}", push, closed_at, record=(self.id, record))
            return
        if not deferred:
            with self.store.journal.transaction() as conn:
                journal(conn)
        for intent in decision.intents:
            handed_over = await self._execute(intent, candle, close_ts, closed_at, journal if deferred else None)
            deferred = deferred and not handed_over
        if deferred:  # the entry was not attempted (a trade is open): journal the decision on its own
            with self.store.journal.transaction() as conn:
                journal(conn)
        if closed_at is not None:
            # the market event that closed the candle arrived -> decided and journaled (an entry's decision: once the
            # exchange acknowledged the entry), and -> its intents carried out (an entry's brackets placed)
            push["lag_ms"] = round(((journaled_at[0] or time.perf_counter()) - closed_at) * 1e3, 3)
            if decision.intents:
                push["done_ms"] = round((time.perf_counter() - closed_at) * 1e3, 3)
        publish(f"strategy.{self.id}", push)

    async def _execute(self, intent: Enter | MoveStop | Exit, candle: Candle, close_ts: int,
                       closed_at: float | None, journal: Any) -> bool:
        """Carry out one intent; True when the decision's journaling was handed to the order manager."""
        if isinstance(intent, Enter):
            if self.store.has_open_trade(self.id):
                log.info("a trade is open; the entry is not carried out", extra=strategy_extra(self.id))
                return False
            price = self.last_price or candle.close
            await self.orders.enter(self.id, self.instrument, intent, close_ts, price, closed_at, journal,
                                    versions=(self.name, self.code_version, self.config_version))
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
