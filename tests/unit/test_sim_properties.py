"""Invariants of the matching core under random order flow and random markets (hypothesis).

- the position equals the signed sum of the account's fills;
- a reduce-only fill never increases |position|;
- both legs of an OCO pair never fill;
- the balance moved by exactly realized PnL minus fees;
- a refused call changes nothing, and the state round-trips exactly (and behaves the same afterwards).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebaas.exchange.sim.errors import SimRefusal
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

START = {"USDC": 10_000_000.0, "BTC": 1_000.0}
GRID = 100.0  # price grid step (a multiple of both tick sizes)

sides = st.sampled_from(["buy", "sell"])
levels = st.integers(min_value=-20, max_value=20)
qty = st.integers(min_value=1, max_value=5)

actions = st.one_of(
    st.tuples(st.just("tick"), levels, st.integers(0, 3), st.integers(-3, 3)),
    st.tuples(st.just("market"), sides, qty, st.booleans()),
    st.tuples(st.just("limit"), sides, levels, qty, st.booleans(), st.booleans()),
    st.tuples(st.just("trigger"), sides, levels, qty, st.booleans(),
              st.sampled_from(["stop_market", "take_market", "stop_limit", "take_limit"]),
              st.sampled_from(["last_price", "mark_price", "index_price"])),
    st.tuples(st.just("oco"), sides, st.integers(1, 10), st.integers(1, 10), qty),
    st.tuples(st.just("otoco"), sides, levels, st.integers(1, 10), st.integers(1, 10), qty,
              st.sampled_from(["first_hit", "complete_fill", "incremental"])),
    st.tuples(st.just("cancel"), st.integers(0, 10)),
    st.tuples(st.just("edit"), st.integers(0, 10), levels),
    st.tuples(st.just("close"), st.sampled_from(["market", "limit"])),
)


class World:
    """One account trading one instrument against a random market."""

    def __init__(self, instrument: str) -> None:
        self.inst = DEFAULT_INSTRUMENTS[instrument]
        self.ex = SimExchange(DEFAULT_INSTRUMENTS)
        self.ex.create_account("a", dict(START))
        self.now = 1_000
        self.mid = 50_000.0
        self.step(("tick", 0, 1, 0))

    def price(self, level: int) -> float:
        return self.mid + level * GRID

    def call(self, method: str, **params) -> None:
        self.now += 1
        before = self.ex.to_state()
        try:
            self.ex.handle("a", method, {"instrument_name": self.inst.name, **params}, self.now)
        except SimRefusal:
            assert self.ex.to_state() == before, f"refused {method} changed the state"

    def amount(self, n: int) -> float:
        return round(n * self.inst.min_trade_amount * (10 if self.inst.is_inverse else 1), 10)

    def open_orders(self) -> list[dict]:
        return self.ex.handle("a", "get_open_orders", {}, self.now)[0]

    def step(self, action: tuple) -> None:
        kind = action[0]
        if kind == "tick":
            _, level, spread, mark_off = action
            self.mid = max(10_000.0, self.mid + level * GRID / 4)
            self.mid -= self.mid % GRID
            half = spread * self.inst.tick_size
            self.now += 1
            self.ex.on_market(MarketTick(self.inst.name, self.now, self.mid, self.mid + mark_off * GRID,
                                         self.mid - mark_off * GRID, self.mid - half or None, self.mid + half or None),
                              self.now)
        elif kind == "market":
            _, side, n, reduce_only = action
            self.call(side, amount=self.amount(n), type="market", reduce_only=reduce_only)
        elif kind == "limit":
            _, side, level, n, reduce_only, post_only = action
            self.call(side, amount=self.amount(n), price=self.price(level), reduce_only=reduce_only, post_only=post_only)
        elif kind == "trigger":
            _, side, level, n, reduce_only, order_type, trigger = action
            self.call(side, amount=self.amount(n), type=order_type, trigger_price=self.price(level), trigger=trigger,
                      price=self.price(level), reduce_only=reduce_only)
        elif kind == "oco":
            _, side, tp, sl, n = action
            sign = 1 if side == "sell" else -1
            self.call(side, amount=self.amount(n), price=self.price(sign * tp), reduce_only=True,
                      linked_order_type="one_cancels_other",
                      otoco_config=[{"type": "stop_market", "trigger_price": self.price(-sign * sl), "reduce_only": True}])
        elif kind == "otoco":
            _, side, level, tp, sl, n, condition = action
            sign = 1 if side == "buy" else -1
            self.call(side, amount=self.amount(n), price=self.price(level), linked_order_type="one_triggers_one_cancels_other",
                      trigger_fill_condition=condition, otoco_config=[
                          {"type": "stop_market", "trigger_price": self.price(level - sign * sl), "reduce_only": True},
                          {"type": "limit", "price": self.price(level + sign * tp), "reduce_only": True}])
        elif kind == "cancel":
            live = self.open_orders()
            if live:
                self.call("cancel", order_id=live[action[1] % len(live)]["order_id"])
        elif kind == "edit":
            live = [o for o in self.open_orders() if o["order_type"] == "limit"]
            if live:
                o = live[action[1] % len(live)]
                self.call("edit", order_id=o["order_id"], amount=o["amount"], price=self.price(action[2]))
        elif kind == "close":
            self.call("close_position", type=action[1], price=self.mid)

    # ------------------------------------------------------------------------------------------- invariants

    def check(self) -> None:
        account = self.ex.accounts["a"]
        trades = account.trades.get(self.inst.name, [])
        size = 0.0
        for t in trades:
            sign = 1 if t["direction"] == "buy" else -1
            after = round(size + sign * t["amount"], 10)
            if t["reduce_only"]:
                assert abs(after) <= abs(size) + 1e-9 and size * after >= 0, f"reduce-only increased {size}->{after}"
            size = after
        assert account.size(self.inst.name) == pytest.approx(size, abs=1e-9)
        cur = self.inst.settlement_currency
        moved = account.balances[cur] - START[cur]
        expected = sum(t["profit_loss"] for t in trades) - sum(t["fee"] for t in trades)
        assert moved == pytest.approx(expected, abs=START[cur] * 1e-14 * (len(trades) + 1))  # float ulps of the balance
        legs: dict[str, int] = {}
        for order in account.orders.values():
            if order.oco_ref is not None and order.filled_amount > 0:
                legs[order.oco_ref] = legs.get(order.oco_ref, 0) + 1
        assert all(n <= 1 for n in legs.values()), "both legs of an OCO filled"
        for order in account.orders.values():
            assert order.filled_amount <= order.amount + 1e-9


@pytest.mark.parametrize("instrument", ["BTC_USDC-PERPETUAL", "BTC-PERPETUAL"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(actions, min_size=1, max_size=40))
def test_invariants_hold_under_random_flow(instrument, steps):
    world = World(instrument)
    for action in steps:
        world.step(action)
        world.check()


@pytest.mark.parametrize("instrument", ["BTC_USDC-PERPETUAL", "BTC-PERPETUAL"])
@settings(max_examples=60, deadline=None)
@given(before=st.lists(actions, max_size=25), after=st.lists(actions, max_size=15))
def test_state_round_trip_preserves_everything_and_behaviour(instrument, before, after):
    world = World(instrument)
    for action in before:
        world.step(action)
    state = world.ex.to_state()
    restored = SimExchange.from_state(json.loads(json.dumps(state)), DEFAULT_INSTRUMENTS)
    assert restored.to_state() == state
    twin = World(instrument)
    twin.ex, twin.now, twin.mid = restored, world.now, world.mid
    for action in after:
        world.step(action)
        twin.step(action)
    assert twin.ex.to_state() == world.ex.to_state()
