"""The client's user-facing methods: one RPC each, pandas where the analytics contract wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tradebaas.errors import UserError
from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.facade import EngineFacade, equity_series, strategy_source
from tradebaas.rpc.protocol import INVALID_PARAMS, RpcError
from tradebaas.strategies.loader import source_version

from .test_panel_fakes import RAZOR_VERSION, FakeEngine, broken_file_entry


class Facade(EngineFacade):
    def __init__(self) -> None:
        self.fake = FakeEngine()

    def call(self, method: str, **params: Any) -> Any:
        return self.fake.call(method, **params)


def test_the_sync_client_has_the_facade() -> None:
    assert issubclass(EngineClient, EngineFacade)
    for name in ("strategies", "start", "stop", "trades", "equity", "positions", "orders", "kill", "decision",
                 "deploy", "upgrade", "set", "available", "source"):
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


# -- issue 11: deploying and changing strategies ----------------------------------------------------------------

SOURCE = ("from tradebaas.strategies.base import BaseStrategy, Decision, Param\n"
          "class Mine(BaseStrategy):\n    name = 'mine'\n    params = (Param('n', int, 3, 1, 10, 'n'),)\n"
          "    def on_candle(self, candle, context):\n        return Decision(candle.ts_ms, 'none', {}, {}, ())\n")


def test_deploy_sends_a_source_text_or_a_files_text(tmp_path: Path) -> None:
    eng = Facade()
    answer = eng.deploy(SOURCE, name="mine2")
    assert eng.fake.called("strategy.deploy") == [{"source": SOURCE, "name": "mine2", "timeout": 300.0}]
    assert answer == {"name": "mine2", "version": source_version(SOURCE), "class_name": "Mine",
                      "warmup_candles": 0, "vetting": {"ok": True, "error": None, "traceback": None}}
    path = tmp_path / "mine.py"
    path.write_text(SOURCE)
    eng.deploy(path)
    eng.deploy(str(path), timeout=30)
    assert eng.fake.called("strategy.deploy")[1:] == [{"source": SOURCE, "timeout": 300.0},
                                                      {"source": SOURCE, "timeout": 30}]


def test_a_refused_version_raises_the_engines_error_with_its_vetting_report() -> None:
    eng = Facade()
    with pytest.raises(RpcError) as refused:
        eng.deploy(SOURCE.replace("from tradebaas", "import nothing_here\nfrom tradebaas"))
    assert refused.value.code == INVALID_PARAMS and "ModuleNotFoundError" in refused.value.message
    assert "Traceback" in refused.value.data["vetting"]["traceback"]


@pytest.mark.parametrize(("strategy", "message"), [
    ("/nowhere/strategy.py", "no such strategy file: /nowhere/strategy.py"),
    ("   ", "the strategy source is empty"),
    (42, "deploy takes a strategy class, its source text or the path of a .py file; got int"),
    (dict, "dict is not a strategy class"),
])
def test_deploy_refuses_what_it_cannot_send_in_one_line(strategy: Any, message: str) -> None:
    eng = Facade()
    with pytest.raises(UserError) as err:
        eng.deploy(strategy)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert eng.fake.called("strategy.deploy") == []


def test_a_builtin_class_sends_its_modules_source() -> None:
    import inspect

    from tradebaas.strategies import ema_cross

    assert strategy_source(ema_cross.EmaCross) == (inspect.getsource(ema_cross), "ema_cross")


def test_set_upgrade_and_source_are_one_call_each() -> None:
    eng = Facade()
    answer = eng.set("razor-1", rsiOversold=45)
    assert eng.fake.called("strategy.set") == [{"id": "razor-1", "config": {"rsiOversold": 45},
                                                "apply_to_open": False}]
    assert answer["config_version"] == 2
    eng.set("razor-1", apply_to_open=True, stopLossPercent=0.4)
    assert eng.fake.called("strategy.set")[1]["apply_to_open"] is True
    with pytest.raises(UserError, match="needs at least one parameter"):
        eng.set("razor-1")
    for method, call, params in [
        ("strategy.upgrade", lambda: eng.upgrade("razor-1", " 1a2b3c4 "), {"id": "razor-1", "version": "1a2b3c4"}),
        ("strategy.source", lambda: eng.source("mine"), {"name": "mine"}),
        ("strategy.source", lambda: eng.source("mine", "1a2b3c4"), {"name": "mine", "version": "1a2b3c4"}),
    ]:
        with pytest.raises(RpcError):  # the fake has no such method: only what was sent matters here
            call()
        assert eng.fake.called(method)[-1] == params


def test_strategies_and_available_stay_lists_of_dicts_shown_as_tables() -> None:
    eng = Facade()
    rows = eng.strategies()
    assert rows == eng.fake.strategies and rows[0]["version"] == RAZOR_VERSION  # the engine's answer, unchanged
    table = rows.frame()
    assert list(table.columns[:6]) == ["id", "name", "instrument", "state", "code_version", "config_version"]
    assert table.loc[0, "code_version"] == RAZOR_VERSION[:12] and table.loc[0, "config_version"] == 1
    assert f"<td>{RAZOR_VERSION[:12]}</td>" in rows._repr_html_()
    eng.fake.available.append(broken_file_entry())
    available = eng.available().frame().set_index("name")
    assert available.loc["razor", "source"] == "builtin"
    assert available.loc["broken", "error"] == "ModuleNotFoundError: No module named 'nothing_here'"


def test_trades_carry_the_strategy_name_and_its_versions() -> None:
    eng = Facade()
    frame = eng.trades()
    assert list(frame.columns[14:17]) == ["strategy_name", "code_version", "config_version"]
    assert frame["config_version"].isna().all()  # an engine that does not send them yet
    eng.fake.trade_extra = {"strategy_name": "razor", "code_version": RAZOR_VERSION, "config_version": 3}
    frame = eng.trades()
    assert frame.loc[0, "strategy_name"] == "razor" and frame.loc[0, "code_version"] == RAZOR_VERSION[:12]
    assert frame.loc[0, "config_version"] == 3 and str(frame["config_version"].dtype) == "Int64"
    assert eng.trade_rows()[0]["code_version"] == RAZOR_VERSION  # the raw rows keep the full version
