"""``tradebaas backtest NAME --data FILE [--set key=value ...] [--intrabar MODE] [--json]``: a backtest from the shell.

Prints the stats table (or, with ``--json``, ``{"stats": {...}, "trades": [...]}`` on stdout, nothing else).
Bad names, files and config values are ``UserError``s: one line on stderr, non-zero exit (cli.py prints them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import pandas as pd

from tradebaas.errors import UserError
from tradebaas.fillmodel import INTRABAR_MODES, INTRABAR_PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="strategy name (razor, ema_cross, ...)")
    parser.add_argument("--data", default=None,
                        help="candle CSV(.gz)/Parquet (default: the bundled Bitstamp BTC/USD 1m candles)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="strategy config value (repeatable), validated against the strategy's parameters")
    parser.add_argument("--instrument", default=None, help="instrument for sizing/fees (default: the config's)")
    parser.add_argument("--slippage", type=float, default=0.0, help="fraction paid on market fills (0.0001 = 1 bp)")
    parser.add_argument("--maker-fee", type=float, default=None, help="override the instrument's maker fee rate")
    parser.add_argument("--taker-fee", type=float, default=None, help="override the instrument's taker fee rate")
    parser.add_argument("--capital", type=float, default=10_000.0, help="starting capital, settlement currency")
    parser.add_argument("--resample", default=None, metavar="RULE", help="resample candles first, e.g. 5min")
    parser.add_argument("--intrabar", default=INTRABAR_PATH, choices=INTRABAR_MODES,
                        help="how SL/TP meet the price inside a candle: 'path' (default) along the simulator's "
                             "path, open -> nearer extreme -> other extreme -> close; 'pessimistic' counts the "
                             "stop first when both lie in one candle")
    parser.add_argument("--json", action="store_true", help="print {stats, trades} as JSON")


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT or (not isinstance(value, str | bool | int | float) and pd.isna(value)):
        return None
    return value


def result_to_json(result: Any) -> dict[str, Any]:
    stats = {k: _jsonable(v) for k, v in result.stats.items()}
    trades = [{k: _jsonable(v) for k, v in row.items()} for row in result.trades.to_dict(orient="records")]
    return {"strategy": result.strategy, "config": result.config, "stats": stats, "trades": trades}


def run(args: argparse.Namespace) -> int:
    from tradebaas.backtest.backtester import backtest
    from tradebaas.backtest.data import load_candles, load_default, resample
    from tradebaas.strategies.params import parse_set_options
    from tradebaas.strategies.registry import get_strategy

    cls = get_strategy(args.name)
    config = parse_set_options(args.settings)
    data = load_default() if args.data is None else load_candles(args.data)
    if args.resample:
        try:
            data = resample(data, args.resample)
        except ValueError as exc:
            raise UserError(f"--resample {args.resample!r}: {exc}") from None
    fees = None
    if args.maker_fee is not None or args.taker_fee is not None:
        fees = {k: v for k, v in (("maker", args.maker_fee), ("taker", args.taker_fee)) if v is not None}
    result = backtest(cls, data, config=config, instrument=args.instrument, fees=fees, slippage=args.slippage,
                      capital=args.capital, intrabar=args.intrabar)
    if args.json:
        from tradebaas.commands.output import clean

        json.dump(clean(result_to_json(result)), sys.stdout, default=str)
        sys.stdout.write("\n")
        return 0
    print(f"{result.strategy} on {result.instrument.name}: {len(result.candles):,} candles "
          f"({result.candles.index[0]} .. {result.candles.index[-1]}), {result.candles_per_second:,.0f} candles/s")
    width = max(len(k) for k in result.stats.index)
    for key, value in result.stats.items():
        shown = f"{value:,.6g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")
    return 0
