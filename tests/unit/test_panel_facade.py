"""The client's user-facing methods: one RPC each, pandas where the analytics contract wants it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.facade import EngineFacade, equity_series

from .test_panel_fakes import FakeEngine


class Facade(EngineFacade):
    def __init__(self) -> None:
        self.fake = FakeEngine()

    def call(self, method: str, **params: Any) -> Any:
        return self.fake.call(method, **params)


def test_the_sync_client_has_the_facade() -> None:
    assert issubclass(EngineClient, EngineFacade)
    for name in ("strategies", "start", "stop", "trades", "equity", "positions", "orders", "kill", "decision"):
        assert callable(getattr(EngineClient, name))


def test_start_sends_name_instrument_and_config() -> None:
    eng = Facade()
    eng.start("razor", instrument="BTC-PERPETUAL", rsiOversold=45)
    assert eng.fake.called("strategy.start") == [
        {"name": "razor", "instrument": "BTC-PERPETUAL", "config": {"rsiOversold": 45}}]
    eng.start("razor")
    assert eng.fake.called("strategy.start")[1] == {"name": "razor", "config": {}}


def test_stop_kill_decision() -> None:
    eng = Facade()
    assert eng.stop("razor-1")["state"] == "stopped"
    assert eng.fake.called("strategy.stop") == [{"id": "razor-1", "flatten": False}]
    assert eng.kill(flatten=True)["cancelled"] == 2
    assert eng.fake.called("risk.kill") == [{"flatten": True}]
    assert eng.decision("razor-1")["signal"] == "none"


def test_trades_is_the_contract_frame() -> None:
    eng = Facade()
    frame = eng.trades(since="2023-11-14T00:00:00Z", until=1_800_000_000_000)
    assert eng.fake.called("trades.list") == [{"since": 1_699_920_000_000, "until": 1_800_000_000_000}]
    assert list(frame.columns[:3]) == ["trade_id", "strategy_id", "instrument"]
    assert frame.loc[0, "net_pnl"] == 0.39 - 0.03
    assert str(frame["exit_time"].dt.tz) == "UTC"


def test_equity_is_a_utc_series_named_equity() -> None:
    eng = Facade()
    series = eng.equity()
    assert series.name == "equity" and series.index.name == "time"
    assert series.index.tz is not None and list(series) == [1000.0, 1000.36]
    assert series.index[0] == pd.Timestamp(1_700_000_000_000, unit="ms", tz="UTC")
    assert equity_series([]).empty
