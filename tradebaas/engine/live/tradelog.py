"""The lines of the engine log a person reads to follow a trade, built from the live loop's own objects.

``tradebaas logs -f`` (and ``--strategy ID``) shows, per strategy (every line carries the strategy's id as a field,
``engine/process/logs.py``):
- a decision that acted (intents), or that was skipped for a reason other than "no signal" — once, when the skip
  starts (the first candle of a cooldown, of an open position, of a daily limit), not on every quiet candle;
- every order sent, acknowledged (with its fill and the send -> acknowledgement time), rejected or with an unknown
  outcome; the cancellation of a trade's brackets;
- every fill, once (when it is journaled), with the exchange's time;
- every stop move; a trade opened, protected, closed (with PnL and fees) or failed;
- every reconciliation action (a reconciliation that changed nothing writes nothing).
The functions here only build text (pure, so the lines are tested as text); the callers log them. Prices and
amounts are written without float noise (``tradebaas.numbers``), times as UTC exchange time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tradebaas.domain import Direction, Fill, Liquidity, Order, OrderRole, OrderType, Side
from tradebaas.engine.core import reconcile as rc
from tradebaas.engine.core.labels import parse_label
from tradebaas.engine.core.tradebook import Trade, TradeState
from tradebaas.instruments import Instrument
from tradebaas.numbers import number_text as num

ROLE_NAMES = {OrderRole.ENTRY: "entry", OrderRole.STOP_LOSS: "stop-loss", OrderRole.TAKE_PROFIT: "take-profit",
              OrderRole.EXIT: "exit"}
LIQUIDITY = {Liquidity.MAKER: "maker", Liquidity.TAKER: "taker"}
#: Skip reasons that are not news: the strategy saw no signal (or is warming up on history, never live).
QUIET_SKIPS = frozenset({"", "no signal", "warming up"})


def utc_minute(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def utc_time(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def order_subject(label: str) -> str:
    """``entry of trade T`` for a label of ours, else the label itself."""
    parsed = parse_label(label)
    if parsed is None:
        return f"order {label!r}"
    return f"{ROLE_NAMES.get(parsed.role, parsed.role.value)} of trade {parsed.trade_id}"


def config_text(config: Mapping[str, Any]) -> str:
    """``tradeSize=100, stopLossPercent=0.5`` (numbers without float noise)."""
    return ", ".join(f"{k}={num(v) if isinstance(v, float) else v}" for k, v in config.items()) or "(defaults)"


# -- decisions -----------------------------------------------------------------------------------------------------
def intent_text(intent: Mapping[str, Any]) -> str:
    """One intent of a journaled decision (``Decision.as_dict()['intents']``) in words."""
    kind = intent.get("type")
    if kind == "Enter":
        sl, tp = intent.get("sl_pct"), intent.get("tp_pct")
        brackets = [f"SL {num(float(sl))}%" if sl is not None else "", f"TP {num(float(tp))}%" if tp is not None else ""]
        shown = ", ".join(b for b in brackets if b) or "no brackets"
        return f"enter {intent.get('direction')} {num(float(intent.get('notional_usd') or 0))} USD ({shown})"
    if kind == "MoveStop":
        reason = f" ({intent['reason']})" if intent.get("reason") else ""
        return f"move the stop to {num(float(intent.get('stop_price') or 0))}{reason}"
    if kind == "Exit":
        return f"exit ({intent.get('reason') or 'strategy'})"
    return str(kind)


def decision_line(record: Mapping[str, Any], last_skip: str, cooldown_until_ms: int = 0) -> str | None:
    """The log line of a journaled decision (``StrategyRunner.execute``'s record), or None when it is a quiet one:
    no signal, or a skip that already started (``last_skip`` is the reason of the previous decision)."""
    intents = list(record.get("intents") or [])
    skipped = str(record.get("skipped") or "")
    signal = str(record.get("signal") or "none")
    if not intents and (skipped in QUIET_SKIPS or skipped == last_skip) and signal == "none":
        return None
    candle = record.get("candle") or {}
    head = f"decision on the candle of {utc_minute(int(record.get('ts_ms') or 0))}"
    if candle.get("close") is not None:
        head += f" (close {num(float(candle['close']))})"
    scores = {k: v for k, v in (record.get("scores") or {}).items() if k in ("long", "short") and v}
    score = f" (score {', '.join(f'{k} {num(round(float(v), 1))}' for k, v in scores.items())})" if scores else ""
    if intents:
        what = "; ".join(intent_text(i) for i in intents)
        seen = f"{signal}{score} -> " if signal != "none" else (f"{skipped} -> " if skipped else "")
        return f"{head}: {seen}{what}"
    if skipped:
        until = f" until {utc_minute(cooldown_until_ms)}" if skipped == "cooldown" and cooldown_until_ms else ""
        return f"{head}: skipped, {skipped}{until}"
    return f"{head}: {signal}{score}, no action"


# -- orders and fills ----------------------------------------------------------------------------------------------
def order_sent(side: Side, instrument: str, amount: float, order_type: OrderType, label: str,
               **kwargs: Any) -> str:
    """``order sent: stop-loss of trade T: sell 0.001 BTC_USDC-PERPETUAL stop_market, trigger 101703 (mark price),
    reduce-only``."""
    parts = [f"{side.value} {num(amount)} {instrument} {order_type.value}"]
    if kwargs.get("price") is not None:
        parts.append(f"price {num(float(kwargs['price']))}")
    if kwargs.get("trigger_price") is not None:
        trigger = str(kwargs.get("trigger") or "").replace("_", " ")
        parts.append(f"trigger {num(float(kwargs['trigger_price']))}" + (f" ({trigger})" if trigger else ""))
    if kwargs.get("reduce_only"):
        parts.append("reduce-only")
    for linked in kwargs.get("otoco_config") or ():
        parts.append(f"with {order_subject(str(linked.get('label', '')))} {linked.get('type')} "
                     f"{num(float(linked.get('price') or 0))} (one cancels the other)")
    return f"order sent: {order_subject(label)}: {', '.join(parts)}"


def entry_too_small(notional_usd: float, instrument: Instrument, price: float) -> str:
    """Why an entry was not sent: its notional rounds to no contract (``engine/core/guards.py``)."""
    step = instrument.min_trade_amount
    minimum = f"{num(step)} USD" if instrument.is_inverse else \
        f"{num(step)} {instrument.base_currency}, about {step * price:.2f} USD at {num(price)}"
    return (f"entry not sent: {num(notional_usd)} USD is below the minimum order of {instrument.name} ({minimum}); "
            "it would trade a whole minimum amount")


def order_acknowledged(order: Order, send_ms: float, close_ms: float | None = None) -> str:
    """``order acknowledged: entry of trade T: id 42 filled, 0.001 at 102215 (send->ack 1.234 ms)``."""
    filled = f", {num(order.filled_amount)} at {num(order.average_price)}" if order.filled_amount > 0 else ""
    timing = f"send->ack {send_ms:.3f} ms" + (f", close->ack {close_ms:.3f} ms" if close_ms is not None else "")
    return f"order acknowledged: {order_subject(order.label)}: id {order.order_id} {order.state.value}{filled} ({timing})"


def order_rejected(label: str, error: object) -> str:
    return f"order rejected: {order_subject(label)}: {error}"


def order_unknown(label: str, error: object) -> str:
    return f"order outcome unknown: {order_subject(label)}: {error}; reconciling"


def fill_line(fill: Fill, currency: str) -> str:
    """``fill: entry of trade T: buy 0.001 at 102215, fee 0.0511 USDC (taker), exchange time ...``."""
    return (f"fill: {order_subject(fill.label)}: {fill.side.value} {num(fill.amount)} at {num(fill.price)}, fee "
            f"{num(fill.fee)} {fill.fee_currency or currency} ({LIQUIDITY.get(fill.liquidity, 'taker')}), exchange time "
            f"{utc_time(fill.ts_ms)}")


def stop_moved(trade: Trade, old: float | None, new: float, reason: str) -> str:
    was = f"from {num(old)} " if old is not None else ""
    return f"stop moved: trade {trade.trade_id} {was}to {num(new)}" + (f" ({reason})" if reason else "")


def take_moved(trade: Trade, old: float | None, new: float) -> str:
    was = f"from {num(old)} " if old is not None else ""
    return f"take-profit moved: trade {trade.trade_id} {was}to {num(new)} (config changed)"


# -- trades --------------------------------------------------------------------------------------------------------
def _direction(trade: Trade) -> str:
    return trade.direction.value if isinstance(trade.direction, Direction) else str(trade.direction)


def trade_changes(trade: Trade, before: Trade | None) -> list[str]:
    """What happened to a trade between ``before`` and ``trade`` that a person follows: opened, closed, failed
    (nothing for other updates, or when ``before`` is unknown)."""
    if before is None:
        return []
    lines: list[str] = []
    if trade.entry_filled > 0 and before.entry_filled <= 0:
        lines.append(f"trade {trade.trade_id} opened: {_direction(trade)} {num(trade.entry_filled)} "
                     f"{trade.instrument} at {num(trade.entry_price)}")
    if trade.state is TradeState.CLOSED and before.state is not TradeState.CLOSED:
        lines.append(
            f"trade {trade.trade_id} closed ({trade.exit_reason or 'closed'}): {_direction(trade)} "
            f"{num(trade.entry_filled)} at {num(trade.entry_price)} -> {num(trade.exit_price)}, PnL {num(trade.pnl)}, "
            f"fees {num(trade.fees)}, net {num(trade.pnl - trade.fees)} {trade.currency}")
    elif trade.state is TradeState.FAILED and before.state is not TradeState.FAILED:
        lines.append(f"trade {trade.trade_id} failed: {trade.exit_reason or 'the entry did not fill'}")
    return lines


def protected(trade: Trade) -> str:
    parts = ([f"stop {num(trade.stop_price)}"] if trade.stop_price is not None else []) + (
        [f"take-profit {num(trade.take_price)}"] if trade.take_price is not None else [])
    return f"trade {trade.trade_id} protected: {', '.join(parts) or 'no brackets'} on the exchange"


# -- reconciliation ------------------------------------------------------------------------------------------------
def action_strategy(action: rc.Action) -> str | None:
    """The strategy an action is about (from its fields or its order label), if any."""
    sid = getattr(action, "strategy_id", None)
    if sid:
        return str(sid)
    parsed = parse_label(getattr(action, "label", None))
    if parsed is not None:
        return parsed.strategy_id
    fill = getattr(action, "fill", None)
    if isinstance(fill, Fill) and (parsed := parse_label(fill.label)) is not None:
        return parsed.strategy_id
    return None


def action_text(action: rc.Action) -> str:
    """One reconciliation action in words."""
    match action:
        case rc.RecoverTrade():
            return f"recover trade {action.trade_id} ({action.direction.value} on {action.instrument}) from its label"
        case rc.ApplyFill():
            f = action.fill
            return (f"apply a missed fill of trade {action.trade_id} ({ROLE_NAMES.get(action.role, action.role.value)})"
                    f": {f.side.value} {num(f.amount)} at {num(f.price)}, exchange time {utc_time(f.ts_ms)}")
        case rc.CloseTrade():
            return f"end trade {action.trade_id} as {action.state.value}: {action.reason}"
        case rc.RecordOrder():
            return f"record order {action.order_id} as the {ROLE_NAMES.get(action.role, action.role.value)} of trade " \
                   f"{action.trade_id}"
        case rc.PlaceStop():
            return f"place the missing stop of trade {action.trade_id}: {action.side.value} {num(action.amount)} " \
                   f"trigger {num(action.trigger_price)}"
        case rc.PlaceTakeProfit():
            return f"place the missing take-profit of trade {action.trade_id}: {action.side.value} " \
                   f"{num(action.amount)} at {num(action.price)}"
        case rc.ProtectPosition():
            return f"protect {action.instrument}: {action.side.value} {num(action.amount)} stop trigger " \
                   f"{num(action.trigger_price)} ({action.reason})"
        case rc.CancelOrder():
            of = f" of trade {action.trade_id}" if action.trade_id else ""
            return f"cancel order {action.order_id}{of} on {action.instrument}: {action.reason}"
        case rc.ClosePosition():
            return f"close trade {action.trade_id} at market: {action.side.value} {num(action.amount)} " \
                   f"({action.reason})"
        case rc.MarkNeedsAttention():
            return f"needs attention: {action.message}"
        case rc.StopStrategy():
            return f"stop the strategy: {action.reason}"
    return type(action).__name__
