"""Replay what a live strategy ran: a backtest with the strategy's own code and config versions, in their order.

The engine journals which code version and config version a running strategy used from which candle on (deploy,
``strategy upgrade``, ``strategy set``). ``replay_live`` backtests the engine's recorded candles with exactly that
history: the segment in force at ``since_ms`` starts the backtest, warmed up on the candles before it like the live
runner's warm-up, and every later segment is a ``Swap`` at its first candle (``backtester.Swap`` states the order
of events, which the live runner follows). ``tradebaas.analytics.compare`` then sets the result beside the live
trades and decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tradebaas.instruments import Instrument

from .backtester import SWAP_WARMUP_CANDLES, BacktestError, BacktestResult, Swap, backtest
from .data import load_candles


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of a live strategy's history with one code version and one config version.

    ``from_ts_ms``: the start of the first candle decided with these versions (exchange ms: the ``ts_ms`` of the
    first ``decision`` event carrying them). ``strategy_cls``: the class loaded from that code version;
    ``config``: the validated config of that config version. ``apply_to_open``: the change re-placed the open
    position's brackets (``strategy.set ... apply_to_open``). ``warmup_candles``: what the runner warmed the new
    instance up on, when it differs from ``replay_live``'s ``warmup_candles``. An engine restart re-creates and
    re-warms the strategy exactly like a swap, so a segment with unchanged versions at the restart's first
    candle models it.
    """

    from_ts_ms: int
    strategy_cls: type
    config: dict[str, Any]
    code_version: str
    config_version: int
    apply_to_open: bool = False
    warmup_candles: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``segments`` entry of a Comparison: ``{from_ts_ms, code_version, config_version, config}``."""
        return {"from_ts_ms": int(self.from_ts_ms), "code_version": self.code_version,
                "config_version": int(self.config_version), "config": dict(self.config)}


def replay_live(
    candles: pd.DataFrame,
    segments: list[Segment],
    instrument: str | Instrument,
    *,
    since_ms: int,
    until_ms: int,
    warmup_candles: int = SWAP_WARMUP_CANDLES,
    fees: Any = None,
) -> BacktestResult:
    """Backtest ``candles`` over ``[since_ms, until_ms)`` the way the live strategy ran them.

    ``segments`` are the strategy's versions in time order. The last one starting at or before ``since_ms`` (else
    the first) starts the backtest, warmed up on the last ``warmup_candles`` candles before ``since_ms`` (its own
    ``warmup_candles`` if set); each later one becomes a ``Swap`` at its ``from_ts_ms`` (earlier ones are history).
    No slippage (the live fills are the comparison). ``decisions="all"``: every decision is kept, for the
    candle-by-candle comparison. The result's trades carry ``code_version`` and ``config_version`` (of the
    segment whose decision entered them); ``result.versions_of(trade_id)`` gives them for ``open_position`` too.

    Raises ``BacktestError`` (one line) for no segments, segments out of order, an empty or inverted period, or
    no candle in it.
    """
    if not segments:
        raise BacktestError("replay_live needs at least one segment (the strategy's code and config versions)")
    if any(not isinstance(s, Segment) for s in segments):
        raise BacktestError("segments must be Segment(from_ts_ms, strategy_cls, config, code_version, "
                            "config_version) objects")
    for a, b in zip(segments, segments[1:], strict=False):
        if b.from_ts_ms < a.from_ts_ms:
            raise BacktestError(f"segments must be in time order: {b.from_ts_ms} comes after {a.from_ts_ms}")
    if not since_ms < until_ms:
        raise BacktestError(f"empty period: since {since_ms} is not before until {until_ms}")
    df = load_candles(candles)
    ts = df.index.as_unit("ms").asi8
    df = df[ts < until_ms]
    live = df[df.index.as_unit("ms").asi8 >= since_ms]
    if live.empty:
        raise BacktestError(f"no candles between {_iso(since_ms)} and {_iso(until_ms)} to replay")
    first = max([i for i, s in enumerate(segments) if s.from_ts_ms <= since_ms], default=0)
    start, later = segments[first], segments[first + 1:]
    # the live supervisor leaves the brackets alone for a class that does not name two bracket parameters
    swaps = [Swap(s.from_ts_ms, s.strategy_cls, s.config,
                  apply_to_open=s.apply_to_open and len(tuple(getattr(s.strategy_cls, "bracket_params", ()) or ())) == 2,
                  warmup_candles=s.warmup_candles) for s in later]
    result = backtest(start.strategy_cls, df, config=start.config, instrument=instrument, fees=fees,
                      start=live.index[0], decisions="all", vectorized=False, swaps=swaps,
                      warmup_candles=start.warmup_candles if start.warmup_candles is not None else warmup_candles)
    generations = segments[first:]  # generation g: the g-th swap applied (swaps due after the data never are)
    result.versions = [(s.code_version, int(s.config_version)) for s in generations]
    trades = result.trades
    versions = [result.versions_of(t) or ("", 0) for t in trades["trade_id"]]
    trades["code_version"] = pd.Series([v[0] for v in versions], index=trades.index, dtype="str")
    trades["config_version"] = pd.Series([v[1] for v in versions], index=trades.index, dtype="int64")
    return result


def _iso(ts_ms: int) -> str:
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
