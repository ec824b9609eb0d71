"""The simulator's network edge: Deribit's JSON-RPC over WebSocket (/ws/api/v2) and HTTP (/api/v2/...).

Why this shape: the matching core (``matching.SimExchange``) and the market data (``marketdata``) are pure; this
module only decodes requests, authenticates, rate-limits, injects faults, forwards to the core with the simulated
time, routes the core's events to subscribed channels, feeds market ticks and persists state. Every notification is
encoded once and the same bytes go to every subscriber (that is where the messages/s come from).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tradebaas.exchange.deribit import codes
from tradebaas.exchange.sim import state as state_mod
from tradebaas.exchange.sim.auth import AuthStore
from tradebaas.exchange.sim.clock import SimClock
from tradebaas.exchange.sim.errors import SimRefusal, invalid_params
from tradebaas.exchange.sim.faults import Faults
from tradebaas.exchange.sim.marketdata import (
    ChartBook,
    MarketData,
    PriceTick,
    parse_resolution,
    quote_for,
    round_to_tick,
)
from tradebaas.exchange.sim.ratelimit import RateLimiter
from tradebaas.instruments import Instrument

try:
    from tradebaas.exchange.sim.matching import MarketTick
except ImportError:  # pragma: no cover - only while the matching core is not there
    MarketTick = None  # type: ignore[assignment,misc]

try:  # orjson is several times faster; the stdlib is the fallback
    import orjson

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    dumpb: Callable[[Any], bytes] = orjson.dumps
    loads: Callable[[str | bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))

    def dumpb(obj: Any) -> bytes:
        return dumps(obj).encode()

    loads = json.loads

log = logging.getLogger("tradebaas.sim")

API_VERSION = "1.2.26"
BOOK_LEVELS = 20
MAX_WRITE_BUFFER = 32 << 20
TRADES_KEPT = 1000
SAVE_DEBOUNCE_S = 0.1
#: Periodic ``user.portfolio``: on market moves, at most once per simulated second and 10 times per real second.
PORTFOLIO_INTERVAL_MS = 1000
PORTFOLIO_MIN_REAL_S = 0.1
#: Refusals an HTTP client gets with status 401 (the rest are 400).
AUTH_ERRORS = frozenset({codes.AUTHORIZATION_REQUIRED, codes.INVALID_CREDENTIALS, codes.UNAUTHORIZED, codes.FORBIDDEN,
                         codes.RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED})
NUMERIC_PARAMS = frozenset({
    "amount", "contracts", "price", "trigger_price", "trigger_offset", "max_show", "valid_until", "start_timestamp",
    "end_timestamp", "count", "depth", "start_seq", "end_seq", "interval", "timestamp", "offset", "trigger_fill_amount",
})
BOOL_PARAMS = frozenset({
    "post_only", "reject_post_only", "reduce_only", "expired", "extended", "detailed", "include_old", "mmp",
    "include_unsettled", "historical", "refresh_amount",
})
JSON_PARAMS = frozenset({"otoco_config", "channels"})
READ_ONLY_PREFIXES = ("get_", "subscribe", "unsubscribe")
SERVER_PRIVATE = frozenset({"subscribe", "unsubscribe", "unsubscribe_all", "logout", "enable_cancel_on_disconnect",
                            "disable_cancel_on_disconnect", "get_cancel_on_disconnect"})


def coerce_params(params: dict[str, Any]) -> dict[str, Any]:
    """Query-string values arrive as strings: make numbers numbers and booleans booleans, per parameter name."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, str):
            if k in NUMERIC_PARAMS:
                try:
                    f = float(v)
                    v = int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
                except ValueError:
                    pass
            elif k in BOOL_PARAMS and v.lower() in ("true", "false"):
                v = v.lower() == "true"
            elif k in JSON_PARAMS and v[:1] in "[{":
                with contextlib.suppress(ValueError):
                    v = loads(v)
        out[k] = v
    return out


_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]  # FIN + text opcode, unmasked, 7-bit length
_pack_h = struct.Struct("!BBH").pack
_pack_q = struct.Struct("!BBQ").pack


class Conn:
    """One WebSocket client: its authentication, subscriptions, heartbeat and cancel-on-disconnect flag."""

    _ids = 0

    def __init__(self, ws: web.WebSocketResponse, transport: Any) -> None:
        Conn._ids += 1
        self.id = Conn._ids
        self.ws = ws
        self.transport = transport
        self.account_id: str | None = None
        self.channels: set[str] = set()
        self.hb_task: asyncio.Task[None] | None = None
        self.hb_answered = True
        self.cancel_on_disconnect = False
        self.closed = False
        self._out: list[bytes] = []  # whole frames (header, payload, ...) waiting for this loop iteration's flush

    def send(self, text: str | bytes) -> None:
        """Queue one text frame; every frame queued in one event-loop iteration goes out in a single write.

        Why: one ``transport.write`` (one syscall) per notification was the feed's largest cost; a tick produces
        several notifications and the feed handles up to 32 ticks between yields, so batching per connection cuts
        the syscalls many times over while adding no latency beyond the current loop iteration. Frames are built
        here (server frames are unmasked and compression is off for our sockets) and written to the transport
        directly; aiohttp's own control frames (pong, close) are whole frames too, so nothing interleaves inside a
        frame. A peer that stops reading (write buffer above MAX_WRITE_BUFFER) is dropped, as Deribit drops slow
        consumers.
        """
        if self.closed:
            return
        data = text.encode() if isinstance(text, str) else text
        out = self._out
        if not out:
            t = self.transport
            if t is None or t.is_closing():
                self.closed = True
                return
            if t.get_write_buffer_size() > MAX_WRITE_BUFFER:
                self.closed = True
                t.abort()
                return
            asyncio.get_running_loop().call_soon(self.flush)
        n = len(data)
        out.append(_SHORT_HEADERS[n] if n < 126 else
                   _pack_h(0x81, 126, n) if n < 65536 else _pack_q(0x81, 127, n))
        out.append(data)

    def flush(self) -> None:
        """Write the queued frames now (scheduled by ``send``; called early before an abort)."""
        out, self._out = self._out, []
        if self.closed or not out:
            return
        t = self.transport
        if t is None or t.is_closing():
            self.closed = True
            return
        try:
            t.write(b"".join(out))
        except Exception:  # noqa: BLE001 - a broken peer must not break the broadcast
            self.closed = True


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


@dataclass(slots=True)
class ServerConfig:
    min_heartbeat_s: float = 10.0
    state_path: Path | None = None
    testnet: bool = True


def _parse_user_channel(ch: str) -> tuple[str, tuple[str, ...]] | None:
    parts = ch.split(".")
    if len(parts) < 3 or parts[0] != "user":
        return None
    return parts[1], tuple(parts[2:])


class SimServer:
    def __init__(self, exchange: Any, data: MarketData, clock: SimClock, auth: AuthStore, limiter: RateLimiter,
                 faults: Faults, instruments: dict[str, Instrument], config: ServerConfig,
                 extra_state: dict[str, Any] | None = None) -> None:
        self.exchange = exchange
        self.data = data
        self.clock = clock
        self.auth = auth
        self.limiter = limiter
        self.faults = faults
        self.instruments = instruments
        self.config = config
        self.markets = {name: InstrumentMarket(inst) for name, inst in instruments.items()}
        self.chart = ChartBook(data)
        self.subs: dict[str, set[Conn]] = {}
        self._prefix_cache: dict[str, list[str]] = {}  # cleared whenever self.subs changes
        self.user_subs: dict[str, dict[str, set[Conn]]] = {}
        self.conns: set[Conn] = set()
        self.extra_state = extra_state or {}
        self._dirty = False
        self._save_handle: asyncio.TimerHandle | None = None
        self._last_save_s = 0.0
        self._feed_task: asyncio.Task[None] | None = None
        self.ticks_emitted = 0
        self.saves = 0  # state files written (admin/get_status: a test can wait for a save before a SIGKILL)
        self._portfolio_ms = 0  # simulated and real time of the last periodic user.portfolio push
        self._portfolio_real = 0.0
        self.app = web.Application(client_max_size=1 << 20)
        self.app.router.add_get("/ws/api/v2", self.ws_handler)
        self.app.router.add_get("/ws/api/v2/", self.ws_handler)
        self.app.router.add_route("*", "/api/v2/{scope}/{method}", self.http_handler)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def prime(self) -> None:
        """Replay the last minutes before the clock without publishing, so tickers, trades and the forming bar
        exist from the first request (and the core has a price for market orders).

        Ticks the core has already seen (its markets' ``ts_ms``, restored from the state) only rebuild the server's
        view: restored orders must not fire again at old prices. Ticks after that but not after the restored clock
        are ones the core never saw (the feed was behind the clock at the save, or a SIGKILL lost what came after
        the last save): they go to the core in order, so an order the market reached in that gap still fills.
        """
        now = self.clock.now_ms()
        seen = self._core_seen_ms()
        expected: int | None = None  # the tick that follows the core's last one
        if seen is not None:
            nxt = next(iter(self.data.ticks_from(seen + 1)), None)
            expected = nxt.ts_ms if nxt is not None else None
        first = True
        last: PriceTick | None = None
        for tick in self.data.ticks_from(now - 10 * 60_000):
            if tick.ts_ms > now:
                break
            to_core = seen is not None and tick.ts_ms > seen
            if to_core and first:
                first = False
                if tick.ts_ms != expected and tick.continuous:  # a jump from the core's last price (--start)
                    tick = dataclasses.replace(tick, continuous=False)
            self._apply_tick(tick, publish=False, to_exchange=to_core)
            last = tick
        if last is None:
            last = self.data.last_tick_before(now + 1) or next(iter(self.data.ticks_from(now)), None)
            if last is not None:
                self._apply_tick(last, publish=False, to_exchange=False)
        if last is not None and not (seen is not None and last.ts_ms > seen):
            # The price at the restored clock becomes the core's current market (a jump, never a path).
            self._feed_exchange(dataclasses.replace(last, continuous=False))
        self._next_ts = now + 1

    def _core_seen_ms(self) -> int | None:
        """The time of the last tick the matching core has processed (None without a core)."""
        markets = getattr(self.exchange, "markets", None)
        if not isinstance(markets, dict) or not markets:
            return None
        return min(int(getattr(m, "ts_ms", 0)) for m in markets.values())

    async def _on_startup(self, app: web.Application) -> None:
        if self._dirty:
            self.mark_dirty()
        self._feed_task = asyncio.create_task(self._feed())

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._feed_task:
            self._feed_task.cancel()
        for c in list(self.conns):
            c.closed = True
            with contextlib.suppress(Exception):
                await c.ws.close()
        self.flush()

    # ---- persistence ----------------------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        """Schedule a save (flush() on shutdown writes anything pending).

        The delay is SAVE_DEBOUNCE_S, or ten times the last save's duration when the state has grown large, so
        persistence never takes more than about a tenth of the server's time.
        """
        self._dirty = True
        if self._save_handle is None and self.config.state_path is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # before the server runs (prime): _on_startup schedules the save
                return
            self._save_handle = loop.call_later(max(SAVE_DEBOUNCE_S, 10 * self._last_save_s), self.flush)

    def flush(self) -> None:
        self._save_handle = None
        if self.config.state_path is None or self.exchange is None:
            return
        t0 = time.perf_counter()
        self._dirty = False
        st = state_mod.SavedState(self.clock.now_ms(), self.data.name, self.exchange.to_state(), self.extra_state)
        state_mod.save(self.config.state_path, st)
        self.saves += 1
        self._last_save_s = min(2.0, time.perf_counter() - t0)

    # ---- market data feed ------------------------------------------------------------------------------------

    async def _feed(self) -> None:
        """Emit ticks as the simulated clock reaches them; yield to requests regularly when catching up."""
        n = 0
        try:
            for tick in self.data.ticks_from(self._next_ts):
                while tick.ts_ms > self.clock.now_ms():
                    if self.clock.finished:
                        return
                    await asyncio.sleep(min(0.25, max(0.0005, self.clock.wall_delay_s(tick.ts_ms))))
                self._apply_tick(tick, publish=True)
                n += 1
                if n % 32 == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - the feed must be visible when it dies
            log.exception("market feed failed")

    def _apply_tick(self, tick: PriceTick, publish: bool, to_exchange: bool = True) -> None:
        self.ticks_emitted += 1
        self.chart.on_tick(tick)
        ts = tick.ts_ms
        send = publish and not self.faults.stalled(time.monotonic())
        for name, m in self.markets.items():
            inst = m.inst
            q = quote_for(tick, inst)
            trade = self._public_trade(m, tick, q.last_price) if tick.amount_btc > 0 else None
            if send and self._has_prefix(f"book.{name}."):
                changes = self._update_book(m, q.best_bid, q.best_ask)
            else:
                changes = None
                m.ib, m.ia = round(q.best_bid / inst.tick_size), round(q.best_ask / inst.tick_size)
                m.change_id += 1
            m.ticker = self._ticker(m, ts, q)
            if self.exchange is not None and to_exchange:
                mt = MarketTick(name, ts, q.last_price, q.mark_price, q.index_price, q.best_bid, q.best_ask,
                                trade["amount"] if trade else 0.0, tick.continuous)
                events = self.exchange.on_market(mt, ts)
                if events:
                    self._route_events(events)
                    self.mark_dirty()
            if not send:
                continue
            self._publish_prefix(f"ticker.{name}.", m.ticker)
            if trade is not None:
                self._publish_prefix(f"trades.{name}.", [trade])
            if changes is not None:
                bids, asks = changes
                if bids or asks:
                    self._publish_prefix(f"book.{name}.", {
                        "type": "change", "timestamp": ts, "instrument_name": name, "change_id": m.change_id,
                        "prev_change_id": m.change_id - 1, "bids": bids, "asks": asks})
            prefix = f"chart.trades.{name}."
            for ch in self._channels_with_prefix(prefix):
                try:
                    bar = self.chart.current_bar(parse_resolution(ch[len(prefix):]), ts)
                except ValueError:
                    continue
                if bar is not None:
                    self._publish(ch, bar.to_deribit())
        if send and self.exchange is not None and ts - self._portfolio_ms >= PORTFOLIO_INTERVAL_MS:
            self._push_portfolios(ts)

    def _push_portfolios(self, now_ms: int) -> None:
        """Periodic ``user.portfolio`` to its subscribers (Deribit sends it on a timer, not only on fills), so a
        client sees equity and margins follow the mark. Throttled to one per simulated second and at most
        1/PORTFOLIO_MIN_REAL_S per real second (a fast replay must not flood clients)."""
        real = time.monotonic()
        if real - self._portfolio_real < PORTFOLIO_MIN_REAL_S:
            return
        accounts = [acct for acct, subs in self.user_subs.items()
                    if any(ch.startswith("user.portfolio.") and conns for ch, conns in subs.items())]
        if not accounts:
            return
        self._portfolio_ms, self._portfolio_real = now_ms, real
        self._route_events(self.exchange.portfolio_events(accounts))

    def _feed_exchange(self, tick: PriceTick) -> None:
        """Give one tick to the matching core only (no public trade, chart or publication)."""
        if self.exchange is None:
            return
        for name, m in self.markets.items():
            q = quote_for(tick, m.inst)
            amount = _public_amount(m.inst, tick.amount_btc, q.last_price) if tick.amount_btc > 0 else 0.0
            mt = MarketTick(name, tick.ts_ms, q.last_price, q.mark_price, q.index_price, q.best_bid, q.best_ask,
                            amount, tick.continuous)
            events = self.exchange.on_market(mt, tick.ts_ms)
            if events:
                self._route_events(events)
                self.mark_dirty()

    def _has_prefix(self, prefix: str) -> bool:
        return bool(self._channels_with_prefix(prefix))

    def _channels_with_prefix(self, prefix: str) -> list[str]:
        """Subscribed public channels starting with ``prefix``; cached until the subscriptions change (the feed
        asks this several times per tick and instrument)."""
        chans = self._prefix_cache.get(prefix)
        if chans is None:
            chans = self._prefix_cache[prefix] = [ch for ch in self.subs if ch.startswith(prefix)]
        return chans

    def _publish_prefix(self, prefix: str, data: Any) -> None:
        chans = self._channels_with_prefix(prefix)
        if not chans:
            return
        body = dumpb(data)
        for ch in chans:
            self._publish_raw(ch, body)

    def _publish(self, channel: str, data: Any) -> None:
        self._publish_raw(channel, dumpb(data))

    def _publish_raw(self, channel: str, body: bytes) -> None:
        conns = self.subs.get(channel)
        if not conns:
            return
        text = notification(channel, body)
        for c in list(conns):
            c.send(text)

    def _public_trade(self, m: InstrumentMarket, tick: PriceTick, price: float) -> dict[str, Any]:
        inst = m.inst
        amount = _public_amount(inst, tick.amount_btc, price)
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
                 "direction": tick.side, "amount": amount}
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

    def _update_book(self, m: InstrumentMarket, bid: float, ask: float) -> tuple[list[list[Any]], list[list[Any]]] | None:
        """Move the synthetic book (BOOK_LEVELS per side on the tick grid) to the new quote; return its changes
        (None when unchanged). Levels are tick indices, so the diff is arithmetic, not a dict comparison."""
        step = m.inst.tick_size
        ib, ia = round(bid / step), round(ask / step)
        if ib == m.ib and ia == m.ia:
            return None
        ob, oa = m.ib, m.ia
        m.ib, m.ia = ib, ia
        m.change_id += 1
        n = BOOK_LEVELS - 1
        if ob is None or oa is None:
            return ([self._level(m, i, "new") for i in range(ib, ib - n - 1, -1)],
                    [self._level(m, i, "new") for i in range(ia, ia + n + 1)])
        bids = ([self._level(m, i, "delete") for i in range(ob, ob - n - 1, -1) if not ib - n <= i <= ib]
                + [self._level(m, i, "new") for i in range(ib, ib - n - 1, -1) if not ob - n <= i <= ob])
        asks = ([self._level(m, i, "delete") for i in range(oa, oa + n + 1) if not ia <= i <= ia + n]
                + [self._level(m, i, "new") for i in range(ia, ia + n + 1) if not oa <= i <= oa + n])
        return bids, asks

    def _book_levels(self, m: InstrumentMarket) -> tuple[list[list[float]], list[list[float]]]:
        """The whole synthetic book as ``[[price, amount]]`` (bids best first, asks best first)."""
        step, inst = m.inst.tick_size, m.inst
        if m.ib is None or m.ia is None:
            return [], []
        bids = [[round(i * step, 8), self._level_amount(inst, i)] for i in range(m.ib, m.ib - BOOK_LEVELS, -1)]
        asks = [[round(i * step, 8), self._level_amount(inst, i)] for i in range(m.ia, m.ia + BOOK_LEVELS)]
        return bids, asks

    def _ticker(self, m: InstrumentMarket, ts: int, q: Any) -> dict[str, Any]:
        stats = self._stats_cache(ts)
        return {
            "instrument_name": m.inst.name, "timestamp": ts, "state": "open", "stats": stats,
            "open_interest": 0.0, "best_bid_price": q.best_bid,
            "best_bid_amount": self._level_amount(m.inst, round(q.best_bid / m.inst.tick_size)),
            "best_ask_price": q.best_ask,
            "best_ask_amount": self._level_amount(m.inst, round(q.best_ask / m.inst.tick_size)),
            "index_price": q.index_price, "mark_price": q.mark_price, "last_price": q.last_price,
            "min_price": round_to_tick(q.mark_price * 0.975, m.inst.tick_size),
            "max_price": round_to_tick(q.mark_price * 1.025, m.inst.tick_size),
            "estimated_delivery_price": q.index_price, "settlement_price": q.index_price,
            "funding_8h": 0.0, "current_funding": 0.0, "interest_value": 0.0,
        }

    _stats_minute = -1
    _stats: dict[str, Any] = {}

    def _stats_cache(self, ts: int) -> dict[str, Any]:
        minute = ts // 60_000
        if minute != self._stats_minute:
            self._stats_minute = minute
            self._stats = self.chart.stats_24h(ts)
        return self._stats

    # ---- events from the matching core -------------------------------------------------------------------------

    def _route_events(self, events: list[Any]) -> None:
        for ev in events:
            subs = self.user_subs.get(ev.account_id)
            if not subs:
                continue
            for ch, conns in list(subs.items()):
                data = self._event_data_for(ch, ev)
                if data is None or not conns:
                    continue
                text = notification(ch, dumpb(data))
                for c in list(conns):
                    c.send(text)

    def _event_data_for(self, ch: str, ev: Any) -> Any:
        parsed = _parse_user_channel(ch)
        if parsed is None:
            return None
        kind, rest = parsed
        if kind == "portfolio":
            if ev.kind != "user.portfolio":
                return None
            cur = str(ev.data.get("currency", "")) if isinstance(ev.data, dict) else ""
            return ev.data if rest and rest[0].lower() == cur.lower() else None
        if f"user.{kind}" != ev.kind:
            return None
        interval = rest[-1]
        if not self._matches_instrument(rest[:-1], ev.instrument):
            return None
        if kind == "orders" and interval != "raw":
            return [ev.data]
        return ev.data

    def _matches_instrument(self, sel: tuple[str, ...], instrument: str | None) -> bool:
        if len(sel) == 1:
            return sel[0] == instrument
        if len(sel) != 2 or instrument is None:
            return False
        kind, cur = sel
        inst = self.instruments.get(instrument)
        if inst is None:
            return False
        if kind not in ("any", inst.kind):
            return False
        return cur.lower() == "any" or cur.upper() in (inst.base_currency, inst.settlement_currency)

    # ---- request dispatch ----------------------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any], conn: Conn | None, account_id: str | None,
                   rl_key: str) -> Any:
        """Run one request (after transport decoding); raises SimRefusal. ``account_id`` from HTTP auth."""
        params = coerce_params(params)
        if method.startswith("admin/"):
            return await self._admin(method[6:], params)
        rule = self.faults.error_for(method)
        if rule is not None:
            raise SimRefusal(rule.code, rule.message)
        token = params.pop("access_token", None)
        if token is not None:
            account_id = self.auth.account_for_token(str(token))
        if account_id is None and conn is not None:
            account_id = conn.account_id
        if not self.limiter.allow(account_id or rl_key, method, time.monotonic()):
            raise SimRefusal(codes.TOO_MANY_REQUESTS)
        scope, _, name = method.partition("/")
        if scope == "public":
            return self._public(name, params, conn)
        if scope == "private":
            if account_id is None:
                raise SimRefusal(codes.UNAUTHORIZED)
            return self._private(name, params, conn, account_id)
        raise SimRefusal(codes.METHOD_NOT_FOUND)

    def _public(self, name: str, p: dict[str, Any], conn: Conn | None) -> Any:
        now = self.clock.now_ms()
        if name == "test":
            if p.get("expected_result") == "exception":
                raise SimRefusal(codes.INTERNAL_SERVER_ERROR, data="exception")
            return {"version": API_VERSION}
        if name == "hello":
            return {"version": API_VERSION}
        if name == "get_time":
            return now
        if name == "status":
            return {"locked": "false", "locked_indices": []}
        if name == "auth":
            account_id, result = self.auth.login(p)
            if conn is not None:
                conn.account_id = account_id
            return result
        if name == "set_heartbeat":
            return self._set_heartbeat(p, conn)
        if name == "disable_heartbeat":
            if conn is not None and conn.hb_task is not None:
                conn.hb_task.cancel()
                conn.hb_task = None
            return "ok"
        if name == "get_instruments":
            return self._instruments(p)
        if name == "get_currencies":
            return _currencies()
        if name == "ticker":
            return dict(self._market(p).ticker)
        if name == "get_order_book":
            return self._order_book(p)
        if name == "get_tradingview_chart_data":
            return self._chart(p, now)
        if name in ("get_last_trades_by_instrument", "get_last_trades_by_instrument_and_time"):
            return self._last_trades(p)
        if name == "get_index_price":
            return self._index_price(p)
        if name == "get_book_summary_by_instrument":
            return [self._book_summary(self._market(p))]
        if name == "get_book_summary_by_currency":
            cur = str(p.get("currency", "any")).upper()
            return [self._book_summary(m) for m in self.markets.values()
                    if cur == "ANY" or cur in (m.inst.base_currency, m.inst.settlement_currency)]
        if name in ("subscribe", "unsubscribe", "unsubscribe_all"):
            return self._subscription(name, p, conn, private=False)
        if name == "get_funding_rate_value":
            return 0.0
        raise SimRefusal(codes.METHOD_NOT_FOUND)

    def _private(self, name: str, p: dict[str, Any], conn: Conn | None, account_id: str) -> Any:
        if name in SERVER_PRIVATE:
            if name in ("subscribe", "unsubscribe", "unsubscribe_all"):
                return self._subscription(name, p, conn, private=True, account_id=account_id)
            if name == "logout":
                if conn is not None:
                    conn.account_id = None
                    self._drop_private_subs(conn)
                return "ok"
            if name == "enable_cancel_on_disconnect":
                if conn is not None:
                    conn.cancel_on_disconnect = True
                return "ok"
            if name == "disable_cancel_on_disconnect":
                if conn is not None:
                    conn.cancel_on_disconnect = False
                return "ok"
            return {"scope": "connection", "enabled": bool(conn and conn.cancel_on_disconnect)}
        if self.exchange is None:
            raise SimRefusal(codes.NOT_IMPLEMENTED)
        result, events = self.exchange.handle(account_id, name, p, self.clock.now_ms())
        if events:
            self._route_events(events)
        if events or not name.startswith(READ_ONLY_PREFIXES):
            self.mark_dirty()
        return result

    async def _admin(self, name: str, p: dict[str, Any]) -> Any:
        now_s = time.monotonic()
        if name == "get_faults":
            return self.faults.describe(now_s)
        if name == "set_fault":
            try:
                action = self.faults.apply(p, now_s)
            except (ValueError, TypeError) as exc:
                raise invalid_params("action", str(exc)) from None
            if action == "drop":
                asyncio.get_running_loop().call_soon(self.drop_all)
            return self.faults.describe(now_s)
        if name == "save_state":
            self.flush()
            return "ok"
        if name == "get_status":
            return {"clock_ms": self.clock.now_ms(), "speed": self.clock.speed, "data": self.data.name,
                    "data_start_ms": self.data.start_ms, "data_end_ms": self.data.end_ms,
                    "finished": self.clock.finished, "connections": len(self.conns), "ticks": self.ticks_emitted,
                    "saves": self.saves, "unsaved": self._dirty}
        raise SimRefusal(codes.METHOD_NOT_FOUND)

    def drop_all(self) -> None:
        """Abort every WebSocket connection at the transport (clients see an abnormal close, no close frame)."""
        for c in list(self.conns):
            c.flush()  # what was answered before the drop (the admin call's own answer) still goes out first
            c.closed = True
            if c.transport is not None:
                c.transport.abort()

    # ---- public helpers -------------------------------------------------------------------------------------------

    def _market(self, p: dict[str, Any]) -> InstrumentMarket:
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

    def _order_book(self, p: dict[str, Any]) -> dict[str, Any]:
        m = self._market(p)
        depth = int(p.get("depth") or 5)
        out = dict(m.ticker)
        bids, asks = self._book_levels(m)
        out["bids"], out["asks"] = bids[:depth], asks[:depth]
        out["change_id"] = m.change_id
        return out

    def _chart(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        self._market(p)
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
        m = self._market(p)
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

    # ---- subscriptions -----------------------------------------------------------------------------------------

    def _subscription(self, name: str, p: dict[str, Any], conn: Conn | None, private: bool,
                      account_id: str | None = None) -> Any:
        if conn is None:
            raise SimRefusal(codes.METHOD_NOT_FOUND, data={"reason": "subscriptions need a WebSocket"})
        if name == "unsubscribe_all":
            for ch in list(conn.channels):
                self._unsub(conn, ch)
            return "ok"
        chans = p.get("channels")
        if not isinstance(chans, list) or not all(isinstance(c, str) for c in chans):
            raise invalid_params("channels", "must be an array of strings")
        if name == "unsubscribe":
            removed = [ch for ch in chans if ch in conn.channels]
            for ch in removed:
                self._unsub(conn, ch)
            return removed
        ok: list[str] = []
        for ch in chans:
            if self._valid_channel(ch, conn, private, account_id):
                if ch not in conn.channels:
                    self._sub(conn, ch, account_id)
                    self._on_new_subscription(conn, ch)
                ok.append(ch)
        return ok

    def _valid_channel(self, ch: str, conn: Conn, private: bool, account_id: str | None) -> bool:
        parts = ch.split(".")
        if parts[0] == "user":
            if not private:
                return False
            if parts[1] == "portfolio":
                return len(parts) == 3
            if parts[1] in ("orders", "trades", "changes"):
                if parts[-1] not in ("raw", "100ms", "agg2") or len(parts) not in (4, 5):
                    return False
                return len(parts) == 5 or parts[2] in self.instruments
            return False
        if parts[0] == "chart" and len(parts) == 4 and parts[1] == "trades":
            if parts[2] not in self.instruments:
                return False
            try:
                parse_resolution(parts[3])
            except ValueError:
                return False
            return True
        if parts[0] in ("ticker", "trades", "book") and len(parts) == 3:
            if parts[1] not in self.instruments or parts[2] not in ("raw", "100ms", "agg2"):
                return False
            if parts[2] == "raw" and conn.account_id is None and account_id is None:
                raise SimRefusal(codes.RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED)
            return True
        return False

    def _sub(self, conn: Conn, ch: str, account_id: str | None) -> None:
        conn.channels.add(ch)
        if ch.startswith("user."):
            acc = account_id or conn.account_id
            assert acc is not None
            self.user_subs.setdefault(acc, {}).setdefault(ch, set()).add(conn)
        else:
            self.subs.setdefault(ch, set()).add(conn)
            self._prefix_cache.clear()

    def _unsub(self, conn: Conn, ch: str) -> None:
        conn.channels.discard(ch)
        if ch.startswith("user."):
            for subs in self.user_subs.values():
                s = subs.get(ch)
                if s is not None:
                    s.discard(conn)
                    if not s:
                        del subs[ch]
        else:
            s = self.subs.get(ch)
            if s is not None:
                s.discard(conn)
                if not s:
                    del self.subs[ch]
                    self._prefix_cache.clear()

    def _drop_private_subs(self, conn: Conn) -> None:
        for ch in [c for c in conn.channels if c.startswith("user.")]:
            self._unsub(conn, ch)

    def _on_new_subscription(self, conn: Conn, ch: str) -> None:
        """A book subscription starts with a snapshot; the current ticker is sent at once (Deribit does too)."""
        parts = ch.split(".")
        if parts[0] == "book":
            m = self.markets[parts[1]]
            bids, asks = self._book_levels(m)
            snap = {"type": "snapshot", "timestamp": m.ticker.get("timestamp", self.clock.now_ms()),
                    "instrument_name": m.inst.name, "change_id": m.change_id,
                    "bids": [["new", px, a] for px, a in bids], "asks": [["new", px, a] for px, a in asks]}
            asyncio.get_running_loop().call_soon(self._send_one, conn, ch, snap)
        elif parts[0] == "ticker":
            m = self.markets[parts[1]]
            if m.ticker:
                asyncio.get_running_loop().call_soon(self._send_one, conn, ch, m.ticker)

    def _send_one(self, conn: Conn, ch: str, data: Any) -> None:
        if ch in conn.channels and not self.faults.stalled(time.monotonic()):
            conn.send(notification(ch, dumpb(data)))

    # ---- heartbeats -----------------------------------------------------------------------------------------------

    def _set_heartbeat(self, p: dict[str, Any], conn: Conn | None) -> str:
        try:
            interval = float(p.get("interval"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise invalid_params("interval", "required") from None
        if interval < self.config.min_heartbeat_s:
            raise invalid_params("interval", f"interval must be >= {self.config.min_heartbeat_s:g}")
        if conn is None:
            raise SimRefusal(codes.METHOD_NOT_FOUND, data={"reason": "heartbeats need a WebSocket"})
        if conn.hb_task is not None:
            conn.hb_task.cancel()
        conn.hb_answered = True
        conn.hb_task = asyncio.create_task(self._heartbeat(conn, interval))
        return "ok"

    async def _heartbeat(self, conn: Conn, interval: float) -> None:
        """Every interval send ``test_request``; close the connection if the previous one went unanswered."""
        msg = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
        while not conn.closed:
            await asyncio.sleep(interval)
            if self.faults.stalled(time.monotonic()):
                continue
            if not conn.hb_answered:
                log.info("connection %s missed its heartbeat; closing", conn.id)
                conn.closed = True
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1000, message=b"heartbeat timeout")
                return
            conn.hb_answered = False
            conn.send(msg)

    # ---- transports -----------------------------------------------------------------------------------------------

    def _envelope(self, rid: Any, us_in: int, result: Any = None, error: SimRefusal | None = None) -> str:
        us_out = int(time.time() * 1_000_000)
        env: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            env["error"] = error.to_json()
        else:
            env["result"] = result
        env.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=self.config.testnet)
        return dumps(env)

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, autoping=True, compress=False)
        await ws.prepare(request)
        conn = Conn(ws, request.transport)
        self.conns.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._ws_message(conn, msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._disconnect(conn)
        return ws

    async def _ws_message(self, conn: Conn, text: str) -> None:
        us_in = int(time.time() * 1_000_000)
        if self.faults.stalled(time.monotonic()):
            return
        try:
            req = loads(text)
        except ValueError:
            conn.send(self._envelope(None, us_in, error=SimRefusal(codes.PARSE_ERROR)))
            return
        if not isinstance(req, dict):
            conn.send(self._envelope(None, us_in, error=SimRefusal(codes.INVALID_REQUEST)))
            return
        rid = req.get("id")
        method = req.get("method")
        if rid is None or not isinstance(method, str):
            err = invalid_params("id", "id and method are required")
            conn.send(self._envelope(rid, us_in, error=err))
            return
        if method == "public/test":
            conn.hb_answered = True
        params = req.get("params") or {}
        if not isinstance(params, dict):
            conn.send(self._envelope(rid, us_in, error=invalid_params("params", "params must be an object")))
            return
        try:
            result = await self.call(method, params, conn, None, f"conn:{conn.id}")
            out = self._envelope(rid, us_in, result=result)
        except SimRefusal as exc:
            out = self._envelope(rid, us_in, error=exc)
        except Exception as exc:  # noqa: BLE001 - every request gets an answer
            log.exception("request %s failed", method)
            out = self._envelope(rid, us_in, error=SimRefusal(codes.INTERNAL_SERVER_ERROR, data=str(exc)))
        if self.faults.delay_ms and not method.startswith("admin/"):
            await asyncio.sleep(self.faults.delay_ms / 1000)
        if self.faults.stalled(time.monotonic()) and not method.startswith("admin/"):
            return
        conn.send(out)

    def _disconnect(self, conn: Conn) -> None:
        conn.closed = True
        self.conns.discard(conn)
        if conn.hb_task is not None:
            conn.hb_task.cancel()
        for ch in list(conn.channels):
            self._unsub(conn, ch)
        self.limiter.forget(f"conn:{conn.id}")
        if conn.cancel_on_disconnect and conn.account_id and self.exchange is not None:
            with contextlib.suppress(SimRefusal):
                _, events = self.exchange.handle(conn.account_id, "cancel_all", {}, self.clock.now_ms())
                self._route_events(events)
                self.mark_dirty()

    async def http_handler(self, request: web.Request) -> web.StreamResponse:
        us_in = int(time.time() * 1_000_000)
        scope = request.match_info["scope"]
        method = f"{scope}/{request.match_info['method']}"
        if scope not in ("public", "private", "admin"):
            raise web.HTTPNotFound()
        if self.faults.stalled(time.monotonic()) and scope != "admin":
            await asyncio.sleep(max(0.0, self.faults.stall_until_s - time.monotonic()))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        rid: Any = None
        body = ""
        try:
            if request.method == "GET":
                params: dict[str, Any] = dict(request.query)
                if "id" in params and scope != "admin":
                    rid = params.pop("id")
            elif request.method == "POST":
                body = await request.text()
                try:
                    req = loads(body) if body else {}
                except ValueError:
                    raise SimRefusal(codes.PARSE_ERROR) from None
                if not isinstance(req, dict):
                    raise SimRefusal(codes.INVALID_REQUEST)
                rid = req.get("id")
                if rid is None:
                    raise invalid_params("id", "id is required")
                params = req.get("params") or {}
                if not isinstance(params, dict):
                    raise invalid_params("params", "params must be an object")
            else:
                raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
            account_id = None
            header = request.headers.get("Authorization")
            if header and scope == "private":
                account_id = self.auth.account_for_http(header, request.method, request.raw_path, body)
            peer = request.remote or "?"
            result = await self.call(method, params, None, account_id, f"ip:{peer}")
            status, text = 200, self._envelope(rid, us_in, result=result)
        except SimRefusal as exc:
            status = 401 if exc.code in AUTH_ERRORS else 400
            text = self._envelope(rid, us_in, error=exc)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("request %s failed", method)
            status, text = 500, self._envelope(rid, us_in, error=SimRefusal(codes.INTERNAL_SERVER_ERROR, data=str(exc)))
        if self.faults.delay_ms and scope != "admin":
            await asyncio.sleep(self.faults.delay_ms / 1000)
        return web.Response(status=status, text=text, content_type="application/json")


def _public_amount(inst: Instrument, amount_btc: float, price: float) -> float:
    """A tick's BTC volume as a trade amount of ``inst`` (contracts of USD for inverse, BTC for linear)."""
    if inst.is_inverse:
        return max(inst.min_trade_amount, round(amount_btc * price / inst.contract_size) * inst.contract_size)
    return round(max(inst.min_trade_amount, round(amount_btc / inst.min_trade_amount) * inst.min_trade_amount), 6)


def notification(channel: str, body: bytes) -> bytes:
    """A Deribit subscription notification around an already-encoded ``data`` (encoded once per message)."""
    return b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":' + dumpb(channel) + b',"data":' + body + b"}}"


def _currencies() -> list[dict[str, Any]]:
    def cur(code: str, long: str, coin: str, fee: float, prec: int) -> dict[str, Any]:
        return {"currency": code, "currency_long": long, "coin_type": coin, "fee_precision": prec,
                "min_confirmations": 1, "min_withdrawal_fee": fee, "withdrawal_fee": fee,
                "withdrawal_priorities": [], "apr": 0.0, "in_cross_collateral_pool": True,
                "network_fee": fee, "network_currency": code, "decimals": prec}
    return [cur("BTC", "Bitcoin", "BITCOIN", 0.0001, 4), cur("USDC", "USD Coin", "ERC20", 1.0, 2)]
