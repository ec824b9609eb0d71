"""The doctor's checks against an exchange, through the engine's own parts: its Deribit client (``--exchange``
resolution, credentials, auth, heartbeat), its instrument loading, and its order manager for the brackets.

Why the engine's parts and not a second client: the preflight must fail where the engine would. The far-from-market
order goes out as the engine sends orders (``DeribitClient.buy`` with a tradebaas label); with ``--allow-trade`` the
position is opened, protected and closed by ``OrderManager.enter``/``close`` themselves (a market entry, then a
reduce-only ``stop_market`` on the mark price and a reduce-only limit take-profit as one OCO pair), journaled in a
throwaway journal so the engine's own journal is never touched.

Labels: every doctor order is ``tb:doctor:<run>:<role>``. Reconciliation calls an order *ours* only when its label
names a strategy of its journal, and strategy ids are always ``<name>-<suffix>`` (``labels.new_strategy_id``), so
``doctor`` is never one: a running engine leaves the doctor's orders alone. The doctor refuses ``--allow-trade``
where a running engine of this home trades the instrument (its reconciliation would see the doctor's position as
unexplained) or where the account already holds a position on it (the doctor trades only what it can undo).

Money-moving steps fail closed: whatever goes wrong after an order went out, the doctor cancels by label and closes
what it opened (reduce-only), and says so in the check's line if even that fails.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import WebSocketException

from tradebaas.doctor import checks as ck
from tradebaas.doctor.checks import Check, ClockSample, Status, StrategySize
from tradebaas.domain import Direction, OrderRole, OrderState, OrderType, Side
from tradebaas.engine.core.labels import base36, make_label
from tradebaas.exchange.deribit import scopes
from tradebaas.exchange.deribit.client import DeribitClient
from tradebaas.exchange.deribit.endpoints import Endpoint
from tradebaas.exchange.deribit.errors import AuthenticationError, DeribitError
from tradebaas.instruments import DEFAULT_INSTRUMENTS, Instrument

#: The strategy id of every doctor order's label (never an engine strategy's: see the module docstring).
DOCTOR_STRATEGY_ID = "doctor"
CLOCK_SAMPLES = 5
#: Bracket distances of the --allow-trade position, percent: far enough that the market does not reach them
#: during the few seconds the check takes.
BRACKET_PCT = 2.0
#: Where the far-from-market buy goes when the exchange states no lowest allowed price: this far below the mark.
FAR_FRACTION = 0.975

NEEDS_AUTH = "needs accepted credentials (see credentials)"


@dataclass(slots=True)
class Plan:
    """What to check: where, on which instruments, for which strategy sizes, and whether trading is allowed."""

    endpoint: Endpoint
    instrument: str
    sizes: list[StrategySize]
    sizes_source: str
    allow_trade: bool = False
    #: instruments a running engine of this home trades on the same exchange (--allow-trade refuses those)
    engine_instruments: frozenset[str] = frozenset()
    timeout_s: float = 10.0
    #: why there are no credentials (e.g. a secrets file others can read), shown on the credentials line
    credentials_error: str | None = None
    run_id: str = field(default_factory=lambda: base36(int(time.time() * 1000)) + secrets.token_hex(2))


async def run(plan: Plan) -> list[Check]:
    """Every exchange check, in checklist order; never raises for an exchange's answer (it becomes a line)."""
    out: list[Check] = []
    ep = plan.endpoint
    creds = ep.credentials
    client: DeribitClient | None = None
    authed = False
    if creds is None:
        out.append(Check("credentials", Status.FAIL, plan.credentials_error or f"no API credentials for {ep.name}",
                         "set TRADEBAAS_DERIBIT_CLIENT_ID and TRADEBAAS_DERIBIT_CLIENT_SECRET, or write client_id and "
                         "client_secret to TRADEBAAS_HOME/secrets.toml (chmod 600)"))
    else:
        client = _client(ep, plan, with_credentials=True)
        try:
            await client.start()
            authed = True
        except AuthenticationError as exc:
            out.append(Check("credentials", Status.FAIL, f"client id {creds.client_id} ({creds.source}) refused: "
                             f"{exc.code} {exc.message}",
                             "check the key and secret (TRADEBAAS_DERIBIT_CLIENT_ID/_SECRET or secrets.toml); a "
                             "testnet key works only on deribit-testnet, a mainnet key only on deribit",
                             {"code": exc.code}))
            client = None
        except (OSError, TimeoutError, DeribitError, WebSocketException) as exc:
            return [_connection_failed(ep, exc)]
    if client is None:
        client = _client(ep, plan, with_credentials=False)
        try:
            await client.start()
        except (OSError, TimeoutError, DeribitError, WebSocketException) as exc:
            return [*out, _connection_failed(ep, exc)]
    try:
        try:
            version = await client.call("public/test")
        except (OSError, TimeoutError, DeribitError) as exc:
            return [*out, _connection_failed(ep, exc)]
        out.insert(0, Check("connection", Status.PASS, f"{ep.url} answers (API {_get(version, 'version')})"))
        if authed and creds is not None:
            out.append(Check("credentials", Status.PASS, f"client id {creds.client_id} ({creds.source}) accepted"))
            out.append(ck.scope_check(client.scope))
        else:
            out.append(ck.skipped("scope", NEEDS_AUTH))
        out.append(await _step("clock", clock(client)))
        try:
            listed = await client.get_instruments("any")
            wanted = [s.instrument for s in plan.sizes] + [plan.instrument]
            out.append(ck.instruments_check({i.name: i for i in listed}, wanted))
        except (OSError, TimeoutError, DeribitError) as exc:
            listed = []
            out.append(Check("instruments", Status.FAIL, f"public/get_instruments failed: {exc}",
                             "the engine would trade with its built-in specifications: see the error"))
        table = dict(DEFAULT_INSTRUMENTS) | {i.name: i for i in listed}  # as the engine loads them
        scope = scopes.parse(client.scope) if authed else scopes.Scope()
        inst = table.get(plan.instrument)
        summaries: dict[str, dict[str, Any]] = {}
        if not authed:
            out += [ck.skipped(n, NEEDS_AUTH) for n in ("margin", "order", "brackets", "rate limits")]
            return out
        if scope.allows("account", "read"):
            out.append(await _step("margin", margin(client, plan, table, summaries)))
        else:
            out.append(ck.skipped("margin", "needs account:read (see scope)"))
        if inst is None:
            out += [ck.skipped(n, f"{plan.instrument} is not listed (see instruments)") for n in ("order", "brackets")]
        elif not scope.allows("trade", "read_write"):
            out += [ck.skipped(n, "needs trade:read_write (see scope)") for n in ("order", "brackets")]
        else:
            out.append(await _step("order", far_order(client, inst, plan.run_id)))
            if plan.allow_trade:
                out.append(await _step("brackets", brackets(client, inst, plan, table)))
            else:
                out.append(ck.skipped("brackets", "no position opened", "run with --allow-trade to open a minimum "
                                      "position with its stop and take-profit as the engine places them, check them "
                                      "on the exchange and close it (costs two taker fees on the minimum size)"))
        limits = next((s.get("limits") for s in summaries.values() if isinstance(s.get("limits"), dict)), None)
        out.append(ck.rate_limit_check(limits, len(plan.sizes), client.status().rate_limited))
        return out
    finally:
        await client.close()


def _client(ep: Endpoint, plan: Plan, *, with_credentials: bool) -> DeribitClient:
    """The client exactly as the engine's supervisor makes it (credentials, client_credentials auth, heartbeat)."""
    if with_credentials:
        return DeribitClient(ep.url, ep.client_id, ep.client_secret, request_timeout=plan.timeout_s,
                             connect_timeout=plan.timeout_s, rate_limit_retries=2)
    return DeribitClient(ep.url, request_timeout=plan.timeout_s, connect_timeout=plan.timeout_s)


def _connection_failed(ep: Endpoint, exc: BaseException) -> Check:
    return Check("connection", Status.FAIL, f"cannot reach {ep.url}: {exc}",
                 "check --exchange and the network (for sim: is `tradebaas sim` running for this TRADEBAAS_HOME?)")


async def _step(name: str, aw: Awaitable[Check]) -> Check:
    """Run one check; an exchange error or timeout in it becomes its failing line instead of ending the doctor."""
    try:
        return await aw
    except (DeribitError, OSError, TimeoutError) as exc:
        return Check(name, Status.FAIL, f"the exchange failed the check: {exc}", "see the error; run the doctor again")


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


# ----------------------------------------------------------------------------------------------------- clock


async def clock(client: DeribitClient) -> Check:
    samples = []
    for _ in range(CLOCK_SAMPLES):
        sent = time.time()
        exchange_ms = int(await client.call("public/get_time"))
        received = time.time()
        samples.append(ClockSample(sent, received, client.last_server_us, exchange_ms))
    return ck.clock_check(samples)


# ---------------------------------------------------------------------------------------------------- margin


async def margin(client: DeribitClient, plan: Plan, table: dict[str, Instrument],
                 summaries: dict[str, dict[str, Any]]) -> Check:
    """Fills ``summaries`` (currency -> extended account summary; the rate-limit check reads ``limits`` there)."""
    names = list(dict.fromkeys([s.instrument for s in plan.sizes] + [plan.instrument]))
    marks: dict[str, float] = {}
    for name in names:
        if name in table:
            marks[name] = (await client.ticker(name)).mark_price
    for cur in sorted({table[n].settlement_currency for n in names if n in table}):
        summaries[cur] = dict(await client.call("private/get_account_summary", {"currency": cur, "extended": True}))
    available = {cur: float(s.get("available_funds") or 0.0) for cur, s in summaries.items()}
    return ck.margin_check(plan.sizes, table, marks, available, plan.sizes_source)


# ------------------------------------------------------------------------------------------ far order by label


def far_price(inst: Instrument, ticker: dict[str, Any]) -> float:
    """A buy price far below the market that the exchange still accepts: its lowest allowed price (``min_price``)
    on the tick grid, else ``FAR_FRACTION`` of the mark."""
    mark = float(ticker["mark_price"])
    floor = ticker.get("min_price")
    target = float(floor) if isinstance(floor, int | float) and 0 < floor < mark else mark * FAR_FRACTION
    return inst.round_price(math.ceil(target / inst.tick_size - 1e-9) * inst.tick_size)


async def far_order(client: DeribitClient, inst: Instrument, run_id: str) -> Check:
    """A post-only buy of the minimum size far below the market, with a tradebaas label: placed, found among the
    open orders by its label (as reconciliation finds orders), cancelled by label (as the engine cancels brackets),
    and gone afterwards."""
    label = make_label(DOCTOR_STRATEGY_ID, run_id, OrderRole.ENTRY)
    ticker = await client.call("public/ticker", {"instrument_name": inst.name})
    price = far_price(inst, ticker)
    amount = inst.min_trade_amount
    t0 = time.perf_counter()
    order, fills = await client.buy(inst.name, amount, OrderType.LIMIT, label, price=price, post_only=True)
    ack_ms = (time.perf_counter() - t0) * 1e3
    left_open = True
    try:
        if fills or order.state is not OrderState.OPEN:
            return Check("order", Status.FAIL, f"the post-only buy at {price:g} ended {order.state.value} with "
                         f"{len(fills)} fill(s)", "the market moved through it; run the doctor again",
                         {"label": label})
        found = [o for o in await client.get_open_orders(inst.name) if o.label == label]
        if [o.order_id for o in found] != [order.order_id]:
            return Check("order", Status.FAIL, f"order {order.order_id} labelled {label} not found by its label "
                         f"({len(found)} open orders carry it)", "the exchange does not keep labels: tradebaas "
                         "cannot recover its orders after a crash there", {"label": label})
        cancelled = await client.cancel_by_label(label)
        remaining = [o for o in await client.get_open_orders(inst.name) if o.label == label]
        left_open = bool(remaining)
        if cancelled != 1 or remaining:
            return Check("order", Status.FAIL, f"cancel by label {label} cancelled {cancelled}, {len(remaining)} left",
                         "cancel it on the exchange's website; the engine cancels brackets by label", {"label": label})
        detail = (f"post-only buy {amount:g} {inst.name} at {price:g} (mark {float(ticker['mark_price']):g}) placed in "
                  f"{ack_ms:.0f} ms as {label}, found by its label, cancelled by label")
        return Check("order", Status.PASS, detail, data={"label": label, "price": price, "ack_ms": round(ack_ms, 1)})
    finally:
        if left_open:
            with contextlib.suppress(DeribitError, OSError, TimeoutError):
                await client.cancel_by_label(label)


# ----------------------------------------------------------------------------------- brackets (--allow-trade)


async def brackets(client: DeribitClient, inst: Instrument, plan: Plan, table: dict[str, Instrument]) -> Check:
    """A minimum long opened, protected and closed by the engine's ``OrderManager``; checked on the exchange."""
    from tradebaas.engine.journal.database import Journal
    from tradebaas.engine.journal.store import Store
    from tradebaas.engine.live.order_manager import OrderManager
    from tradebaas.strategies.base import Enter

    if inst.name in plan.engine_instruments:
        return Check("brackets", Status.FAIL, f"the running engine of this home trades {inst.name}: its "
                     "reconciliation would take the doctor's position for an unexplained one",
                     f"stop its strategies on {inst.name} first, or check another --instrument")
    before = await client.get_position(inst.name)
    if before.size != 0:
        return Check("brackets", Status.FAIL, f"the account holds {before.size:g} on {inst.name}: the doctor trades "
                     "only on a flat instrument", "close that position, or check another --instrument")
    reconciles: list[str] = []

    async def on_trade_event(*_: Any) -> None:
        return None

    with tempfile.TemporaryDirectory(prefix="tradebaas-doctor-") as tmp:
        journal = Journal.open(Path(tmp) / "doctor.sqlite", synchronous="OFF")
        om = OrderManager(client, Store(journal), table, lambda *_: None, reconciles.append, on_trade_event)
        trade = None
        try:
            ticker = await client.ticker(inst.name)
            mark = ticker.mark_price
            intent = Enter(Direction.LONG, _min_notional_usd(inst, mark), BRACKET_PCT, BRACKET_PCT, "doctor")
            now_ms = int(await client.call("public/get_time"))
            trade = await om.enter(DOCTOR_STRATEGY_ID, inst, intent, now_ms, mark)
            opened = await _verify_open(client, inst, trade, reconciles)
            if opened.status is not Status.PASS or trade is None:
                return opened
            trade = await om.close(trade, "doctor")
            return await _verify_closed(client, inst, plan.run_id, trade, opened.detail, reconciles)
        finally:
            await _undo(client, inst, trade)
            journal.close()


def _min_notional_usd(inst: Instrument, price: float) -> float:
    """The USD notional that the engine's sizing rounds to exactly one minimum order."""
    return inst.min_trade_amount if inst.is_inverse else inst.min_trade_amount * price


async def _verify_open(client: DeribitClient, inst: Instrument, trade: Any, reconciles: list[str]) -> Check:
    """The position and its two brackets on the exchange, exactly as ``OrderManager.protect`` promises them."""
    if trade is None or trade.open_amount <= 0 or reconciles:
        why = "; ".join(reconciles) or (f"trade ended {trade.state.value}" if trade is not None else "no trade")
        return Check("brackets", Status.FAIL, f"the engine's entry did not open a position: {why}",
                     "see the lines above (margin, scope) and the exchange's answer")
    pos = await client.get_position(inst.name)
    raw = await client.call("private/get_open_orders_by_instrument", {"instrument_name": inst.name})
    by_label = {str(o.get("label")): o for o in raw if isinstance(o, dict)}
    sl_label = make_label(trade.strategy_id, trade.trade_id, OrderRole.STOP_LOSS)
    tp_label = make_label(trade.strategy_id, trade.trade_id, OrderRole.TAKE_PROFIT)
    sl, tp = by_label.get(sl_label), by_label.get(tp_label)
    problems = []
    if abs(pos.size - trade.open_amount) > inst.min_trade_amount / 2:
        problems.append(f"position {pos.size:g} on the exchange, {trade.open_amount:g} expected")
    if sl is None:
        problems.append(f"no stop labelled {sl_label}")
    elif not (sl.get("order_type") == "stop_market" and sl.get("trigger") == "mark_price" and sl.get("reduce_only")
              and sl.get("direction") == Side.SELL.value and float(sl.get("trigger_price") or 0) == trade.stop_price
              and float(sl.get("amount") or 0) == trade.open_amount):
        problems.append(f"the stop is not a reduce-only stop_market sell of {trade.open_amount:g} on the mark price "
                        f"at {trade.stop_price:g}: {_brief(sl)}")
    if tp is None:
        problems.append(f"no take-profit labelled {tp_label}")
    elif not (tp.get("order_type") == "limit" and tp.get("reduce_only") and tp.get("direction") == Side.SELL.value
              and float(tp.get("price") or 0) == trade.take_price and float(tp.get("amount") or 0) == trade.open_amount):
        problems.append(f"the take-profit is not a reduce-only limit sell of {trade.open_amount:g} at "
                        f"{trade.take_price:g}: {_brief(tp)}")
    if sl is not None and tp is not None and (not sl.get("oco_ref") or sl.get("oco_ref") != tp.get("oco_ref")):
        problems.append("stop and take-profit are not one OCO pair (different oco_ref)")
    if problems:
        return Check("brackets", Status.FAIL, "; ".join(problems), "the exchange does not keep the engine's "
                     "brackets as placed: do not trade there until this is understood")
    return Check("brackets", Status.PASS, f"long {trade.open_amount:g} {inst.name} filled at {trade.entry_price:g}; "
                 f"stop_market sell trigger {trade.stop_price:g} (mark price, reduce-only) and limit sell "
                 f"{trade.take_price:g} (reduce-only) as one OCO pair, found on the exchange by label")


async def _verify_closed(client: DeribitClient, inst: Instrument, run_id: str, trade: Any, opened: str,
                         reconciles: list[str]) -> Check:
    pos = await client.get_position(inst.name)
    prefix = f"tb:{DOCTOR_STRATEGY_ID}:{run_id}"
    left = [o.label for o in await client.get_open_orders(inst.name) if o.label.startswith(prefix)]
    if pos.size != 0 or left or trade.open_amount > 0:
        return Check("brackets", Status.FAIL, f"{opened}; after the close: position {pos.size:g}, orders left "
                     f"{left or 'none'}", "close the position and cancel the orders on the exchange by hand")
    fees = f"{trade.fees:.6g} {trade.currency}" if trade.currency else f"{trade.fees:.6g}"
    return Check("brackets", Status.PASS, f"{opened}; closed at {trade.exit_price:g} (net {trade.pnl - trade.fees:+.6g}, "
                 f"fees {fees}): flat, no orders left" + (f" (reconciliation asked: {'; '.join(reconciles)})"
                                                           if reconciles else ""),
                 data={"trade_id": trade.trade_id, "entry_price": trade.entry_price, "exit_price": trade.exit_price})


async def _undo(client: DeribitClient, inst: Instrument, trade: Any) -> None:
    """Fail closed: cancel every order of this doctor trade by label and close what it still holds (reduce-only)."""
    if trade is None:
        return
    with contextlib.suppress(DeribitError, OSError, TimeoutError):
        for role in (OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT, OrderRole.ENTRY):
            await client.cancel_by_label(make_label(trade.strategy_id, trade.trade_id, role))
        pos = await client.get_position(inst.name)
        if pos.size > 0:  # the instrument was flat before the doctor's long: what is there now is the doctor's
            await client.sell(inst.name, min(pos.size, trade.amount), OrderType.MARKET, make_label(trade.strategy_id, trade.trade_id,
                                                                               OrderRole.EXIT), reduce_only=True)


def _brief(order: dict[str, Any]) -> str:
    keys = ("order_type", "direction", "amount", "price", "trigger_price", "trigger", "reduce_only", "oco_ref")
    return ", ".join(f"{k}={order.get(k)}" for k in keys if k in order)

