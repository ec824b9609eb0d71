"""Swapping the strategy instance mid-backtest (``Swap``), the way the live runner upgrades code or changes config:
warm-up on the same context, position/brackets/counters kept, ``apply_to_open`` re-places brackets."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import pandas as pd
import pytest

from tradebaas.backtest.backtester import BacktestError, Swap, backtest
from tradebaas.backtest.data import load_default
from tradebaas.domain import Candle, Direction
from tradebaas.errors import UserError
from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, MoveStop, Param, StrategyContext
from tradebaas.strategies.params import ConfigError

T0 = 1_736_208_000_000  # 2025-01-07 00:00 UTC
M = 60_000
FLAT = (100_000.0, 100_010.0, 99_990.0, 100_000.0)


def frame(rows: list[tuple[float, float, float, float]], t0: int = T0) -> pd.DataFrame:
    idx = pd.to_datetime([t0 + i * M for i in range(len(rows))], unit="ms", utc=True)
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx).assign(volume=1.0)


def signals(result: Any) -> list[tuple[int, str, tuple[str, ...]]]:
    return [(d.ts_ms, d.signal, tuple(type(i).__name__ for i in d.intents)) for d in result.decisions]


class Timed(BaseStrategy):
    """Emits the intents scripted per candle *time* (so a fresh instance continues the script) and records every
    call: what it saw, in which order, on which context object."""

    name = "timed"
    params: ClassVar[tuple[Param, ...]] = (
        Param("stopLossPercent", float, 0.5, 0, 50),
        Param("takeProfitPercent", float, 0.65, 0, 100),
        Param("tag", str, "a"),
    )
    bracket_params: ClassVar[tuple[str, ...]] = ("stopLossPercent", "takeProfitPercent")
    script: ClassVar[dict[int, tuple]] = {}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.calls: list[tuple[str, int, bool, int]] = []  # (event, candle ts, warming_up, id(context))
        self.seen: list[StrategyContext] = []

    def on_start(self, context: StrategyContext) -> None:
        self.calls.append(("start", -1, context.warming_up, id(context)))

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        self.calls.append(("candle", candle.ts_ms, context.warming_up, id(context)))
        if context.warming_up:
            return Decision(candle.ts_ms, "none", {}, {}, ("warming up",), (), "warming up")
        self.seen.append(copy.deepcopy(context))
        intents = tuple(Enter(i.direction, i.notional_usd, self.config["stopLossPercent"],
                              self.config["takeProfitPercent"]) if isinstance(i, Enter) else i
                        for i in self.script.get(candle.ts_ms, ()))
        return Decision(candle.ts_ms, "long" if intents else "none", {}, {}, (self.config["tag"],), intents)


def ts(i: int) -> int:
    return T0 + i * M


@pytest.fixture(autouse=True)
def _no_script() -> Any:
    yield
    Timed.script = {}


def test_a_swap_to_the_same_class_and_config_changes_nothing() -> None:
    df = load_default().iloc[: 4 * 1440]
    at = int(df.index[2 * 1440 + 7].value // 1_000_000)
    plain = backtest("razor", df, decisions="all")
    swapped = backtest("razor", df, decisions="all", swaps=[Swap(at, "razor")])
    assert len(plain.trades) >= 20
    pd.testing.assert_frame_equal(plain.trades, swapped.trades)
    assert signals(plain) == signals(swapped)
    assert set(swapped.trade_segments.values()) == {0, 1}  # trades were entered on both sides of the swap


def test_a_swap_to_another_config_changes_decisions_from_its_candle_on_only() -> None:
    df = load_default().iloc[: 4 * 1440]
    at = int(df.index[2 * 1440].value // 1_000_000)
    plain = backtest("razor", df, decisions="all")
    swapped = backtest("razor", df, decisions="all", swaps=[Swap(at, "razor", {"rsiOversold": 45.0})])
    differ = [a[0] for a, b in zip(signals(plain), signals(swapped), strict=True) if a != b]
    assert differ, "the new config decided nothing differently"
    assert min(differ) >= at
    before = plain.trades[plain.trades.entry_time <= pd.Timestamp(at, unit="ms", tz="UTC")]
    pd.testing.assert_frame_equal(before, swapped.trades.iloc[: len(before)])
    # every trade entered by a decision after the swap is generation 1, before it generation 0
    for t in swapped.trades.itertuples():
        decided = t.entry_time.value // 1_000_000 - M
        assert swapped.trade_segments[t.trade_id] == (1 if decided >= at else 0)


def test_the_new_instance_warms_up_on_the_last_candles_of_the_same_context_then_starts_then_decides() -> None:
    old, new = Timed({"tag": "old"}), Timed({"tag": "new"})
    backtest(old, frame([FLAT] * 12), swaps=[Swap(ts(8), new, warmup_candles=3)])
    assert [c[1] for c in old.calls if c[0] == "candle"] == [ts(i) for i in range(8)]
    assert new.calls[:5] == [("candle", ts(5), True, new.calls[0][3]), ("candle", ts(6), True, new.calls[0][3]),
                             ("candle", ts(7), True, new.calls[0][3]), ("start", -1, False, new.calls[0][3]),
                             ("candle", ts(8), False, new.calls[0][3])]
    assert new.calls[0][3] == old.calls[-1][3]  # the same StrategyContext object


def test_position_brackets_and_counters_survive_a_swap() -> None:
    Timed.script = {ts(0): (Enter(Direction.LONG, 100.0, None, None),), ts(6): (Exit(),)}
    old, new = Timed({"stopLossPercent": 0.5}), Timed({"stopLossPercent": 0.2})
    r = backtest(old, frame([FLAT] * 10), swaps=[Swap(ts(3), new)])
    ctx = new.seen[0]  # what the new instance saw on its first decision
    assert ctx.position is not None and ctx.position.entry_price == 100_000.0
    assert ctx.position.stop_price == 99_500.0  # the old entry's bracket, not the new config's (99_800)
    assert ctx.trades_today == 1 and ctx.trading_day == (ts(3) + M) // 86_400_000
    (t,) = r.trades.itertuples()  # the new instance's Exit closed the old instance's position
    assert t.exit_reason == "exit" and t.exit_time == pd.Timestamp(ts(7), unit="ms", tz="UTC")
    assert r.trade_segments == {t.trade_id: 0}


def test_cooldown_started_before_a_swap_still_holds_after_it() -> None:
    class Cooling(Timed):
        def __init__(self, config: dict[str, Any] | None = None) -> None:
            super().__init__(config)
            self.cooldown_ms = 5 * M

    Timed.script = {ts(0): (Enter(Direction.LONG, 100.0, None, None),)}
    new = Timed({})
    backtest(Cooling({}), frame([FLAT] * 8), swaps=[Swap(ts(2), new)])
    assert new.seen[0].cooldown_until_ms == ts(1) + 5 * M


@pytest.mark.parametrize("apply_to_open", [True, False])
def test_apply_to_open_re_places_the_open_positions_brackets_from_its_entry(apply_to_open: bool) -> None:
    Timed.script = {ts(0): (Enter(Direction.LONG, 100.0, None, None),)}
    rows = [FLAT, FLAT, FLAT,
            (100_000.0, 100_010.0, 99_700.0, 100_000.0),  # swap candle: below the new stop, checked with the old
            (100_000.0, 100_010.0, 99_750.0, 100_000.0),  # reaches the new stop (99_800), not the old (99_500)
            FLAT]
    new = Timed({"stopLossPercent": 0.2, "takeProfitPercent": 1.0})
    r = backtest(Timed({}), frame(rows), swaps=[Swap(ts(3), new, apply_to_open=apply_to_open)])
    pos = new.seen[0].position
    assert pos is not None
    if apply_to_open:
        assert (pos.stop_price, pos.take_price) == (99_800.0, 101_000.0)
        (t,) = r.trades.itertuples()
        assert t.exit_reason == "sl" and t.exit_price == 99_800.0
        assert t.exit_time == pd.Timestamp(ts(4), unit="ms", tz="UTC")
    else:
        assert (pos.stop_price, pos.take_price) == (99_500.0, 100_650.0)
        assert r.trades.empty and r.open_position is not None


def test_apply_to_open_clears_break_even_so_the_new_config_can_move_the_stop_again() -> None:
    Timed.script = {ts(0): (Enter(Direction.LONG, 100.0, None, None),),
                    ts(1): (MoveStop(99_980.0, break_even=True),)}
    old, new = Timed({}), Timed({"stopLossPercent": 0.3})
    backtest(old, frame([FLAT] * 5), swaps=[Swap(ts(3), new, apply_to_open=True)])
    moved = old.seen[-1].position
    assert moved is not None and moved.break_even_done and moved.stop_price == 99_980.0
    pos = new.seen[0].position
    assert pos is not None and pos.stop_price == 99_700.0 and not pos.break_even_done


def test_swaps_turn_off_the_array_fast_path() -> None:
    df = load_default().iloc[:2000]
    at = int(df.index[1000].value // 1_000_000)
    plain = backtest("ema_cross", df)
    swapped = backtest("ema_cross", df, swaps=[Swap(at, "ema_cross", {"fast": 5, "slow": 13})])
    assert len(swapped.trades) > len(plain.trades)  # the fast path would have ignored the swap
    early = plain.trades[plain.trades.exit_time < pd.Timestamp(at, unit="ms", tz="UTC")]
    pd.testing.assert_frame_equal(early, swapped.trades.iloc[: len(early)])


def test_several_swaps_at_one_candle_apply_in_order_and_the_last_decides() -> None:
    a, b = Timed({"tag": "a"}), Timed({"tag": "b"})
    r = backtest(Timed({"tag": "x"}), frame([FLAT] * 5), decisions="all",
                 swaps=[Swap(ts(2) - 30_000, a), Swap(ts(2), b)])
    assert [d.reasons[0] for d in r.decisions] == ["x", "x", "b", "b", "b"]
    assert ("start", -1, False, a.calls[0][3]) in a.calls and not a.seen  # warmed up and started, never decided


def test_warmup_candles_limits_the_warm_up_before_start() -> None:
    s = Timed({})
    backtest(s, frame([FLAT] * 10), start=pd.Timestamp(ts(6), unit="ms", tz="UTC"), warmup_candles=2)
    assert [c[1] for c in s.calls if c[0] == "candle" and c[2]] == [ts(4), ts(5)]


@pytest.mark.parametrize("swaps, message", [
    ([Swap(ts(3), "razor"), Swap(ts(2), "razor")], "time order"),
    ([Swap(ts(3), "ema_cross", apply_to_open=True)], "bracket_params"),
    ([Swap(ts(3), Timed({}), {"tag": "b"})], "config was given with a strategy instance"),
    ([Swap(pd.Timestamp(ts(3), unit="ms"), "razor")], "must be an int"),
    ([(ts(3), "razor")], "must be a Swap"),
    ([Swap(ts(3), "razor", warmup_candles=-1)], "warmup_candles"),
    ([Swap(ts(3), "razor", {"stopLossPercent": -1})], "stopLossPercent"),
])
def test_bad_swaps_are_refused_before_the_run(swaps: list[Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        backtest(Timed({}), frame([FLAT] * 5), swaps=swaps)
    assert isinstance(info.value, BacktestError | ConfigError)
