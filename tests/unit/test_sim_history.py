"""Bounded history of the matching core: closed orders and user trades are kept per account and instrument within
``history``; open orders, positions, balances and counters are never pruned, and the state stays small."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_sim_properties import World, actions
from tradebaas.exchange.deribit import codes as E
from tradebaas.exchange.sim.errors import SimRefusal
from tradebaas.exchange.sim.matching import DEFAULT_HISTORY, MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN = "BTC_USDC-PERPETUAL"
INV = "BTC-PERPETUAL"


def make(history: int) -> SimExchange:
    ex = SimExchange(DEFAULT_INSTRUMENTS, history=history)
    ex.create_account("a", {"USDC": 1_000_000.0, "BTC": 100.0})
    for inst, half in ((LIN, 1.0), (INV, 0.5)):
        ex.on_market(MarketTick(inst, 1, 50_000, 50_000, 50_000, 50_000 - half, 50_000 + half), 1)
    return ex


def call(ex: SimExchange, method: str, now: int, **params):
    return ex.handle("a", method, params, now)[0]


def round_trips(ex: SimExchange, n: int, inst: str = LIN, start: int = 10) -> list[str]:
    """``n`` market orders alternating buy/sell (each fills at once); their ids, oldest first."""
    amount = 0.01 if inst == LIN else 10
    return [call(ex, "buy" if i % 2 == 0 else "sell", start + i, instrument_name=inst, amount=amount,
                 type="market")["order"]["order_id"] for i in range(n)]


def test_default_history_is_a_few_thousand() -> None:
    assert 1000 <= DEFAULT_HISTORY <= 10_000
    with pytest.raises(ValueError):
        SimExchange(DEFAULT_INSTRUMENTS, history=0)


def test_closed_orders_and_trades_beyond_the_window_are_forgotten_open_orders_never() -> None:
    ex = make(history=5)
    resting = call(ex, "buy", 5, instrument_name=LIN, amount=0.01, price=40_000)["order"]["order_id"]
    stop = call(ex, "sell", 6, instrument_name=LIN, amount=0.01, type="stop_market", trigger_price=30_000,
                reduce_only=True)["order"]["order_id"]
    ids = round_trips(ex, 20)
    account = ex.accounts["a"]
    assert len(account.trades[LIN]) == 5
    assert [t["order_id"] for t in account.trades[LIN]] == ids[-5:]
    assert set(account.orders) == {resting, stop, *ids[-5:]}
    with pytest.raises(SimRefusal) as info:
        call(ex, "get_order_state", 50, order_id=ids[0])
    assert info.value.code == E.ORDER_NOT_FOUND
    assert call(ex, "get_order_state", 50, order_id=ids[-1])["order_state"] == "filled"
    assert call(ex, "get_order_state", 50, order_id=resting)["order_state"] == "open"
    assert [o["order_id"] for o in call(ex, "get_open_orders_by_instrument", 50, instrument_name=LIN)] == [resting, stop]
    history = call(ex, "get_order_history_by_instrument", 50, instrument_name=LIN, count=100)
    assert [o["order_id"] for o in history] == ids[-5:][::-1]
    # Money and position never depend on the kept trades: cumulative totals stay exact.
    summary = call(ex, "get_account_summary", 50, currency="USDC")
    assert account.balances["USDC"] == pytest.approx(1_000_000.0 + account.realized["USDC"] - account.fees["USDC"])
    assert summary["balance"] == account.balances["USDC"] and account.size(LIN) == 0


def test_reconciliation_query_since_a_timestamp_inside_the_window_sees_every_fill() -> None:
    ex = make(history=10)
    round_trips(ex, 30)
    page = call(ex, "get_user_trades_by_instrument", 100, instrument_name=LIN, start_timestamp=35, sorting="asc",
                count=100)
    assert [t["timestamp"] for t in page["trades"]] == list(range(35, 40)) and not page["has_more"]
    by_currency = call(ex, "get_user_trades_by_currency", 100, currency="USDC", start_timestamp=35, count=100)
    assert len(by_currency["trades"]) == 5
    # A later closed order's trades are kept with it; each instrument has its own window.
    round_trips(ex, 3, inst=INV, start=40)
    assert len(ex.accounts["a"].trades[LIN]) == 10 and len(ex.accounts["a"].trades[INV]) == 3


def test_state_stays_bounded_however_many_orders() -> None:
    ex = make(history=50)
    round_trips(ex, 500)
    size_500 = len(json.dumps(ex.to_state()))
    round_trips(ex, 1500, start=1000)
    size_2000 = len(json.dumps(ex.to_state()))
    assert size_2000 < size_500 * 1.05
    state = ex.to_state()
    assert len(state["accounts"]["a"]["orders"]) == 50 and len(state["accounts"]["a"]["trades"][LIN]) == 50
    assert state["next_order"] > 2000  # counters are kept in full: ids never repeat after pruning


def test_restore_with_a_smaller_history_and_from_an_unbounded_old_state_prunes_oldest_first() -> None:
    ex = make(history=100)
    ids = round_trips(ex, 40)
    state = json.loads(json.dumps(ex.to_state()))
    small = SimExchange.from_state(state, DEFAULT_INSTRUMENTS, history=7)
    assert list(small.accounts["a"].orders) == ids[-7:]
    assert [t["order_id"] for t in small.accounts["a"].trades[LIN]] == ids[-7:]
    del state["accounts"]["a"]["closed"]  # the format before bounded history
    old = SimExchange.from_state(state, DEFAULT_INSTRUMENTS, history=7)
    assert old.to_state() == small.to_state()
    round_trips(small, 3, start=100)
    assert list(small.accounts["a"].orders) == ids[-4:] + list(small.accounts["a"].orders)[-3:]


@pytest.mark.parametrize("instrument", [LIN, INV])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(actions, max_size=30), after=st.lists(actions, max_size=15))
def test_pruned_state_round_trips_and_behaves_the_same(instrument: str, before: list, after: list) -> None:
    """With a tiny window (pruning on almost every close), a restore is still exact and behaves the same, and the
    invariants that do not need the full fill history hold: OCO legs, fills within amounts, balance = PnL - fees."""
    world = World(instrument)
    world.ex = SimExchange.from_state(world.ex.to_state(), DEFAULT_INSTRUMENTS, history=2)
    for action in before:
        world.step(action)
    state = world.ex.to_state()
    restored = SimExchange.from_state(json.loads(json.dumps(state)), DEFAULT_INSTRUMENTS, history=2)
    assert restored.to_state() == state
    twin = World(instrument)
    twin.ex, twin.now, twin.mid = restored, world.now, world.mid
    for action in after:
        world.step(action)
        twin.step(action)
    assert twin.ex.to_state() == world.ex.to_state()
    account = world.ex.accounts["a"]
    cur = world.inst.settlement_currency
    start = {"USDC": 10_000_000.0, "BTC": 1_000.0}[cur]
    assert account.balances[cur] == pytest.approx(start + account.realized.get(cur, 0.0) - account.fees.get(cur, 0.0))
    assert len(account.trades.get(world.inst.name, ())) <= 2
    assert sum(not o.is_live for o in account.orders.values()) <= 2
