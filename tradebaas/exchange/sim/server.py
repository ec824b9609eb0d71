"""The simulator's transport: Deribit's JSON-RPC over WebSocket (/ws/api/v2) and HTTP (/api/v2/...).

Why this shape: the matching core (``matching.SimExchange``), the public market views (``public``), the channel
registry (``channels``) and the market feed (``feed``) each own one job; this module decodes requests,
authenticates (``auth``), rate-limits, injects faults, dispatches each method to its owner with the simulated time,
keeps the WebSocket sessions (subscriptions, heartbeats, cancel-on-disconnect) and commits the core's changes to
the journal (``durable.SimStore``) after every call into the core, writing them out before any bytes leave for a
client (``barrier``: in ``Conn.flush`` and before every HTTP answer), so nothing reports a change that could be
lost with the process. ``SimServer`` wires them together and is the
simulator's network entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tradebaas.exchange.deribit import codes
from tradebaas.exchange.sim.auth import AuthStore
from tradebaas.exchange.sim.channels import ChannelRegistry, Subscriber, notification
from tradebaas.exchange.sim.clock import SimClock
from tradebaas.exchange.sim.codec import dumpb, dumps, loads
from tradebaas.exchange.sim.durable import SimStore
from tradebaas.exchange.sim.errors import SimRefusal, invalid_params, unsupported
from tradebaas.exchange.sim.faults import Faults
from tradebaas.exchange.sim.feed import MarketFeed
from tradebaas.exchange.sim.marketdata import MarketData
from tradebaas.exchange.sim.public import PublicViews
from tradebaas.exchange.sim.ratelimit import RateLimiter
from tradebaas.instruments import Instrument
from tradebaas.wsframe import text_frame_header

log = logging.getLogger("tradebaas.sim")

API_VERSION = "1.2.26"
MAX_WRITE_BUFFER = 32 << 20
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


class Conn:
    """One WebSocket client: its authentication, subscriptions, heartbeat and cancel-on-disconnect flag."""

    _ids = 0

    def __init__(self, ws: web.WebSocketResponse, transport: Any, before_write: Callable[[], Any] | None = None) -> None:
        Conn._ids += 1
        self.id = Conn._ids
        self.ws = ws
        self.transport = transport
        self.before_write = before_write  # the journal's commit: nothing leaves before the change it reports is durable
        self.account_id: str | None = None
        self.scope: str | None = None  # the scope ``public/auth`` granted this connection
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
        out.append(text_frame_header(len(data)))
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
        if self.before_write is not None:
            self.before_write()
        try:
            t.write(b"".join(out))
        except Exception:  # noqa: BLE001 - a broken peer must not break the broadcast
            self.closed = True


@dataclass(slots=True)
class ServerConfig:
    min_heartbeat_s: float = 10.0
    testnet: bool = True
    #: the simulator's wall clock runs this far ahead of the host's (``--clock-offset``): envelopes' usIn/usOut
    clock_offset_s: float = 0.0


class SimServer:
    """The simulator's network edge over its parts (core, views, channels, feed); ``app`` is the aiohttp app."""

    def __init__(self, exchange: Any, data: MarketData, clock: SimClock, auth: AuthStore, limiter: RateLimiter,
                 faults: Faults, instruments: dict[str, Instrument], config: ServerConfig,
                 store: SimStore | None = None) -> None:
        self.exchange = exchange
        self.data = data
        self.clock = clock
        self.auth = auth
        self.limiter = limiter
        self.faults = faults
        self.instruments = instruments
        self.config = config
        self.views = PublicViews(instruments, data)
        self.markets = self.views.markets  # instrument -> its public market (ticker, trades, book)
        self.channels = ChannelRegistry(instruments)
        self.store = store  # None: nothing is kept (--no-persist)
        self.feed = MarketFeed(exchange, data, clock, faults, self.views, self.channels, self.commit)
        self.conns: set[Conn] = set()
        self._feed_task: asyncio.Task[None] | None = None
        self.app = web.Application(client_max_size=1 << 20)
        self.app.router.add_get("/ws/api/v2", self.ws_handler)
        self.app.router.add_get("/ws/api/v2/", self.ws_handler)
        self.app.router.add_route("*", "/api/v2/{scope}/{method}", self.http_handler)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._on_cleanup)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def prime(self) -> None:
        """Replay the minutes before the clock into the views (and what the core missed into the core): see
        ``MarketFeed.prime``."""
        self.feed.prime()
        self.commit()

    @property
    def ticks_emitted(self) -> int:
        return self.feed.ticks_emitted

    async def _on_startup(self, app: web.Application) -> None:
        self._feed_task = asyncio.create_task(self.feed.run())

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._feed_task:
            self._feed_task.cancel()
        for c in list(self.conns):
            c.closed = True
            with contextlib.suppress(Exception):
                await c.ws.close()

    async def _on_cleanup(self, app: web.Application) -> None:
        """After the last handler ended (a cancel-on-disconnect included): the final snapshot, files closed."""
        if self.store is not None:
            self.store.close()

    # ---- persistence ----------------------------------------------------------------------------------------

    def commit(self) -> None:
        """Journal what the core changed (``durable.SimStore.commit``: buffered); after every call into the core."""
        if self.store is not None:
            self.store.commit()

    def barrier(self) -> None:
        """Everything journaled is written out: called before any bytes leave for a client (``Conn.flush``, HTTP
        answers), so an answer or notification never reports a change that could be lost with the process."""
        if self.store is not None:
            self.store.barrier()

    # ---- request dispatch ----------------------------------------------------------------------------------------

    def wall_us(self) -> int:
        """The simulator's wall clock in µs (the host's plus ``clock_offset_s``), as Deribit stamps its answers."""
        return int((time.time() + self.config.clock_offset_s) * 1_000_000)

    async def call(self, method: str, params: dict[str, Any], conn: Conn | None, account_id: str | None,
                   rl_key: str, granted: str | None = None) -> Any:
        """Run one request (after transport decoding); raises SimRefusal. ``account_id`` and its ``granted`` scope
        from HTTP auth (None = the key's full grant)."""
        params = coerce_params(params)
        if method.startswith("admin/"):
            return await self._admin(method[6:], params)
        rule = self.faults.error_for(method)
        if rule is not None:
            raise SimRefusal(rule.code, rule.message)
        token = params.pop("access_token", None)
        if token is not None:
            session = self.auth.session_for_token(str(token))
            account_id, granted = session.account_id, session.scope
        if account_id is None and conn is not None:
            account_id, granted = conn.account_id, conn.scope
        if not self.limiter.allow(account_id or rl_key, method, time.monotonic()):
            raise SimRefusal(codes.TOO_MANY_REQUESTS)
        scope, _, name = method.partition("/")
        if scope == "public":
            return self._public(name, params, conn)
        if scope == "private":
            if account_id is None:
                raise SimRefusal(codes.UNAUTHORIZED)
            self.auth.authorize(account_id, granted, name)
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
                conn.account_id, conn.scope = account_id, str(result["scope"])
            return result
        if name == "set_heartbeat":
            return self._set_heartbeat(p, conn)
        if name == "disable_heartbeat":
            if conn is not None and conn.hb_task is not None:
                conn.hb_task.cancel()
                conn.hb_task = None
            return "ok"
        if name in ("subscribe", "unsubscribe", "unsubscribe_all"):
            return self._subscription(name, p, conn, private=False)
        answer = self.views.methods.get(name)
        if answer is not None:
            return answer(p, now)
        raise unsupported(f"public/{name}")

    def _private(self, name: str, p: dict[str, Any], conn: Conn | None, account_id: str) -> Any:
        if name in SERVER_PRIVATE:
            if name in ("subscribe", "unsubscribe", "unsubscribe_all"):
                return self._subscription(name, p, conn, private=True, account_id=account_id)
            if name == "logout":
                if conn is not None:
                    conn.account_id = conn.scope = None
                    self.channels.drop_private(conn)
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
        try:
            result, events = self.exchange.handle(account_id, name, p, self.clock.now_ms())
        finally:
            self.commit()  # a refused call may still have expired orders first
        if name == "get_account_summary" and p.get("extended") is True and self.limiter.config.enabled:
            result["limits"] = self.limiter.config.deribit_limits()  # as Deribit's extended summary has them
        if events:
            self.channels.route_events(events)
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
            if self.store is not None:
                self.store.snapshot()
            return "ok"
        if name == "get_status":
            store = self.store
            journal = store.status() if store is not None else None
            return {"clock_ms": self.clock.now_ms(), "speed": self.clock.speed, "data": self.data.name,
                    "data_start_ms": self.data.start_ms, "data_end_ms": self.data.end_ms,
                    "finished": self.clock.finished, "connections": len(self.conns), "ticks": self.feed.ticks_emitted,
                    "saves": journal["records"] + journal["snapshots"] if journal else 0,
                    "unsaved": store is not None and store.pending, "journal": journal}
        raise SimRefusal(codes.METHOD_NOT_FOUND)

    def drop_all(self) -> None:
        """Abort every WebSocket connection at the transport (clients see an abnormal close, no close frame)."""
        for c in list(self.conns):
            c.flush()  # what was answered before the drop (the admin call's own answer) still goes out first
            c.closed = True
            if c.transport is not None:
                c.transport.abort()

    # ---- subscriptions -----------------------------------------------------------------------------------------

    def _subscription(self, name: str, p: dict[str, Any], conn: Conn | None, private: bool,
                      account_id: str | None = None) -> Any:
        if conn is None:
            raise SimRefusal(codes.METHOD_NOT_FOUND, reason="subscriptions need a WebSocket")
        if name == "unsubscribe_all":
            self.channels.unsubscribe_all(conn)
            return "ok"
        chans = p.get("channels")
        if not isinstance(chans, list) or not all(isinstance(c, str) for c in chans):
            raise invalid_params("channels", "must be an array of strings")
        if name == "unsubscribe":
            return self.channels.unsubscribe(conn, chans)
        return self.channels.subscribe(conn, chans, private, account_id, self._on_new_subscription)

    def _on_new_subscription(self, conn: Subscriber, ch: str) -> None:
        """A book subscription starts with a snapshot; the current ticker is sent at once (Deribit does too)."""
        parts = ch.split(".")
        if parts[0] == "book":
            snap = self.views.book_snapshot(self.markets[parts[1]], self.clock.now_ms())
            asyncio.get_running_loop().call_soon(self._send_one, conn, ch, snap)
        elif parts[0] == "ticker":
            m = self.markets[parts[1]]
            if m.ticker:
                asyncio.get_running_loop().call_soon(self._send_one, conn, ch, m.ticker)

    def _send_one(self, conn: Subscriber, ch: str, data: Any) -> None:
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
            raise SimRefusal(codes.METHOD_NOT_FOUND, reason="heartbeats need a WebSocket")
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
        us_out = self.wall_us()
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
        conn = Conn(ws, request.transport, self.barrier)
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
        us_in = self.wall_us()
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
        self.channels.unsubscribe_all(conn)
        self.limiter.forget(f"conn:{conn.id}")
        if conn.cancel_on_disconnect and conn.account_id and self.exchange is not None:
            with contextlib.suppress(SimRefusal):
                _, events = self.exchange.handle(conn.account_id, "cancel_all", {}, self.clock.now_ms())
                self.commit()
                self.channels.route_events(events)

    async def http_handler(self, request: web.Request) -> web.StreamResponse:
        us_in = self.wall_us()
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
            account_id = granted = None
            header = request.headers.get("Authorization")
            if header and scope == "private":
                session = self.auth.session_for_http(header, request.method, request.raw_path, body)
                account_id, granted = session.account_id, session.scope
            peer = request.remote or "?"
            result = await self.call(method, params, None, account_id, f"ip:{peer}", granted)
            status, text = 200, self._envelope(rid, us_in, result=result)
        except SimRefusal as exc:
            status = 401 if exc.code in AUTH_ERRORS else 400
            text = self._envelope(rid, us_in, error=exc)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("request %s failed", method)
            status, text = 500, self._envelope(rid, us_in, error=SimRefusal(codes.INTERNAL_SERVER_ERROR, data=str(exc)))
        self.barrier()
        if self.faults.delay_ms and scope != "admin":
            await asyncio.sleep(self.faults.delay_ms / 1000)
        return web.Response(status=status, text=text, content_type="application/json")

