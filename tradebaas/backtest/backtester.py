"""The backtester: the live strategy code driven over historical candles, fills from ``tradebaas.fillmodel``.

Semantics (docs/razor.md, "Backtest semantics"), candle by candle:

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

``swaps`` replace the strategy instance mid-run the way the live runner switches code or config versions
(``strategy upgrade``, ``strategy set``); ``Swap`` states the order of events exactly.
"""

from __future__ import annotations

import bisect
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from tradebaas import fillmodel
from tradebaas.domain import Candle
from tradebaas.errors import UserError
from tradebaas.instruments import Instrument, get_instrument
from tradebaas.strategies.arrays import ArrayStrategy
from tradebaas.strategies.base import (
    Decision,
    PositionView,
    StrategyContext,
)
from tradebaas.strategies.registry import resolve
from tradebaas.strategies.series import CandleArrays

from .data import interval_ms, load_candles
from .loop import ArrayPlan, CandleLists, CandleRows, run_loop

DEFAULT_CAPITAL = 10_000.0
#: Candles a swapped-in strategy is warmed up on when neither the ``Swap`` nor ``backtest(warmup_candles=)`` says:
#: what the engine's runner loads (``engine.live.strategy_runner.WARMUP_CANDLES``).
SWAP_WARMUP_CANDLES = 240
_NEVER = sys.maxsize


@dataclass(frozen=True, slots=True)
class Swap:
    """Replace the running strategy instance during a backtest, exactly as the live runner switches a running
    strategy to another code version (``strategy upgrade``) or config version (``strategy set``).

    ``ts_ms`` (exchange ms) is the start of the first candle the new instance decides on. At the first candle
    whose start is ``>= ts_ms``, in this order:

    1. the candle's market events belong to what was there before: intents decided on the previous candle fill
       at its open, and the open position's brackets are checked on it, exactly as without a swap;
    2. ``roll_day`` (as before every decision);
    3. the new instance is made (``strategy``: a registered name or a class, built with ``config`` and
       validated, before the run starts; or an instance, which must be fresh and takes no ``config``);
    4. ``apply_to_open`` with an open position: its stop-loss and take-profit are re-placed from its entry price
       with the new config's distances (the two keys named by the class's ``bracket_params``, stop-loss then
       take-profit, via ``fillmodel.bracket_prices``; a key whose value is ``None`` keeps that bracket, as the
       live order manager does) and ``break_even_done`` is cleared: the position is protected as if it had been
       entered under the new config.
       The new brackets are checked from the next candle on (this candle was checked in step 1). Without
       ``apply_to_open`` the position keeps its brackets, a moved (break-even) stop included;
    5. the new instance is warmed up on the last ``warmup_candles`` closed candles before this candle (fewer
       when the data has fewer; candles before ``start`` count), with ``context.warming_up = True`` on the *same*
       ``StrategyContext`` (its decisions are ignored), then ``warming_up = False`` and ``on_start(context)``;
    6. the new instance decides on this candle; its decisions, intents and ``cooldown_ms`` count from here.

    Kept across a swap: the position and its brackets (step 4 aside), ``trades_today``, ``trading_day``,
    ``cooldown_until_ms``, ``last_close_ts_ms``, ``context.extra``. Nothing is pending at step 3 (intents of the
    previous decision filled in step 1). Several swaps due at the same candle are applied one after the other,
    each in full (steps 3-5); the last one decides. ``warmup_candles=None``: ``backtest(warmup_candles=)``, else
    ``SWAP_WARMUP_CANDLES``.
    """

    ts_ms: int
    strategy: Any
    config: dict[str, Any] | None = None
    apply_to_open: bool = False
    warmup_candles: int | None = None


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
    #: With ``swaps``: trade id (``.trades.trade_id``, ``open_position.trade_id``) -> the strategy generation whose
    #: decision entered it (0: the initial strategy, k: the one swapped in by the k-th swap). Empty without swaps.
    trade_segments: dict[str, int] = field(default_factory=dict)
    #: ``replay.replay_live``: the (code_version, config_version) of each generation (index: ``trade_segments``'s
    #: values). Empty for a plain backtest.
    versions: list[tuple[str, int]] = field(default_factory=list)

    def versions_of(self, trade_id: str) -> tuple[str, int] | None:
        """(code_version, config_version) of the strategy that entered ``trade_id`` (None: not a replay)."""
        return self.versions[self.trade_segments.get(trade_id, 0)] if self.versions else None

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

    def plot(self, static: bool = False, max_candles: int | None = None) -> Any:
        """The market chart the control panel draws live (``tradebaas.analytics.chart``), as a plotly ``Figure``:
        candles, entries and exits as markers, and the position still open at the end with its entry, stop and
        take-profit lines -- research and live look alike. The newest ``max_candles`` (default 2000) are drawn.

        ``static=True``: the matplotlib figures instead (equity/drawdown, trades on price; ``max_candles`` default
        600, a close line beyond), for reports and files."""
        title = f"{self.strategy} on {self.instrument.name}"
        if not static:
            from tradebaas.analytics.chart import chart_of_backtest, figure

            return figure(chart_of_backtest(self, max_candles=max_candles or 2000), title=title)
        from tradebaas.analytics.plots import plot_equity, plot_trades

        return (plot_equity(self.equity, title=title, currency=self.instrument.settlement_currency),
                plot_trades(self.trades, self.candles, instrument=self.instrument.name, title=title,
                            max_candles=max_candles or 600))


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


@dataclass(slots=True)
class _Pending:
    """A swap made ready before the run: its instance is built (and its config validated) up front."""

    ts_ms: int
    strategy: Any
    apply_to_open: bool
    warmup: int


def _prepare_swaps(swaps: Sequence[Swap], warmup_candles: int | None) -> list[_Pending]:
    out: list[_Pending] = []
    last = -_NEVER
    for i, swap in enumerate(swaps):
        if not isinstance(swap, Swap):
            raise BacktestError(f"swaps[{i}] must be a Swap(ts_ms, strategy, config=None, ...), "
                                f"not {type(swap).__name__}")
        if isinstance(swap.ts_ms, bool) or not isinstance(swap.ts_ms, int):
            raise BacktestError(f"swaps[{i}].ts_ms must be an int (exchange ms), got {swap.ts_ms!r}")
        if swap.ts_ms < last:
            raise BacktestError(f"swaps must be in time order: swaps[{i}].ts_ms {swap.ts_ms} < {last}")
        last = swap.ts_ms
        warm = swap.warmup_candles if swap.warmup_candles is not None else warmup_candles
        warm = SWAP_WARMUP_CANDLES if warm is None else warm
        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 0:
            raise BacktestError(f"swaps[{i}]: warmup_candles must be an int >= 0, got {warm!r}")
        strat = _make_strategy(swap.strategy, swap.config)
        if swap.apply_to_open and len(tuple(getattr(type(strat), "bracket_params", ()) or ())) != 2:
            raise BacktestError(f"swaps[{i}]: apply_to_open needs the strategy class to name its two bracket "
                                f"parameters (bracket_params = (stop-loss key, take-profit key)); "
                                f"{type(strat).__name__} does not")
        out.append(_Pending(swap.ts_ms, strat, bool(swap.apply_to_open), warm))
    return out


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
    swaps: Sequence[Swap] = (),
    warmup_candles: int | None = None,
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
    the engine warms up on history before it decides. ``warmup_candles``: warm up on only the last that many
    candles before ``start`` (as the engine, which loads a fixed number); None: all of them. It is also the
    default warm-up of ``swaps``.

    ``swaps``: ``Swap`` objects in time order; each replaces the strategy instance from its candle on, as the
    live runner does on an upgrade or a parameter change (``Swap`` states the order of events). The initial
    strategy is generation 0, the k-th swap's generation k (``BacktestResult.trade_segments``). With swaps the
    array fast path is not used.

    ``vectorized``: a strategy given by name or class that has a ``vectorized`` classmethod (``ema_cross``) runs
    on arrays instead of candle by candle, and an ``ArrayStrategy`` (Razor) takes the array run (``_run_arrays``:
    its declared series computed once, ``decide`` only where it may act), unless ``decisions="all"`` (every
    decision's record is the event loop's business), ``swaps`` or ``vectorized=False``. Same trades, equity and kept decisions, 5-50x faster (tests hold it
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
    if warmup_candles is not None and (isinstance(warmup_candles, bool) or not isinstance(warmup_candles, int)
                                       or warmup_candles < 0):
        raise BacktestError(f"warmup_candles must be None or an int >= 0, got {warmup_candles!r}")
    pending_swaps = _prepare_swaps(swaps, warmup_candles)
    full: pd.DataFrame = data if reuse and isinstance(data, pd.DataFrame) else load_candles(data)
    df = full
    name = getattr(strat, "name", type(strat).__name__)
    warm = df.iloc[:0]
    if start is not None:
        cut = pd.Timestamp(start)
        cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
        warm, df = df[df.index < cut], df[df.index >= cut]
        if len(df) == 0:
            raise BacktestError(f"start {cut} is after the last candle")
        if warmup_candles is not None:
            warm = warm.iloc[len(warm) - warmup_candles:] if warmup_candles else warm.iloc[:0]
    fast = getattr(type(strat), "vectorized", None) if vectorized and isinstance(strategy, str | type) else None
    started = time.perf_counter()
    segments: dict[str, int] = {}
    if fast is not None and decisions != "all" and not pending_swaps and warmup_candles is None:
        run = fast(full, cfg, inst, float(slippage), live_from=len(warm), strategy_id=strategy_id or name,
                   decisions=decisions if decisions == "actions" else "none", cache=cache)
        trades, kept, open_pos = run.trades, run.decisions, run.open_position
    elif (vectorized and isinstance(strategy, str | type) and isinstance(strat, ArrayStrategy)
          and decisions != "all" and not pending_swaps):
        offset = len(full) - len(df) - len(warm)  # the warm-up candles, then df: what the candle-by-candle run sees
        frame = full if offset == 0 else full.iloc[offset:]
        trades, kept, open_pos = _run_arrays(strat, frame, len(warm), inst, float(slippage), strategy_id or name,
                                             decisions, intrabar, cache)
    else:
        if len(warm):
            _warm_up(strat, warm, inst)
        swapper = _Swapper(pending_swaps, full, len(full) - len(df)) if pending_swaps else None
        trades, kept, open_pos = _run(strat, df, inst, float(slippage), strategy_id or name, decisions, intrabar,
                                      swapper)
        if swapper is not None:
            segments = swapper.trade_segments
    elapsed = time.perf_counter() - started
    from tradebaas.analytics.frames import equity_curve, trades_frame

    trades_df = trades_frame(trades)
    equity = equity_curve(trades_df, float(capital), start=df.index[0])
    return BacktestResult(name, cfg, inst, trades_df, equity, kept, df, float(capital), open_pos, elapsed,
                          segments)


def _warm_up(strat: Any, warm: pd.DataFrame, inst: Instrument) -> None:
    """Feed history with ``warming_up`` set, as ``engine.live.strategy_runner.StrategyRunner.warm_up`` does (decisions ignored)."""
    ctx = StrategyContext(inst, warming_up=True)
    ts = warm.index.as_unit("ms").asi8.tolist()
    for t, o, h, lo, c, v in zip(ts, *(warm[k].tolist() for k in ("open", "high", "low", "close", "volume")),
                                 strict=True):
        strat.on_candle(Candle(t, o, h, lo, c, v), ctx)


class _Swapper:
    """Carries out the ``Swap`` steps 3-5 for ``_run`` and remembers which generation entered each trade."""

    def __init__(self, pending: list[_Pending], full: pd.DataFrame, live_from: int) -> None:
        self.pending = pending
        self.next = 0
        self.generation = 0
        self.live_from = live_from  # index in ``full`` of the first candle ``_run`` sees
        self.ts: list[int] = full.index.as_unit("ms").asi8.tolist()
        self.cols = [full[k].tolist() for k in ("open", "high", "low", "close", "volume")]
        self.trade_segments: dict[str, int] = {}

    @property
    def next_ts(self) -> int:
        return self.pending[self.next].ts_ms if self.next < len(self.pending) else _NEVER

    def swap(self, ts: int, ctx: StrategyContext, inst: Instrument, keep_all: bool) -> Any:
        """Apply every swap due at the candle starting at ``ts``; the instance that decides on it."""
        strat = None
        at = bisect.bisect_left(self.ts, ts)
        while self.next < len(self.pending) and self.pending[self.next].ts_ms <= ts:
            p = self.pending[self.next]
            self.next += 1
            self.generation = self.next
            strat = p.strategy
            if not keep_all and hasattr(strat, "verbose_skips"):
                strat.verbose_skips = False
            if p.apply_to_open and ctx.position is not None:
                _replace_brackets(ctx.position, strat, inst)
            ctx.warming_up = True
            o, h, lo, c, v = self.cols
            for i in range(max(0, at - p.warmup), at):
                strat.on_candle(Candle(self.ts[i], o[i], h[i], lo[i], c[i], v[i]), ctx)
            ctx.warming_up = False
            strat.on_start(ctx)
        return strat


def _replace_brackets(pos: PositionView, strat: Any, inst: Instrument) -> None:
    """``Swap`` step 4: the position's brackets as if it had been entered under ``strat``'s config."""
    sl_key, tp_key = type(strat).bracket_params
    sl_pct, tp_pct = strat.config.get(sl_key), strat.config.get(tp_key)
    sl, tp = fillmodel.bracket_prices(inst, pos.direction, pos.entry_price, float(sl_pct or 0.0),
                                      float(tp_pct or 0.0))
    if sl_pct is not None:
        pos.stop_price = sl
    if tp_pct is not None:
        pos.take_price = tp
    pos.break_even_done = False


def _run(strat: Any, df: pd.DataFrame, inst: Instrument, slip: float, strategy_id: str,
         keep: str, intrabar: str, swapper: _Swapper | None = None,
         ) -> tuple[list[dict[str, Any]], list[Decision], PositionView | None]:
    """The candle-by-candle run: ``on_candle`` on every candle of ``df`` (``loop.run_loop``)."""
    cols = CandleLists.from_arrays(CandleArrays.from_frame(df))
    return run_loop(strat, cols, 0, interval_ms(df), inst, slip, strategy_id, keep, intrabar, swapper)


def _run_arrays(strat: ArrayStrategy, frame: pd.DataFrame, first: int, inst: Instrument, slip: float,
                strategy_id: str, keep: str, intrabar: str, cache: Any = None,
                ) -> tuple[list[dict[str, Any]], list[Decision], PositionView | None]:
    """The array run of an ``ArrayStrategy``: its series over ``frame`` (warm-up candles ``[:first]`` included,
    as the candle-by-candle run feeds them), ``decide`` only where it can act (``loop.ArrayPlan``)."""
    arrays = cache.candle_arrays() if cache is not None and cache.frame is frame else CandleArrays.from_frame(frame)
    plan = ArrayPlan(strat, arrays, first, cache if cache is not None and cache.frame is frame else None)
    return run_loop(strat, CandleRows(arrays), first, interval_ms(frame), inst, slip, strategy_id, keep, intrabar,
                    None, plan)
