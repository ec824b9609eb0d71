"""The trade state machine: one round trip of one strategy, built only from the exchange's fills.

A ``Trade`` is what the journal stores for a position of ours. It changes only through ``apply_fill`` (and the
few explicit markers below), which is pure and idempotent by the exchange's fill id: the live loop receives
fills from ``user.trades``, reconciliation receives the same fills again after a reconnect, and a fill applied
twice must change nothing. Fees are the exchange's (``fill.fee``); gross PnL is computed per exit fill with
``tradebaas.fillmodel.realized_pnl`` against the average entry price, for linear and inverse contracts alike.

States::

    pending_entry --entry fill--> open --exit fill (partial)--> closing --exit == entry--> closed
          |                        ^  \\--exit fill (whole)------------------------------> closed
          +--entry never filled--> failed (mark_failed)    (an entry fill on failed/closed re-opens)

``closing`` also means "an exit was requested" (``mark_closing``). Amounts are in the instrument's amount unit
(BTC linear, USD inverse); prices in the quote currency; ``pnl`` and ``fees`` in the settlement currency
(``fees`` positive = paid, a rebate is negative); ``net_pnl = pnl - fees``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tradebaas import fillmodel
from tradebaas.domain import Direction, Fill, OrderRole
from tradebaas.instruments import Instrument


class TradeState(enum.StrEnum):
    PENDING_ENTRY = "pending_entry"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TradeState.CLOSED, TradeState.FAILED)


#: Exit reasons derived from the role of the order that closed the trade (the analytics' ``exit_reason``).
EXIT_REASONS: dict[OrderRole, str] = {OrderRole.STOP_LOSS: "sl", OrderRole.TAKE_PROFIT: "tp", OrderRole.EXIT: "exit"}


def amount_epsilon(instrument: Instrument) -> float:
    """Amounts closer than this are equal (float noise, far below the smallest tradable step)."""
    return instrument.min_trade_amount * 1e-6


@dataclass(slots=True, frozen=True)
class Trade:
    """One round trip: what was bought/sold, at which average prices, what it cost and earned, and its brackets.

    ``amount`` is the requested entry size; ``entry_filled``/``exit_filled`` what the exchange actually filled.
    ``applied_fill_ids`` makes ``apply_fill`` idempotent. ``sl_pct``/``tp_pct`` (percent, from the Enter intent)
    let reconciliation place brackets for a trade whose entry filled while the engine was down.
    """

    trade_id: str
    strategy_id: str
    instrument: str
    direction: Direction
    state: TradeState = TradeState.PENDING_ENTRY
    amount: float = 0.0
    entry_filled: float = 0.0
    entry_price: float = 0.0
    exit_filled: float = 0.0
    exit_price: float = 0.0
    fees: float = 0.0
    pnl: float = 0.0
    currency: str = ""
    entry_order_id: str = ""
    stop_order_id: str = ""
    stop_price: float | None = None
    take_order_id: str = ""
    take_price: float | None = None
    exit_order_id: str = ""
    sl_pct: float | None = None
    tp_pct: float | None = None
    break_even_done: bool = False
    exit_reason: str = ""
    signal_ts_ms: int | None = None
    entry_ts_ms: int = 0
    exit_ts_ms: int = 0
    last_fill_ts_ms: int = 0
    applied_fill_ids: frozenset[str] = field(default_factory=frozenset)
    #: What decided the entry: the strategy's name, its code version (sha256 of the source) and config version.
    strategy_name: str = ""
    code_version: str = ""
    config_version: int = 0

    @property
    def open_amount(self) -> float:
        """What is still on the exchange for this trade (never negative)."""
        return max(0.0, self.entry_filled - self.exit_filled)

    @property
    def net_pnl(self) -> float:
        return self.pnl - self.fees

    @property
    def signed_open_amount(self) -> float:
        """The trade's contribution to the instrument's net exchange position (positive long)."""
        return 0.0 if self.state.is_terminal else self.direction.sign * self.open_amount

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (enums as strings, fill ids sorted) for the journal."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["direction"] = self.direction.value
        out["state"] = self.state.value
        out["applied_fill_ids"] = sorted(self.applied_fill_ids)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trade:
        """Inverse of ``to_dict``; unknown keys are ignored so older code can read newer rows."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["direction"] = Direction(kwargs["direction"])
        kwargs["state"] = TradeState(kwargs.get("state", TradeState.PENDING_ENTRY))
        kwargs["applied_fill_ids"] = frozenset(kwargs.get("applied_fill_ids") or ())
        return cls(**kwargs)


def new_trade(
    trade_id: str,
    strategy_id: str,
    instrument: Instrument,
    direction: Direction,
    amount: float = 0.0,
    *,
    sl_pct: float | None = None,
    tp_pct: float | None = None,
    signal_ts_ms: int | None = None,
    strategy_name: str = "",
    code_version: str = "",
    config_version: int = 0,
) -> Trade:
    """A trade about to send its entry: journal it *before* the order goes out, so a crash can't orphan it."""
    return Trade(
        trade_id=trade_id,
        strategy_id=strategy_id,
        instrument=instrument.name,
        direction=direction,
        amount=amount,
        currency=instrument.settlement_currency,
        sl_pct=sl_pct,
        tp_pct=tp_pct,
        signal_ts_ms=signal_ts_ms,
        strategy_name=strategy_name,
        code_version=code_version,
        config_version=config_version,
    )


def fill_problem(trade: Trade, fill: Fill, role: OrderRole) -> str | None:
    """Why ``fill`` cannot belong to ``trade`` in ``role`` (readable), or None if it can."""
    if fill.instrument != trade.instrument:
        return f"fill {fill.trade_id} is on {fill.instrument}, but trade {trade.trade_id} trades {trade.instrument}"
    expected = trade.direction.entry_side if role is OrderRole.ENTRY else trade.direction.exit_side
    if fill.side is not expected:
        return (
            f"fill {fill.trade_id} ({role.value}) is a {fill.side.value}, but the {trade.direction.value} "
            f"trade {trade.trade_id} needs a {expected.value} for that role"
        )
    if not fill.amount > 0:
        return f"fill {fill.trade_id} has a non-positive amount {fill.amount}"
    if not fill.price > 0:
        return f"fill {fill.trade_id} has a non-positive price {fill.price}"
    return None


def apply_fill(trade: Trade, fill: Fill, instrument: Instrument, role: OrderRole) -> Trade:
    """The trade after ``fill`` (a fill of its ``role`` order). Applying the same fill id again returns ``trade``.

    Entry fills grow the position and average the entry price. Exit fills (sl/tp/exit) realise PnL on the part
    that was still open (an over-fill beyond the open amount adds to ``exit_filled`` but realises nothing) and
    close the trade once ``exit_filled`` reaches ``entry_filled``; the exit reason comes from the role unless one
    was set already (``mark_closing``, e.g. "kill"). Raises ValueError for a fill that cannot belong to the
    trade (see ``fill_problem``); reconciliation checks first and never lets that happen.
    """
    if fill.trade_id in trade.applied_fill_ids:
        return trade
    role = OrderRole(role)
    problem = fill_problem(trade, fill, role)
    if problem:
        raise ValueError(problem)
    eps = amount_epsilon(instrument)
    ids = trade.applied_fill_ids | {fill.trade_id}
    fees = trade.fees + fill.fee
    last_ts = max(trade.last_fill_ts_ms, fill.ts_ms)
    currency = trade.currency or instrument.settlement_currency
    if role is OrderRole.ENTRY:
        filled = trade.entry_filled + fill.amount
        price = (trade.entry_price * trade.entry_filled + fill.price * fill.amount) / filled
        state = TradeState.CLOSING if trade.state is TradeState.CLOSING else TradeState.OPEN
        if filled - trade.exit_filled <= eps:
            state = TradeState.CLOSED
        return replace(
            trade,
            entry_filled=filled,
            entry_price=price,
            fees=fees,
            state=state,
            currency=currency,
            entry_ts_ms=trade.entry_ts_ms or fill.ts_ms,
            last_fill_ts_ms=last_ts,
            applied_fill_ids=ids,
        )
    closable = min(fill.amount, trade.open_amount)
    pnl = trade.pnl
    if closable > 0 and trade.entry_price > 0:
        pnl += fillmodel.realized_pnl(instrument, trade.direction.sign, closable, trade.entry_price, fill.price)
    exit_filled = trade.exit_filled + fill.amount
    exit_price = (trade.exit_price * trade.exit_filled + fill.price * fill.amount) / exit_filled
    closed = trade.entry_filled > 0 and trade.entry_filled - exit_filled <= eps
    return replace(
        trade,
        exit_filled=exit_filled,
        exit_price=exit_price,
        pnl=pnl,
        fees=fees,
        state=TradeState.CLOSED if closed else TradeState.CLOSING,
        currency=currency,
        exit_reason=trade.exit_reason or EXIT_REASONS[role],
        exit_ts_ms=fill.ts_ms if closed else trade.exit_ts_ms,
        last_fill_ts_ms=last_ts,
        applied_fill_ids=ids,
    )


def mark_closing(trade: Trade, reason: str) -> Trade:
    """An exit was requested (strategy Exit, kill --flatten): remember why, so the exit fill keeps that reason."""
    if trade.state.is_terminal:
        return trade
    return replace(trade, state=TradeState.CLOSING, exit_reason=trade.exit_reason or reason)


def mark_failed(trade: Trade, reason: str) -> Trade:
    """The entry never filled (rejected, cancelled, vanished in a crash): the trade ends without a position."""
    if trade.state.is_terminal or trade.entry_filled > 0:
        return trade
    return replace(trade, state=TradeState.FAILED, exit_reason=trade.exit_reason or reason)


def mark_closed_externally(trade: Trade, instrument: Instrument, exit_price: float, ts_ms: int, reason: str) -> Trade:
    """A person says the open part was closed outside tradebaas (on the exchange's website, by a liquidation) at
    ``exit_price``: the trade ends with the PnL of that price. No fill proves it, so no fee is added; the reason
    says so. A trade without an open amount is returned unchanged."""
    if trade.state.is_terminal or trade.open_amount <= 0 or not exit_price > 0:
        return trade
    open_amount = trade.open_amount
    pnl = trade.pnl + fillmodel.realized_pnl(instrument, trade.direction.sign, open_amount, trade.entry_price, exit_price)
    exit_filled = trade.exit_filled + open_amount
    avg_exit = (trade.exit_price * trade.exit_filled + exit_price * open_amount) / exit_filled
    return replace(trade, state=TradeState.CLOSED, exit_filled=exit_filled, exit_price=avg_exit, pnl=pnl,
                   exit_reason=reason, exit_ts_ms=ts_ms)


def with_order(trade: Trade, role: OrderRole, order_id: str, price: float | None = None) -> Trade:
    """Record the exchange order id (and stop trigger / take limit price) that serves ``role`` for this trade."""
    role = OrderRole(role)
    if role is OrderRole.ENTRY:
        return replace(trade, entry_order_id=order_id)
    if role is OrderRole.STOP_LOSS:
        return replace(trade, stop_order_id=order_id, stop_price=trade.stop_price if price is None else price)
    if role is OrderRole.TAKE_PROFIT:
        return replace(trade, take_order_id=order_id, take_price=trade.take_price if price is None else price)
    return replace(trade, exit_order_id=order_id)


def order_id_for(trade: Trade, role: OrderRole) -> str:
    """The order id the journal knows for ``role`` ("" if none)."""
    return {
        OrderRole.ENTRY: trade.entry_order_id,
        OrderRole.STOP_LOSS: trade.stop_order_id,
        OrderRole.TAKE_PROFIT: trade.take_order_id,
        OrderRole.EXIT: trade.exit_order_id,
    }[OrderRole(role)]
