"""The simulator over real sockets: WebSocket JSON-RPC, HTTP GET/POST, auth, subscriptions, fills, heartbeats."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import websockets

from tests.integration.test_sim_fixtures import SimProcess

pytestmark = pytest.mark.integration


class Rpc:
    """A minimal Deribit WebSocket client for tests: calls with ids, notifications in a queue."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.notes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> Rpc:
        return cls(await websockets.connect(url, max_size=None))

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                fut = self.pending.pop(msg.get("id"), None) if "id" in msg else None
                if fut is not None:
                    fut.set_result(msg)
                else:
                    await self.notes.put(msg)
        except websockets.ConnectionClosed:
            pass  # tests that close or drop connections look at ws.wait_closed()

    async def call(self, method: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
        return await asyncio.wait_for(fut, timeout)

    async def result(self, method: str, **params: Any) -> Any:
        msg = await self.call(method, **params)
        assert "error" not in msg, msg
        return msg["result"]

    async def wait_note(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first notification matching ``pred``; earlier non-matching ones stay available."""
        for i, m in enumerate(self.seen):
            if pred(m):
                return self.seen.pop(i)

        async def loop() -> dict[str, Any]:
            while True:
                m = await self.notes.get()
                if pred(m):
                    return m
                self.seen.append(m)
        return await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


def _channel(name: str) -> Any:
    return lambda m: m.get("method") == "subscription" and m["params"]["channel"] == name


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = SimProcess(tmp_path_factory.mktemp("simhome"), "--speed", "60", "--min-heartbeat", "1")
    yield p
    assert p.stop() == 0


def test_ws_auth_subscribe_order_and_fill_notification(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        res = await c.result("public/auth", grant_type="client_credentials", client_id=sim.client_id,
                             client_secret=sim.client_secret)
        assert res["token_type"] == "bearer" and res["expires_in"] > 0
        chans = ["user.orders.BTC-PERPETUAL.raw", "user.trades.any.any.raw", "user.portfolio.btc",
                 "user.changes.BTC-PERPETUAL.100ms", "user.orders.future.BTC.100ms"]
        assert await c.result("private/subscribe", channels=chans) == chans
        out = await c.result("private/buy", instrument_name="BTC-PERPETUAL", amount=100, type="market", label="t1")
        assert out["order"]["order_state"] == "filled"
        order = await c.wait_note(_channel("user.orders.BTC-PERPETUAL.raw"))
        assert order["params"]["data"]["order_id"] == out["order"]["order_id"]
        arr = await c.wait_note(_channel("user.orders.future.BTC.100ms"))
        assert isinstance(arr["params"]["data"], list)
        trades = await c.wait_note(_channel("user.trades.any.any.raw"))
        assert trades["params"]["data"][0]["amount"] == 100
        pf = await c.wait_note(_channel("user.portfolio.btc"))
        assert pf["params"]["data"]["currency"].upper() == "BTC"
        ch = await c.wait_note(_channel("user.changes.BTC-PERPETUAL.100ms"))
        assert ch["params"]["data"]["instrument_name"] == "BTC-PERPETUAL"
        pos = await c.result("private/get_position", instrument_name="BTC-PERPETUAL")
        assert pos["size"] == 100
        await c.result("private/close_position", instrument_name="BTC-PERPETUAL", type="market")
        await c.close()
    asyncio.run(go())


def test_limit_order_fills_when_market_reaches_it(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        await c.result("public/auth", grant_type="client_credentials", client_id=sim.client_id,
                       client_secret=sim.client_secret)
        await c.result("private/subscribe", channels=["user.orders.BTC_USDC-PERPETUAL.raw"])
        tick = await c.result("public/ticker", instrument_name="BTC_USDC-PERPETUAL")
        # a buy limit just below the bid: the replay at 60x moves through it within seconds most of the time;
        # a sell limit at the bid fills at once as taker
        out = await c.result("private/sell", instrument_name="BTC_USDC-PERPETUAL", amount=0.002, type="limit",
                             price=tick["best_bid_price"])
        assert out["order"]["filled_amount"] == 0.002
        note = await c.wait_note(lambda m: _channel("user.orders.BTC_USDC-PERPETUAL.raw")(m)
                                 and m["params"]["data"]["order_state"] == "filled")
        assert note["params"]["data"]["order_id"] == out["order"]["order_id"]
        await c.result("private/close_position", instrument_name="BTC_USDC-PERPETUAL", type="market")
        await c.close()
    asyncio.run(go())


def test_market_data_channels_and_raw_needs_auth(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        msg = await c.call("public/subscribe", channels=["ticker.BTC-PERPETUAL.raw"])
        assert msg["error"]["code"] == 13778
        chans = ["ticker.BTC-PERPETUAL.100ms", "trades.BTC_USDC-PERPETUAL.100ms", "book.BTC-PERPETUAL.100ms",
                 "chart.trades.BTC-PERPETUAL.1", "user.orders.any.any.raw", "nonsense.x"]
        assert await c.result("public/subscribe", channels=chans) == chans[:4]
        t = await c.wait_note(_channel("ticker.BTC-PERPETUAL.100ms"))
        assert t["params"]["data"]["best_bid_price"] < t["params"]["data"]["best_ask_price"]
        snap = await c.wait_note(_channel("book.BTC-PERPETUAL.100ms"))
        assert snap["params"]["data"]["type"] == "snapshot"
        change = await c.wait_note(_channel("book.BTC-PERPETUAL.100ms"))
        assert change["params"]["data"]["prev_change_id"] == snap["params"]["data"]["change_id"]
        trades = await c.wait_note(_channel("trades.BTC_USDC-PERPETUAL.100ms"))
        assert trades["params"]["data"][0]["trade_id"].startswith("USDC-")
        bar = await c.wait_note(_channel("chart.trades.BTC-PERPETUAL.1"))
        assert {"tick", "open", "high", "low", "close", "volume", "cost"} <= set(bar["params"]["data"])
        assert await c.result("public/unsubscribe", channels=["ticker.BTC-PERPETUAL.100ms"]) == ["ticker.BTC-PERPETUAL.100ms"]
        assert await c.result("public/unsubscribe_all") == "ok"
        await c.close()
    asyncio.run(go())


def test_timestamps_follow_the_simulated_clock(sim: SimProcess) -> None:
    t1 = sim.get("public/get_time")["result"]
    status = sim.get("admin/get_status")["result"]
    assert status["data_start_ms"] < t1 < status["data_end_ms"]
    assert abs(t1 - time.time() * 1000) > 86_400_000  # data is from 2025-01, not the host clock
    tick = sim.get("public/ticker", instrument_name="BTC-PERPETUAL")["result"]
    assert tick["timestamp"] <= sim.get("public/get_time")["result"]


def test_http_get_post_errors_and_statuses(sim: SimProcess) -> None:
    ok = sim.get("public/test")
    assert ok["_status"] == 200 and {"usIn", "usOut", "usDiff", "testnet"} <= set(ok)
    exc = sim.get("public/test", expected_result="exception")
    assert exc["_status"] == 400 and exc["error"]["code"] == 11094
    assert sim.get("private/get_positions", currency="BTC")["_status"] == 401
    assert sim.get("public/no_such_method")["error"]["code"] == -32601
    chart = sim.get("public/get_tradingview_chart_data", instrument_name="BTC-PERPETUAL", resolution="1D",
                    start_timestamp=0, end_timestamp=sim.get("public/get_time")["result"])["result"]
    assert chart["status"] == "ok" and chart["ticks"] == sorted(chart["ticks"])
    future = sim.get("public/get_tradingview_chart_data", instrument_name="BTC-PERPETUAL", resolution=1,
                     start_timestamp=4102444800000, end_timestamp=4102444900000)["result"]
    assert future["status"] == "no_data"
    auth = sim.post("public/auth", {"grant_type": "client_credentials", "client_id": sim.client_id,
                                    "client_secret": sim.client_secret})["result"]
    bearer = {"Authorization": f"Bearer {auth['access_token']}"}
    summ = sim.post("private/get_account_summary", {"currency": "USDC"}, bearer)
    assert summ["_status"] == 200 and summ["result"]["currency"] == "USDC"
    assert sim.post("private/get_account_summary", {"currency": "USDC"}, {"Authorization": "Bearer nope"})["_status"] == 401
    # deri-hmac-sha256 over ts\nnonce\nMETHOD\nURI?query\nbody\n
    import urllib.request

    ts = str(int(time.time() * 1000))
    uri = "/api/v2/private/get_positions?currency=BTC&kind=future"
    sig = hmac.new(sim.client_secret.encode(), f"{ts}\n{ts}\nGET\n{uri}\n\n".encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(sim.http_url + uri, headers={
        "Authorization": f"deri-hmac-sha256 id={sim.client_id},ts={ts},sig={sig},nonce={ts}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert isinstance(json.loads(resp.read())["result"], list)
    no_id = urllib.request.Request(sim.http_url + "/api/v2/public/test", data=b'{"method":"public/test"}', method="POST")
    try:
        urllib.request.urlopen(no_id, timeout=10)
        raise AssertionError("request without id accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400


def test_get_query_strings_are_coerced(sim: SimProcess) -> None:
    auth = sim.post("public/auth", {"grant_type": "client_credentials", "client_id": sim.client_id,
                                    "client_secret": sim.client_secret})["result"]
    tok = auth["access_token"]
    out = sim.get("private/buy", instrument_name="BTC_USDC-PERPETUAL", amount="0.001", type="limit",
                  price="1000", post_only="true", access_token=tok)
    assert out["_status"] == 200, out
    assert out["result"]["order"]["post_only"] is True and out["result"]["order"]["amount"] == 0.001
    oid = out["result"]["order"]["order_id"]
    cancelled = sim.get("private/cancel", order_id=oid, access_token=tok)["result"]
    assert cancelled["order_state"] == "cancelled"


def test_heartbeat_unanswered_closes_the_connection(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        bad = await c.call("public/set_heartbeat", interval=0.5)
        assert bad["error"]["code"] == -32602
        assert await c.result("public/set_heartbeat", interval=1) == "ok"
        hb = await c.wait_note(lambda m: m.get("method") == "heartbeat", timeout=5)
        assert hb["params"]["type"] == "test_request"
        await c.result("public/test")  # answered: the connection stays
        await c.wait_note(lambda m: m.get("method") == "heartbeat", timeout=5)
        t0 = time.monotonic()
        await asyncio.wait_for(c.ws.wait_closed(), 10)  # not answered: closed within about one interval
        assert time.monotonic() - t0 < 5
        c.reader.cancel()
    asyncio.run(go())


def test_heartbeat_answered_keeps_the_connection(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        assert await c.result("public/set_heartbeat", interval=1) == "ok"
        for _ in range(3):
            await c.wait_note(lambda m: m.get("method") == "heartbeat", timeout=5)
            await c.result("public/test")
        assert await c.result("public/disable_heartbeat") == "ok"
        assert await c.result("public/get_time") > 0
        await c.close()
    asyncio.run(go())


def test_user_portfolio_is_pushed_periodically_without_any_order(sim: SimProcess) -> None:
    """Deribit sends user.portfolio on a timer too: subscribers see margins follow the mark between fills."""
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        await c.result("public/auth", grant_type="client_credentials", client_id=sim.client_id,
                       client_secret=sim.client_secret)
        assert await c.result("private/subscribe", channels=["user.portfolio.usdc"]) == ["user.portfolio.usdc"]
        notes = [await c.wait_note(_channel("user.portfolio.usdc"), timeout=5) for _ in range(3)]
        assert all(n["params"]["data"]["currency"] == "USDC" and "equity" in n["params"]["data"] for n in notes)
        await c.result("private/unsubscribe", channels=["user.portfolio.usdc"])
        await c.close()
    asyncio.run(go())
