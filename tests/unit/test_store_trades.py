"""The trade row and its event on the entry path: encoded once, read back whole; the open-trade check is exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tradebaas.domain import Direction
from tradebaas.engine.core.tradebook import Trade, TradeState, new_trade
from tradebaas.engine.journal.database import Journal
from tradebaas.engine.journal.store import Store
from tradebaas.instruments import BTC_USDC_PERPETUAL


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    j = Journal.open(tmp_path / "journal.sqlite")
    yield Store(j)
    j.close()


def test_a_saved_trade_and_its_event_carry_the_same_whole_record(store: Store) -> None:
    t = new_trade("t1", "s1", BTC_USDC_PERPETUAL, Direction.LONG, 0.002, sl_pct=0.5, tp_pct=0.65,
                  signal_ts_ms=60_000, strategy_name="razor", code_version="abc", config_version=2)
    with store.journal.transaction() as conn:
        store.save_trade(t, conn, event="trade.created")
    (ev,) = store.journal.events(kind="trade.created")
    assert ev.payload == {"trade": t.to_dict()} and ev.strategy_id == "s1"
    assert Trade.from_dict(ev.payload["trade"]) == t
    (row,) = store.journal.query("SELECT data FROM trades")
    assert json.loads(row["data"]) == t.to_dict()
    assert store.open_trades("s1") == [t]


@pytest.mark.parametrize("state,is_open", [(TradeState.PENDING_ENTRY, True), (TradeState.OPEN, True),
                                           (TradeState.CLOSING, True), (TradeState.CLOSED, False)])
def test_has_open_trade_agrees_with_open_trades(store: Store, state: TradeState, is_open: bool) -> None:
    t = replace(new_trade("t1", "s1", BTC_USDC_PERPETUAL, Direction.SHORT, 0.001), state=state)
    with store.journal.transaction() as conn:
        store.save_trade(t, conn)
    assert store.has_open_trade("s1") is is_open is bool(store.open_trades("s1"))
    assert store.has_open_trade("s2") is False
