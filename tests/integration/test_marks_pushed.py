"""Numbers that move: while a position is open the engine pushes it on ``positions`` with the latest mark price
and floating PnL (about twice a second), without anyone polling; nothing is pushed for it once it is flat.

Issue 14: "a running strategy's floating PnL stayed at +0.00 for three minutes while the CLI showed it moving" --
the panel only heard of a position when it was opened or changed. Real simulator and engine processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import wait_for
from tests.integration.conftest import EngineProc, SimProc
from tests.integration.test_live_loop import RAZOR_HOLD, start_razor
from tradebaas.home import Home


class Recorder:
    """Events of one channel, with the (monotonic) time each arrived, from the client's callback thread."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, data: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((time.monotonic(), dict(data)))

    def of(self, trade_id: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, e) for t, e in self.events if e.get("trade_id") == trade_id and t >= since]


def test_floating_pnl_is_pushed_and_changes_while_a_position_is_open(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    positions = Recorder()
    c.subscribe("positions", positions)
    sid = start_razor(c, RAZOR_HOLD)["id"]  # wide brackets: the position stays open for a while
    opened = wait_for(lambda: next((e for _t, e in positions.events if e.get("strategy_id") == sid
                                    and float(e.get("amount") or 0) > 0), None),
                      timeout=120, what="razor's position to open")
    trade_id = opened["trade_id"]

    # Watch the next few seconds: pushes keep coming (>= 1/s) and the floating PnL follows the mark.
    since = time.monotonic()
    wait_for(lambda: len({e["floating_pnl"] for _t, e in positions.of(trade_id, since)}) >= 3, timeout=20,
             what="three different floating PnL values pushed for the open position")
    window = positions.of(trade_id, since)
    if all(float(e["amount"]) > 0 for _t, e in window):  # (the position may close meanwhile: then it is over)
        times = [t for t, _e in window]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) < 1.5, f"a gap of {max(gaps):.2f}s between two pushes of an open position"
        assert len(window) <= 4 * (times[-1] - since) + 4, "pushed far more often than twice a second"
    for _t, e in window:
        assert {"mark_price", "floating_pnl", "entry_price", "stop_price", "take_price", "currency"} <= set(e)
    # what was pushed is what the engine answers when asked
    last = window[-1][1]
    assert last["mark_price"] and last["entry_price"] and last["currency"] == "USDC"


def test_no_mark_pushes_while_flat(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    positions = Recorder()
    tickers = Recorder()
    c.subscribe("positions", positions)
    # never enters (RSI is never below 0 nor above 100), but subscribes to the market like any strategy
    start_razor(c, {"rsiOversold": 0, "rsiOverbought": 100})
    c.subscribe("ticker.BTC_USDC-PERPETUAL", tickers)
    wait_for(lambda: len(tickers.events) >= 12, timeout=30, what="three seconds of tickers")
    assert positions.events == []
