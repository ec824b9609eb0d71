"""Live vs backtest (``tradebaas.analytics.compare``): constructed live rows against a real backtest; every kind of
difference, and which are explained (docs/strategies.md, "Live vs backtest")."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pandas as pd
import pytest

import tradebaas as tb
from tradebaas import fillmodel
from tradebaas.analytics.compare import (
    ONE_TICK,
    Comparison,
    ComparisonError,
    backtest_rows,
    compare,
    compare_runs,
    format_summary,
)
from tradebaas.backtest.backtester import BacktestResult, backtest
from tradebaas.backtest.data import load_default
from tradebaas.backtest.replay import Segment, replay_live
from tradebaas.domain import Candle, Direction, Liquidity
from tradebaas.instruments import get_instrument
from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.protocol import Param as RpcParam
from tradebaas.rpc.protocol import Registry
from tradebaas.rpc.server import RpcServer
from tradebaas.strategies.base import BaseStrategy, Decision, Enter, MoveStop, Param, StrategyContext
from tradebaas.strategies.razor import Razor

INSTRUMENT = "BTC_USDC-PERPETUAL"
INST = get_instrument(INSTRUMENT)
M = 60_000
V1 = "c0ffee" * 10 + "beef"


# -- a real backtest of Razor over a day of the bundled candles, and live rows made from it ----------------------


@pytest.fixture(scope="module")
def bt() -> BacktestResult:
    df = load_default().iloc[: 2 * 1440]
    since = int(df.index[1440].value // 1_000_000)
    r = replay_live(df, [Segment(since, Razor, {"instrument": INSTRUMENT}, V1, 1)], INSTRUMENT, since_ms=since,
                    until_ms=since + 1440 * M, warmup_candles=240)
    assert len(r.trades) >= 8 and {"sl", "tp"} <= set(r.trades.exit_reason)
    return r


def model_fee(row: dict[str, Any]) -> float:
    exit_liq = Liquidity.MAKER if row["exit_reason"] == "tp" else Liquidity.TAKER
    return (fillmodel.fee(INST, row["amount"], row["entry_price"], Liquidity.TAKER)
            + fillmodel.fee(INST, row["amount"], row["exit_price"], exit_liq))


def live_like(result: BacktestResult) -> list[dict[str, Any]]:
    """TradeRows as the engine would journal the backtest's trades: fills a little after the minute's open."""
    rows = []
    for i, r in enumerate(backtest_rows(result)):
        row = dict(r, trade_id=f"L{i}", strategy_id="s1", strategy_name="razor", code_version=V1, config_version=1,
                   entry_ts_ms=r["entry_ts_ms"] + 150)
        if r["exit_ts_ms"] is not None:
            row["exit_ts_ms"] = r["exit_ts_ms"] + 20_000
        rows.append(row)
    return rows


def decisions_of(result: BacktestResult) -> list[dict[str, Any]]:
    """The journal's decision events for the backtest's decisions (the engine's shape: a payload per event)."""
    return [{"kind": "decision", "strategy_id": "s1", "ts_ms": d.ts_ms + M, "payload": d.as_dict()}
            for d in result.decisions]


def closed(rows: list[dict[str, Any]], reason: str | None = None) -> int:
    """Index of a closed live row (with that exit reason) lasting a few candles."""
    return next(i for i, r in enumerate(rows) if r["state"] == "closed" and (reason is None or r["exit_reason"] == reason)
                and r["exit_ts_ms"] - r["entry_ts_ms"] >= 3 * M)


def run(bt: BacktestResult, live: list[dict[str, Any]], decisions: list[dict[str, Any]] | None = None,
        not_running: list[tuple[int, int | None, str]] | None = None) -> Comparison:
    return compare_runs(live, decisions_of(bt) if decisions is None else decisions, bt, instrument=INSTRUMENT,
                        not_running=not_running or [], strategy_id="s1")


def kinds(c: Comparison) -> list[tuple[str, bool]]:
    return [(d.kind, d.explained) for d in c.all_differences]


def test_the_same_trades_and_decisions_give_no_differences(bt: BacktestResult) -> None:
    c = run(bt, live_like(bt))
    n = len(backtest_rows(bt))
    assert c.summary == {"trades_live": n, "trades_backtest": n, "matched": n, "differences": 0, "unexplained": 0}
    assert c.decisions_live == c.decisions_backtest == 1440 and not c.differing_decisions
    assert c.candles == 1440 and c.name == "razor"


def test_an_entry_one_tick_off_is_explained_and_so_is_the_fee_it_changes(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["entry_price"] += INST.tick_size
    live[i]["fees"] = model_fee(live[i])
    c = run(bt, live)
    assert kinds(c) == [("entry_price", True), ("fee", True)]
    entry, fee = c.all_differences
    assert entry.explanation == ONE_TICK and entry.trade_id == live[i]["trade_id"]
    assert "follows from the explained entry_price" in fee.explanation
    assert c.summary["unexplained"] == 0 and c.summary["differences"] == 2


def test_an_entry_three_ticks_off_is_unexplained_and_so_is_its_fee(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["entry_price"] += 3 * INST.tick_size
    live[i]["fees"] = model_fee(live[i])
    c = run(bt, live)
    assert kinds(c) == [("entry_price", False), ("fee", False)]
    assert "3.0 ticks apart" in c.all_differences[0].explanation


def test_an_exit_filled_a_tick_away_is_explained(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live, "sl")
    live[i]["exit_price"] -= INST.tick_size
    live[i]["fees"] = model_fee(live[i])
    c = run(bt, live)
    assert kinds(c) == [("exit_price", True), ("fee", True)]


def test_fees_the_fill_model_does_not_give_for_the_live_fills_are_unexplained(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["fees"] *= 2
    c = run(bt, live)
    assert kinds(c) == [("fee", False)]
    assert "not the fill model's" in c.all_differences[0].explanation


def test_a_trade_only_the_backtest_made_is_extra_and_explained_only_while_live_was_not_running(
        bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    gone = live.pop(i)
    c = run(bt, live)
    assert kinds(c) == [("extra_in_backtest", False)]
    assert "live decided" in c.all_differences[0].explanation
    stopped = [(gone["entry_ts_ms"] - 5 * M, gone["entry_ts_ms"] + M, "stopped by the user")]
    c = run(bt, live, not_running=stopped)
    assert kinds(c) == [("extra_in_backtest", True)]
    assert "not running (stopped by the user" in c.all_differences[0].explanation
    assert c.summary["trades_live"] + 1 == c.summary["trades_backtest"]


def test_a_trade_only_live_made_is_missing_in_the_backtest(bt: BacktestResult) -> None:
    live = live_like(bt)
    rows = sorted(backtest_rows(bt), key=lambda r: r["entry_ts_ms"])
    gap = max(((a["exit_ts_ms"], b["entry_ts_ms"]) for a, b in zip(rows, rows[1:], strict=False)),
              key=lambda g: g[1] - g[0])
    at = gap[0] + 3 * M  # the backtest is flat here
    assert gap[1] - at >= 3 * M
    direction = next(d for d in ("long", "short")  # no backtest entry that way within 5 candles: nothing to pair
                     if not any(r["direction"] == d and abs(r["entry_ts_ms"] - at) <= 5 * M for r in rows))
    extra = dict(live[0], trade_id="Lx", direction=direction, entry_ts_ms=at + 200, exit_ts_ms=at + 2 * M + 10,
                 exit_reason="sl")
    c = run(bt, live + [extra])
    assert kinds(c) == [("missing_in_backtest", False)]
    d = c.all_differences[0]
    assert d.trade_id == "Lx" and d.live["direction"] == direction and d.backtest is None
    assert "the backtest decided none" in d.explanation


def test_the_other_direction_at_the_same_minute_is_a_direction_difference(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["direction"] = "short" if live[i]["direction"] == "long" else "long"
    c = run(bt, live)
    assert kinds(c) == [("direction", False)]
    assert c.summary["matched"] == len(live)


def test_a_later_entry_is_an_entry_minute_difference(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["entry_ts_ms"] += 2 * M
    c = run(bt, live)
    assert kinds(c) == [("entry_minute", False)]  # no entry_price: entries on other candles differ by the market
    d = c.all_differences[0]
    assert d.backtest - d.live == -2 * M and c.summary["matched"] == len(live)


def test_a_later_entry_because_live_was_not_running_is_explained_and_so_is_the_exit_that_follows(
        bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    back = live[i]["entry_ts_ms"]
    live[i].update(entry_ts_ms=back + M, exit_ts_ms=live[i]["exit_ts_ms"] + 2 * M, exit_reason="exit")
    live[i]["fees"] = model_fee(live[i])
    c = run(bt, live, not_running=[(back - 3 * M, back + 30_000, "engine down")])
    assert [k for k, _ in kinds(c)][:3] == ["entry_minute", "exit_minute", "exit_reason"]
    assert all(e for _, e in kinds(c)), format_summary(c)
    assert "not running" in c.all_differences[0].explanation


def test_another_exit_is_unexplained_unless_live_was_not_running_during_the_trade(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live, "sl")
    live[i].update(exit_ts_ms=live[i]["exit_ts_ms"] + 3 * M, exit_reason="exit")
    c = run(bt, live)
    assert kinds(c) == [("exit_minute", False), ("exit_reason", False)]
    stop = live[i]["entry_ts_ms"] + M
    c = run(bt, live, not_running=[(stop, stop + 2 * M, "error")])
    assert kinds(c) == [("exit_minute", True), ("exit_reason", True)]
    assert "could not move its stop or exit" in c.all_differences[0].explanation


def test_a_differing_decision_with_the_same_positions_is_unexplained(bt: BacktestResult) -> None:
    decisions = decisions_of(bt)
    rows = backtest_rows(bt)
    flat = next(e for e in decisions[30:] if not e["payload"]["intents"] and not any(
        r["entry_ts_ms"] <= e["payload"]["ts_ms"] + M <= (r["exit_ts_ms"] or 1 << 62) + M for r in rows))
    flat["payload"] = dict(flat["payload"], signal="long")
    c = run(bt, live_like(bt), decisions)
    assert kinds(c) == [("decision", False)]
    (d,) = c.all_differences
    assert d.ts_ms == flat["payload"]["ts_ms"] and d.live == {"signal": "long", "intents": []}
    assert "same position on both sides" in d.explanation
    assert c.differing_decisions == [{"ts_ms": d.ts_ms, "live": d.live, "backtest": d.backtest}]


def test_consequences_of_a_not_running_period_are_explained_with_their_cause(bt: BacktestResult) -> None:
    """The backtest entered X while live was stopped, so it was still in X when live, running again, entered L: L is
    missing in the backtest because of X, which is explained, so L is too."""
    live = live_like(bt)
    i = closed(live)
    x = live.pop(i)
    other = "short" if x["direction"] == "long" else "long"
    lt = dict(x, trade_id="Lc", direction=other, entry_ts_ms=x["entry_ts_ms"] + 2 * M,
              exit_ts_ms=x["entry_ts_ms"] + 2 * M + 30_000)
    stopped = [(x["entry_ts_ms"] - 10 * M, x["entry_ts_ms"] + M, "stopped by the user")]
    c = run(bt, live + [lt], not_running=stopped)
    assert kinds(c) == [("extra_in_backtest", True), ("missing_in_backtest", True)]
    assert "the backtest side was still in trade" in c.all_differences[1].explanation
    c = run(bt, live + [lt])  # without the stop the cause is unexplained, and so is its consequence
    assert kinds(c) == [("extra_in_backtest", False), ("missing_in_backtest", False)]
    assert "follows from trade" in c.all_differences[1].explanation


# -- the one-tick bracket edges, on scripted candles --------------------------------------------------------------


T0 = 1_736_208_000_000
FLAT = (100_000.0, 100_010.0, 99_990.0, 100_000.0)


class Scripted(BaseStrategy):
    name = "scripted"
    params: ClassVar[tuple[Param, ...]] = ()
    script: ClassVar[dict[int, tuple]] = {}

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        intents = self.script.get(candle.ts_ms, ()) if not context.warming_up else ()
        return Decision(candle.ts_ms, "long" if any(isinstance(i, Enter) for i in intents) else "none", {}, {}, (),
                        intents)


def scripted(rows: list[tuple[float, float, float, float]], script: dict[int, tuple]) -> BacktestResult:
    idx = pd.to_datetime([T0 + i * M for i in range(len(rows))], unit="ms", utc=True)
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx).assign(volume=1.0)
    Scripted.script = script
    try:
        return backtest(Scripted({}), df, instrument=INSTRUMENT, decisions="all")
    finally:
        Scripted.script = {}


def live_trade(entry: float, exit_: float, exit_minute: int, reason: str = "sl") -> dict[str, Any]:
    row = {"trade_id": "L1", "strategy_id": "s1", "instrument": INSTRUMENT, "direction": "long", "state": "closed",
           "amount": 0.001, "entry_price": entry, "exit_price": exit_, "entry_ts_ms": T0 + M + 120,
           "exit_ts_ms": T0 + exit_minute * M + 30_000, "exit_reason": reason, "pnl": 0.0, "currency": "USDC"}
    row["fees"] = model_fee(row)
    return row


@pytest.mark.parametrize("low, explained", [(99_500.0, True), (99_300.0, False)])
def test_an_exit_on_a_candle_that_passed_the_bracket_by_at_most_a_tick_is_explained_by_the_tick_entry(
        low: float, explained: bool) -> None:
    # backtest: long filled at 100_000 (SL 99_500); live filled a tick lower (SL 99_499), which the 3rd candle missed
    rows = [FLAT, FLAT, FLAT, (100_000.0, 100_010.0, low, 100_000.0), FLAT, FLAT,
            (100_000.0, 100_010.0, 99_400.0, 99_450.0), FLAT]
    result = scripted(rows, {T0: (Enter(Direction.LONG, 100.0, 0.5, 0.65),)})
    assert result.trades.exit_price.tolist() == [99_500.0] and result.trades.exit_reason.tolist() == ["sl"]
    c = compare_runs([live_trade(99_999.0, 99_499.0, 6)], [], result, instrument=INSTRUMENT)
    assert ("entry_price", True) in kinds(c)
    exits = [d for d in c.all_differences if d.kind.startswith("exit")]
    assert [d.kind for d in exits] == ["exit_minute", "exit_price"]
    assert all(d.explained is explained for d in exits)
    if explained:
        assert "by 0 tick(s)" in exits[0].explanation
        assert kinds(c)[-1] == ("fee", True)


def test_a_stop_move_on_one_side_only_while_entries_are_a_tick_apart_is_explained_and_so_is_the_exit() -> None:
    rows = [FLAT, FLAT, FLAT, FLAT, (100_000.0, 100_010.0, 99_900.0, 99_950.0), FLAT,
            (100_000.0, 100_010.0, 99_400.0, 99_450.0), FLAT]
    result = scripted(rows, {T0: (Enter(Direction.LONG, 100.0, 0.5, 0.65),),
                             T0 + 2 * M: (MoveStop(100_001.0, break_even=True),)})
    assert result.trades.exit_reason.tolist() == ["sl"] and result.trades.exit_price.tolist() == [100_000.0]
    live_decisions = [d.as_dict() for d in result.decisions]
    live_decisions[2]["intents"] = []  # live: the break-even trigger (from its entry, a tick lower) was not reached
    c = compare_runs([live_trade(99_999.0, 99_499.0, 6)], live_decisions, result, instrument=INSTRUMENT)
    by_kind = {d.kind: d for d in c.all_differences}
    assert by_kind["decision"].explained and "stop move is computed from the entry" in by_kind["decision"].explanation
    assert by_kind["exit_minute"].explained and "on one side only" in by_kind["exit_minute"].explanation
    assert c.summary["unexplained"] == 0, format_summary(c)


# -- the object: views, JSON, text, tb.compare over a real RPC server ------------------------------------------


def test_views_json_and_text(bt: BacktestResult) -> None:
    live = live_like(bt)
    i = closed(live)
    live[i]["entry_price"] += 3 * INST.tick_size
    live[i]["fees"] = model_fee(live[i])
    gone = live.pop(closed(live, "tp"))
    c = compare_runs(live, decisions_of(bt), bt, instrument=INSTRUMENT, strategy_id="s1",
                     not_running=[(gone["entry_ts_ms"] - M, gone["entry_ts_ms"] + M, "engine down")],
                     segments=[Segment(0, Razor, {}, V1, 1)])
    data = c.to_json()
    text = json.dumps(data, allow_nan=False)  # what the RPC sends: plain JSON, no NaN
    again = Comparison.from_json(json.loads(text))
    assert again.to_json() == data
    assert data["segments"] == [{"from_ts_ms": 0, "code_version": V1, "config_version": 1, "config": {}}]
    assert data["summary"] == {"trades_live": len(live), "trades_backtest": len(live) + 1, "matched": len(live),
                               "differences": 3, "unexplained": 2}

    trades = again.trades
    assert len(trades) == len(live) + 1
    assert {"live_entry_price", "backtest_entry_price", "live_code_version", "differences"} <= set(trades.columns)
    assert trades["backtest_code_version"].dropna().unique().tolist() == [V1]
    assert str(trades["live_entry_time"].dt.tz) == "UTC"
    diffs = again.differences
    assert diffs["kind"].tolist() == [d.kind for d in again.all_differences]
    assert sorted(diffs["kind"]) == ["entry_price", "extra_in_backtest", "fee"]
    assert [d.kind for d in again.unexplained] == ["entry_price", "fee"]

    html = again._repr_html_()
    assert "trades_live" in html and "extra_in_backtest" in html and "engine down" in html
    lines = format_summary(again).splitlines()
    assert lines[1] == f"trades: live {len(live)}, backtest {len(live) + 1}, matched {len(live)}"
    assert lines[3] == "differences: 3, unexplained: 2"
    assert len(lines) == 6 and "entry_price trade L" in lines[4] and "fee" in lines[5]


@pytest.mark.parametrize("bad, message", [
    ([], "expected an object"),
    ({"strategy_id": "s1"}, "missing trades, decisions, differences"),
    ({"strategy_id": "s1", "trades": [], "decisions": {}, "differences": [{"kind": "fee"}]}, "not a Difference"),
    ({"strategy_id": "s1", "trades": {}, "decisions": [], "differences": []}, "decisions must be an object"),
])
def test_a_malformed_answer_is_one_clear_error(bad: Any, message: str) -> None:
    with pytest.raises(ComparisonError, match=message):
        Comparison.from_json(bad)


def test_an_unknown_instrument_is_one_clear_error(bt: BacktestResult) -> None:
    with pytest.raises(ComparisonError, match="NOPE"):
        compare_runs([], [], bt, instrument="NOPE")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def engine_answering(bt: BacktestResult) -> Iterator[tuple[EngineClient, list[dict[str, Any]]]]:
    """A real RPC server whose ``strategy.compare`` answers a real comparison, and a client connected to it."""
    asked: list[dict[str, Any]] = []

    def strategy_compare(id: str, since: int | None = None, until: int | None = None) -> Any:
        asked.append({"id": id, "since": since, "until": until})
        return compare_runs(live_like(bt), decisions_of(bt), bt, instrument=INSTRUMENT, strategy_id=id).to_json()

    reg = Registry()
    reg.add("strategy.compare", strategy_compare, {"id": RpcParam(str), "since": RpcParam(int, default=None, nullable=True),
                                                   "until": RpcParam(int, default=None, nullable=True)})
    lt = LoopThread()
    srv = RpcServer(reg, "test-token-0123456789")
    lt.run(srv.start())
    client = EngineClient(url=f"ws://127.0.0.1:{srv.port}/", token="test-token-0123456789", timeout=10)
    try:
        yield client, asked
    finally:
        client.close()
        lt.run(srv.stop())
        lt.close()


def test_tb_compare_asks_the_engine_and_wraps_its_answer(engine_answering: Any) -> None:
    eng, asked = engine_answering
    c = tb.compare(eng, "s1", since="2025-01-08", until=1_736_380_800_000)
    assert isinstance(c, Comparison) and c.strategy_id == "s1" and c.summary["differences"] == 0
    assert asked == [{"id": "s1", "since": 1_736_294_400_000, "until": 1_736_380_800_000}]
    compare(eng, "s1")
    assert asked[-1] == {"id": "s1", "since": None, "until": None}
    with pytest.raises(ComparisonError, match="since must be a time"):
        compare(eng, "s1", since="not a time")
    with pytest.raises(ComparisonError, match="strategy id"):
        compare(eng, "")
