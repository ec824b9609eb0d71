"""Runs inside bench/.venv-compare (NOT the project venv): the EMA-cross strategy in backtesting.py, backtrader and
vectorbt (the array library: the peer of tradebaas' array paths).

Usage: python _compare_impl.py CANDLES.csv (index: bar start in Unix ms) FAST SLOW  -> one JSON object on stdout with, per library, the
wall time and the closed trades (entry/exit bar start in Unix ms, direction). The strategy is tradebaas'
ema_cross exactly: SMA-seeded EMAs of the closes; once warm, long when fast > slow, short when fast < slow, a tie
changes nothing; orders go at market and fill at the next bar's open; no fees, no brackets.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd


def ema(values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if len(values) < n:
        return out
    k = 2.0 / (n + 1)
    s = 0.0  # same float order as tradebaas: a running sum, then one division
    for v in values[:n]:
        s += float(v)
    e = s / n
    out[n - 1] = e
    for i in range(n, len(values)):
        e += (float(values[i]) - e) * k
        out[i] = e
    return out


def run_backtesting(df: pd.DataFrame, fast: int, slow: int) -> dict:
    from backtesting import Backtest, Strategy

    def ema_bt(values: np.ndarray, n: int) -> np.ndarray:
        # backtesting.py first calls next() one bar *after* the indicators' first value; tradebaas (and backtrader)
        # decide on the first warm bar. A placeholder one bar earlier (never read: next() starts after it) aligns
        # the two, so the first trade is not skipped.
        out = ema(values, n)
        if n >= 2 and len(out) >= n:
            out[n - 2] = out[n - 1]
        return out

    class EmaCross(Strategy):
        def init(self) -> None:
            self.f = self.I(ema_bt, self.data.Close, fast)
            self.s = self.I(ema_bt, self.data.Close, slow)

        def next(self) -> None:
            f, s = self.f[-1], self.s[-1]
            if np.isnan(f) or np.isnan(s) or f == s:
                return
            want = 1 if f > s else -1
            pos = self.position.size
            if pos == 0 or (pos > 0) != (want > 0):
                if want > 0:
                    self.buy(size=1)
                else:
                    self.sell(size=1)

    data = df.rename(columns=str.capitalize)
    t = time.perf_counter()
    bt = Backtest(data, EmaCross, cash=1e12, commission=0.0, exclusive_orders=True, trade_on_close=False,
                  finalize_trades=False)
    stats = bt.run()
    wall = time.perf_counter() - t
    tr = stats["_trades"]
    trades = [{"entry": int(pd.Timestamp(r.EntryTime).value // 10**6), "exit": int(pd.Timestamp(r.ExitTime).value // 10**6),
               "direction": "long" if r.Size > 0 else "short"} for r in tr.itertuples()]
    import backtesting

    return {"wall_s": wall, "trades": trades, "version": backtesting.__version__}


def run_backtrader(df: pd.DataFrame, fast: int, slow: int) -> dict:
    import backtrader as bt

    closes = df["close"].to_numpy()
    ef, es = ema(closes, fast), ema(closes, slow)  # same indicator values, precomputed (the bench times the engine)

    class EmaCross(bt.Strategy):
        def __init__(self) -> None:
            self.i = -1
            self.trades: list[dict] = []

        def notify_trade(self, trade: bt.Trade) -> None:
            if trade.isclosed:
                self.trades.append({"entry": int(bt.num2date(trade.dtopen).timestamp() * 1000),
                                    "exit": int(bt.num2date(trade.dtclose).timestamp() * 1000),
                                    "direction": "long" if trade.long else "short"})

        def next(self) -> None:
            self.i += 1
            f, s = ef[self.i], es[self.i]
            if np.isnan(f) or np.isnan(s) or f == s:
                return
            want = 1 if f > s else -1
            if self.position.size != want:
                self.order_target_size(target=want)

    cerebro = bt.Cerebro(stdstats=False)
    feed = bt.feeds.PandasData(dataname=df.tz_convert(None) if df.index.tz is not None else df)
    cerebro.adddata(feed)
    cerebro.addstrategy(EmaCross)
    cerebro.broker.setcash(1e12)
    t = time.perf_counter()
    strat = cerebro.run()[0]
    wall = time.perf_counter() - t
    return {"wall_s": wall, "trades": strat.trades, "version": bt.__version__}


def run_vectorbt(df: pd.DataFrame, fast: int, slow: int) -> dict:
    import vectorbt as vbt

    closes = df["close"].to_numpy()
    ef, es = ema(closes, fast), ema(closes, slow)  # the same indicator values (vectorbt's own EMA is not SMA-seeded)

    def run(n: int) -> object:
        f, s = ef[:n], es[:n]
        # the wanted side decided at a bar's close, acted on at the next bar's open: signals shifted by one bar
        long_ = np.zeros(n, dtype=bool)
        short = np.zeros(n, dtype=bool)
        long_[1:], short[1:] = (f > s)[:-1], (f < s)[:-1]
        return vbt.Portfolio.from_signals(df["open"].iloc[:n], entries=long_, short_entries=short,
                                          size=1.0, init_cash=1e12, fees=0.0, accumulate=False,
                                          upon_opposite_entry="reverse", freq="1min")

    run(5000)  # numba compiles on the first call: not what a user waits for on the second
    t = time.perf_counter()
    pf = run(len(df))
    rec = pf.trades.records_arr  # structured array: entry_idx, exit_idx, direction (0 long, 1 short), status
    wall = time.perf_counter() - t
    ts = df.index.as_unit("ms").asi8
    closed = rec[rec["status"] == 1]
    trades = [{"entry": int(ts[r["entry_idx"]]), "exit": int(ts[r["exit_idx"]]),
               "direction": "long" if r["direction"] == 0 else "short"} for r in closed]
    return {"wall_s": wall, "trades": trades, "version": vbt.__version__}


def main() -> None:
    path, fast, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    which = sys.argv[4].split(",") if len(sys.argv) > 4 else ["backtesting", "backtrader"]
    df = pd.read_csv(path, index_col=0)
    df.index = pd.to_datetime(df.index, unit="ms", utc=True)
    out = {}
    if "backtesting" in which:
        out["backtesting"] = run_backtesting(df, fast, slow)
    if "backtrader" in which:
        out["backtrader"] = run_backtrader(df, fast, slow)
    if "vectorbt" in which:
        out["vectorbt"] = run_vectorbt(df, fast, slow)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
