"""Backtest throughput: candles/s of Razor and ema_cross over 1,000,000 one-minute candles (JSON lines).

The bundled 27 days of real Bitstamp candles are repeated end to end (timestamps continued, each repeat
re-based on the previous close) until there are N candles. The comparison with backtesting.py and backtrader
(issue 6) is not here yet.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from tradebaas.backtest.data import load_default
from tradebaas.backtest.runner import backtest


def candles(n: int) -> pd.DataFrame:
    base = load_default()
    reps = -(-n // len(base))
    parts, scale = [], 1.0
    for _ in range(reps):
        parts.append(base[["open", "high", "low", "close"]].to_numpy() * scale)
        scale = parts[-1][-1, 3] / base["open"].iloc[0]
    ohlc = np.vstack(parts)[:n]
    idx = pd.date_range(base.index[0], periods=n, freq="1min")
    vol = np.resize(base["volume"].to_numpy(), n)
    return pd.DataFrame({"open": ohlc[:, 0], "high": ohlc[:, 1], "low": ohlc[:, 2], "close": ohlc[:, 3],
                         "volume": vol}, index=idx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candles", type=int, default=1_000_000)
    args = ap.parse_args()
    df = candles(args.candles)
    for name in ("ema_cross", "razor"):
        t = time.perf_counter()
        r = backtest(name, df, decisions="none")
        wall = time.perf_counter() - t
        print(json.dumps({"bench": "backtest", "strategy": name, "candles": len(df), "trades": len(r.trades),
                          "loop_s": round(r.elapsed_s, 3), "total_s": round(wall, 3),
                          "candles_per_s": round(len(df) / r.elapsed_s)}))


if __name__ == "__main__":
    main()
