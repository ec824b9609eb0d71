"""Accounts and positions of the simulator: balances per currency, positions per instrument, margin math.

Money follows ``tradebaas.fillmodel`` (the backtester uses the same functions): linear PnL and fees in USDC,
inverse in BTC. The margin model is deliberately simple and documented rather than Deribit's tiered one:
initial margin = notional / max_leverage, maintenance margin = half of that, notional at the mark price
(linear: |size| * mark in USDC; inverse: |size| / mark in BTC).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tradebaas.fillmodel import floating_pnl, realized_pnl
from tradebaas.instruments import Instrument

from .orders import q

MAINTENANCE_FRACTION = 0.5  # maintenance margin as a fraction of initial margin


def notional(instrument: Instrument, amount: float, price: float) -> float:
    """Notional value in the settlement currency (USDC for linear, BTC for inverse)."""
    if not price:
        return 0.0
    return abs(amount) / price if instrument.is_inverse else abs(amount) * price


def initial_margin(instrument: Instrument, amount: float, price: float) -> float:
    return notional(instrument, amount, price) / instrument.max_leverage


@dataclass(slots=True)
class SimPosition:
    """A position: ``size`` signed (positive long) in amount units; ``average_price`` of the open part."""

    instrument: str
    size: float = 0.0
    average_price: float = 0.0
    realized_pnl: float = 0.0  # cumulative over the position's life in this simulator, settlement currency
    fees: float = 0.0

    def apply_fill(self, instrument: Instrument, sign: int, amount: float, price: float) -> float:
        """Apply one fill; return the realized PnL it produced (closing part only).

        Increasing averages the entry (arithmetic for linear, harmonic for inverse so that USD-sized PnL adds up
        exactly); reducing realizes PnL against the average; crossing zero closes the old side and opens the rest
        at the fill price.
        """
        old = self.size
        if old == 0 or (old > 0) == (sign > 0):
            self.average_price = weighted_average(instrument, abs(old), self.average_price, amount, price)
            self.size = q(old + sign * amount)
            return 0.0
        closed = min(abs(old), amount)
        pnl = realized_pnl(instrument, 1 if old > 0 else -1, closed, self.average_price, price)
        self.size = q(old + sign * amount)
        if self.size == 0:
            self.average_price = 0.0
        elif (self.size > 0) != (old > 0):
            self.average_price = price
        self.realized_pnl += pnl
        return pnl

    def floating(self, instrument: Instrument, mark: float) -> float:
        return floating_pnl(instrument, self.size, self.average_price, mark) if mark else 0.0

    def to_state(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "size": self.size, "average_price": self.average_price,
                "realized_pnl": self.realized_pnl, "fees": self.fees}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> SimPosition:
        return cls(**data)


def weighted_average(instrument: Instrument, old_amount: float, old_price: float, amount: float, price: float) -> float:
    if old_amount == 0 or not old_price:
        return price
    total = old_amount + amount
    if instrument.is_inverse:
        return total / (old_amount / old_price + amount / price)
    return (old_amount * old_price + amount * price) / total


@dataclass(slots=True)
class SimAccount:
    """One account: balances per currency, positions and orders by instrument, user trades by instrument."""

    account_id: str
    balances: dict[str, float]
    created_ms: int = 0
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[str, Any] = field(default_factory=dict)  # order_id -> SimOrder (live, and closed still kept)
    #: instrument -> the kept user trades, oldest first (a deque bounded by ``SimExchange.history``)
    trades: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    realized: dict[str, float] = field(default_factory=dict)  # currency -> cumulative realized PnL
    fees: dict[str, float] = field(default_factory=dict)  # currency -> cumulative fees paid

    def position(self, instrument: str) -> SimPosition:
        pos = self.positions.get(instrument)
        if pos is None:
            pos = self.positions[instrument] = SimPosition(instrument)
        return pos

    def size(self, instrument: str) -> float:
        pos = self.positions.get(instrument)
        return pos.size if pos is not None else 0.0


def position_object(pos: SimPosition, instrument: Instrument, mark: float, index: float,
                    open_orders_margin: float) -> dict[str, Any]:
    """Deribit's position object. Flat positions answer ``direction: "zero"`` with zero size (as the brief fixes)."""
    size = pos.size
    ref = mark or pos.average_price
    size_currency = (size / ref if ref else 0.0) if instrument.is_inverse else size
    floating = pos.floating(instrument, mark)
    im = initial_margin(instrument, size, ref)
    return {
        "instrument_name": instrument.name,
        "kind": instrument.kind,
        "size": size,
        "size_currency": size_currency,
        "direction": "buy" if size > 0 else "sell" if size < 0 else "zero",
        "average_price": pos.average_price,
        "mark_price": mark,
        "index_price": index,
        "floating_profit_loss": floating,
        "realized_profit_loss": pos.realized_pnl,
        "total_profit_loss": pos.realized_pnl + floating,
        "realized_funding": 0.0,
        "interest_value": 0.0,
        "initial_margin": im,
        "maintenance_margin": im * MAINTENANCE_FRACTION,
        "open_orders_margin": open_orders_margin,
        "estimated_liquidation_price": None,
        "leverage": int(instrument.max_leverage),
        "delta": size_currency,
        "settlement_price": mark,
    }


def liquidation_price(instrument: Instrument, size: float, average_price: float, free_collateral: float) -> float | None:
    """Price at which the position alone would eat ``free_collateral`` (equity above maintenance); None when flat.

    An estimate for display only (the simulator never liquidates): linear ``avg - free/size``, inverse from
    ``free = size * (1/avg - 1/p)``. Clamped at 0 (a long whose collateral covers a fall to 0 never liquidates).
    """
    if not size or not average_price:
        return None
    if instrument.is_inverse:
        inv = 1.0 / average_price + free_collateral / size
        return 1.0 / inv if inv > 0 else None
    return max(0.0, average_price - free_collateral / size)
