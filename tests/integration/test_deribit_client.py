"""The async Deribit client against the real simulator process (``tradebaas sim``), never a fake server.

Faults are injected the way an operator would: the simulator's ``admin/set_fault`` (over HTTP, so a WebSocket
drop cannot eat the answer), SIGKILL of the process, and a restart on the same port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sim_fixtures import SimProcess
from tradebaas.domain import Candle, Fill, Order, OrderState, OrderType, Side, Ticker
from tradebaas.exchange.deribit import (
    AuthenticationError,
    ConnectionLost,
    DeribitApiError,
    DeribitClient,
    RequestTimeout,
    TooManyRequests,
)
from tradebaas.exchange.deribit.endpoints import resolve

pytestmark = pytest.mark.integration

INST = "BTC_USDC-PERPETUAL"
CLIENT_ID, CLIENT_SECRET = "tb-client-test", "s3cr3t-client-test-key"


def sim_args(port: int = 0) -> list[str]:
    return ["--port", str(port), "--speed", "60", "--account", f"{CLIENT_ID}:{CLIENT_SECRET}", "--min-heartbeat",
            "1", "--no-persist"]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    proc = SimProcess(tmp_path, *sim_args())
    try:
        yield proc
    finally:
        proc.kill()


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def make_client(sim: SimProcess, **kw: Any) -> DeribitClient:
    opts: dict[str, Any] = {"request_timeout": 3.0, "heartbeat_interval": 1, "reconnect_base": 0.05,
                            "reconnect_max": 0.5, "rate_limit_base": 0.2, "rate_limit_max": 1.0}
    opts.update(kw)
    return DeribitClient(sim.ws_url, CLIENT_ID, CLIENT_SECRET, **opts)


async def set_fault(sim: SimProcess, **params: Any) -> dict[str, Any]:
    answer = await asyncio.to_thread(sim.get, "admin/set_fault", **params)
    assert "error" not in answer, answer
    return answer


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """Collects typed notifications by channel family."""

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self.tickers: list[Ticker] = []
        self.bars: list[Candle] = []
        self.portfolio: list[dict[str, Any]] = []

    async def __call__(self, channel: str, payload: Any) -> None:
        if channel.startswith("user.orders."):
            assert isinstance(payload, Order)
            self.orders.append(payload)
        elif channel.startswith("user.trades."):
            assert isinstance(payload, list) and all(isinstance(f, Fill) for f in payload)
            self.fills.extend(payload)
        elif channel.startswith("ticker."):
            assert isinstance(payload, Ticker)
            self.tickers.append(payload)
        elif channel.startswith("chart.trades."):
            assert isinstance(payload, Candle)
            self.bars.append(payload)
        elif channel.startswith("user.portfolio."):
            self.portfolio.append(payload)


USER_CHANNELS = [f"user.orders.{INST}.raw", f"user.trades.{INST}.raw", "user.portfolio.usdc"]


# ---------------------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("auth", ["client_credentials", "client_signature"])
def test_authenticates_and_answers_private_calls(sim: SimProcess, auth: str) -> None:
    async def main() -> None:
        client = make_client(sim, auth=auth)
        await client.start()
        try:
            assert client.status().connected and client.status().authenticated
            summary = await client.get_account_summary("USDC")
            assert summary["currency"] == "USDC" and summary["equity"] > 0
        finally:
            await client.close()
        assert client.status().state == "closed"

    run(main())


def test_wrong_secret_fails_start_with_authentication_error(sim: SimProcess) -> None:
    async def main() -> None:
        client = DeribitClient(sim.ws_url, CLIENT_ID, "wrong-secret", request_timeout=3.0)
        with pytest.raises(AuthenticationError) as info:
            await client.start(retry=True)  # refused credentials are not retried
        assert info.value.code == 13004
        await client.close()

    run(main())


def test_secret_and_tokens_never_reach_the_logs(sim: SimProcess, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        client = make_client(sim, auth="client_credentials")
        await client.start()
        token = client._proto.auth.access_token.reveal()  # white-box: the value that must not leak
        # Force a refresh so the refresh_token grant is exercised and logged too.
        client._proto.auth.issued_at -= 10_000
        client._proto.auth.expires_at -= 10_000
        await wait_for(lambda: client._proto.auth.access_token.reveal() != token, 5, "token refresh")
        await client.get_account_summary("USDC")
        await client.close()
        return token

    with caplog.at_level(logging.DEBUG, logger="tradebaas.exchange.deribit"):
        token = run(main())
    text = caplog.text
    assert "public/auth" in text and "refresh_token" in text
    assert CLIENT_SECRET not in text and token not in text


def test_token_refresh_keeps_the_session_authenticated(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim)
        await client.start()
        try:
            old = client._proto.auth.access_token
            client._proto.auth.issued_at -= 10_000  # make the refresh due now (the sim's tokens live 15 min)
            client._proto.auth.expires_at -= 10_000
            await wait_for(lambda: client._proto.auth.access_token != old, 5, "token refresh")
            assert client._proto.auth.expires_at > asyncio.get_running_loop().time() + 60
            assert (await client.get_position(INST)).instrument == INST
            assert client.reconnects == 0
        finally:
            await client.close()

    run(main())


# ---------------------------------------------------------------------------------------------------------- calls


def test_call_returns_result_and_exchange_errors_raise(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim)
        await client.start()
        try:
            assert isinstance(await client.call("public/get_time"), int)
            with pytest.raises(DeribitApiError) as info:
                await client.call("public/ticker", {"instrument_name": "NOPE-PERPETUAL"})
            assert info.value.code == -32602 and info.value.method == "public/ticker"
            with pytest.raises(DeribitApiError) as info:
                await client.cancel("no-such-order")
            assert info.value.code == 10004
        finally:
            await client.close()

    run(main())


def test_typed_market_data_helpers(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim)
        await client.start()
        try:
            instruments = {i.name: i for i in await client.get_instruments()}
            assert instruments[INST].contract_size == 0.001 and instruments["BTC-PERPETUAL"].is_inverse
            assert (await client.get_instrument(INST)).tick_size == 1.0
            t = await client.ticker(INST)
            assert t.instrument == INST and t.mark_price > 0 and t.best_bid_price <= t.best_ask_price
            candles = await client.get_chart_candles(INST, t.ts_ms - 3_600_000, t.ts_ms, 1)
            assert len(candles) >= 30
            assert all(a.ts_ms < b.ts_ms for a, b in zip(candles, candles[1:], strict=False))
            assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
        finally:
            await client.close()

    run(main())


def test_market_order_fill_arrives_on_user_orders_and_user_trades(sim: SimProcess) -> None:
    async def main() -> None:
        rec = Recorder()
        client = make_client(sim, on_notification=rec)
        await client.start()
        try:
            confirmed = await client.subscribe(USER_CHANNELS)
            assert set(confirmed) == set(USER_CHANNELS)
            order, fills = await client.buy(INST, 0.01, OrderType.MARKET, "tb:itest:t1:entry")
            assert order.state is OrderState.FILLED and order.filled_amount == 0.01
            assert fills and fills[0].label == "tb:itest:t1:entry"
            await wait_for(lambda: any(o.order_id == order.order_id and o.state is OrderState.FILLED
                                       for o in rec.orders), what="user.orders fill")
            await wait_for(lambda: {f.trade_id for f in fills} <= {f.trade_id for f in rec.fills},
                           what="user.trades fill")
            await wait_for(lambda: bool(rec.portfolio), what="user.portfolio")
            assert rec.portfolio[-1]["currency"] == "USDC"
            pos = await client.get_position(INST)
            assert pos.size == pytest.approx(0.01)
            # a protective stop, then edit and cancel it
            stop, _ = await client.sell(INST, 0.01, OrderType.STOP_MARKET, "tb:itest:t1:sl",
                                        trigger_price=round(order.average_price * 0.9), reduce_only=True)
            assert stop.state is OrderState.UNTRIGGERED and stop.reduce_only
            assert [o.order_id for o in await client.get_open_orders(INST)] == [stop.order_id]
            moved = await client.edit(stop.order_id, 0.01, trigger_price=round(order.average_price * 0.95))
            assert moved.trigger_price == round(order.average_price * 0.95)
            assert (await client.get_order_state(stop.order_id)).trigger_price == moved.trigger_price
            assert await client.cancel_by_label("tb:itest:t1:sl") == 1
            assert await client.get_open_orders(INST) == []
            closing, closing_fills = await client.close_position(INST)
            assert closing.reduce_only and closing.side is Side.SELL and closing_fills
            assert (await client.get_position(INST)).size == 0
            trades = await client.get_user_trades(INST, order.ts_ms - 1000)
            assert [f.trade_id for f in trades] == [fills[0].trade_id, *[f.trade_id for f in closing_fills]]
        finally:
            await client.close()

    run(main())


def test_user_trades_paginate_on_has_more(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim)
        await client.start()
        try:
            t0 = (await client.ticker(INST)).ts_ms
            ids = []
            for i in range(5):
                side = client.buy if i % 2 == 0 else client.sell
                _, fills = await side(INST, 0.001, "market", f"tb:itest:p{i}:entry")
                ids += [f.trade_id for f in fills]
            trades = await client.get_user_trades(INST, t0 - 60_000, count=2)
            assert [f.trade_id for f in trades] == ids
        finally:
            await client.close()

    run(main())


def test_user_trades_since_longer_ago_than_the_24_hour_window_come_from_both_windows(tmp_path: Path) -> None:
    """Deribit (and so the simulator) serves trades older than 24 h only with ``historical: true``."""
    fast = SimProcess(tmp_path, "--speed", "20000", "--account", f"{CLIENT_ID}:{CLIENT_SECRET}", "--min-heartbeat",
                      "1", "--no-persist")

    async def main() -> None:
        client = make_client(fast)
        await client.start()
        try:
            _, first = await client.buy(INST, 0.001, "market", "tb:itest:h1:entry")
            t0 = first[0].ts_ms
            deadline = time.monotonic() + 30
            while await client.get_time() < t0 + 25 * 3_600_000:
                assert time.monotonic() < deadline, "25 simulated hours did not pass"
                await asyncio.sleep(0.2)
            _, second = await client.sell(INST, 0.001, "market", "tb:itest:h1:exit", reduce_only=True)
            recent = await client.call("private/get_user_trades_by_instrument",
                                       {"instrument_name": INST, "start_timestamp": t0 - 1000, "count": 100})
            assert [t["trade_id"] for t in recent["trades"]] == [second[0].trade_id]  # the first aged out
            trades = await client.get_user_trades(INST, t0 - 1000)
            assert [f.trade_id for f in trades] == [first[0].trade_id, second[0].trade_id]
            assert [f.trade_id for f in await client.get_user_trades(INST, t0 + 1)] == [second[0].trade_id]
        finally:
            await client.close()

    try:
        run(main())
    finally:
        fast.kill()


def test_ticker_and_chart_notifications_are_typed(sim: SimProcess) -> None:
    async def main() -> None:
        rec = Recorder()
        client = make_client(sim, on_notification=rec)
        await client.subscribe([f"ticker.{INST}.100ms", f"chart.trades.{INST}.1"])  # before start: desired only
        await client.start()
        try:
            await wait_for(lambda: len(rec.tickers) >= 2 and len(rec.bars) >= 1, 15, "ticker and chart bars")
            assert rec.tickers[-1].instrument == INST and rec.bars[-1].close > 0
            assert await client.unsubscribe([f"ticker.{INST}.100ms"]) == [f"ticker.{INST}.100ms"]
            assert client.status().channels == (f"chart.trades.{INST}.1",)
        finally:
            await client.close()

    run(main())


def test_heartbeats_are_answered_so_the_server_keeps_the_connection(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim, heartbeat_interval=1)
        await client.start()
        try:
            await asyncio.sleep(4.0)  # the simulator closes connections that miss a test_request
            assert client.reconnects == 0 and client.connected
            assert await client.call("public/test") == {"version": "1.2.26"}
        finally:
            await client.close()

    run(main())


# ------------------------------------------------------------------------------------------------ failure modes


def test_request_timeout_when_the_server_stalls(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim, heartbeat_interval=None)
        await client.start()
        try:
            await set_fault(sim, action="stall", seconds=1.5)
            started = time.monotonic()
            with pytest.raises(RequestTimeout) as info:
                await client.call("public/get_time", timeout=0.5)
            assert 0.45 <= time.monotonic() - started < 1.4
            assert info.value.method == "public/get_time"
            await asyncio.sleep(1.2)
            assert isinstance(await client.call("public/get_time"), int)  # same connection still works
            assert client.reconnects == 0
        finally:
            await client.close()

    run(main())


def test_silent_server_is_detected_and_the_connection_replaced(sim: SimProcess) -> None:
    """A stall also pauses the simulator's heartbeats: no frame for 3 intervals means a dead link."""

    async def main() -> None:
        client = make_client(sim, heartbeat_interval=1, request_timeout=1.0)
        await client.start()
        try:
            await set_fault(sim, action="stall", seconds=4)
            await wait_for(lambda: not client.connected, 8, "silence detected")
            await wait_for(lambda: client.connected and client.reconnects == 1, 15, "reconnected after the stall")
            assert isinstance(await client.call("public/get_time"), int)
        finally:
            await client.close()

    run(main())


def test_drop_fails_sent_orders_but_retries_reads_after_reconnect(sim: SimProcess) -> None:
    async def main() -> None:
        reconciled = asyncio.Event()
        states: list[str] = []

        async def on_reconnect() -> None:
            reconciled.set()

        client = make_client(sim, reconnect_base=1.0, reconnect_max=1.0, on_reconnect=on_reconnect,
                             on_state=lambda s: states.append(s.state))
        await client.start()
        try:
            # "delay": the simulator executes the buy but holds its answer; the drop then loses the answer.
            await set_fault(sim, action="delay", ms=2000)
            buy = asyncio.create_task(client.buy(INST, 0.002, "market", "tb:itest:d1:entry"))
            read = asyncio.create_task(client.get_positions("any"))
            await asyncio.sleep(0.2)
            await set_fault(sim, action="drop")
            await set_fault(sim, action="clear")
            with pytest.raises(ConnectionLost) as info:
                await buy
            assert info.value.sent and info.value.method == "private/buy"
            positions = await read  # retried transparently on the new connection
            await asyncio.wait_for(reconciled.wait(), 5)
            assert client.reconnects == 1
            assert "reconnecting" in states and states[-1] == "connected"
            # The buy did reach the matching engine: the caller's error was right to say "outcome unknown".
            assert any(p.instrument == INST and p.size == pytest.approx(0.002) for p in positions)
            assert [f.label for f in await client.get_user_trades(INST, 0)] == ["tb:itest:d1:entry"]
        finally:
            await client.close()

    run(main())


def test_reconnects_and_resubscribes_after_simulator_is_killed_and_restarted(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path, *sim_args())
    port = sim.port
    restarted: list[SimProcess] = []

    async def main() -> None:
        rec = Recorder()
        reconnected = asyncio.Event()

        async def on_reconnect() -> None:
            # the engine reconciles here: private calls must already work
            await client.get_positions("any")
            reconnected.set()

        client = make_client(sim, on_notification=rec, on_reconnect=on_reconnect, reconnect_max=0.3)
        await client.start()
        await client.subscribe(USER_CHANNELS)
        await client.buy(INST, 0.001, "market", "tb:itest:k1:entry")
        await wait_for(lambda: len(rec.fills) == 1, what="first fill")

        await asyncio.to_thread(sim.kill)
        await wait_for(lambda: not client.connected, 10, "disconnect noticed")
        with pytest.raises(ConnectionLost) as info:
            await client.call("public/get_time", timeout=0.5)  # nothing to reconnect to yet
        assert not info.value.sent
        assert client.status().state == "reconnecting" and client.status().last_error

        await asyncio.sleep(1.0)  # a few failed attempts against a closed port
        restarted.append(await asyncio.to_thread(SimProcess, tmp_path, *sim_args(port)))
        await asyncio.wait_for(reconnected.wait(), 15)
        assert client.connected and client.reconnects == 1 and client.authenticated
        assert set(client._proto.active_channels) == set(USER_CHANNELS)

        order, fills = await client.sell(INST, 0.001, "market", "tb:itest:k2:entry")
        await wait_for(lambda: any(f.trade_id == fills[0].trade_id for f in rec.fills), 10,
                       "fill notification after resubscribe")
        await wait_for(lambda: any(o.order_id == order.order_id for o in rec.orders), 10, "order notification")
        await client.close()

    try:
        run(main(), timeout=90)
    finally:
        sim.kill()
        for s in restarted:
            s.kill()


def test_too_many_requests_backs_off_then_retries_reads(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim, rate_limit_base=0.2, rate_limit_max=2.0)
        await client.start()
        try:
            await set_fault(sim, action="error", methods="public/ticker", code=10028, message="too_many_requests",
                            count=2)
            started = time.monotonic()
            t = await client.ticker(INST)
            assert t.instrument == INST
            assert time.monotonic() - started >= 0.1 + 0.2  # two back-offs: >= base/2 and >= base
        finally:
            await client.close()

    run(main())


def test_too_many_requests_on_an_order_is_raised_after_backing_off(sim: SimProcess) -> None:
    async def main() -> None:
        client = make_client(sim, rate_limit_base=0.4, rate_limit_max=2.0)
        await client.start()
        try:
            await set_fault(sim, action="error", methods="private/buy", code=10028, message="too_many_requests",
                            count=1)
            started = time.monotonic()
            with pytest.raises(TooManyRequests):
                await client.buy(INST, 0.001, "market", "tb:itest:r1:entry")
            assert time.monotonic() - started >= 0.2
            assert (await client.get_position(INST)).size == 0  # not placed, not retried behind our back
            order, _ = await client.buy(INST, 0.001, "market", "tb:itest:r1:entry")  # the caller decides
            assert order.state is OrderState.FILLED
        finally:
            await client.close()

    run(main())


def test_server_rate_limiter_10028_is_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The simulator's real credit model (tiny pool) answers 10028; a burst of reads still completes."""
    sim = SimProcess(tmp_path, *sim_args(), "--rate-limits", "cost=500,pool=2000,refill_per_s=5000")

    async def main() -> None:
        client = make_client(sim, rate_limit_base=0.1, rate_limit_max=1.0, rate_limit_retries=8)
        await client.start()
        try:
            results = await asyncio.gather(*(client.call("public/get_time") for _ in range(20)))
            assert len(results) == 20
        finally:
            await client.close()

    try:
        with caplog.at_level(logging.WARNING, logger="tradebaas.exchange.deribit"):
            run(main())
    finally:
        sim.kill()
    assert "10028" in caplog.text  # the limiter really refused some of the burst


# ------------------------------------------------------------------------------------------------------ endpoints


def test_exchange_sim_resolves_to_the_running_simulator(sim: SimProcess, tmp_path: Path) -> None:
    ep = resolve("sim", tmp_path)
    assert ep.url == sim.ws_url and ep.name == "sim" and not ep.live
    assert ep.client_id == CLIENT_ID and ep.client_secret.reveal() == CLIENT_SECRET
    assert CLIENT_SECRET not in repr(ep)
    info = json.loads((tmp_path / "sim" / "sim.json").read_text())
    assert resolve(f"ws://127.0.0.1:{info['port']}", tmp_path).url == sim.ws_url

    async def main() -> None:
        client = DeribitClient(ep.url, ep.client_id, ep.client_secret, request_timeout=3.0)
        await client.start()
        try:
            assert client.authenticated
        finally:
            await client.close()

    env = {k: os.environ.pop(k) for k in ("TRADEBAAS_DERIBIT_CLIENT_ID", "TRADEBAAS_DERIBIT_CLIENT_SECRET")
           if k in os.environ}
    try:
        run(main())
    finally:
        os.environ.update(env)
