"""The market as the matching core sees it: the ticks it is fed (``MarketTick``) and what they leave (``MarketState``).

Why apart from ``marketdata``: that module turns candles and recorded ticks into a price stream; this one is the
core's side of the border, one record per instrument that validation, matching and queries all read. Pure data
with the few price rules every reader must agree on (what a taker pays, which price a trigger watches, whether a
limit crosses the spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradebaas.domain import OrderType, Side
from tradebaas.fillmodel import limit_crosses, trigger_fires


@dataclass(slots=True, frozen=True)
class MarketTick:
    """A market move on one instrument (prices in the quote currency; best quotes may be unknown)."""

    instrument: str
    ts_ms: int
    last_price: float
    mark_price: float
    index_price: float
    best_bid: float | None
    best_ask: float | None
    trade_amount: float = 0.0
    #: The price came here from the previous tick through every price in between (ticks of a replayed candle path,
    #: after its open): a stop/take market order fired by this tick fills at its trigger (``fillmodel``), as in a
    #: backtest over the same candle. False (a jump, e.g. recorded ticks or a candle's open): at the market.
    continuous: bool = False


@dataclass(slots=True)
class MarketState:
    """The last market of one instrument, plus the tick direction of the simulator's own fills.

    ``to_state``/``MarketState(**state)`` round-trip it exactly (the simulator's persistence relies on it).
    """

    last_price: float = 0.0
    mark_price: float = 0.0
    index_price: float = 0.0
    best_bid: float | None = None
    best_ask: float | None = None
    ts_ms: int = 0
    last_trade_price: float = 0.0  # of our own fills, for tick_direction
    tick_direction: int = 1
    continuous: bool = False  # of the last MarketTick

    @property
    def seen(self) -> bool:
        return bool(self.last_price or self.best_bid or self.best_ask)

    def apply(self, tick: MarketTick) -> None:
        """Take the prices of ``tick`` (the tick direction of our fills is the core's to keep)."""
        self.last_price, self.mark_price, self.index_price = tick.last_price, tick.mark_price, tick.index_price
        self.best_bid, self.best_ask, self.ts_ms = tick.best_bid, tick.best_ask, tick.ts_ms
        self.continuous = tick.continuous

    def taker_price(self, direction: str) -> float:
        """What a taker pays: best ask for a buy, best bid for a sell, the last price when that side is empty."""
        quote = self.best_ask if direction == "buy" else self.best_bid
        return quote if quote else self.last_price

    def source_price(self, source: str) -> float:
        """The price a trigger with ``trigger=source`` watches (mark, index, else last)."""
        return self.mark_price if source == "mark_price" else self.index_price if source == "index_price" else self.last_price

    def would_cross(self, direction: str, price: float) -> bool:
        """A limit at ``price`` would take liquidity now (it reaches the opposite best quote)."""
        quote = self.best_ask if direction == "buy" else self.best_bid
        return bool(quote) and limit_crosses(Side(direction), price, quote or 0.0)

    def to_state(self) -> dict[str, Any]:
        """Every field (spelled out: every journal record carries the markets, so this is on the order path)."""
        return {"last_price": self.last_price, "mark_price": self.mark_price, "index_price": self.index_price,
                "best_bid": self.best_bid, "best_ask": self.best_ask, "ts_ms": self.ts_ms,
                "last_trade_price": self.last_trade_price, "tick_direction": self.tick_direction,
                "continuous": self.continuous}


def fires(order_type: str, direction: str, trigger_price: float, price: float) -> bool:
    """A trigger order of this type and side fires at ``price`` (``fillmodel``'s rule, shared with backtests)."""
    return trigger_fires(OrderType(order_type), Side(direction), trigger_price, price)
