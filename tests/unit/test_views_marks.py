"""Open positions valued at the latest mark, and when the live loop pushes them again (``engine/live/views.py``).

The live loop re-publishes an instrument's open positions with the newest mark price and floating PnL while any
is open, at most every ``interval_s``: these are the pure parts of that (no engine, no clock).
"""

from __future__ import annotations

import pytest

from tests.unit.test_tradebook import LIN, fill, long_trade
from tradebaas.domain import OrderRole, Side, Ticker
from tradebaas.engine.core.tradebook import apply_fill
from tradebaas.engine.live.views import MarkPushes, open_positions

INSTRUMENTS = {LIN.name: LIN}


def ticker(mark: float, ts_ms: int = 1_000) -> Ticker:
    return Ticker(LIN.name, ts_ms, mark, mark, mark)


def test_open_positions_are_valued_at_the_latest_mark_and_pending_entries_hold_none() -> None:
    pending = long_trade()
    filled = apply_fill(long_trade(), fill("f1", Side.BUY, 0.002, 50_000), LIN, OrderRole.ENTRY)
    rows = open_positions([pending, filled], INSTRUMENTS, {LIN.name: ticker(50_500)})
    assert len(rows) == 1
    row = rows[0]
    assert row["trade_id"] == filled.trade_id and row["mark_price"] == 50_500
    assert row["floating_pnl"] == pytest.approx(0.002 * 500)  # linear USDC perpetual: size x price move
    moved = open_positions([filled], INSTRUMENTS, {LIN.name: ticker(49_900)})[0]
    assert moved["floating_pnl"] == pytest.approx(0.002 * -100)
    assert open_positions([filled], INSTRUMENTS, {})[0]["floating_pnl"] == 0.0  # no mark yet: nothing to value


def test_mark_pushes_are_due_at_once_then_at_most_every_interval_per_instrument() -> None:
    pushes = MarkPushes(interval_s=0.5)
    assert pushes.due("A", 10.0) and pushes.due("B", 10.0)
    pushes.pushed("A", 10.0)
    assert not pushes.due("A", 10.1) and not pushes.due("A", 10.49)
    assert pushes.due("B", 10.1)  # instruments are independent
    assert pushes.due("A", 10.5)
    # ticks every 100 ms for 3 s: a push every 0.5 s, i.e. twice a second, never once per tick
    count = 0
    for i in range(30):
        now = 20.0 + i / 10
        if pushes.due("A", now):
            pushes.pushed("A", now)
            count += 1
    assert count == 6


def test_mark_pushes_refuse_a_non_positive_interval() -> None:
    with pytest.raises(ValueError):
        MarkPushes(0)
