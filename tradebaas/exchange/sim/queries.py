"""The simulator's read methods: open orders, order state and history, positions, user trades, account summaries.

Why apart from the matching core: these answers only read the state (``BookView``: accounts, markets, live orders,
margin reservations) and never change it, so they can be read, tested and extended without touching the code that
moves orders. The account math (equity, margins, available funds) is here too because the summaries show it; the
core asks ``available`` before accepting an order and ``summary``/``position`` for its notifications.

Choices (a simple margin model, documented rather than guessed): initial margin = notional / max_leverage,
maintenance margin is half of it, nothing is ever liquidated. Session PnL never resets (no daily settlement, no
funding): session_rpl/upl are totals since the account opened. History answers come from the kept window (see
``book``): a pruned order answers 10004 order_not_found, a pruned trade is simply absent.

Deribit's history windows (``deribit/history.py``), on the *simulated* clock: the user-trade methods serve trades
of the last 24 h, and the order-history methods orders closed in the last 30 min, unless ``historical: true``,
which serves only the older ones. So a client that forgets the historical window misses here what it would miss
on Deribit. ``get_order_state`` is not windowed (it has no ``historical`` parameter). Order history leaves out
closed orders that never filled unless ``include_unfilled: true``, as Deribit's does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tradebaas.exchange.deribit import history
from tradebaas.instruments import Instrument

from . import validation as v
from .accounts import (
    MAINTENANCE_FRACTION,
    SimAccount,
    SimPosition,
    initial_margin,
    liquidation_price,
    position_object,
)
from .errors import invalid_params
from .market import MarketState
from .orders import SimOrder

#: A read method: (account, params, simulated now in ms) -> Deribit's result.
Reader = Callable[[SimAccount, dict[str, Any], int], Any]


class BookView(Protocol):
    """What the queries read from the matching core (and never write)."""

    instruments: dict[str, Instrument]
    markets: dict[str, MarketState]
    accounts: dict[str, SimAccount]
    #: (account, instrument) -> live orders by id
    live_by: dict[tuple[str, str], dict[str, SimOrder]]
    #: (account, currency) -> initial margin reserved by open orders
    order_margin: dict[tuple[str, str], float]
    #: (account, instrument) -> the same per instrument (shown on the position)
    inst_margin: dict[tuple[str, str], float]


def type_matches(order: SimOrder, type_filter: str | None) -> bool:
    """Deribit's ``type`` filter of the open-order and cancel methods."""
    t = order.order_type
    if type_filter in (None, "all"):
        return True
    if type_filter == "limit":
        return not order.is_trigger
    if type_filter == "trigger_all":
        return order.is_trigger
    if type_filter == "stop_all":
        return t.startswith("stop_")
    if type_filter == "take_all":
        return t.startswith("take_")
    if type_filter == "trailing_all":
        return t == "trailing_stop"
    return t == type_filter


def in_currency(inst: Instrument, currency: str) -> bool:
    """Deribit's ``currency`` filter (upper case; ``ANY`` selects everything): the settlement currency."""
    return currency in ("ANY", inst.settlement_currency)


class Queries:
    """Deribit's read-only ``private/*`` answers over a ``BookView``."""

    def __init__(self, book: BookView) -> None:
        self.book = book
        #: method name (without ``private/``) -> reader
        self.methods: dict[str, Reader] = {
            "get_open_orders": lambda a, p, now: self.get_open_orders(a, p),
            "get_open_orders_by_instrument": lambda a, p, now: self.get_open_orders_by_instrument(a, p),
            "get_open_orders_by_currency": lambda a, p, now: self.get_open_orders_by_currency(a, p),
            "get_order_state": lambda a, p, now: self.get_order_state(a, p),
            "get_order_state_by_label": lambda a, p, now: self.get_order_state_by_label(a, p),
            "get_order_history_by_instrument": self.get_order_history_by_instrument,
            "get_order_history_by_currency": self.get_order_history_by_currency,
            "get_position": lambda a, p, now: self.get_position(a, p),
            "get_positions": lambda a, p, now: self.get_positions(a, p),
            "get_user_trades_by_instrument": self.get_user_trades_by_instrument,
            "get_user_trades_by_instrument_and_time": self.get_user_trades_by_instrument_and_time,
            "get_user_trades_by_currency": self.get_user_trades_by_currency,
            "get_user_trades_by_currency_and_time": self.get_user_trades_by_currency_and_time,
            "get_user_trades_by_order": self.get_user_trades_by_order,
            "get_account_summary": lambda a, p, now: self.get_account_summary(a, p),
            "get_account_summaries": lambda a, p, now: self.get_account_summaries(a, p),
        }

    # ------------------------------------------------------------------------------------------- orders

    def _obj(self, order: SimOrder) -> dict[str, Any]:
        return order.to_deribit(self.book.instruments[order.instrument].contract_size)

    def _in_currency(self, instrument: str, currency: str) -> bool:
        return in_currency(self.book.instruments[instrument], currency)

    def _open_orders(self, account: SimAccount, keep: Callable[[SimOrder], bool]) -> list[dict[str, Any]]:
        live = sorted((o for (acct, _), by in self.book.live_by.items() if acct == account.account_id
                       for o in by.values() if keep(o)), key=lambda o: o.seq)
        return [self._obj(o) for o in live]

    def get_open_orders(self, account: SimAccount, params: dict[str, Any]) -> list[dict[str, Any]]:
        kind = v.string(params, "kind", default="any")
        type_filter = v.string(params, "type", default="all")
        return self._open_orders(account, lambda o: kind in ("any", self.book.instruments[o.instrument].kind)
                                 and type_matches(o, type_filter))

    def get_open_orders_by_instrument(self, account: SimAccount, params: dict[str, Any]) -> list[dict[str, Any]]:
        inst = v.instrument(params, self.book.instruments)
        type_filter = v.string(params, "type", default="all")
        by = self.book.live_by.get((account.account_id, inst.name), {})
        return [self._obj(o) for o in sorted(by.values(), key=lambda o: o.seq) if type_matches(o, type_filter)]

    def get_open_orders_by_currency(self, account: SimAccount, params: dict[str, Any]) -> list[dict[str, Any]]:
        currency = (v.string(params, "currency", required=True) or "").upper()
        type_filter = v.string(params, "type", default="all")
        return self._open_orders(account, lambda o: self._in_currency(o.instrument, currency)
                                 and type_matches(o, type_filter))

    def get_order_state(self, account: SimAccount, params: dict[str, Any]) -> dict[str, Any]:
        return self._obj(v.find_order(account, params))

    def get_order_state_by_label(self, account: SimAccount, params: dict[str, Any]) -> list[dict[str, Any]]:
        currency = (v.string(params, "currency", required=True) or "").upper()
        label = v.string(params, "label", required=True)
        return [self._obj(o) for o in account.orders.values()
                if o.label == label and self._in_currency(o.instrument, currency)]

    def _order_history(self, account: SimAccount, params: dict[str, Any], now_ms: int,
                       keep: Callable[[SimOrder], bool]) -> list[dict[str, Any]]:
        """Closed orders, newest first, in the window ``historical`` names (30 min of recent ones), filled ones only
        unless ``include_unfilled``; ``offset``/``count`` pages (count 1..1000, default 20)."""
        count = v.integer(params, "count", 20) or 20
        if not 1 <= count <= 1000:
            raise invalid_params("count", "must be between 1 and 1000")
        offset = v.integer(params, "offset", 0) or 0
        historical = v.boolean(params, "historical")
        unfilled = v.boolean(params, "include_unfilled")
        done = [o for o in reversed(account.orders.values()) if not o.is_live and keep(o)
                and (unfilled or o.filled_amount > 0)
                and history.served(o.update_ms, now_ms, history.RECENT_ORDERS_MS, historical)]
        return [self._obj(o) for o in done[offset:offset + count]]

    def get_order_history_by_instrument(self, account: SimAccount, params: dict[str, Any],
                                        now_ms: int) -> list[dict[str, Any]]:
        inst = v.instrument(params, self.book.instruments)
        return self._order_history(account, params, now_ms, lambda o: o.instrument == inst.name)

    def get_order_history_by_currency(self, account: SimAccount, params: dict[str, Any],
                                      now_ms: int) -> list[dict[str, Any]]:
        currency = (v.string(params, "currency", required=True) or "").upper()
        kind = v.string(params, "kind", default="any")
        return self._order_history(account, params, now_ms, lambda o: self._in_currency(o.instrument, currency)
                                   and kind in ("any", self.book.instruments[o.instrument].kind))

    # ------------------------------------------------------------------------------------------- positions

    def position(self, account: SimAccount, inst: Instrument) -> dict[str, Any]:
        """Deribit's position object (flat positions too), with the open-order margin and a liquidation estimate."""
        pos = account.positions.get(inst.name) or SimPosition(inst.name)
        m = self.book.markets[inst.name]
        margin = max(0.0, self.book.inst_margin.get((account.account_id, inst.name), 0.0))
        obj = position_object(pos, inst, m.mark_price, m.index_price, margin)
        if pos.size:
            cur = inst.settlement_currency
            free = account.balances.get(cur, 0.0) - self._maintenance(account, cur)
            obj["estimated_liquidation_price"] = liquidation_price(inst, pos.size, pos.average_price, free)
        else:
            obj["estimated_liquidation_price"] = 0.0
        return obj

    def get_position(self, account: SimAccount, params: dict[str, Any]) -> dict[str, Any]:
        return self.position(account, v.instrument(params, self.book.instruments))

    def get_positions(self, account: SimAccount, params: dict[str, Any]) -> list[dict[str, Any]]:
        currency = (v.string(params, "currency", default="any") or "any").upper()
        kind = v.string(params, "kind", default="any")
        out = []
        for name, pos in account.positions.items():
            inst = self.book.instruments[name]
            if pos.size and kind in ("any", inst.kind) and currency in ("ANY", inst.settlement_currency):
                out.append(self.position(account, inst))
        return out

    # ------------------------------------------------------------------------------------------- user trades

    def get_user_trades_by_instrument(self, account: SimAccount, params: dict[str, Any], now_ms: int) -> dict[str, Any]:
        inst = v.instrument(params, self.book.instruments)
        return _trades_page(_in_window(account.trades.get(inst.name, ()), params, now_ms), params)

    def get_user_trades_by_instrument_and_time(self, account: SimAccount, params: dict[str, Any],
                                               now_ms: int) -> dict[str, Any]:
        _time_range(params)
        return self.get_user_trades_by_instrument(account, params, now_ms)

    def get_user_trades_by_currency(self, account: SimAccount, params: dict[str, Any], now_ms: int) -> dict[str, Any]:
        currency = (v.string(params, "currency", required=True) or "").upper()
        kind = v.string(params, "kind", default="any")
        trades = [t for name, ts in account.trades.items() if self._in_currency(name, currency)
                  and kind in ("any", self.book.instruments[name].kind) for t in ts]
        trades.sort(key=lambda t: (t["timestamp"], t["trade_seq"], t["instrument_name"]))
        return _trades_page(_in_window(trades, params, now_ms), params)

    def get_user_trades_by_currency_and_time(self, account: SimAccount, params: dict[str, Any],
                                             now_ms: int) -> dict[str, Any]:
        _time_range(params)
        return self.get_user_trades_by_currency(account, params, now_ms)

    def get_user_trades_by_order(self, account: SimAccount, params: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        order = v.find_order(account, params)
        ids = set(order.trades)
        mine = [t for t in account.trades.get(order.instrument, []) if t["trade_id"] in ids]
        picked = [dict(t) for t in _in_window(mine, params, now_ms)]
        if v.string(params, "sorting", choices=("asc", "desc", "default"), default="default") == "desc":
            picked.reverse()
        return picked

    # ------------------------------------------------------------------------------------------- account math

    def currencies(self, account: SimAccount) -> set[str]:
        """The currencies an account has a balance or a position in."""
        return set(account.balances) | {self.book.instruments[n].settlement_currency for n in account.positions}

    def _floating(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.book.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                total += pos.floating(inst, self.book.markets[name].mark_price)
        return total

    def _position_margin(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.book.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                total += initial_margin(inst, pos.size, self.book.markets[name].mark_price or pos.average_price)
        return total

    def _maintenance(self, account: SimAccount, currency: str) -> float:
        return self._position_margin(account, currency) * MAINTENANCE_FRACTION

    def _equity(self, account: SimAccount, currency: str) -> float:
        return account.balances.get(currency, 0.0) + self._floating(account, currency)

    def available(self, account: SimAccount, currency: str) -> float:
        """Equity minus the initial margin of positions and open orders: what a new order may use."""
        im = self._position_margin(account, currency) + self.book.order_margin.get((account.account_id, currency), 0.0)
        return self._equity(account, currency) - im

    def _delta(self, account: SimAccount, currency: str) -> float:
        total = 0.0
        for name, pos in account.positions.items():
            inst = self.book.instruments[name]
            if pos.size and inst.settlement_currency == currency:
                ref = self.book.markets[name].mark_price or pos.average_price
                total += pos.size / ref if inst.is_inverse else pos.size
        return total

    def summary(self, account: SimAccount, currency: str, extended: bool = False) -> dict[str, Any]:
        """Deribit's account summary for one currency (simple margin model, see module docs)."""
        balance = account.balances.get(currency, 0.0)
        floating = self._floating(account, currency)
        equity = balance + floating
        pos_im = self._position_margin(account, currency)
        orders_im = self.book.order_margin.get((account.account_id, currency), 0.0)
        im = pos_im + orders_im
        mm = pos_im * MAINTENANCE_FRACTION
        rpl = account.realized.get(currency, 0.0)
        available = equity - im
        delta = self._delta(account, currency)
        out: dict[str, Any] = {
            "currency": currency, "balance": balance, "equity": equity, "margin_balance": equity,
            "available_funds": available, "available_withdrawal_funds": max(0.0, min(balance, available)),
            "initial_margin": im, "maintenance_margin": mm, "projected_initial_margin": im,
            "projected_maintenance_margin": mm, "total_pl": rpl + floating, "session_upl": floating,
            "session_rpl": rpl, "futures_pl": rpl + floating, "futures_session_upl": floating,
            "futures_session_rpl": rpl, "options_pl": 0.0, "options_session_upl": 0.0, "options_session_rpl": 0.0,
            "options_value": 0.0, "options_delta": 0.0, "options_gamma": 0.0, "options_vega": 0.0,
            "options_theta": 0.0, "delta_total": delta, "projected_delta_total": delta, "fee_balance": 0.0,
            "spot_reserve": 0.0, "additional_reserve": 0.0,
            "estimated_liquidation_ratio": (mm / equity) if equity > 0 else 0.0,
            "margin_model": "segregated_sm", "portfolio_margining_enabled": False, "cross_collateral_enabled": False,
        }
        if extended:
            out.update({"id": _account_number(account.account_id), "username": account.account_id,
                        "system_name": account.account_id, "type": "main", "email": "",
                        "creation_timestamp": account.created_ms, "security_keys_enabled": False,
                        "mmp_enabled": False, "interuser_transfers_enabled": False, "login_enabled": False,
                        "self_trading_reject_mode": "cancel_maker", "referrer_id": None})
        return out

    def _currency_param(self, account: SimAccount, params: dict[str, Any]) -> str:
        currency = (v.string(params, "currency", required=True) or "").upper()
        known = self.currencies(account) | {i.settlement_currency for i in self.book.instruments.values()}
        if currency not in known:
            raise invalid_params("currency", "unknown currency")
        return currency

    def get_account_summary(self, account: SimAccount, params: dict[str, Any]) -> dict[str, Any]:
        return self.summary(account, self._currency_param(account, params), v.boolean(params, "extended"))

    def get_account_summaries(self, account: SimAccount, params: dict[str, Any]) -> dict[str, Any]:
        extended = v.boolean(params, "extended")
        out: dict[str, Any] = {"summaries": [self.summary(account, c) for c in sorted(self.currencies(account))]}
        if extended:
            out.update({"id": _account_number(account.account_id), "username": account.account_id,
                        "system_name": account.account_id, "type": "main"})
        return out


def _in_window(trades: Iterable[dict[str, Any]], params: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """The trades the ``historical`` flag serves at ``now_ms``: the last 24 h, or (``historical: true``) the rest."""
    historical = v.boolean(params, "historical")
    return [t for t in trades if history.served(t["timestamp"], now_ms, history.RECENT_TRADES_MS, historical)]


def _time_range(params: dict[str, Any]) -> None:
    """The ``..._and_time`` methods need a time range; Deribit: "only one of start_timestamp, end_timestamp is
    truly required" (ccxt's "my trades since" sends only the start)."""
    if params.get("start_timestamp") is None and params.get("end_timestamp") is None:
        raise invalid_params("start_timestamp", "start_timestamp or end_timestamp is required")


def _trades_page(trades: Iterable[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Filter by timestamp/seq and cut to ``count`` (1..1000, default 10).

    Which ``count`` trades: "when start_timestamp is provided trades are returned from the earliest" (Deribit's
    parameter description; likewise ``start_seq``), otherwise the newest. Order: ``asc`` or ``desc`` as asked;
    ``default`` is oldest first when counting from a start, newest first otherwise."""
    start = v.integer(params, "start_timestamp")
    end = v.integer(params, "end_timestamp")
    start_seq = v.integer(params, "start_seq")
    end_seq = v.integer(params, "end_seq")
    count = max(1, min(1000, v.integer(params, "count", 10) or 10))
    sorting = v.string(params, "sorting", choices=("asc", "desc", "default"), default="default")
    picked = [t for t in trades
              if (start is None or t["timestamp"] >= start) and (end is None or t["timestamp"] <= end)
              and (start_seq is None or t["trade_seq"] >= start_seq) and (end_seq is None or t["trade_seq"] <= end_seq)]
    from_start = start is not None or start_seq is not None
    page = picked[:count] if from_start else picked[-count:]
    if sorting == "desc" or (sorting == "default" and not from_start):
        page.reverse()
    return {"trades": [dict(t) for t in page], "has_more": len(picked) > count}


def _account_number(account_id: str) -> int:
    """A stable numeric id for an account name (Deribit's ``id``), without hashing randomness."""
    n = 0
    for ch in account_id.encode():
        n = (n * 131 + ch) % 1_000_000_007
    return n
