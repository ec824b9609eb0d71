"""Conformance with a real third-party Deribit client: ccxt (REST) and ccxt.pro (WebSocket) against the simulator.

ccxt signs REST calls with ``deri-hmac-sha256`` and logs in over WebSocket with ``client_signature``; it raises on
any message with an ``error`` key and never answers heartbeats. If these pass, the simulator speaks Deribit well
enough for a client that was written against the real exchange.

The simulator runs as ``tradebaas up`` runs it (``--clock present``: the replay at wall-clock time), because ccxt
computes "since" from its own clock: ``fetch_ohlcv`` with only a ``limit`` asks for the last minutes of *now*.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ccxt  # a pinned test dependency: missing means a broken install, which must fail, not skip
import pytest

from tests.integration.test_sim_fixtures import SimProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = SimProcess(tmp_path_factory.mktemp("ccxthome"), "--clock", "present", "--account", "ccxtkey:ccxtsecret:100000")
    yield p
    assert p.stop() == 0


def _config(sim: SimProcess) -> dict[str, Any]:
    return {"apiKey": "ccxtkey", "secret": "ccxtsecret", "enableRateLimit": False,
            "urls": {"api": {"rest": sim.http_url, "ws": sim.ws_url}}}


def test_ccxt_rest_markets_ticker_book_ohlcv(sim: SimProcess) -> None:
    ex = ccxt.deribit(_config(sim))
    markets = ex.load_markets()
    lin, inv = markets["BTC/USDC:USDC"], markets["BTC/USD:BTC"]
    assert lin["id"] == "BTC_USDC-PERPETUAL" and lin["linear"] and lin["swap"]
    assert inv["id"] == "BTC-PERPETUAL" and inv["inverse"] and inv["contractSize"] == 10
    t = ex.fetch_ticker("BTC/USD:BTC")
    assert t["bid"] < t["ask"] and t["last"] > 0
    book = ex.fetch_order_book("BTC/USDC:USDC", limit=5)
    assert len(book["bids"]) == 5 and book["bids"][0][0] < book["asks"][0][0]
    now = ex.fetch_time()
    bars = ex.fetch_ohlcv("BTC/USD:BTC", "1m", since=now - 60 * 60_000, limit=60)
    assert 50 <= len(bars) <= 61 and all(b[0] <= now for b in bars)
    assert all(b[3] <= min(b[1], b[4]) and b[2] >= max(b[1], b[4]) for b in bars)
    trades = ex.fetch_trades("BTC/USDC:USDC", limit=5)
    assert trades and trades[0]["price"] > 0


def test_ccxt_in_the_present_ohlcv_by_limit_my_trades_since_and_open_orders(sim: SimProcess) -> None:
    ex = ccxt.deribit(_config(sim))
    ex.load_markets()
    assert abs(ex.fetch_time() - ex.milliseconds()) < 5_000  # the simulator's clock is the wall clock
    bars = ex.fetch_ohlcv("BTC/USDC:USDC", "1m", limit=10)  # no since: ccxt asks for the last 10 minutes of now
    assert 9 <= len(bars) <= 10 and ex.milliseconds() - bars[-1][0] < 2 * 60_000
    assert all(b[3] <= min(b[1], b[4]) and b[2] >= max(b[1], b[4]) for b in bars)
    since = ex.milliseconds() - 1_000
    opened = ex.create_order("BTC/USDC:USDC", "market", "buy", 0.002)
    closed = ex.create_order("BTC/USDC:USDC", "market", "sell", 0.002, params={"reduceOnly": True})
    mine = ex.fetch_my_trades("BTC/USDC:USDC", since=since)  # get_user_trades_by_instrument_and_time, start only
    assert {t["order"] for t in mine} == {opened["id"], closed["id"]}
    assert all(t["timestamp"] >= since and t["fee"]["currency"] == "USDC" for t in mine)
    t = ex.fetch_ticker("BTC/USDC:USDC")
    far = float(ex.price_to_precision("BTC/USDC:USDC", t["bid"] * 0.8))
    resting = ex.create_order("BTC/USDC:USDC", "limit", "buy", 0.001, far)
    try:
        listed = ex.fetch_open_orders("BTC/USDC:USDC")
        assert [(o["id"], o["status"], o["price"]) for o in listed] == [(resting["id"], "open", far)]
    finally:
        ex.cancel_order(resting["id"], "BTC/USDC:USDC")
    assert ex.fetch_open_orders("BTC/USDC:USDC") == []


def test_ccxt_rest_create_edit_cancel_positions_balance(sim: SimProcess) -> None:
    ex = ccxt.deribit(_config(sim))
    ex.load_markets()
    bal = ex.fetch_balance()
    assert bal["USDC"]["total"] == pytest.approx(100_000, rel=0.01)
    t = ex.fetch_ticker("BTC/USDC:USDC")
    far = float(ex.price_to_precision("BTC/USDC:USDC", t["bid"] * 0.9))
    o = ex.create_order("BTC/USDC:USDC", "limit", "buy", 0.01, far)
    assert o["status"] == "open" and o["price"] == far
    o2 = ex.edit_order(o["id"], "BTC/USDC:USDC", "limit", "buy", 0.02, far - 10)
    assert o2["amount"] == 0.02 and o2["price"] == far - 10
    c = ex.cancel_order(o["id"], "BTC/USDC:USDC")
    assert c["status"] == "canceled"
    m = ex.create_order("BTC/USD:BTC", "market", "buy", 100)
    assert m["status"] == "closed" and m["filled"] == 100
    pos = [p for p in ex.fetch_positions() if p["contracts"]]
    assert any(p["symbol"] == "BTC/USD:BTC" and p["side"] == "long" for p in pos)
    ex.create_order("BTC/USD:BTC", "market", "sell", 100, params={"reduceOnly": True})
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order("999999999", "BTC/USD:BTC")


def test_ccxt_pro_watch_ticker_trades_orders(sim: SimProcess) -> None:
    import ccxt.pro as ccxtpro

    async def go() -> None:
        ex = ccxtpro.deribit(_config(sim))
        try:
            await ex.load_markets()
            t = await asyncio.wait_for(ex.watch_ticker("BTC/USD:BTC"), 15)
            assert t["symbol"] == "BTC/USD:BTC" and t["last"] > 0
            trades = await asyncio.wait_for(ex.watch_trades("BTC/USDC:USDC"), 15)
            assert trades and trades[-1]["symbol"] == "BTC/USDC:USDC"
            watcher = asyncio.ensure_future(ex.watch_orders())
            await asyncio.sleep(0)  # let it subscribe before the order exists
            for _ in range(50):
                if "user.orders.any.any.raw" in next(iter(ex.clients.values())).subscriptions:
                    break
                await asyncio.sleep(0.05)
            placed = await ex.create_order("BTC/USDC:USDC", "market", "buy", 0.001)
            orders = await asyncio.wait_for(watcher, 15)
            assert any(o["id"] == placed["id"] for o in orders)
            await ex.create_order("BTC/USDC:USDC", "market", "sell", 0.001, params={"reduceOnly": True})
        finally:
            await ex.close()
    asyncio.run(go())


def test_rate_limit_answers_10028_which_ccxt_maps_to_ddos_protection(tmp_path: Path) -> None:
    p = SimProcess(tmp_path, "--rate-limits", "me_burst=2,me_rate_per_s=0.01", "--account", "k:s")
    try:
        ex = ccxt.deribit({"apiKey": "k", "secret": "s", "enableRateLimit": False,
                           "urls": {"api": {"rest": p.http_url, "ws": p.ws_url}}})
        ex.load_markets()
        with pytest.raises(ccxt.DDoSProtection):
            for _ in range(3):
                ex.create_order("BTC/USD:BTC", "limit", "buy", 10, 1000)
    finally:
        assert p.stop() == 0
