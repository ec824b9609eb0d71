"""Domain types shared by every layer: stated once, used everywhere.

Exchange JSON is converted to these types at the edge (the Deribit client, the simulator server); no dict of
unknown shape crosses a module border. Units are in the names where they could be mistaken: ``ts_ms`` is Unix
milliseconds (exchange time, never the wall clock), ``amount`` is in the instrument's amount unit (BTC for linear
``BTC_USDC-PERPETUAL``, USD for inverse ``BTC-PERPETUAL``), prices are in the quote currency (USD/USDC).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Side(enum.StrEnum):
    """Order or trade direction, spelled as Deribit spells it."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @classmethod
    def from_sign(cls, sign: float) -> Side:
        return cls.BUY if sign > 0 else cls.SELL


class Direction(enum.StrEnum):
    """A strategy's view of a position: long or short."""

    LONG = "long"
    SHORT = "short"

    @property
    def entry_side(self) -> Side:
        return Side.BUY if self is Direction.LONG else Side.SELL

    @property
    def exit_side(self) -> Side:
        return self.entry_side.opposite

    @property
    def sign(self) -> int:
        return 1 if self is Direction.LONG else -1


class OrderType(enum.StrEnum):
    """Deribit's order types. ``UNKNOWN`` stands for a type this version does not know (the exchange added one):
    it is read, never sent (``convert.order_params`` refuses it)."""

    LIMIT = "limit"
    MARKET = "market"
    STOP_LIMIT = "stop_limit"
    STOP_MARKET = "stop_market"
    TAKE_LIMIT = "take_limit"
    TAKE_MARKET = "take_market"
    MARKET_LIMIT = "market_limit"
    TRAILING_STOP = "trailing_stop"
    UNKNOWN = "unknown"


class OrderState(enum.StrEnum):
    """Deribit's order states. ``UNKNOWN`` stands for a state this version does not know: such an order may still
    trade, so it counts as live (the conservative reading; reconciliation never takes it for gone)."""

    OPEN = "open"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNTRIGGERED = "untriggered"
    TRIGGERED = "triggered"
    UNKNOWN = "unknown"

    @property
    def is_live(self) -> bool:
        """True while the order can (or, in an unknown state, might) still trade."""
        return self in (OrderState.OPEN, OrderState.UNTRIGGERED, OrderState.TRIGGERED, OrderState.UNKNOWN)


class Liquidity(enum.StrEnum):
    MAKER = "M"
    TAKER = "T"


class StrategyState(enum.StrEnum):
    """Where a strategy is. ``desired`` state (running/stopped) is kept apart from this actual state."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    NEEDS_ATTENTION = "needs_attention"
    ERROR = "error"


class OrderRole(enum.StrEnum):
    """What an order is for inside a trade; encoded in its label so it survives a crash."""

    ENTRY = "entry"
    STOP_LOSS = "sl"
    TAKE_PROFIT = "tp"
    EXIT = "exit"


@dataclass(slots=True, frozen=True)
class Candle:
    """A clock-aligned OHLCV bar covering [ts_ms, ts_ms + 60_000) for 1-minute candles."""

    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


@dataclass(slots=True, frozen=True)
class Ticker:
    instrument: str
    ts_ms: int
    last_price: float
    mark_price: float
    index_price: float
    best_bid_price: float | None = None
    best_ask_price: float | None = None


@dataclass(slots=True, frozen=True)
class Order:
    """An exchange order as the engine sees it (converted from Deribit's order object)."""

    order_id: str
    instrument: str
    side: Side
    order_type: OrderType
    amount: float
    filled_amount: float
    state: OrderState
    label: str = ""
    price: float | None = None
    trigger_price: float | None = None
    average_price: float = 0.0
    reduce_only: bool = False
    ts_ms: int = 0
    #: Why the exchange cancelled it (Deribit's ``cancel_reason``: ``user_request``, ``oco_other_closed``, ...).
    cancel_reason: str = ""
    #: Deribit's ``order_state`` / ``order_type`` text when this version does not know it (``state`` /
    #: ``order_type`` is then ``UNKNOWN``), so a person reading a message sees what the exchange said.
    raw_state: str = ""
    raw_type: str = ""

    @property
    def is_uncertain(self) -> bool:
        """An order this version cannot fully read (unknown state or type): possibly live, never replaced blindly."""
        return self.state is OrderState.UNKNOWN or self.order_type is OrderType.UNKNOWN


@dataclass(slots=True, frozen=True)
class Fill:
    """One user trade (a fill of one of our orders). ``fee`` is in ``fee_currency``; a negative fee is a rebate."""

    trade_id: str
    order_id: str
    instrument: str
    side: Side
    amount: float
    price: float
    fee: float
    fee_currency: str
    ts_ms: int
    label: str = ""
    liquidity: Liquidity = Liquidity.TAKER
    reduce_only: bool = False
    order_type: str = ""
    trade_seq: int = 0


@dataclass(slots=True, frozen=True)
class PositionSnapshot:
    """A position on the exchange. ``size`` is signed (positive long) in the instrument's amount unit."""

    instrument: str
    size: float
    average_price: float = 0.0
    floating_pnl: float = 0.0
    realized_pnl: float = 0.0
    mark_price: float = 0.0


@dataclass(slots=True, frozen=True)
class ExchangeSnapshot:
    """Everything reconciliation needs to know about the exchange at one moment."""

    open_orders: tuple[Order, ...] = ()
    positions: tuple[PositionSnapshot, ...] = ()
    fills: tuple[Fill, ...] = ()
    ts_ms: int = 0
    extra: dict[str, object] = field(default_factory=dict)
