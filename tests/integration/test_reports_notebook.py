"""daily.ipynb with data in every section: a real papermill run against an RPC server serving canned answers.

The real-engine tests (test_reports.py) see an engine without trades; this one gives the notebook trades, open
positions, equity, decisions, a restart with a reconciliation that changed something, a kill switch and a
strategy needing attention, in the shapes of docs/rpc.md and of the journal events the live loop writes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tradebaas.connection import ConnectionInfo, remove_connection_file, write_connection_file
from tradebaas.home import Home
from tradebaas.reports.config import default_report
from tradebaas.reports.execute import execute, installed_kernels
from tradebaas.rpc.protocol import Param, Registry
from tradebaas.rpc.server import RpcServer

NOW = int(time.time() * 1000)
H = 3_600_000


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
            "currency": "USDC"}


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
]
for i, e in enumerate(EVENTS, start=1):
    e.update(id=i, ts_ms=NOW - (len(EVENTS) - i) * 60_000, wall_ts_ms=NOW)


def strategy(sid: str, state: str, reason: str = "") -> dict[str, Any]:
    return {"id": sid, "name": "razor", "instrument": "BTC_USDC-PERPETUAL", "state": state,
            "desired_state": "running", "state_reason": reason, "config": {}, "trades": 2,
            "pnl": {"realized": 1.0, "fees": 0.1, "net": 0.9, "floating": 0.0, "currency": "USDC"}}


def fake_registry() -> Registry:
    reg = Registry()
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
    return reg


def run_daily(home: Home, params: dict[str, Any], tmp: Path) -> tuple[bool, str, str]:
    async def main() -> tuple[bool, str, str]:
        server = RpcServer(fake_registry(), "test-token-123456")
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
                 "kill switch (flatten=True)", "needs attention now", "unexplained position"):
        assert text in html, text
    assert "<img" in html  # the equity plot


def test_one_strategy_with_a_capital_gets_percent_drawdown_and_full_stats(tb_home: Home, tmp_path: Path) -> None:
    ok, error, html = run_daily(tb_home, {"period_days": 1, "strategies": ["s1"], "capital": 1000},
                                tmp_path / "s1")
    assert ok, error
    assert "t1" in html and "t2" in html and ">t3<" not in html
    assert "below the running peak" in html and "Performance on a capital of 1000" in html
    assert "profit_factor" in html or "profit factor" in html
