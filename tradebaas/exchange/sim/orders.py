"""The simulator's order record and its Deribit JSON shape.

``SimOrder`` is mutable on purpose: the matching core updates fills and states in place and snapshots the
Deribit object (``to_deribit``) at each change, which is what clients see on ``user.orders``. Everything in it is
plain JSON data so that ``to_state``/``from_state`` can round-trip it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

TRIGGER_TYPES = frozenset({"stop_limit", "stop_market", "take_limit", "take_market", "trailing_stop"})
MARKET_LIKE_TRIGGER_TYPES = frozenset({"stop_market", "take_market", "trailing_stop"})
LIMIT_LIKE_TYPES = frozenset({"limit", "stop_limit", "take_limit"})
ORDER_TYPES = frozenset({"limit", "market", "market_limit"}) | TRIGGER_TYPES
TIME_IN_FORCE = frozenset({"good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel"})
TRIGGER_SOURCES = ("mark_price", "index_price", "last_price")
LINKED_TYPES = frozenset({"one_triggers_other", "one_cancels_other", "one_triggers_one_cancels_other"})
FILL_CONDITIONS = frozenset({"first_hit", "complete_fill", "incremental"})

#: Rounding of amounts and money: well below any step Deribit uses, well above float noise.
AMOUNT_DECIMALS = 10
#: Tolerance of amount and money comparisons (a remainder below it is nothing).
EPS = 1e-9


def q(value: float) -> float:
    """An amount free of binary float noise (``0.1 + 0.2`` -> ``0.3``), so fills add up exactly."""
    return round(value, AMOUNT_DECIMALS) + 0.0


@dataclass(slots=True)
class SimOrder:
    """One order of one account. ``amount`` and ``filled_amount`` are in the instrument's amount unit."""

    order_id: str
    account_id: str
    instrument: str
    direction: str  # "buy" | "sell"
    order_type: str
    time_in_force: str
    amount: float
    price: float | None  # None for market and trigger-market orders ("market_price" on the wire)
    state: str
    creation_ms: int
    update_ms: int
    seq: int  # global placement order: fills and triggers are processed in this order for determinism
    label: str = ""
    filled_amount: float = 0.0
    average_price: float = 0.0
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    trigger: str | None = None
    trigger_price: float | None = None
    triggered: bool | None = None
    commission: float = 0.0
    profit_loss: float = 0.0
    cancel_reason: str | None = None
    replaced: bool = False
    original_order_type: str | None = None
    expire_ms: int | None = None
    # linked orders
    oco_ref: str | None = None
    oto_order_ids: list[str] | None = None
    primary_order_id: str | None = None
    is_secondary_oto: bool = False
    is_primary_otoco: bool = False
    trigger_fill_condition: str | None = None
    waiting_primary: bool = False  # a secondary OTO order not yet released by its primary's fill
    secondary_amount: float = 0.0  # the configured amount of an OTO secondary (incremental release)
    version: int = 0  # bumped whenever index keys change, so stale index entries are skipped
    trades: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return q(self.amount - self.filled_amount)

    @property
    def is_live(self) -> bool:
        return self.state in ("open", "untriggered")

    @property
    def is_trigger(self) -> bool:
        return self.order_type in TRIGGER_TYPES

    @property
    def side_sign(self) -> int:
        return 1 if self.direction == "buy" else -1

    @property
    def waits_for_trigger(self) -> bool:
        """Live, released by any primary, and waiting for its trigger price."""
        return self.state == "untriggered" and not self.waiting_primary

    def to_state(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _STATE_FIELDS}
        out["trades"] = list(self.trades)
        if self.oto_order_ids is not None:
            out["oto_order_ids"] = list(self.oto_order_ids)
        return out

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> SimOrder:
        data = dict(data)
        data["trades"] = list(data.get("trades", []))
        if data.get("oto_order_ids") is not None:
            data["oto_order_ids"] = list(data["oto_order_ids"])
        return cls(**data)

    def to_deribit(self, contract_size: float) -> dict[str, Any]:
        """The order object as Deribit sends it; optional members only when they apply, as Deribit does."""
        market_price = self.price is None
        obj: dict[str, Any] = {
            "order_id": self.order_id,
            "order_state": self.state,
            "order_type": self.order_type,
            "time_in_force": self.time_in_force,
            "instrument_name": self.instrument,
            "creation_timestamp": self.creation_ms,
            "last_update_timestamp": self.update_ms,
            "direction": self.direction,
            "price": "market_price" if market_price else self.price,
            "label": self.label,
            "post_only": self.post_only,
            "reject_post_only": self.reject_post_only,
            "reduce_only": self.reduce_only,
            "api": True,
            "web": False,
            "mobile": False,
            "amount": self.amount,
            "contracts": q(self.amount / contract_size),
            "filled_amount": self.filled_amount,
            "average_price": self.average_price,
            "commission": self.commission,
            "profit_loss": self.profit_loss,
            "max_show": self.amount,
            "mmp": False,
            "risk_reducing": False,
            "replaced": self.replaced,
            "is_liquidation": False,
            "is_rebalance": False,
        }
        if self.original_order_type is not None:
            obj["original_order_type"] = self.original_order_type
        if self.is_trigger:
            obj["trigger"] = self.trigger
            obj["trigger_price"] = self.trigger_price
            obj["triggered"] = bool(self.triggered)
            obj["trigger_offset"] = None
        if self.cancel_reason is not None:
            obj["cancel_reason"] = self.cancel_reason
        if self.oco_ref is not None:
            obj["oco_ref"] = self.oco_ref
        if self.oto_order_ids:
            obj["oto_order_ids"] = list(self.oto_order_ids)
            obj["trigger_fill_condition"] = self.trigger_fill_condition
        if self.is_primary_otoco:
            obj["is_primary_otoco"] = True
        if self.is_secondary_oto:
            obj["is_secondary_oto"] = True
            obj["primary_order_id"] = self.primary_order_id
        return obj


#: the fields ``to_state`` writes (computed once: ``dataclasses.fields`` per call was half the journal's cost)
_STATE_FIELDS = tuple(f.name for f in fields(SimOrder))
