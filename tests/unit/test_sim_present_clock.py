"""``--clock present``: the replay presented at wall-clock time (``sim/clock.py``), consistent candles and ticks,
and a clock that went back past the matching core's last tick (``feed.prime``)."""

from __future__ import annotations

from itertools import islice

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebaas.exchange.sim import marketdata as md
from tradebaas.exchange.sim.channels import ChannelRegistry
from tradebaas.exchange.sim.clock import DAY_MS, MINUTE_MS, SimClock, present_offset
from tradebaas.exchange.sim.faults import Faults
from tradebaas.exchange.sim.feed import MarketFeed
from tradebaas.exchange.sim.matching import SimExchange
from tradebaas.exchange.sim.public import PublicViews
from tradebaas.instruments import DEFAULT_INSTRUMENTS

DATA = md.synthetic(3, minutes=3 * 1440)
WALL = 1_780_000_123_456  # 2026-05-28, well after the data


@settings(max_examples=200, deadline=None)
@given(wall=st.integers(DATA.end_ms + 1, DATA.end_ms + 10**12),
       start=st.integers(DATA.start_ms, DATA.end_ms))
def test_the_offset_keeps_bars_whole_and_starts_the_replay_at_the_start_asked_for(wall: int, start: int) -> None:
    offset = present_offset(wall, DATA.start_ms, DATA.end_ms, start)
    in_a_day = start + (wall - start) % DAY_MS
    if in_a_day <= DATA.end_ms:  # whole days: every bar and the time of day are the data's
        assert offset % DAY_MS == 0 and wall - offset == in_a_day
    else:  # the data ends sooner: whole minutes
        assert offset % MINUTE_MS == 0 and start <= wall - offset < start + MINUTE_MS


def test_a_saved_offset_is_kept_while_the_data_lasts_then_the_replay_starts_again() -> None:
    first = present_offset(WALL, DATA.start_ms, DATA.end_ms, DATA.default_start_ms())
    later = WALL + 36 * 3_600_000  # down for a day and a half: the market moved on by that much
    assert present_offset(later, DATA.start_ms, DATA.end_ms, DATA.default_start_ms(), first) == first
    much_later = WALL + 10 * 86_400_000  # past the end of three days of data
    again = present_offset(much_later, DATA.start_ms, DATA.end_ms, DATA.default_start_ms(), first)
    assert again != first and DATA.default_start_ms() <= much_later - again < DATA.default_start_ms() + DAY_MS


def test_shifted_data_is_the_same_market_at_other_times() -> None:
    offset = present_offset(WALL, DATA.start_ms, DATA.end_ms, DATA.default_start_ms())
    shifted = DATA.shifted(offset)
    assert (shifted.start_ms, shifted.end_ms) == (DATA.start_ms + offset, DATA.end_ms + offset)
    start = DATA.default_start_ms()
    old = list(islice(DATA.ticks_from(start), 500))
    new = list(islice(shifted.ticks_from(start + offset), 500))
    assert [(t.ts_ms + offset, t.price, t.amount_btc, t.seq, t.continuous) for t in old] == \
        [(t.ts_ms, t.price, t.amount_btc, t.seq, t.continuous) for t in new]
    for res in (1, 5, 60, 1440):  # every resolution's bars are the data's own, only later
        bars = md.ChartBook(shifted).bars(start + offset - DAY_MS, start + offset, res, start + offset)
        want = md.ChartBook(DATA).bars(start - DAY_MS, start, res, start)
        assert [(b.tick - offset, b.open, b.high, b.low, b.close) for b in bars] == \
            [(b.tick, b.open, b.high, b.low, b.close) for b in want]
    with pytest.raises(ValueError):
        DATA.shifted(offset + 1)


def test_the_tick_sample_shifts_too() -> None:
    sample = md.load(md.Path(md.__file__).resolve().parents[2] / "data" / md.TICK_SAMPLE)
    shifted = sample.shifted(5 * MINUTE_MS)
    a, b = next(iter(sample.ticks_from(0))), next(iter(shifted.ticks_from(0)))
    assert (b.ts_ms, b.price, b.bid, b.ask) == (a.ts_ms + 5 * MINUTE_MS, a.price, a.bid, a.ask)


def test_a_core_ahead_of_the_clock_follows_the_clock_from_a_jump() -> None:
    """A state saved in the present, replayed with the data's own timestamps: the core must not wait for 2026."""
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"BTC": 10.0})
    views = PublicViews(dict(DEFAULT_INSTRUMENTS), DATA)
    now = DATA.default_start_ms()
    for m in ex.markets.values():
        m.ts_ms = WALL  # what the core last saw in present mode
    feed = MarketFeed(ex, DATA, SimClock(now, 1.0, DATA.end_ms), Faults(), views, ChannelRegistry(DEFAULT_INSTRUMENTS),
                      lambda: None)
    feed.prime()
    for m in ex.markets.values():
        assert now - MINUTE_MS < m.ts_ms <= now and m.last_price > 0


def test_the_present_clock_is_the_hosts_clock_however_long_after_construction_it_is_first_read() -> None:
    host = [WALL / 1000]
    clock = SimClock.wall(now=lambda: host[0])
    host[0] += 4.25  # loading the data and the saved state took seconds before the server first asks the time
    assert clock.now_ms() == int(host[0] * 1000)
    host[0] += 60.0
    assert clock.now_ms() == int(host[0] * 1000)
    capped = SimClock.wall(end_ms=int(WALL) - 1, now=lambda: host[0])
    assert capped.now_ms() == int(WALL) - 1  # the replay still freezes at the end of the data
