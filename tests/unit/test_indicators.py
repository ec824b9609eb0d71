"""The incremental indicators equal the razor.md formulas computed directly, candle by candle, on real data."""

from __future__ import annotations

import math
import statistics

import pytest

from tradebaas.backtest.data import load_default
from tradebaas.strategies.indicators import EMA, RSI, ATRPercent, Compression, Momentum, Pullback, Volatility

N = 600


@pytest.fixture(scope="module")
def bars() -> list[tuple[float, float, float]]:
    df = load_default().iloc[:N]
    return list(zip(df["high"].tolist(), df["low"].tolist(), df["close"].tolist(), strict=True))


# --- naive, straight from the spec ----------------------------------------------------------------------------


def naive_ema(c: list[float], n: int) -> float | None:
    if len(c) < n:
        return None
    ema = sum(c[:n]) / n
    for x in c[n:]:
        ema += (x - ema) * 2 / (n + 1)
    return ema


def naive_rsi(c: list[float], n: int = 14) -> float | None:
    if len(c) < n + 1:
        return None
    d = [c[i] - c[i - 1] for i in range(len(c) - n, len(c))]
    g = sum(max(x, 0) for x in d) / n
    l_ = sum(max(-x, 0) for x in d) / n
    return 100.0 if l_ == 0 else 100 - 100 / (1 + g / l_)


def naive_vol(c: list[float]) -> float | None:
    if len(c) < 2:
        return None
    w = c[-20:]
    m = sum(w) / len(w)
    return max(statistics.pstdev(w) / m * 100, (max(w) - min(w)) / m * 100, 0.01)


def naive_mom(c: list[float]) -> float | None:
    return None if len(c) < 5 else (c[-1] - c[-5]) / c[-5] * 100


def naive_atr(h: list[float], l_: list[float], c: list[float]) -> float | None:
    if len(c) < 15:
        return None
    trs = [max(h[i] - l_[i], abs(h[i] - c[i - 1]), abs(l_[i] - c[i - 1])) for i in range(len(c) - 14, len(c))]
    return sum(trs) / 14 / c[-1] * 100


def naive_pullback(c: list[float], pct: float) -> bool:
    if len(c) < 20:
        return False
    w = c[-10:]
    start, end = w[0], w[-1]
    move = end - start
    if abs(move) < 0.001 * start:
        return False
    if move > 0:
        return (max(w) - end) / (max(w) - start) >= pct
    return (end - min(w)) / (start - min(w)) >= pct


def naive_compression(h: list[float], l_: list[float]) -> bool | None:
    if len(h) < 12:
        return None
    r = [h[i] - l_[i] for i in range(len(h) - 12, len(h))]
    return r[-1] < 0.6 * (sum(r) / 12)


def close_enough(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("period", [8, 9, 21])
def test_ema_matches_sma_seeded_formula_on_real_candles(bars, period):
    ema, closes = EMA(period), []
    for _, _, c in bars:
        closes.append(c)
        ema.update(c)
        assert ema.ready == (len(closes) >= period)
        assert close_enough(ema.value, naive_ema(closes, period))


def test_rsi_matches_simple_average_formula_and_is_ready_at_15_closes(bars):
    rsi, closes = RSI(14), []
    for _, _, c in bars:
        closes.append(c)
        rsi.update(c)
        assert rsi.ready == (len(closes) >= 15)
        assert close_enough(rsi.value, naive_rsi(closes))


def test_volatility_matches_formula_and_is_ready_at_2_closes(bars):
    vol, closes = Volatility(20), []
    for _, _, c in bars:
        closes.append(c)
        vol.update(c)
        assert vol.ready == (len(closes) >= 2)
        assert close_enough(vol.value, naive_vol(closes))


def test_momentum_matches_formula_and_is_ready_at_5_closes(bars):
    mom, closes = Momentum(5), []
    for _, _, c in bars:
        closes.append(c)
        mom.update(c)
        assert mom.ready == (len(closes) >= 5)
        assert close_enough(mom.value, naive_mom(closes))


def test_atr_percent_matches_true_range_formula_and_is_ready_at_15_candles(bars):
    atr, h, l_, c = ATRPercent(14), [], [], []
    for hi, lo, cl in bars:
        h.append(hi), l_.append(lo), c.append(cl)
        atr.update(hi, lo, cl)
        assert atr.ready == (len(c) >= 15)
        assert close_enough(atr.value, naive_atr(h, l_, c))


@pytest.mark.parametrize("pct", [0.0, 0.15, 0.5])
def test_pullback_matches_formula_and_needs_20_closes(bars, pct):
    pb, closes = Pullback(pct), []
    fired = 0
    for _, _, c in bars:
        closes.append(c)
        pb.update(c)
        assert pb.ready == (len(closes) >= 20)
        assert pb.value == naive_pullback(closes, pct)
        fired += pb.value
    assert fired > 0  # the real data exercises the true branch


def test_compression_matches_formula_and_is_ready_at_12_candles(bars):
    comp, h, l_ = Compression(12, 0.6), [], []
    fired = 0
    for hi, lo, _ in bars:
        h.append(hi), l_.append(lo)
        comp.update(hi, lo)
        assert comp.ready == (len(h) >= 12)
        expected = naive_compression(h, l_)
        assert comp.value == (expected or False)
        fired += comp.value
    assert fired > 0


def test_rsi_is_100_when_no_losses():
    rsi = RSI(14)
    for i in range(15):
        rsi.update(100.0 + i)
    assert rsi.value == 100.0


def test_rsi_is_100_when_price_never_moves():
    rsi = RSI(14)
    for _ in range(15):
        rsi.update(100.0)
    assert rsi.value == 100.0


def test_rsi_is_0_when_no_gains():
    rsi = RSI(14)
    for i in range(15):
        rsi.update(100.0 - i)
    assert rsi.value == 0.0


def test_volatility_is_floored_at_one_hundredth_percent():
    vol = Volatility(20)
    for _ in range(5):
        vol.update(50_000.0)
    assert vol.value == 0.01


def test_pullback_is_false_for_a_move_below_a_tenth_of_a_percent():
    pb = Pullback(0.0)
    for i in range(20):
        pb.update(100_000.0 + i)  # 19 over 10 closes << 0.1 %
    assert pb.value is False


def test_pullback_detects_a_retrace_of_an_up_move():
    pb = Pullback(0.15)
    closes = [100.0] * 10 + [100, 101, 102, 103, 104, 105, 106, 107, 108, 106.0]
    for c in closes:
        pb.update(c)
    # move 6 (100 -> 106), max 108: (108-106)/(108-100) = 0.25 >= 0.15
    assert pb.value is True


def test_ema_is_not_ready_before_period_closes():
    ema = EMA(3)
    assert ema.update(1.0) is None and ema.update(2.0) is None
    assert ema.update(3.0) == 2.0
    assert ema.update(4.0) == 3.0
