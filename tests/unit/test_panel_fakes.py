"""Support for the control-panel tests (no tests here): a fake engine client that answers the RPC methods of
docs/rpc.md from a dict and pushes events from another thread, as the real client's callback thread would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

RAZOR_PARAMS = [
    {"name": "instrument", "type": "string", "default": "BTC_USDC-PERPETUAL", "minimum": None, "maximum": None,
     "help": "Deribit instrument"},
    {"name": "tradeSize", "type": "float", "default": 100.0, "minimum": 0, "maximum": 10_000_000,
     "help": "USD notional per trade"},
    {"name": "maxDailyTrades", "type": "int", "default": 150, "minimum": 0, "maximum": 100_000, "help": ""},
    {"name": "rsiOversold", "type": "float", "default": 40.0, "minimum": 0, "maximum": 100, "help": "RSI below"},
    {"name": "rsiOverbought", "type": "float", "default": 60.0, "minimum": 0, "maximum": 100, "help": "RSI above"},
    {"name": "breakEvenEnabled", "type": "bool", "default": True, "minimum": None, "maximum": None, "help": ""},
]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code, self.message, self.data = code, message, data


def strategy_row(sid: str = "razor-1", state: str = "running", **extra: Any) -> dict[str, Any]:
    row = {
        "id": sid, "name": "razor", "instrument": "BTC_USDC-PERPETUAL", "state": state, "desired_state": state,
        "state_reason": "", "config": {}, "created_ts_ms": 1_700_000_000_000, "started_ts_ms": 1_700_000_000_000,
        "uptime_s": 65, "trades": 2,
        "pnl": {"realized": 1.5, "fees": 0.1, "net": 1.4, "floating": -0.25, "currency": "USDC"},
        "position": None,
    }
    row.update(extra)
    return row


class FakeEngine:
    """``call`` and ``subscribe`` like the sync client; ``up=False`` makes every call fail like a dead engine."""

    def __init__(self) -> None:
        self.up = True
        self.pid = 111
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.subscribers: dict[str, list[Callable[[Any], None]]] = {}
        self.strategies = [strategy_row()]
        self.errors: dict[str, Exception] = {}
        self.lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        return {"version": "0.1.0", "pid": self.pid, "home": "/tmp/x", "started_ts_ms": self.pid * 1000,
                "uptime_s": 10, "exchange": {"name": "sim", "url": "ws://x", "connected": True, "since_ts_ms": 1,
                                             "reconnects": 0, "last_error": None},
                "strategies": {"total": len(self.strategies), "running": 1}}

    def call(self, method: str, **params: Any) -> Any:
        with self.lock:
            self.calls.append((method, params))
        if not self.up:
            raise ConnectionError("engine unreachable")
        if method in self.errors:
            raise self.errors[method]
        if method == "engine.ping":
            return "pong"
        if method == "engine.status":
            return self.status()
        if method == "strategy.available":
            return [{"name": "razor", "description": "1m scalper", "params": RAZOR_PARAMS}]
        if method == "strategy.list":
            return self.strategies
        if method == "strategy.get":
            return {**self.strategies[0], "last_decision": {
                "ts_ms": 1_700_000_060_000, "signal": "none", "indicators": {"rsi": 51.2, "ema_fast": 60010.5},
                "scores": {"long": 8, "short": 8, "strength": 8, "confidence": 10},
                "reasons": ["volatility in band +8"], "skipped": ""}}
        if method == "strategy.start":
            return strategy_row("razor-2", "running", config=params.get("config") or {})
        if method == "strategy.stop":
            return strategy_row(params["id"], "stopped")
        if method == "positions.list":
            return []
        if method == "orders.list":
            return []
        if method == "trades.list":
            return [{"trade_id": "t1", "strategy_id": "razor-1", "instrument": "BTC_USDC-PERPETUAL",
                     "direction": "long", "state": "closed", "amount": 0.001, "entry_price": 60000.0,
                     "exit_price": 60390.0, "entry_ts_ms": 1_700_000_000_000, "exit_ts_ms": 1_700_000_300_000,
                     "pnl": 0.39, "fees": 0.03, "net_pnl": 0.36, "exit_reason": "tp", "currency": "USDC"}]
        if method == "equity.history":
            return [{"ts_ms": 1_700_000_000_000, "equity": 1000.0}, {"ts_ms": 1_700_000_300_000, "equity": 1000.36}]
        if method == "risk.kill":
            return {"stopped": ["razor-1"], "cancelled": 2, "flattened": []}
        if method in ("subscribe", "unsubscribe"):
            return params.get("channels", [])
        raise RpcError(-32601, f"method not found: {method}")

    def subscribe(self, channel: str, callback: Callable[[Any], None]) -> None:
        with self.lock:
            self.subscribers.setdefault(channel, []).append(callback)

    def push(self, channel: str, data: Any) -> None:
        """Deliver an event from another thread, as the client's callback thread does."""
        callbacks = list(self.subscribers.get(channel, []))
        thread = threading.Thread(target=lambda: [cb(data) for cb in callbacks])
        thread.start()
        thread.join()

    def called(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for m, p in self.calls if m == method]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; the panel updates on its own thread, so tests wait for the state
    they expect (with a deadline) instead of sleeping a guessed amount."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
