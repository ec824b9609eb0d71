"""A chaos finding, pinned: an entry that reaches the exchange after the engine gave its trade up.

Found by the engine-kill rounds under slow answers: the engine journals a trade, sends its market entry, and is
SIGKILLed before the answer; the exchange holds the request (it answers a connection's requests in turn, each one
slow) and fills it only after the restarted engine's reconciliation found no entry on the exchange and marked the
trade failed. The late fill re-opened the trade, and nothing gave the position its stop until the next periodic
reconciliation, a minute later. Here the late fill is made directly (an entry under the label of a trade the
journal holds as finished) so the case is deterministic: the position must get its stop at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.chaos.invariants import read_journal
from tests.chaos.world import World
from tests.conftest import wait_for


def test_a_late_entry_fill_of_a_finished_trade_gets_its_stop_at_once(make_world: Callable[..., World]) -> None:
    world = make_world(speed=300)
    world.start_strategies()
    razor = next(s for s in world.slots if s.name == "razor")

    def finished_and_flat() -> dict | None:
        trades = [t for t in read_journal(world.home).trades.values() if t["strategy_id"] == razor.sid]
        if any(t["state"] not in ("closed", "failed") for t in trades):
            return None
        return next((t for t in trades if t["state"] == "closed"), None)

    wait_for(finished_and_flat, timeout=120, what="a closed Razor trade and Razor flat")
    world.client.call("strategy.stop", id=razor.sid)  # no new trade of its own while we look
    world.slots.remove(razor)
    trade = wait_for(finished_and_flat, timeout=30, what="Razor still flat once stopped")
    assert world.sim.position_size(razor.instrument) == 0
    tid = trade["trade_id"]
    side = "buy" if trade["direction"] == "long" else "sell"
    late = world.sim.call(f"private/{side}", instrument_name=razor.instrument, amount=trade["amount"], type="market",
                          label=f"tb:{razor.sid}:{tid}:entry")
    filled_at = time.monotonic()
    assert late["order"]["order_state"] == "filled"

    def stop() -> dict | None:
        return next((o for o in world.sim.open_orders(razor.instrument) if o["label"] == f"tb:{razor.sid}:{tid}:sl"),
                    None)

    order = wait_for(stop, timeout=30, what="the re-opened position's stop")
    took = time.monotonic() - filled_at
    assert took < 5.0, f"the stop came {took:.1f} s after the late fill (the periodic reconciliation, not at once)"
    assert order["reduce_only"] and order["amount"] == trade["amount"]  # (it may fill soon after: tight brackets)
    # Everything else holds; the planted order is, by construction, a second entry order of that trade.
    planted = f"duplicate entry: trade {tid} "

    def others() -> list[str]:
        return [v for v in world.checker.violations(world.should_run()) if planted not in v]

    wait_for(lambda: not others(), timeout=20, what="every other invariant")
