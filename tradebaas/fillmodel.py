"""The one fill model, shared by the simulator's matching engine and the backtester.

Pure functions only: fees, PnL for linear and inverse contracts, trigger conditions, and how a bracketed
position exits inside one candle. The simulator calls the tick-level functions (``trigger_fires``, ``fee``,
``realized_pnl``); the backtester calls the same functions through ``candle_exit``. A change here changes both,
which is the point: a backtest that disagrees with paper trading is worse than none.

``fee``, ``realized_pnl`` and ``apply_slippage`` are also called on numpy arrays (``backtest/vectorized.py``, the
ema_cross fast path): keep them to arithmetic operators and ``abs`` (no ``math.*``, no ``if`` on a value) so
an array call does the same IEEE operations, in the same order, as the scalar one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradebaas.domain import Candle, Direction, Liquidity, OrderType, Side
from tradebaas.instruments import Instrument


def fee(instrument: Instrument, amount: float, price: float, liquidity: Liquidity) -> float:
    """Fee in the instrument's settlement currency (USDC for linear, BTC for inverse); negative = rebate."""
    rate = instrument.maker_fee if liquidity is Liquidity.MAKER else instrument.taker_fee
    return abs(amount) * rate * (1.0 / price if instrument.is_inverse else price)


def realized_pnl(instrument: Instrument, direction_sign: int, amount: float, entry_price: float, exit_price: float) -> float:
    """PnL of closing ``amount`` of a position opened at ``entry_price`` and closed at ``exit_price``.

    ``direction_sign`` is +1 for a long position, -1 for a short one. Linear: quote currency. Inverse (amount in
    USD): BTC, ``amount * (1/entry - 1/exit)`` for a long.
    """
    if instrument.is_inverse:
        return direction_sign * abs(amount) * (1.0 / entry_price - 1.0 / exit_price)
    return direction_sign * abs(amount) * (exit_price - entry_price)


def floating_pnl(instrument: Instrument, signed_size: float, average_price: float, mark_price: float) -> float:
    if not signed_size or not average_price:
        return 0.0
    return realized_pnl(instrument, 1 if signed_size > 0 else -1, signed_size, average_price, mark_price)


def is_stop_type(order_type: OrderType) -> bool:
    return order_type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP)


def is_take_type(order_type: OrderType) -> bool:
    return order_type in (OrderType.TAKE_MARKET, OrderType.TAKE_LIMIT)


def trigger_fires(order_type: OrderType, side: Side, trigger_price: float, price: float) -> bool:
    """Whether a trigger order fires at ``price`` (of its trigger source: mark, index or last).

    A sell stop fires when the price falls to or below its trigger, a buy stop when it rises to or above; take
    orders the other way round.
    """
    if is_stop_type(order_type):
        return price <= trigger_price if side is Side.SELL else price >= trigger_price
    if is_take_type(order_type):
        return price >= trigger_price if side is Side.SELL else price <= trigger_price
    return False


def stop_fill_price(trigger_price: float, market_price: float, continuous: bool) -> float:
    """Where a stop (or take) *market* order fills once its trigger fired.

    ``continuous``: the price reached its current value from the last one through every price in between (inside
    a candle, or between the ticks of a replayed candle path), so it traded at the trigger on the way: the fill is
    the trigger price. Otherwise the market jumped over it (a gap: a candle's open, a recorded tick) and the fill
    is the market price. The backtest and the simulator's candle replay both rely on this.
    """
    return trigger_price if continuous else market_price


def limit_crosses(side: Side, limit_price: float, price: float) -> bool:
    """Whether a resting limit order is reached by a trade or quote at ``price``."""
    return price <= limit_price if side is Side.BUY else price >= limit_price


def apply_slippage(price: float, side: Side, slippage_fraction: float) -> float:
    """Market fills pay slippage against the taker: buys higher, sells lower."""
    return price * (1.0 + side.sign * slippage_fraction)


def bracket_prices(instrument: Instrument, direction: Direction, fill_price: float, sl_pct: float, tp_pct: float) -> tuple[float, float]:
    """(stop-loss, take-profit) trigger/limit prices from the entry's actual average fill, rounded to the tick."""
    s = direction.sign
    sl = instrument.round_price(fill_price * (1 - s * sl_pct / 100.0))
    tp = instrument.round_price(fill_price * (1 + s * tp_pct / 100.0))
    return sl, tp


@dataclass(slots=True, frozen=True)
class CandleExit:
    """How a bracketed position left the market inside one candle."""

    kind: str  # "sl" | "tp"
    price: float
    liquidity: Liquidity
    #: The candle *opened* through the order (a gap): the fill happens at the open's instant, not somewhere inside
    #: the minute. It matters for what starts at the fill (cooldowns): live, such a fill has the open's timestamp.
    at_open: bool = False


def candle_exit(direction: Direction, stop_price: float | None, take_price: float | None, candle: Candle) -> CandleExit | None:
    """Bracket exit within one candle, per the backtest semantics of the Razor spec.

    The stop is checked first (if both lie within the candle, the stop counts); it fills at its trigger, or at
    the open when the candle gaps through it (taker). The take-profit limit fills at its price (maker).
    """
    exit_side = direction.exit_side
    if stop_price is not None:
        if trigger_fires(OrderType.STOP_MARKET, exit_side, stop_price, candle.open):  # gapped through at the open
            return CandleExit("sl", stop_fill_price(stop_price, candle.open, False), Liquidity.TAKER, True)
        extreme = candle.low if direction is Direction.LONG else candle.high
        if trigger_fires(OrderType.STOP_MARKET, exit_side, stop_price, extreme):  # reached inside the candle
            return CandleExit("sl", stop_fill_price(stop_price, extreme, True), Liquidity.TAKER)
    if take_price is not None:
        extreme = candle.high if direction is Direction.LONG else candle.low
        if limit_crosses(exit_side, take_price, extreme):
            return CandleExit("tp", take_price, Liquidity.MAKER, limit_crosses(exit_side, take_price, candle.open))
    return None
