"""daily.ipynb with data in every section: a real papermill run against an RPC server serving canned answers.

The real-engine tests (test_reports.py) see an engine without trades; this one gives the notebook trades, open
positions, equity, decisions, a restart with a reconciliation that changed something, a kill switch and a
strategy needing attention, in the shapes of docs/rpc.md and of the journal events the live loop writes.

"Live vs backtest": until the engine's ``strategy.compare`` is on main, the canned answer is a real comparison
(``compare_runs`` over a real replay of the bundled candles against live rows made from it, one entry moved three
ticks), never hand-written JSON; s2 answers the error an engine gives for a strategy it cannot replay, and an
engine without the method (too old) is the second test's.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tradebaas.analytics.compare import backtest_rows, compare_runs
from tradebaas.backtest.data import load_default
from tradebaas.backtest.replay import Segment, replay_live
from tradebaas.connection import ConnectionInfo, remove_connection_file, write_connection_file
from tradebaas.errors import UserError
from tradebaas.home import Home
from tradebaas.reports.config import default_report
from tradebaas.reports.execute import execute, installed_kernels
from tradebaas.rpc.protocol import Param, Registry
from tradebaas.rpc.server import RpcServer
from tradebaas.strategies.razor import Razor

NOW = int(time.time() * 1000)
H = 3_600_000
CODE_VERSIONS = {"s1": "c0ffee" * 10 + "abcd", "s2": "5eed" * 16}


@pytest.fixture(scope="module", autouse=True)
def tradebaas_kernel() -> None:
    if "tradebaas" not in installed_kernels():
        from tests.conftest import run_cli

        assert run_cli("kernel", "install", "--sys-prefix").returncode == 0


def trade(tid: str, sid: str, direction: str, entry: float, exit_: float | None, hours_ago: float,
          pnl: float, fees: float) -> dict[str, Any]:
    closed = exit_ is not None
    return {"trade_id": tid, "strategy_id": sid, "instrument": "BTC_USDC-PERPETUAL", "direction": direction,
            "state": "closed" if closed else "open", "amount": 0.01, "entry_price": entry, "exit_price": exit_,
            "entry_ts_ms": NOW - int(hours_ago * H), "exit_ts_ms": NOW - int((hours_ago - 1) * H) if closed else None,
            "pnl": pnl, "fees": fees, "net_pnl": pnl - fees, "exit_reason": "tp" if pnl > 0 else "sl",
            "currency": "USDC", "strategy_name": "razor", "code_version": CODE_VERSIONS[sid],
            "config_version": 2 if tid == "t2" else 1}


TRADES = [
    trade("t1", "s1", "long", 60000, 60600, 10, 6.0, 0.5),
    trade("t2", "s1", "short", 61000, 61300, 6, -3.0, 0.5),
    trade("t3", "s2", "long", 59000, 59500, 4, 5.0, 0.4),
    trade("t4", "s2", "long", 59800, None, 1, 0.0, 0.2),
]
EVENTS = [
    {"kind": "engine.started", "strategy_id": None, "payload": {"pid": 1, "version": "0.1.0", "exchange": "sim"}},
    {"kind": "reconcile", "strategy_id": None,
     "payload": {"reason": "startup", "actions": ["PlaceStop"], "open_orders": 2, "fills_seen": 1}},
    {"kind": "reconcile.action", "strategy_id": None,
     "payload": {"action": "PlaceStop", "strategy_id": "s1", "trade_id": "t9", "trigger_price": 58000.0}},
    {"kind": "decision", "strategy_id": "s1",
     "payload": {"signal": "long", "intents": [{"type": "enter"}], "skipped": "", "indicators": {}}},
    {"kind": "decision", "strategy_id": "s1",
     "payload": {"signal": "short", "intents": [], "skipped": "cooldown", "indicators": {}}},
    {"kind": "decision", "strategy_id": "s2",
     "payload": {"signal": "none", "intents": [], "skipped": "", "indicators": {}}},
    {"kind": "strategy.state", "strategy_id": "s2",
     "payload": {"state": "needs_attention", "reason": "unexplained position of 0.02 BTC_USDC-PERPETUAL"}},
    {"kind": "risk.kill", "strategy_id": None, "payload": {"flatten": True}},
    *({"kind": "reconcile", "strategy_id": None,  # the safety net's minutes: counted, never listed
       "payload": {"reason": "periodic", "actions": [], "open_orders": 2, "fills_seen": 0}} for _ in range(3)),
]
for i, e in enumerate(EVENTS, start=1):
    e.update(id=i, ts_ms=NOW - (len(EVENTS) - i) * 60_000, wall_ts_ms=NOW)


def strategy(sid: str, state: str, reason: str = "") -> dict[str, Any]:
    return {"id": sid, "name": "razor", "version": CODE_VERSIONS[sid], "config_version": 2,
            "instrument": "BTC_USDC-PERPETUAL", "state": state,
            "desired_state": "running", "state_reason": reason, "config": {}, "trades": 2,
            "pnl": {"realized": 1.0, "fees": 0.1, "net": 0.9, "floating": 0.0, "currency": "USDC"}}


@functools.cache
def comparison_of_s1() -> dict[str, Any]:
    """A real Comparison: Razor replayed over half a day of the bundled candles, against live rows made from that
    replay with one entry filled three ticks away (an unexplained entry_price and the fee that follows)."""
    df = load_default().iloc[: 1440 + 720]
    since = int(df.index[1440].value // 1_000_000)
    bt = replay_live(df, [Segment(since, Razor, {}, "ab" * 32, 1)], "BTC_USDC-PERPETUAL", since_ms=since,
                     until_ms=since + 720 * 60_000, warmup_candles=240)
    live = [dict(r, trade_id=f"live-{i}", strategy_id="s1") for i, r in enumerate(backtest_rows(bt))]
    live[0]["entry_price"] += 3.0
    decisions = [d.as_dict() for d in bt.decisions]
    return compare_runs(live, decisions, bt, instrument="BTC_USDC-PERPETUAL", strategy_id="s1").to_json()


def candles(instrument: str, since: int | None = None, until: int | None = None) -> list[dict[str, Any]]:
    """Twelve hours of 1-minute candles through the canned trades' prices (59000 .. 61300)."""
    start = NOW - 12 * H
    out = []
    for i in range(12 * 60):
        ts = start + i * 60_000
        if (since is None or ts >= since) and (until is None or ts < until):
            close = 59000.0 + 2300.0 * (i % 360) / 360
            out.append({"ts_ms": ts, "open": close - 5, "high": close + 20, "low": close - 20, "close": close,
                        "volume": 1.0})
    return out


def fake_registry(compare: bool = True) -> Registry:
    reg = Registry()
    reg.add("market.candles", candles, {"instrument": Param(str), "since": Param(int, default=None, nullable=True),
                                        "until": Param(int, default=None, nullable=True)})
    reg.add("engine.status", lambda: {"version": "0.1.0", "uptime_s": 7200, "exchange": {"name": "sim"}})
    reg.add("strategy.list", lambda: [strategy("s1", "running"), strategy("s2", "needs_attention", "unexplained")])
    reg.add("positions.list", lambda: [{"strategy_id": "s2", "trade_id": "t4", "instrument": "BTC_USDC-PERPETUAL",
                                        "direction": "long", "amount": 0.01, "entry_price": 59800.0,
                                        "stop_price": 59000.0, "take_price": 61000.0, "mark_price": 59900.0,
                                        "floating_pnl": 1.0, "currency": "USDC", "opened_ts_ms": NOW - H}])

    def trades_list(strategy: str | None = None, since: int | None = None, until: int | None = None) -> Any:
        return [t for t in TRADES if strategy in (None, t["strategy_id"])]

    reg.add("trades.list", trades_list, {"strategy": Param(str, default=None, nullable=True),
                                         "since": Param(int, default=None, nullable=True),
                                         "until": Param(int, default=None, nullable=True)})

    def equity(strategy: str | None = None, capital: float = 0.0) -> Any:
        points, eq = [], capital
        for t in TRADES:
            if t["state"] == "closed" and strategy in (None, t["strategy_id"]):
                eq += t["net_pnl"]
                points.append({"ts_ms": t["exit_ts_ms"], "equity": eq, "currency": "USDC"})
        return points

    reg.add("equity.history", equity, {"strategy": Param(str, default=None, nullable=True),
                                       "capital": Param(float, default=0.0)})

    def events(kinds: list[str] | None = None, since: int | None = None, until: int | None = None,
               strategy: str | None = None, after_id: int = 0, limit: int = 1000, newest_first: bool = False,
               wall_clock: bool = False) -> Any:
        out = [e for e in EVENTS if e["id"] > after_id
               and (not kinds or any(fnmatch.fnmatchcase(e["kind"], k) for k in kinds))]
        return (out[::-1] if newest_first else out)[:limit]

    reg.add("journal.events", events, {"kinds": Param(list, default=None, nullable=True),
                                       "since": Param(int, default=None, nullable=True),
                                       "until": Param(int, default=None, nullable=True),
                                       "strategy": Param(str, default=None, nullable=True),
                                       "after_id": Param(int, default=0), "limit": Param(int, default=1000),
                                       "newest_first": Param(bool, default=False),
                                       "wall_clock": Param(bool, default=False)})

    def strategy_compare(id: str, since: int | None = None, until: int | None = None) -> Any:
        if id == "s1":
            return comparison_of_s1()
        raise UserError(f"strategy {id} has no recorded candles between since and until to replay")

    if compare:
        reg.add("strategy.compare", strategy_compare, {"id": Param(str),
                                                       "since": Param(int, default=None, nullable=True),
                                                       "until": Param(int, default=None, nullable=True)})
    return reg


def run_daily(home: Home, params: dict[str, Any], tmp: Path, compare: bool = True) -> tuple[bool, str, str]:
    async def main() -> tuple[bool, str, str]:
        server = RpcServer(fake_registry(compare), "test-token-123456")
        port = await server.start()
        write_connection_file(home, ConnectionInfo(pid=os.getpid(), port=port, token="test-token-123456",
                                                   version="0.1.0", started_ts_ms=NOW))
        try:
            outcome = await execute(default_report("daily", home), params, tmp, home)
        finally:
            remove_connection_file(home)
            await server.stop()
        html = outcome.html_path.read_text() if outcome.html_path else ""
        return outcome.ok, outcome.error, html

    return asyncio.run(main())


def test_every_section_shows_its_data(tb_home: Home, tmp_path: Path) -> None:
    ok, error, html = run_daily(tb_home, {"period_days": 1}, tmp_path / "all")
    assert ok, error
    assert "no trades in the period" not in html
    for text in ("t1", "t2", "t3", "tp", "sl",                            # trades table
                 "Open positions", "59800",                               # positions
                 "Cumulative net PnL",                                    # equity without capital
                 "win rate",                                              # per-strategy summary
                 "skipped", "cooldown", "taken",                          # decisions
                 "reconciliation (startup): 1 change(s): PlaceStop",      # what reconciliation changed
                 "PlaceStop: strategy_id=s1", "started pid 1",
                 "kill switch (flatten=True)", "needs attention now", "unexplained position",
                 "Live vs backtest", "Unexplained differences of s1 (razor)", "entry_price", "3.0 ticks apart",
                 "live-0", "not compared: strategy s2 has no recorded candles"):
        assert text in html, text
    assert html.count("<img") >= 2  # the equity plot and the price with the period's trades
    # versions on every trade and strategy: the code version as 12 characters, the config version
    trades_table = html[html.index(">Trades<"):]
    assert "c0ffeec0ffee" in trades_table and "5eed5eed5eed" in trades_table and "code_version" in trades_table
    assert CODE_VERSIONS["s1"] not in html and "config_version" in trades_table and "code version" in html
    # key figures first: net PnL, fees, trades, win rate, max drawdown (t1 +5.5, t2 -3.5, t3 +4.6 USDC)
    head = html[html.index("Key figures"):html.index(">PnL and fees<")]
    for text in ("net PnL", "fees", "trades", "win rate", "max drawdown", "+6.6", "66.7%", "-3.5"):
        assert text in head, text
    assert ">Price and trades<" in html and "BTC_USDC-PERPETUAL: price and the period" not in html  # title in the PNG
    # times as UTC dates, not epoch milliseconds; a reconciliation that changed nothing is counted, not listed
    assert str(TRADES[3]["entry_ts_ms"]) not in html and "entry time (UTC)" in html
    assert "3 reconciliation(s) found nothing to change (periodic: 3)" in html
    assert "nothing to change</td>" not in html and "reconciliation (periodic)" not in html
    summary = comparison_of_s1()["summary"]
    assert summary["unexplained"] == 1 and summary["matched"] == summary["trades_live"] >= 5
    assert f"<td>{summary['trades_backtest']}</td>" in html and "strategy.compare" not in html


def test_one_strategy_with_a_capital_gets_percent_drawdown_and_full_stats(tb_home: Home, tmp_path: Path) -> None:
    ok, error, html = run_daily(tb_home, {"period_days": 1, "strategies": ["s1"], "capital": 1000},
                                tmp_path / "s1", compare=False)
    assert ok, error
    # an engine without strategy.compare (older than issue 11): the section says so, the report does not fail
    assert "this engine is too old to compare" in html and "Not available on this engine" in html
    assert "t1" in html and "t2" in html and ">t3<" not in html
    assert "below the running peak" in html and "Performance on a capital of 1000" in html
    assert "profit_factor" in html or "profit factor" in html
