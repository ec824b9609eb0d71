"""The backtester: the live strategy code driven over historical candles, fills from ``tradebaas.fillmodel``.

Semantics (reference/razor.md, "Backtest semantics"), candle by candle:

1. Market intents decided on the previous candle (``Enter``, ``Exit``) fill at this candle's open, with
   ``slippage`` (a fraction, against the taker) and the taker fee. ``Enter`` is sized with
   ``Instrument.amount_for_notional`` at the signal candle's close (the price known when the order is sent);
   its brackets are placed from the actual fill with ``fillmodel.bracket_prices`` (``None`` = no bracket).
2. An open position's brackets are checked on this candle with ``fillmodel.candle_exit``: along the candle's
   price path (``fillmodel.candle_path``: open, nearer extreme, other extreme, close, the path the simulator
   replays), the first bracket reached exits; with ``intrabar="pessimistic"`` the stop counts whenever both lie
   within the candle. A stop fills at its trigger (a gap through it at the open), taker; the take-profit limit at
   its price, maker. The entry candle itself is checked too (its open was the fill). An exit is booked at the
   candle's last millisecond, or at its open when the candle opened through the order (as the live fill).
3. The strategy sees the closed candle (``on_candle``). A ``MoveStop`` (break-even) takes effect from the next
   candle on; ``Enter``/``Exit`` wait for the next open.

The ``StrategyContext`` bookkeeping is the live runner's (``strategies/base.py``: ``record_entry``,
``record_close``, ``roll_day``): cooldowns and the daily count by UTC day. An exit inside a candle is booked at
the candle's last millisecond; the trades frame shows the exit minute's start as ``exit_time``.
Open positions at the end of the data are not in ``.trades`` (see ``.open_position``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebaas import fillmodel
from tradebaas.domain import Candle, Liquidity
from tradebaas.errors import UserError
from tradebaas.instruments import Instrument, get_instrument
from tradebaas.strategies.base import (
    Decision,
    Enter,
    Exit,
    MoveStop,
    PositionView,
    StrategyContext,
    apply_move_stop,
    record_close,
    record_entry,
    roll_day,
)
from tradebaas.strategies.registry import resolve

from .data import interval_ms, load_candles

DEFAULT_CAPITAL = 10_000.0


@dataclass
class BacktestResult:
    """What a backtest produced: the analytics-contract trades and equity, decisions, and the inputs."""

    strategy: str
    config: dict[str, Any]
    instrument: Instrument
    trades: pd.DataFrame
    equity: pd.Series
    decisions: list[Decision]
    candles: pd.DataFrame = field(repr=False)
    capital: float
    open_position: PositionView | None = None
    elapsed_s: float = 0.0

    @property
    def candles_per_second(self) -> float:
        return len(self.candles) / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @cached_property
    def stats(self) -> pd.Series:
        """The shared statistics table (``tradebaas.analytics.stats.stats``), over the whole data period."""
        return compute_stats(self)

    def decisions_frame(self) -> pd.DataFrame:
        """Recorded decisions as a DataFrame (time, signal, scores, skipped, reasons, intents)."""
        rows = [{
            "time": pd.Timestamp(d.ts_ms, unit="ms", tz="UTC"),
            "signal": d.signal,
            "long": d.scores.get("long"),
            "short": d.scores.get("short"),
            "strength": d.strength,
            "confidence": d.confidence,
            "skipped": d.skipped,
            "reasons": "; ".join(d.reasons),
            "intents": ", ".join(type(i).__name__ for i in d.intents),
        } for d in self.decisions]
        return pd.DataFrame(rows)

    def plot(self, max_candles: int = 600) -> Any:
        """Equity/drawdown figure and trades-on-price figure (matplotlib ``Figure`` objects, in that order)."""
        from tradebaas.analytics.plots import plot_equity, plot_trades

        title = f"{self.strategy} on {self.instrument.name}"
        return (plot_equity(self.equity, title=title, currency=self.instrument.settlement_currency),
                plot_trades(self.trades, self.candles, instrument=self.instrument.name, title=title,
                            max_candles=max_candles))


def compute_stats(result: BacktestResult) -> pd.Series:
    """The one place the backtest asks analytics for its statistics (imported lazily: analytics is optional)."""
    from tradebaas.analytics.stats import stats

    end = result.candles.index[-1] + pd.Timedelta(milliseconds=interval_ms(result.candles)) if len(result.candles) else None
    return stats(result.trades, result.equity, capital=result.capital, end=end)


class BacktestError(UserError):
    """A backtest cannot run as asked (bad strategy argument, fees, slippage, intrabar mode)."""


def check_intrabar(intrabar: object) -> str:
    """``intrabar`` if it names a ``fillmodel.candle_exit`` mode, else a ``BacktestError`` listing the modes."""
    if intrabar not in fillmodel.INTRABAR_MODES:
        modes = " or ".join(repr(m) for m in fillmodel.INTRABAR_MODES)
        raise BacktestError(f"intrabar must be {modes} (default {fillmodel.INTRABAR_PATH!r}), got {intrabar!r}")
    return str(intrabar)


def _instrument(instrument: str | Instrument | None, config: dict[str, Any], fees: Any) -> Instrument:
    if isinstance(instrument, Instrument):
        inst = instrument
    else:
        name = instrument or config.get("instrument") or "BTC_USDC-PERPETUAL"
        try:
            inst = get_instrument(str(name))
        except ValueError as exc:
            raise BacktestError(str(exc)) from None
    if fees is None:
        return inst
    if isinstance(fees, dict):
        unknown = set(fees) - {"maker", "taker"}
        if unknown:
            raise BacktestError(f"fees: unknown key(s) {sorted(unknown)} (use 'maker' and 'taker')")
        maker, taker = fees.get("maker", inst.maker_fee), fees.get("taker", inst.taker_fee)
    elif isinstance(fees, tuple | list) and len(fees) == 2:
        maker, taker = fees
    elif isinstance(fees, int | float):
        maker = taker = fees
    else:
        raise BacktestError("fees: give {'maker': x, 'taker': y}, (maker, taker) or one rate for both")
    return dataclasses.replace(inst, maker_fee=float(maker), taker_fee=float(taker))


def _make_strategy(strategy: Any, config: dict[str, Any] | None) -> Any:
    if isinstance(strategy, str | type):
        return resolve(strategy)(config or {})
    if hasattr(strategy, "on_candle"):
        if config:
            raise BacktestError("config was given with a strategy instance; pass the class or name instead")
        return strategy
    raise BacktestError(f"strategy must be a name, a class or an instance, not {type(strategy).__name__}")


def backtest(
    strategy: Any,
    data: str | Path | pd.DataFrame,
    config: dict[str, Any] | None = None,
    instrument: str | Instrument | None = None,
    fees: Any = None,
    slippage: float = 0.0,
    capital: float = DEFAULT_CAPITAL,
    *,
    strategy_id: str | None = None,
    decisions: str = "actions",
    start: Any = None,
    vectorized: bool = True,
    cache: Any = None,
    intrabar: str = fillmodel.INTRABAR_PATH,
) -> BacktestResult:
    """Run ``strategy`` (name, class or instance) over ``data`` (candle file or DataFrame).

    ``config`` is validated against the strategy's declared parameters (``ConfigError`` on bad keys/values).
    ``instrument`` defaults to the config's ``instrument``; ``fees`` default to the instrument's (a dict
    ``{"maker", "taker"}``, a ``(maker, taker)`` pair or one rate, fractions of notional); ``slippage`` is a
    fraction applied against every market fill (entries and ``Exit``s, not stops); ``capital`` is in the
    settlement currency. ``decisions``: ``"actions"`` keeps decisions with intents, ``"all"`` keeps every
    decision (memory!), ``"none"`` keeps none.

    ``start`` (a time): candles before it only warm the strategy up, exactly as the live runner's warm-up does
    (``context.warming_up`` set, no intents, then ``on_start``); trades, equity and stats cover ``start`` on.
    Without it every candle is live (the strategy trades as soon as it is warm). Parity with the engine needs it:
    the engine warms up on history before it decides.

    ``vectorized``: a strategy given by name or class that has a ``vectorized`` classmethod (``ema_cross``) runs
    on arrays instead of candle by candle, unless ``decisions="all"`` (every decision's record is the event
    loop's business) or ``vectorized=False``. Same trades, equity and kept decisions, 5-50x faster (tests hold it
    to trade-for-trade equality). ``cache``: a ``vectorized.ArrayCache`` of this exact ``data`` (warm-up
    included), so a sweep computes each indicator once per data set.

    ``intrabar``: how brackets meet the price inside a candle (``fillmodel.candle_exit``). ``"path"`` (default):
    along the path the simulator replays (open, the nearer extreme, the other extreme, close), so the backtest
    agrees with paper trading; ``"pessimistic"``: the stop counts whenever both brackets lie within one candle.
    (The array fast path places no brackets, so the mode cannot change its result.)
    """
    intrabar = check_intrabar(intrabar)
    if decisions not in ("actions", "all", "none"):
        raise BacktestError("decisions must be 'actions', 'all' or 'none'")
    if not (0 <= slippage < 1):
        raise BacktestError(f"slippage is a fraction in [0, 1), got {slippage!r}")
    strat = _make_strategy(strategy, config)
    cfg = dict(getattr(strat, "config", config or {}))
    inst = _instrument(instrument, cfg, fees)
    reuse = cache is not None and getattr(cache, "frame", None) is data  # a sweep's frame: normalised already
    df = full = data if reuse else load_candles(data)
    name = getattr(strat, "name", type(strat).__name__)
    warm = df.iloc[:0]
    if start is not None:
        cut = pd.Timestamp(start)
        cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
        warm, df = df[df.index < cut], df[df.index >= cut]
        if len(df) == 0:
            raise BacktestError(f"start {cut} is after the last candle")
    fast = getattr(type(strat), "vectorized", None) if vectorized and isinstance(strategy, str | type) else None
    started = time.perf_counter()
    if fast is not None and decisions != "all":
        run = fast(full, cfg, inst, float(slippage), live_from=len(warm), strategy_id=strategy_id or name,
                   decisions=decisions if decisions == "actions" else "none", cache=cache)
        trades, kept, open_pos = run.trades, run.decisions, run.open_position
    else:
        if len(warm):
            _warm_up(strat, warm, inst)
        trades, kept, open_pos = _run(strat, df, inst, float(slippage), strategy_id or name, decisions, intrabar)
    elapsed = time.perf_counter() - started
    from tradebaas.analytics.frames import equity_curve, trades_frame

    trades_df = trades_frame(trades)
    equity = equity_curve(trades_df, float(capital), start=df.index[0])
    return BacktestResult(name, cfg, inst, trades_df, equity, kept, df, float(capital), open_pos, elapsed)


def _warm_up(strat: Any, warm: pd.DataFrame, inst: Instrument) -> None:
    """Feed history with ``warming_up`` set, as ``engine.live.strategy_runner.StrategyRunner.warm_up`` does (decisions ignored)."""
    ctx = StrategyContext(inst, warming_up=True)
    ts = warm.index.as_unit("ms").asi8.tolist()
    for t, o, h, lo, c, v in zip(ts, *(warm[k].tolist() for k in ("open", "high", "low", "close", "volume")),
                                 strict=True):
        strat.on_candle(Candle(t, o, h, lo, c, v), ctx)


def _run(strat: Any, df: pd.DataFrame, inst: Instrument, slip: float, strategy_id: str,
         keep: str, intrabar: str) -> tuple[list[dict[str, Any]], list[Decision], PositionView | None]:
    """The inner loop: plain Python over lists (no pandas per candle)."""
    step = interval_ms(df)
    idx = df.index
    ts_arr = (idx.as_unit("ms").asi8 if idx.unit != "ms" else idx.asi8).astype(np.int64)
    cols = zip(ts_arr.tolist(), df["open"].tolist(), df["high"].tolist(), df["low"].tolist(),
               df["close"].tolist(), df["volume"].tolist(), strict=True)
    ctx = StrategyContext(inst)
    if keep != "all" and hasattr(strat, "verbose_skips"):
        strat.verbose_skips = False  # skipped decisions are not kept: do not compute their indicator values
    cooldown_ms = int(getattr(strat, "cooldown_ms", 0) or 0)
    strat.on_start(ctx)
    on_candle = strat.on_candle
    candle_exit = fillmodel.candle_exit
    fee = fillmodel.fee
    pnl = fillmodel.realized_pnl
    taker = Liquidity.TAKER
    currency = inst.settlement_currency
    trades: list[dict[str, Any]] = []
    kept: list[Decision] = []
    keep_all, keep_actions = keep == "all", keep == "actions"
    pending: tuple = ()
    sizing_price = 0.0
    entry_fee = 0.0
    seq = 0
    day = -1

    def close(pos: PositionView, price: float, liquidity: Liquidity, reason: str, ts: int, book_ts: int) -> None:
        exit_fee = fee(inst, pos.amount, price, liquidity)
        trades.append({
            "trade_id": pos.trade_id, "strategy_id": strategy_id, "instrument": inst.name,
            "direction": pos.direction.value, "entry_ts_ms": pos.opened_ts_ms, "exit_ts_ms": ts,
            "entry_price": pos.entry_price, "exit_price": price, "amount": pos.amount,
            "pnl": pnl(inst, pos.direction.sign, pos.amount, pos.entry_price, price),
            "fees": entry_fee + exit_fee, "exit_reason": reason, "currency": currency,
        })
        record_close(ctx, book_ts, cooldown_ms)

    for ts, o, h, lo, c, v in cols:
        candle = Candle(ts, o, h, lo, c, v)
        if pending:
            for intent in pending:
                pos = ctx.position
                if type(intent) is Exit:
                    if pos is not None:
                        px = fillmodel.apply_slippage(o, pos.direction.exit_side, slip)
                        close(pos, px, taker, "exit", ts, ts)
                elif type(intent) is Enter and pos is None:
                    d = intent.direction
                    px = fillmodel.apply_slippage(o, d.entry_side, slip)
                    amount = inst.amount_for_notional(intent.notional_usd, sizing_price)
                    sl = tp = None
                    if intent.sl_pct is not None or intent.tp_pct is not None:
                        sl, tp = fillmodel.bracket_prices(inst, d, px, intent.sl_pct or 0.0, intent.tp_pct or 0.0)
                        sl = sl if intent.sl_pct is not None else None
                        tp = tp if intent.tp_pct is not None else None
                    seq += 1
                    entry_fee = fee(inst, amount, px, taker)
                    record_entry(ctx, PositionView(d, amount, px, sl, tp, ts, f"bt-{seq}"), ts, cooldown_ms)
            pending = ()
        pos = ctx.position
        if pos is not None and (pos.stop_price is not None or pos.take_price is not None):
            ex = candle_exit(pos.direction, pos.stop_price, pos.take_price, candle, intrabar)
            if ex is not None:
                # a gap through the order fills at the open's instant (live: the first tick); otherwise the exit is
                # booked at the candle's last millisecond, which gives cooldowns the effect of any moment inside it
                close(pos, ex.price, ex.liquidity, ex.kind, ts, ts if ex.at_open else ts + step - 1)
        now = ts + step
        if now // 86_400_000 != day:
            day = now // 86_400_000
            roll_day(ctx, now)
        decision = on_candle(candle, ctx)
        intents = decision.intents
        if intents:
            market = []
            for intent in intents:
                if type(intent) is MoveStop:
                    apply_move_stop(ctx, intent)
                else:
                    market.append(intent)
            if market:
                pending = tuple(market)
                sizing_price = c
            if keep_actions:
                kept.append(decision)
        if keep_all:
            kept.append(decision)
    return trades, kept, ctx.position
