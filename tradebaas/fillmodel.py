"""The one fill model, shared by the simulator's matching engine and the backtester.

Pure functions only: fees, PnL for linear and inverse contracts, trigger conditions, the price path inside a
candle, and how a bracketed position exits inside one candle. The simulator calls the tick-level functions
(``trigger_fires``, ``fee``, ``realized_pnl``) and replays each candle along ``candle_path``; the backtester calls
the same functions through ``candle_exit``, which walks that same path. A change here changes both, which is the
point: a backtest that disagrees with paper trading is worse than none.

``fee``, ``realized_pnl`` and ``apply_slippage`` are also called on numpy arrays (``backtest/vectorized.py``, the
ema_cross fast path): keep them to arithmetic operators and ``abs`` (no ``math.*``, no ``if`` on a value) so
an array call does the same IEEE operations, in the same order, as the scalar one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradebaas.domain import Candle, Direction, Liquidity, OrderType, Side
from tradebaas.instruments import Instrument

#: A float, or a numpy array of them (the array fast path calls the same functions: see the module docstring).
Numeric = Any


def fee(instrument: Instrument, amount: Numeric, price: Numeric, liquidity: Liquidity) -> Numeric:
    """Fee in the instrument's settlement currency (USDC for linear, BTC for inverse); negative = rebate."""
    rate = instrument.maker_fee if liquidity is Liquidity.MAKER else instrument.taker_fee
    return abs(amount) * rate * (1.0 / price if instrument.is_inverse else price)


def realized_pnl(instrument: Instrument, direction_sign: Numeric, amount: Numeric, entry_price: Numeric,
                 exit_price: Numeric) -> Numeric:
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


def apply_slippage(price: Numeric, side: Side, slippage_fraction: float) -> Numeric:
    """Market fills pay slippage against the taker: buys higher, sells lower."""
    return price * (1.0 + side.sign * slippage_fraction)


def bracket_prices(instrument: Instrument, direction: Direction, fill_price: float, sl_pct: float, tp_pct: float) -> tuple[float, float]:
    """(stop-loss, take-profit) trigger/limit prices from the entry's actual average fill, rounded to the tick."""
    s = direction.sign
    sl = instrument.round_price(fill_price * (1 - s * sl_pct / 100.0))
    tp = instrument.round_price(fill_price * (1 + s * tp_pct / 100.0))
    return sl, tp


#: ``candle_exit`` modes. ``"path"`` (the default): brackets meet the price along ``candle_path``, as the simulator
#: replays the candle, so a backtest agrees with paper trading. ``"pessimistic"``: the stop counts whenever it lies
#: within the candle, even if the path reaches the take-profit first (a conservative bound for research).
INTRABAR_PATH = "path"
INTRABAR_PESSIMISTIC = "pessimistic"
INTRABAR_MODES = (INTRABAR_PATH, INTRABAR_PESSIMISTIC)


def candle_path(candle: Candle) -> tuple[float, float, float, float]:
    """The price path inside a candle: open, the extreme nearer the open, the other extreme, close.

    Between these waypoints the price moves monotonically through every price in between, so the path visits the
    whole [low, high] range; the simulator replays a candle as ticks along it and ``candle_exit`` walks it.
    Going to the nearer extreme first is the plausible path (the shorter detour).

    "Nearer" compares the float differences ``open - low`` and ``high - open``: the low comes first when
    ``open - low < high - open``, the high first when it is greater. On a tie (equal distances, which includes a
    candle with open == high == low) the close decides: a candle closing at or above its open (rising or flat)
    dips first, ``(open, low, high, close)``; one closing below its open rallies first, ``(open, high, low,
    close)``. The same candle always gives the same path.
    """
    o, h, lo = candle.open, candle.high, candle.low
    down, up = o - lo, h - o
    if down < up or (down == up and candle.close >= o):
        return (o, lo, h, candle.close)
    return (o, h, lo, candle.close)


@dataclass(slots=True, frozen=True)
class CandleExit:
    """How a bracketed position left the market inside one candle."""

    kind: str  # "sl" | "tp"
    price: float
    liquidity: Liquidity
    #: The candle *opened* through the order (a gap): the fill happens at the open's instant, not somewhere inside
    #: the minute. It matters for what starts at the fill (cooldowns): live, such a fill has the open's timestamp.
    at_open: bool = False


def candle_exit(direction: Direction, stop_price: float | None, take_price: float | None, candle: Candle,
                intrabar: str = INTRABAR_PATH) -> CandleExit | None:
    """Bracket exit within one candle, per the backtest semantics of the Razor spec; ``None`` if neither is reached.

    The open is a jump (the market arrives there from the last close without trading in between): a stop it
    passed fills at the open, a take-profit it passed at its limit price, flagged ``at_open``; if the open passed
    both, the stop counts (the simulator fires triggers before it matches resting limits). Inside the candle:

    - ``intrabar="path"`` (default): the price moves along ``candle_path``; whichever bracket the path reaches
      first exits. Each leg moves one way, so with the open between the brackets, the first leg (to the nearer
      extreme) reaches the bracket on its side if the candle reaches it at all: when both lie within the candle,
      the one beside the nearer extreme exits. This is what the simulator's replay of the candle does, so paper
      trading and its backtest agree (tests/unit/test_stop_fill.py holds the two to it).
    - ``intrabar="pessimistic"``: the stop counts whenever the candle reaches it, even if the take-profit lies
      within the candle too and the path reaches it first (the old rule, a conservative bound).

    A stop reached inside the candle fills at its trigger (taker); the take-profit limit at its price (maker).
    ``ValueError`` for an unknown ``intrabar`` (callers validate user input first).
    """
    if intrabar == INTRABAR_PESSIMISTIC:
        return _pessimistic_exit(direction, stop_price, take_price, candle)
    if intrabar != INTRABAR_PATH:
        raise ValueError(f"intrabar must be one of {', '.join(INTRABAR_MODES)}, not {intrabar!r}")
    exit_side = direction.exit_side
    o = candle.open
    if stop_price is not None and trigger_fires(OrderType.STOP_MARKET, exit_side, stop_price, o):
        return CandleExit("sl", stop_fill_price(stop_price, o, False), Liquidity.TAKER, True)
    if take_price is not None and limit_crosses(exit_side, take_price, o):
        return CandleExit("tp", take_price, Liquidity.MAKER, True)
    stop_side, take_side = (candle.low, candle.high) if direction is Direction.LONG else (candle.high, candle.low)
    take_in = take_price is not None and limit_crosses(exit_side, take_price, take_side)
    if stop_price is not None and trigger_fires(OrderType.STOP_MARKET, exit_side, stop_price, stop_side):
        if not take_in or candle_path(candle)[1] == stop_side:  # both inside: the first leg's side decides
            return CandleExit("sl", stop_fill_price(stop_price, stop_side, True), Liquidity.TAKER)
    if take_price is not None and take_in:
        return CandleExit("tp", take_price, Liquidity.MAKER)
    return None


def _pessimistic_exit(direction: Direction, stop_price: float | None, take_price: float | None,
                      candle: Candle) -> CandleExit | None:
    """``candle_exit`` with ``intrabar="pessimistic"``: the stop is checked over the whole candle first."""
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
