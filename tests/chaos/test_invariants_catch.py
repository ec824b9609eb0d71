"""The invariant checker is honest: each violation planted on a real exchange account and journal is reported.

The engine is SIGKILLed first (so it cannot repair anything), Razor holding a position with wide brackets (so the
market does not close it while we plant). Then, one at a time: its stop cancelled behind its back, a second entry
under its trade's label, a fill the journal lost, a stray bracket of a trade the journal never had, a position nobody of ours
opened. Each must show up in ``Checker.violations`` with its own message."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tests.chaos.world import World
from tests.conftest import wait_for

RAZOR_WIDE = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 3.0, "takeProfitPercent": 3.0,
              "breakEvenEnabled": False, "cooldownMinutes": 0}


def test_every_planted_violation_is_reported(make_world: Callable[..., World]) -> None:
    world = make_world(speed=60)
    world.start_strategies(razor=RAZOR_WIDE)
    razor = next(s for s in world.slots if s.name == "razor")
    ema = next(s for s in world.slots if s.name == "ema_cross")

    def protected() -> dict[str, str] | None:
        labels = {o["label"]: o for o in world.sim.open_orders(razor.instrument)}
        stops = [lb for lb in labels if lb.startswith(f"tb:{razor.sid}:") and lb.endswith(":sl")]
        return {"label": stops[0], "order_id": labels[stops[0]]["order_id"]} if stops else None

    wait_for(lambda: world.sim.user_trades(ema.instrument), timeout=120, what="a fill of ema_cross")
    stop = wait_for(protected, timeout=120, what="Razor holding a protected position")
    assert stop is not None
    assert not world.checker.settle(world.should_run(), timeout=30)[0]
    world.kill_engine()
    assert world.checker.violations(world.should_run()) == []
    tid = stop["label"].split(":")[2]

    def reported(fragment: str) -> list[str]:
        found = world.checker.violations(world.should_run())
        assert any(fragment in v for v in found), (fragment, found)
        return found

    world.sim.call("private/cancel", order_id=stop["order_id"])
    reported("has no stop")

    side = "buy" if world.sim.position_size(razor.instrument) > 0 else "sell"
    amount = abs(world.sim.position_size(razor.instrument))
    world.sim.call(f"private/{side}", instrument_name=razor.instrument, amount=amount, type="market",
                   label=f"tb:{razor.sid}:{tid}:entry")
    reported(f"duplicate entry: trade {tid} filled by 2 entry orders")
    reported("but the journal's open trades explain")

    stray = "m0000000-zz"  # a trade the journal never had
    price = float(world.sim.call("public/ticker", instrument_name=razor.instrument)["last_price"])
    world.sim.call("private/sell", instrument_name=razor.instrument, amount=amount, type="limit",
                   price=round(price * 1.5), label=f"tb:{razor.sid}:{stray}:tp", reduce_only=True)
    reported(f"orphan bracket tb:{razor.sid}:{stray}:tp (trade unknown to the journal")

    conn = sqlite3.connect(world.home.root / "journal.sqlite")
    with conn:
        lost = conn.execute("SELECT trade_id FROM fills WHERE instrument = ? LIMIT 1", (ema.instrument,)).fetchone()[0]
        conn.execute("DELETE FROM fills WHERE trade_id = ?", (lost,))
    conn.close()
    reported(f"exchange fill(s) missing from the journal: ['{lost}']")

    world.sim.call("private/buy", instrument_name=ema.instrument, amount=10, type="market")
    reported("fills without a label of ours")
