"""The simulator's public market views: per instrument the ticker, recent trades, a synthetic book and the chart,
and Deribit's public market methods that answer from them.

Why apart from the transport: these are what a market-data client sees (``public/ticker``, ``get_order_book``,
``get_tradingview_chart_data``, ``get_instruments``, ...) and what the feed publishes on ``ticker.*``,
``trades.*``, ``book.*`` and ``chart.*``; they depend only on the price stream, not on sockets or accounts.

The book is synthetic: ``BOOK_LEVELS`` levels per side on the tick grid from the best quotes out, each with a size
that depends only on its price, so book changes are computed arithmetically from the old and new best quotes.
An empty side (a quote of 0: recorded data can have one) is shown as Deribit shows it: ``best_bid_price: 0`` with
``best_bid_amount: 0`` and no levels, meaning "no price", never a price of 0.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tradebaas.exchange.deribit import codes
from tradebaas.instruments import Instrument

from .errors import coded, invalid_params
from .marketdata import ChartBook, MarketData, PriceTick, Quote, parse_resolution, round_to_tick

BOOK_LEVELS = 20
TRADES_KEPT = 1000

#: A public market method: (params, simulated now in ms) -> Deribit's result.
Answer = Callable[[dict[str, Any], int], Any]
#: Book changes of one tick: (bids, asks) as Deribit's ``[action, price, amount]`` entries.
BookChanges = tuple[list[list[Any]], list[list[Any]]]


@dataclass(slots=True)
class InstrumentMarket:
    """What the server shows for one instrument: last quote, ticker, recent trades, synthetic book."""

    inst: Instrument
    ticker: dict[str, Any] = field(default_factory=dict)
    trades: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=TRADES_KEPT))
    ib: int | None = None  # best bid as a tick index (price / tick_size)
    ia: int | None = None
    level_cache: dict[int, list[Any]] = field(default_factory=dict)
    change_id: int = 0
    last_price: float = 0.0


class PublicViews:
    """Every instrument's public market, updated tick by tick, and the public methods answered from it."""

    def __init__(self, instruments: dict[str, Instrument], data: MarketData) -> None:
        self.instruments = instruments
        self.markets = {name: InstrumentMarket(inst) for name, inst in instruments.items()}
        self.chart = ChartBook(data)
        self._stats_minute = -1
        self._stats: dict[str, Any] = {}
        #: method name (without ``public/``) -> answer
        self.methods: dict[str, Answer] = {
            "get_instruments": lambda p, now: self._instruments(p),
            "get_instrument": lambda p, now: self._instrument(p),
            "get_currencies": lambda p, now: _currencies(),
            "ticker": lambda p, now: dict(self.market(p).ticker),
            "get_order_book": lambda p, now: self._order_book(p),
            "get_tradingview_chart_data": self._chart,
            "get_last_trades_by_instrument": lambda p, now: self._last_trades(p),
            "get_last_trades_by_instrument_and_time": lambda p, now: self._last_trades(p),
            "get_index_price": lambda p, now: self._index_price(p),
            "get_book_summary_by_instrument": lambda p, now: [self._book_summary(self.market(p))],
            "get_book_summary_by_currency": lambda p, now: self._book_summaries(p),
            "get_funding_rate_value": lambda p, now: 0.0,
        }

    # ---- per tick ---------------------------------------------------------------------------------------------

    def instrument_tick(self, m: InstrumentMarket, tick: PriceTick, q: Quote,
                        book_changes: bool) -> tuple[dict[str, Any] | None, BookChanges | None]:
        """Move one instrument to ``tick`` (quote ``q``): its public trade (None for a quote-only tick), the book
        changes when ``book_changes`` (someone listens: None otherwise, or when the book did not move), the ticker."""
        inst = m.inst
        trade = self._public_trade(m, tick, q.last_price) if tick.amount_btc > 0 else None
        if book_changes:
            changes = self._update_book(m, q.best_bid, q.best_ask)
        else:
            changes = None
            m.ib, m.ia = _level_index(q.best_bid, inst.tick_size), _level_index(q.best_ask, inst.tick_size)
            m.change_id += 1
        m.ticker = self._ticker(m, tick.ts_ms, q)
        return trade, changes

    def _public_trade(self, m: InstrumentMarket, tick: PriceTick, price: float) -> dict[str, Any]:
        inst = m.inst
        amount = public_amount(inst, tick.amount_btc, price)
        prev = m.last_price
        if price > prev:
            tick_dir = 0
        elif price < prev:
            tick_dir = 2
        else:
            tick_dir = 1 if (m.trades and m.trades[-1]["tick_direction"] in (0, 1)) else 3
        m.last_price = price
        seq = tick.seq
        trade = {"trade_seq": seq, "trade_id": (f"{inst.settlement_currency}-{seq}" if not inst.is_inverse else str(seq)),
                 "timestamp": tick.ts_ms, "tick_direction": tick_dir, "price": price,
                 "mark_price": round(tick.price, 2), "index_price": round(tick.price, 2), "instrument_name": inst.name,
                 "direction": tick.side, "amount": amount, "contracts": round(amount / inst.contract_size, 8)}
        m.trades.append(trade)
        return trade

    @staticmethod
    def _level_amount(inst: Instrument, i: int) -> float:
        """Deterministic size of the synthetic level at tick index ``i`` (depends only on the price)."""
        k = 1 + (i * 7919) % 5
        if inst.is_inverse:
            return float(k * 100 * inst.contract_size)
        return round(k * 0.1, 3)

    def _level(self, m: InstrumentMarket, i: int, action: str) -> list[Any]:
        """A book change entry; cached per tick index because the same levels come and go all the time."""
        key = i if action == "new" else -i - 1
        lv = m.level_cache.get(key)
        if lv is None:
            if len(m.level_cache) > 200_000:
                m.level_cache.clear()
            lv = [action, round(i * m.inst.tick_size, 8), 0.0 if action == "delete" else self._level_amount(m.inst, i)]
            m.level_cache[key] = lv
        return lv

    def _update_book(self, m: InstrumentMarket, bid: float, ask: float) -> BookChanges | None:
        """Move the synthetic book (BOOK_LEVELS per side on the tick grid) to the new quote; return its changes
        (None when unchanged). Levels are tick indices, so the diff is arithmetic, not a dict comparison."""
        step = m.inst.tick_size
        ib, ia = _level_index(bid, step), _level_index(ask, step)
        if ib == m.ib and ia == m.ia:
            return None
        ob, oa = m.ib, m.ia
        m.ib, m.ia = ib, ia
        m.change_id += 1
        return self._side_changes(m, ob, ib, -1), self._side_changes(m, oa, ia, 1)

    def _side_changes(self, m: InstrumentMarket, old: int | None, new: int | None, away: int) -> list[list[Any]]:
        """One side's changes from best level ``old`` to ``new`` (None: the side is empty); ``away`` is the
        direction of worse prices (-1 for bids, +1 for asks)."""
        n = BOOK_LEVELS - 1
        before = set() if old is None else set(range(old, old + away * (n + 1), away))
        after = set() if new is None else set(range(new, new + away * (n + 1), away))
        order = sorted if away > 0 else (lambda xs: sorted(xs, reverse=True))
        return ([self._level(m, i, "delete") for i in order(before - after)]
                + [self._level(m, i, "new") for i in order(after - before)])

    def book_levels(self, m: InstrumentMarket) -> tuple[list[list[float]], list[list[float]]]:
        """The whole synthetic book as ``[[price, amount]]`` (bids best first, asks best first; empty side: [])."""
        step, inst = m.inst.tick_size, m.inst
        bids = [] if m.ib is None else [[round(i * step, 8), self._level_amount(inst, i)]
                                         for i in range(m.ib, m.ib - BOOK_LEVELS, -1)]
        asks = [] if m.ia is None else [[round(i * step, 8), self._level_amount(inst, i)]
                                         for i in range(m.ia, m.ia + BOOK_LEVELS)]
        return bids, asks

    def book_snapshot(self, m: InstrumentMarket, now_ms: int) -> dict[str, Any]:
        """The first message of a ``book.*`` subscription: the whole book at the current change id."""
        bids, asks = self.book_levels(m)
        return {"type": "snapshot", "timestamp": m.ticker.get("timestamp", now_ms),
                "instrument_name": m.inst.name, "change_id": m.change_id,
                "bids": [["new", px, a] for px, a in bids], "asks": [["new", px, a] for px, a in asks]}

    def _ticker(self, m: InstrumentMarket, ts: int, q: Quote) -> dict[str, Any]:
        stats = self._stats_cache(ts)
        return {
            "instrument_name": m.inst.name, "timestamp": ts, "state": "open", "stats": stats,
            "open_interest": 0.0, "best_bid_price": q.best_bid if m.ib is not None else 0.0,
            "best_bid_amount": self._level_amount(m.inst, m.ib) if m.ib is not None else 0.0,
            "best_ask_price": q.best_ask if m.ia is not None else 0.0,
            "best_ask_amount": self._level_amount(m.inst, m.ia) if m.ia is not None else 0.0,
            "index_price": q.index_price, "mark_price": q.mark_price, "last_price": q.last_price,
            "min_price": round_to_tick(q.mark_price * 0.975, m.inst.tick_size),
            "max_price": round_to_tick(q.mark_price * 1.025, m.inst.tick_size),
            "estimated_delivery_price": q.index_price, "settlement_price": q.index_price,
            "funding_8h": 0.0, "current_funding": 0.0, "interest_value": 0.0,
        }

    def _stats_cache(self, ts: int) -> dict[str, Any]:
        minute = ts // 60_000
        if minute != self._stats_minute:
            self._stats_minute = minute
            self._stats = self.chart.stats_24h(ts)
        return self._stats

    # ---- public methods -------------------------------------------------------------------------------------------

    def market(self, p: dict[str, Any]) -> InstrumentMarket:
        """The market named by ``instrument_name`` (-32602 when missing or unknown, as Deribit answers)."""
        name = p.get("instrument_name")
        if name is None:
            raise invalid_params("instrument_name", "instrument_name required")
        m = self.markets.get(str(name))
        if m is None:
            raise invalid_params("instrument_name", "wrong format")
        return m

    def _instruments(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        cur = str(p.get("currency") or "any").upper()
        kind = p.get("kind")
        if p.get("expired") is True:
            return []
        out = []
        for inst in self.instruments.values():
            if cur not in ("ANY", inst.settlement_currency, inst.base_currency if inst.is_inverse else ""):
                continue
            if kind not in (None, "", inst.kind):
                continue
            out.append(inst.to_deribit())
        return out

    def _instrument(self, p: dict[str, Any]) -> dict[str, Any]:
        """``public/get_instrument``: the same object as in ``get_instruments`` (unknown name: 10020, as Deribit)."""
        name = p.get("instrument_name")
        if not isinstance(name, str) or not name:
            raise invalid_params("instrument_name", "instrument_name required")
        inst = self.instruments.get(name)
        if inst is None:
            raise coded(codes.INVALID_OR_UNSUPPORTED_INSTRUMENT, f"unknown instrument {name}", "instrument_name")
        return inst.to_deribit()

    def _order_book(self, p: dict[str, Any]) -> dict[str, Any]:
        m = self.market(p)
        depth = int(p.get("depth") or 5)
        out = dict(m.ticker)
        bids, asks = self.book_levels(m)
        out["bids"], out["asks"] = bids[:depth], asks[:depth]
        out["change_id"] = m.change_id
        return out

    def _chart(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        self.market(p)
        try:
            res = parse_resolution(p.get("resolution", "1"))
        except ValueError:
            raise invalid_params("resolution", "wrong format") from None
        for k in ("start_timestamp", "end_timestamp"):
            if not isinstance(p.get(k), int | float):
                raise invalid_params(k, "required")
        start, end = int(p["start_timestamp"]), int(p["end_timestamp"])
        bars = self.chart.bars(start, end, res, now)[-5000:]
        if not bars:
            return {"status": "no_data", "ticks": [], "open": [], "high": [], "low": [], "close": [], "volume": [], "cost": []}
        return {"status": "ok", "ticks": [b.tick for b in bars], "open": [b.open for b in bars],
                "high": [b.high for b in bars], "low": [b.low for b in bars], "close": [b.close for b in bars],
                "volume": [round(b.volume, 8) for b in bars], "cost": [round(b.cost, 2) for b in bars]}

    def _last_trades(self, p: dict[str, Any]) -> dict[str, Any]:
        m = self.market(p)
        count = max(1, min(1000, int(p.get("count") or 10)))
        trades = list(m.trades)
        if "start_timestamp" in p:
            trades = [t for t in trades if t["timestamp"] >= int(p["start_timestamp"])]
        if "end_timestamp" in p:
            trades = [t for t in trades if t["timestamp"] <= int(p["end_timestamp"])]
        if "start_seq" in p:
            trades = [t for t in trades if t["trade_seq"] >= int(p["start_seq"])]
        if "end_seq" in p:
            trades = [t for t in trades if t["trade_seq"] <= int(p["end_seq"])]
        asc = p.get("sorting") == "asc"
        sel = trades[:count] if asc else trades[::-1][:count]
        return {"trades": sel, "has_more": len(trades) > count}

    def _index_price(self, p: dict[str, Any]) -> dict[str, Any]:
        name = str(p.get("index_name", "btc_usd")).lower()
        if name not in ("btc_usd", "btc_usdc"):
            raise invalid_params("index_name", "wrong format")
        m = next(iter(self.markets.values()))
        px = m.ticker.get("index_price", 0.0)
        return {"index_price": px, "estimated_delivery_price": px}

    def _book_summaries(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        cur = str(p.get("currency", "any")).upper()
        return [self._book_summary(m) for m in self.markets.values()
                if cur == "ANY" or cur in (m.inst.base_currency, m.inst.settlement_currency)]

    def _book_summary(self, m: InstrumentMarket) -> dict[str, Any]:
        t = m.ticker
        st = t.get("stats", {})
        return {"instrument_name": m.inst.name, "base_currency": m.inst.base_currency,
                "quote_currency": m.inst.quote_currency, "mark_price": t.get("mark_price"),
                "last": t.get("last_price"), "bid_price": t.get("best_bid_price"), "ask_price": t.get("best_ask_price"),
                "high": st.get("high"), "low": st.get("low"), "volume": st.get("volume"),
                "volume_usd": st.get("volume_usd"), "price_change": st.get("price_change"),
                "open_interest": 0.0, "creation_timestamp": t.get("timestamp"), "estimated_delivery_price": t.get("index_price"),
                "funding_8h": 0.0, "current_funding": 0.0, "interest_rate": 0.0, "mid_price": None}


def _level_index(price: float, step: float) -> int | None:
    """A best quote as a tick index; None for an empty side (Deribit's 0)."""
    return round(price / step) if price > 0 else None


def public_amount(inst: Instrument, amount_btc: float, price: float) -> float:
    """A tick's BTC volume as a trade amount of ``inst`` (contracts of USD for inverse, BTC for linear)."""
    if inst.is_inverse:
        return max(inst.min_trade_amount, round(amount_btc * price / inst.contract_size) * inst.contract_size)
    return round(max(inst.min_trade_amount, round(amount_btc / inst.min_trade_amount) * inst.min_trade_amount), 6)


def _currencies() -> list[dict[str, Any]]:
    def cur(code: str, long: str, coin: str, fee: float, prec: int) -> dict[str, Any]:
        return {"currency": code, "currency_long": long, "coin_type": coin, "fee_precision": prec,
                "min_confirmations": 1, "min_withdrawal_fee": fee, "withdrawal_fee": fee,
                "withdrawal_priorities": [], "apr": 0.0, "in_cross_collateral_pool": True,
                "network_fee": fee, "network_currency": code, "decimals": prec}
    return [cur("BTC", "Bitcoin", "BITCOIN", 0.0001, 4), cur("USDC", "USD Coin", "ERC20", 1.0, 2)]
