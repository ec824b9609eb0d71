"""A crash-consistent simulator: SIGKILLed at random instants while a client trades (market and limit orders,
OTOCO brackets, cancels, closes), including the instant a fill notification arrives, it comes back with exactly
what it acknowledged.

The client keeps a ledger of everything the simulator told it (answers and ``user.orders``/``user.trades``
notifications) and checks as it goes that an id never names two things. After every restart:
- every acknowledged trade is there, identical (id, trade_seq, price, amount, fee, timestamp);
- every acknowledged order is there with the same identity; one acknowledged as closed is identical, one
  acknowledged as live may only have progressed (the replayed market may have filled it since);
- later activity never reuses an order id, trade id or trade_seq (the ledger checks every new one);
- position and balance equal the sum of the account's fills.
The seed is printed on failure (``SIM_CRASH_SEED=<n>`` replays the same choices; the kill instants are real time).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.integration.conftest import SimProc

pytestmark = pytest.mark.integration

INST = "BTC_USDC-PERPETUAL"
CYCLES = ["fill", "random", "fill", "random", "fill", "random"]
MAX_ORDERS_PER_CYCLE = 120  # keeps every order and trade within the simulator's history window (2000)
ANSWER_TIMEOUT_S = 10.0


class Ledger:
    """What the simulator acknowledged, checked on arrival: an order id, a trade id or a trade_seq never names two
    different things (across restarts too)."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}  # order id -> the last object the simulator sent
        self.identity: dict[str, tuple[Any, ...]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.seqs: dict[int, str] = {}
        self.fills_this_cycle = 0

    def order(self, obj: dict[str, Any]) -> None:
        oid = obj["order_id"]
        ident = (obj["instrument_name"], obj["direction"], obj["label"], obj["creation_timestamp"])
        known = self.identity.setdefault(oid, ident)
        assert known == ident, f"order id {oid} reused: {known} then {ident}"
        self.orders[oid] = obj

    def trade(self, t: dict[str, Any]) -> None:
        known = self.trades.setdefault(t["trade_id"], t)
        assert known == t, f"trade id {t['trade_id']} names two fills: {known} and {t}"
        seq_owner = self.seqs.setdefault(int(t["trade_seq"]), t["trade_id"])
        assert seq_owner == t["trade_id"], f"trade_seq {t['trade_seq']} reused by {t['trade_id']} ({seq_owner})"


class Client:
    """One WebSocket session: JSON-RPC calls with futures; every notification and answer goes into the ledger."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, ledger: Ledger, on_fill: Callable[[], None]) -> None:
        self.ws = ws
        self.ledger = ledger
        self.on_fill = on_fill
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[Any]] = {}

    async def call(self, method: str, **params: Any) -> Any:
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        try:
            await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                               "params": params}))
        except (ConnectionError, aiohttp.ClientError) as exc:
            self.waiting.pop(self.next_id, None)
            raise ConnectionError("connection lost") from exc
        return await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)

    async def read(self) -> None:
        """Until the connection dies: record everything received (what arrived was acknowledged)."""
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            m = json.loads(msg.data)
            if m.get("method") == "subscription":
                ch, data = m["params"]["channel"], m["params"]["data"]
                if ch.startswith("user.orders."):
                    self.ledger.order(data)
                elif ch.startswith("user.trades."):
                    for t in data:
                        self.ledger.trade(t)
                    self.ledger.fills_this_cycle += len(data)
                    self.on_fill()
                continue
            result = m.get("result")
            if isinstance(result, dict) and isinstance(result.get("order"), dict):
                self.ledger.order(result["order"])
                for t in result.get("trades", ()):
                    self.ledger.trade(t)
            fut = self.waiting.pop(m.get("id"), None)
            if fut is not None and not fut.done():
                if "error" in m:
                    fut.set_exception(RuntimeError(str(m["error"])))
                else:
                    fut.set_result(result)
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))


async def trade_until_killed(sim: SimProc, ledger: Ledger, rng: random.Random, cycle: int, mode: str) -> None:
    """Trade at random until the simulator dies: ``fill`` mode SIGKILLs it the moment the n-th fill notification
    of this cycle arrives, ``random`` mode after a random delay (the crash instant is the point of the test)."""
    ledger.fills_this_cycle = 0
    kill_after_fills = rng.randint(1, 4)

    def on_fill() -> None:
        if mode == "fill" and ledger.fills_this_cycle >= kill_after_fills:
            sim.kill()

    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        client = Client(ws, ledger, on_fill)
        reader = asyncio.create_task(client.read())
        await client.call("public/auth", grant_type="client_credentials", client_id=sim.client_id,
                          client_secret=sim.client_secret)
        await client.call("private/subscribe", channels=[f"user.orders.{INST}.raw", f"user.trades.{INST}.raw"])
        killer = None
        if mode == "random":
            killer = asyncio.get_running_loop().call_later(rng.uniform(0.05, 1.5), sim.kill)
        try:
            for n in range(MAX_ORDERS_PER_CYCLE):
                await one_action(client, rng, f"c{cycle}n{n}")
        except (ConnectionError, RuntimeError, TimeoutError, aiohttp.ClientError):
            pass  # killed mid-call (a refusal, e.g. nothing to close, is an answer: ignored too)
        if sim.alive() and mode == "fill":  # the orders ran out before the fills did: crash now
            sim.kill()
        await reader
        if killer is not None:
            killer.cancel()
    sim.kill()  # a random delay longer than the trading: crash now (no-op when dead)


async def one_action(client: Client, rng: random.Random, label: str) -> None:
    ticker = await client.call("public/ticker", instrument_name=INST)
    mid = round((ticker["best_bid_price"] + ticker["best_ask_price"]) / 2)
    amount = rng.choice([0.001, 0.002, 0.005, 0.01])
    side = rng.choice(["buy", "sell"])
    kind = rng.choices(["market", "limit", "bracket", "cancel", "close"], weights=[4, 4, 2, 1, 1])[0]
    try:
        if kind == "market":
            await client.call(f"private/{side}", instrument_name=INST, amount=amount, type="market", label=label)
        elif kind == "limit":
            off = rng.randint(-30, 30) * (1 if side == "sell" else -1)
            await client.call(f"private/{side}", instrument_name=INST, amount=amount, type="limit",
                              price=mid + off, label=label)
        elif kind == "bracket":
            sign = 1 if side == "buy" else -1
            exit_side = "sell" if side == "buy" else "buy"
            await client.call(f"private/{side}", instrument_name=INST, amount=amount, type="market", label=label,
                              linked_order_type="one_triggers_one_cancels_other",
                              trigger_fill_condition="first_hit", otoco_config=[
                                  {"direction": exit_side, "type": "stop_market", "trigger": "last_price",
                                   "trigger_price": mid - sign * 40, "reduce_only": True, "amount": amount,
                                   "label": f"{label}-sl"},
                                  {"direction": exit_side, "type": "limit", "price": mid + sign * 40,
                                   "reduce_only": True, "amount": amount, "label": f"{label}-tp"}])
        elif kind == "cancel":
            live = await client.call("private/get_open_orders_by_instrument", instrument_name=INST)
            if live:
                await client.call("private/cancel", order_id=rng.choice(live)["order_id"])
        else:
            await client.call("private/close_position", instrument_name=INST, type="market")
    except RuntimeError as exc:
        if "connection lost" in str(exc):
            raise ConnectionError from exc
        # refused (e.g. no position to close): the simulator answered, nothing changed


def quiet_account(sim: SimProc) -> tuple[list[dict[str, Any]], float, float]:
    """Fills, position and USDC balance read between two identical lists of fills (no fill in between)."""

    def read() -> tuple[list[dict[str, Any]], float, float] | None:
        before = sim.user_trades(INST)
        size = sim.position_size(INST)
        balance = float(sim.call("private/get_account_summary", currency="USDC")["balance"])
        return (before, size, balance) if sim.user_trades(INST) == before else None

    return wait_for(read, timeout=30, what="a moment without fills to read the account")


def verify(sim: SimProc, ledger: Ledger, start_usdc: float, seed: int) -> None:
    """The restarted simulator against everything it acknowledged before it died (the market keeps moving, so
    orders may fill while we look: live orders are read before closed ones, and the account is read between two
    identical lists of fills)."""
    live = sim.open_orders(INST)
    closed = sim.order_history(INST)
    server_orders = {o["order_id"]: o for o in [*live, *closed]}
    for oid, acked in ledger.orders.items():
        now = server_orders.get(oid)
        assert now is not None, f"seed {seed}: acknowledged order {oid} ({acked['order_state']}) forgotten"
        ledger.order(now)  # same identity
        if acked["order_state"] in ("filled", "cancelled", "rejected"):
            assert now == acked, f"seed {seed}: closed order {oid} changed across the crash"
        else:
            assert now["filled_amount"] >= acked["filled_amount"], f"seed {seed}: order {oid} lost a fill"
    fills, size_now, balance = quiet_account(sim)
    by_id = {t["trade_id"]: t for t in fills}
    missing = sorted(set(ledger.trades) - set(by_id))
    assert not missing, f"seed {seed}: acknowledged fills forgotten: {missing}"
    for t in fills:
        ledger.trade(t)  # identical to what was acknowledged, ids and trade_seq never reused
    size = round(sum(t["amount"] * (1 if t["direction"] == "buy" else -1) for t in fills), 10)
    assert size_now == pytest.approx(size, abs=1e-9), f"seed {seed}"
    expected = start_usdc + sum(t["profit_loss"] for t in fills) - sum(t["fee"] for t in fills)
    assert balance == pytest.approx(expected, rel=1e-12, abs=1e-9), f"seed {seed}"


def test_sigkill_at_random_instants_and_right_after_fills_loses_nothing_acknowledged(
    sim_proc: Callable[..., SimProc],
) -> None:
    seed = int(os.environ.get("SIM_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    sim = sim_proc(speed=600)  # ten minutes of market per second: resting limits and brackets fill by themselves
    port = sim.port
    start_usdc = float(sim.call("private/get_account_summary", currency="USDC")["balance"])
    ledger = Ledger()
    for cycle, mode in enumerate(CYCLES):
        asyncio.run(trade_until_killed(sim, ledger, rng, cycle, mode))
        assert not sim.alive()
        sim = sim_proc(speed=600, port=port)
        verify(sim, ledger, start_usdc, seed)
    assert len(ledger.trades) >= 10 and sum(o["order_state"] == "filled" for o in ledger.orders.values()) >= 10
    assert any(o["label"].endswith(("-sl", "-tp")) and o["order_state"] == "filled" for o in ledger.orders.values()) \
        or any(o.get("oto_order_ids") for o in ledger.orders.values()), f"seed {seed}: no bracket was exercised"
