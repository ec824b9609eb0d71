"""replay_live: the engine's recorded candles backtested with the live strategy's code and config versions."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebaas.backtest.backtester import BacktestError, Swap, backtest
from tradebaas.backtest.data import load_default
from tradebaas.backtest.replay import Segment, replay_live
from tradebaas.strategies.razor import Razor

INSTRUMENT = "BTC_USDC-PERPETUAL"
CFG = {"instrument": INSTRUMENT}
V1, V2 = "a" * 64, "b" * 64


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return load_default().iloc[: 3 * 1440]


def ms(df: pd.DataFrame, i: int) -> int:
    return int(df.index[i].value // 1_000_000)


def test_one_segment_is_the_backtest_the_engine_would_run(candles: pd.DataFrame) -> None:
    since, until = ms(candles, 1440), ms(candles, 2 * 1440)
    r = replay_live(candles, [Segment(since, Razor, CFG, V1, 1)], INSTRUMENT, since_ms=since, until_ms=until,
                    warmup_candles=240)
    ref = backtest("razor", candles.iloc[1440 - 240: 2 * 1440], config=CFG, start=candles.index[1440],
                   decisions="all")
    assert len(ref.trades) >= 5
    pd.testing.assert_frame_equal(r.trades.drop(columns=["code_version", "config_version"]), ref.trades)
    assert set(r.trades["code_version"]) == {V1} and set(r.trades["config_version"]) == {1}
    assert r.candles.index[0] == candles.index[1440] and r.candles.index[-1] == candles.index[2 * 1440 - 1]
    assert len(r.decisions) == 1440  # every decision kept, for the candle-by-candle comparison


def test_later_segments_are_swaps_and_label_the_trades_they_enter(candles: pd.DataFrame) -> None:
    since, change, until = ms(candles, 1440), ms(candles, 1440 + 720), ms(candles, 3 * 1440 - 1) + 60_000
    new = dict(CFG, rsiOversold=45.0)
    segments = [Segment(since - 3_600_000, Razor, CFG, V1, 1), Segment(change, Razor, new, V1, 2)]
    r = replay_live(candles, segments, INSTRUMENT, since_ms=since, until_ms=until, warmup_candles=240)
    ref = backtest("razor", candles.iloc[1440 - 240:], config=CFG, start=candles.index[1440], decisions="all",
                   swaps=[Swap(change, "razor", new)], warmup_candles=240)
    pd.testing.assert_frame_equal(r.trades.drop(columns=["code_version", "config_version"]), ref.trades)
    decided = r.trades["entry_time"].astype("int64") // 1000 - 60_000  # the entry decision's candle (us -> ms)
    assert (r.trades["config_version"] == (decided >= change).map({True: 2, False: 1})).all()
    assert set(r.trades["config_version"]) == {1, 2}


def test_the_segment_in_force_at_since_starts_the_replay(candles: pd.DataFrame) -> None:
    since, until = ms(candles, 1440), ms(candles, 2 * 1440)
    old = Segment(ms(candles, 10), Razor, dict(CFG, rsiOversold=30.0), V1, 1)
    current = Segment(ms(candles, 100), Razor, CFG, V2, 2)
    r = replay_live(candles, [old, current], INSTRUMENT, since_ms=since, until_ms=until, warmup_candles=240)
    assert r.config["rsiOversold"] == Razor(CFG).config["rsiOversold"]
    assert set(r.trades["code_version"]) == {V2}


def test_the_open_position_at_the_end_has_its_versions(candles: pd.DataFrame) -> None:
    since = ms(candles, 1440)
    for end in range(1440 + 60, 3 * 1440, 7):  # find a cut with a position open
        r = replay_live(candles, [Segment(since, Razor, CFG, V2, 3)], INSTRUMENT, since_ms=since,
                        until_ms=ms(candles, end), warmup_candles=240)
        if r.open_position is not None:
            assert r.versions_of(r.open_position.trade_id) == (V2, 3)
            return
    pytest.fail("no cut with an open position")


def test_apply_to_open_for_a_class_without_bracket_params_changes_nothing_as_live(candles: pd.DataFrame) -> None:
    from tradebaas.strategies.ema_cross import EmaCross

    since, change, until = ms(candles, 1440), ms(candles, 1440 + 300), ms(candles, 1440 + 600)
    segs = [Segment(since, EmaCross, {}, V1, 1), Segment(change, EmaCross, {}, V1, 2, apply_to_open=True)]
    r = replay_live(candles, segs, INSTRUMENT, since_ms=since, until_ms=until, warmup_candles=240)
    plain = replay_live(candles, segs[:1], INSTRUMENT, since_ms=since, until_ms=until, warmup_candles=240)
    pd.testing.assert_frame_equal(r.trades.drop(columns="config_version"), plain.trades.drop(columns="config_version"))


@pytest.mark.parametrize("segments, since, until, message", [
    ([], 1440, 2000, "at least one segment"),
    ([Segment(5, Razor, CFG, V1, 1), Segment(4, Razor, CFG, V1, 2)], 1440, 2000, "time order"),
    ([Segment(0, Razor, CFG, V1, 1)], 2000, 1440, "empty period"),
    ([Segment(0, Razor, CFG, V1, 1)], 10 * 1440, 11 * 1440, "no candles between"),
])
def test_bad_input_is_one_clear_error(candles: pd.DataFrame, segments: list[Segment], since: int, until: int,
                                      message: str) -> None:
    t0 = ms(candles, 0)
    with pytest.raises(BacktestError, match=message):
        replay_live(candles, segments, INSTRUMENT, since_ms=t0 + since * 60_000, until_ms=t0 + until * 60_000,
                    warmup_candles=240)
