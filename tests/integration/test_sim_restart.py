"""Restart correctness: resting orders survive a SIGKILL (acknowledged = journaled) or a SIGTERM of the simulator, come back
untouched with the same ids on the same port, never fire on replayed past ticks, and fire later when the market
really reaches them.

The market is the bundled Bitstamp replay, so the test knows the future: it picks a price level the market does not
touch for the next simulated hour but does reach later, and rests a buy limit and a sell stop there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import SimProc
from tradebaas.exchange.sim import marketdata

pytestmark = pytest.mark.integration

INSTRUMENT = "BTC_USDC-PERPETUAL"
MINUTE_MS = 60_000


def untouched_window_level(now_ms: int) -> tuple[float, str]:
    """A price level (on the 1.0 tick grid) not reached within the next 60 simulated minutes but reached within
    the next hours, and whether the market gets there going ``down`` or ``up``.

    Preferred: a level the *past* ten minutes visited (what a restart replays to rebuild its view), so an order
    fired by replayed past ticks would show."""
    data = marketdata.load(None)

    def prices(t0: int, t1: int) -> list[float]:
        return [t.price for t in data.ticks_from(t0) if t.ts_ms <= t1]

    past = prices(now_ms - 10 * MINUTE_MS, now_ms)
    quiet = prices(now_ms, now_ms + 60 * MINUTE_MS)
    later = prices(now_ms + 60 * MINUTE_MS, now_ms + 16 * 60 * MINUTE_MS)
    candidates = []
    for way, sign, ext in (("up", 1, max), ("down", -1, min)):
        edge = ext(quiet)
        level = float(math.ceil(edge) + 2) if sign > 0 else float(math.floor(edge) - 2)
        if sign * (ext(later) - level) > 0:
            candidates.append((sign * (ext(past) - level) >= 0, way, level))
    assert candidates, "no level to test with in the replay"
    visited, way, level = max(candidates)
    return level, way


def place_resting_pair(sim: SimProc, level: float, way: str) -> dict[str, dict[str, Any]]:
    """A limit and a stop that both wait for ``level``: a buy limit + sell stop below the market, or the mirror."""
    limit_side, stop_side = ("buy", "sell") if way == "down" else ("sell", "buy")
    limit = sim.call(f"private/{limit_side}", instrument_name=INSTRUMENT, amount=0.01, type="limit", price=level,
                     label="rest-limit")["order"]
    stop = sim.call(f"private/{stop_side}", instrument_name=INSTRUMENT, amount=0.01, type="stop_market",
                    trigger_price=level, trigger="last_price", label="rest-stop")["order"]
    assert limit["order_state"] == "open" and stop["order_state"] == "untriggered"
    return {"limit": limit, "stop": stop}


def order_states(sim: SimProc, orders: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: sim.call("private/get_order_state", order_id=o["order_id"]) for k, o in orders.items()}


def assert_journaled(sim: SimProc, saves_before: int, ids: list[str]) -> None:
    """An acknowledged order is durable at once: the journal has it, nothing is pending (no waiting)."""
    status = sim.call("admin/get_status")
    assert status["saves"] >= saves_before + len(ids) and not status["unsaved"]
    text = (sim.home.sim_dir / "journal.log").read_bytes() + (sim.home.sim_dir / "state.json").read_bytes()
    assert all(i.encode() in text for i in ids)


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_resting_limit_and_stop_survive_a_restart_untouched_and_fire_when_the_market_reaches_them(
    sim_proc: Callable[..., SimProc], how: str
) -> None:
    sim = sim_proc(speed=1)  # the market barely moves while we set up
    now = sim.now_ms()
    level, way = untouched_window_level(now)
    saves = sim.call("admin/get_status")["saves"]
    placed = place_resting_pair(sim, level, way)
    assert_journaled(sim, saves, [o["order_id"] for o in placed.values()])
    before = order_states(sim, placed)
    clock_before = sim.now_ms()
    port = sim.port

    if how == "sigkill":
        sim.kill()
        again = sim_proc(speed=600, port=port)  # same home (tb_home) and port, as an operator would
    else:
        sim.restart(speed=600)
        again = sim
    assert again.port == port

    # Right after the restart (the level is at least an hour of market away, 6 s at this speed): same ids, same
    # objects, nothing filled, no position — replayed past ticks fired nothing.
    assert order_states(again, placed) == before
    assert {o["order_id"] for o in again.open_orders()} == {o["order_id"] for o in placed.values()}
    assert again.position_size() == 0 and again.user_trades() == []
    assert again.now_ms() >= clock_before - 5_000  # resumed at the saved clock, not the data start

    # Later the market reaches the level: both fire, at the level, after the restart's clock.
    done = wait_for(lambda: (s := order_states(again, placed))["limit"]["order_state"] == "filled"
                    and s["stop"]["order_state"] == "filled" and s, timeout=120, what="both orders to fire")
    assert done["stop"]["triggered"] is True
    assert done["limit"]["average_price"] == level  # a resting limit fills at its own price (maker)
    fills = again.user_trades()
    assert sorted(f["order_id"] for f in fills) == sorted(o["order_id"] for o in placed.values())
    assert all(f["timestamp"] > clock_before + 30 * MINUTE_MS for f in fills)
    stop_fill = next(f for f in fills if f["order_id"] == placed["stop"]["order_id"])
    assert stop_fill["price"] <= level if way == "down" else stop_fill["price"] >= level
    assert again.position_size() == 0  # the long of the limit and the short of the stop
