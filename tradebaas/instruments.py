"""Instrument specifications and the contract math that depends on them.

Tick sizes, minimum amounts and fees are configuration, not constants (Deribit changes them): the values here are
the defaults, and ``Instrument`` objects can be built from an exchange's ``public/get_instruments`` answer.
Linear (``BTC_USDC-PERPETUAL``): amount in BTC, PnL and fees in USDC. Inverse (``BTC-PERPETUAL``): amount in USD
(a multiple of the 10 USD contract), PnL and fees in BTC.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

PERPETUAL_EXPIRATION_MS = 32503708800000


@dataclass(slots=True, frozen=True)
class Instrument:
    name: str
    instrument_type: str  # "linear" | "reversed"
    base_currency: str
    quote_currency: str
    settlement_currency: str
    contract_size: float
    min_trade_amount: float
    tick_size: float
    maker_fee: float  # fraction of notional, e.g. 0.0 or -0.0001 (rebate)
    taker_fee: float  # fraction of notional, e.g. 0.0005
    max_leverage: float = 50.0
    instrument_id: int = 0
    kind: str = "future"

    @property
    def is_inverse(self) -> bool:
        return self.instrument_type == "reversed"

    @property
    def pnl_currency(self) -> str:
        """The currency PnL and fees are paid in."""
        return self.settlement_currency

    def round_price(self, price: float) -> float:
        """Nearest multiple of the tick size (half away from zero), free of binary float noise."""
        return _round_to_step(price, self.tick_size)

    def round_amount(self, amount: float) -> float:
        """Nearest multiple of min_trade_amount, at least one (Razor's sizing rule)."""
        steps = max(1, math.floor(abs(amount) / self.min_trade_amount + 0.5))
        return _clean(steps * self.min_trade_amount, self.min_trade_amount)

    def is_on_tick(self, price: float) -> bool:
        return _is_multiple(price, self.tick_size)

    def is_valid_amount(self, amount: float) -> bool:
        return amount > 0 and _is_multiple(amount, self.min_trade_amount) and _is_multiple(amount, self.contract_size)

    def amount_for_notional(self, notional_usd: float, price: float) -> float:
        """Order amount for a USD notional: BTC for linear, USD for inverse (both rounded, at least one step)."""
        if self.is_inverse:
            return self.round_amount(notional_usd)
        return self.round_amount(notional_usd / price)

    def to_deribit(self) -> dict[str, object]:
        """The ``public/get_instruments`` object for this instrument."""
        return {
            "instrument_name": self.name,
            "instrument_id": self.instrument_id,
            "kind": self.kind,
            "instrument_type": self.instrument_type,
            "base_currency": self.base_currency,
            "quote_currency": self.quote_currency,
            "counter_currency": self.quote_currency,
            "settlement_currency": self.settlement_currency,
            "contract_size": self.contract_size,
            "min_trade_amount": self.min_trade_amount,
            "tick_size": self.tick_size,
            "tick_size_steps": [],
            "is_active": True,
            "state": "open",
            "settlement_period": "perpetual",
            "creation_timestamp": 1534242287000,
            "expiration_timestamp": PERPETUAL_EXPIRATION_MS,
            "maker_commission": self.maker_fee,
            "taker_commission": self.taker_fee,
            "max_leverage": self.max_leverage,
            "price_index": f"{self.base_currency.lower()}_{self.quote_currency.lower()}",
            "future_type": self.instrument_type,
            "rfq": False,
            "max_liquidation_commission": 0.0075,
            "block_trade_commission": 0.0003,
            "block_trade_min_trade_amount": 200000 if self.is_inverse else 25,
            "block_trade_tick_size": 0.01,
        }

    @classmethod
    def from_deribit(cls, obj: Mapping[str, Any]) -> Instrument:
        """An instrument from one entry of ``public/get_instruments`` (decoded JSON: values of any type)."""
        return cls(
            name=str(obj["instrument_name"]),
            instrument_type=str(obj.get("instrument_type") or ("reversed" if obj.get("quote_currency") == "USD" else "linear")),
            base_currency=str(obj["base_currency"]),
            quote_currency=str(obj["quote_currency"]),
            settlement_currency=str(obj.get("settlement_currency") or obj["base_currency"]),
            contract_size=float(obj["contract_size"]),
            min_trade_amount=float(obj["min_trade_amount"]),
            tick_size=float(obj["tick_size"]),
            maker_fee=float(obj.get("maker_commission", 0.0)),
            taker_fee=float(obj.get("taker_commission", 0.0)),
            max_leverage=float(obj.get("max_leverage", 50)),
            instrument_id=int(obj.get("instrument_id", 0)),
            kind=str(obj.get("kind", "future")),
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


BTC_USDC_PERPETUAL = Instrument(
    name="BTC_USDC-PERPETUAL",
    instrument_type="linear",
    base_currency="BTC",
    quote_currency="USDC",
    settlement_currency="USDC",
    contract_size=0.001,
    min_trade_amount=0.001,
    tick_size=1.0,
    maker_fee=0.0,
    taker_fee=0.0005,
    max_leverage=50.0,
    instrument_id=259,
)

BTC_PERPETUAL = Instrument(
    name="BTC-PERPETUAL",
    instrument_type="reversed",
    base_currency="BTC",
    quote_currency="USD",
    settlement_currency="BTC",
    contract_size=10.0,
    min_trade_amount=10.0,
    tick_size=0.5,
    maker_fee=0.0,
    taker_fee=0.0005,
    max_leverage=50.0,
    instrument_id=124972,
)

DEFAULT_INSTRUMENTS: dict[str, Instrument] = {i.name: i for i in (BTC_USDC_PERPETUAL, BTC_PERPETUAL)}


class UnknownInstrumentError(ValueError):
    pass


def get_instrument(name: str, table: dict[str, Instrument] | None = None) -> Instrument:
    table = DEFAULT_INSTRUMENTS if table is None else table
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UnknownInstrumentError(f"unknown instrument {name!r} (known: {known})") from None


@functools.lru_cache(maxsize=256)
def _decimals(step: float) -> int:  # a few distinct steps, asked for on every rounding: remembered
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _clean(value: float, step: float) -> float:
    return round(value, _decimals(step) + 2)


def _round_to_step(value: float, step: float) -> float:
    steps = math.floor(abs(value) / step + 0.5)
    return math.copysign(_clean(steps * step, step), value) if value else 0.0


def _is_multiple(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6
