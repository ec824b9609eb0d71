"""Support for the control-panel tests (no tests here): a fake engine client that answers the RPC methods of
docs/rpc.md from a dict and pushes events from another thread, as the real client's callback thread would.

What the fake answers is built from the real parts, so a test can only pass against what the engine really sends:
``strategy.available`` comes from the registered strategies through ``params_list`` (the engine's function),
after a JSON round trip, with their source, code version and error (issue 11's shape); ``strategy.start`` and
``strategy.set`` validate the config with ``validate_config`` as the engine does (``set`` bumps the config
version); ``strategy.deploy`` loads the source with the engine's ``loader.load_class`` (refusing with its message
and traceback); and an error reaches the caller as the sync client raises it: the server's error frame, parsed by
the client into ``tradebaas.rpc.protocol.RpcError``. A dead engine raises the client's ``EngineNotRunning``.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.rpc.facade import EngineFacade
from tradebaas.rpc.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, RpcError, encode, error_response
from tradebaas.rpc.session import answer_result
from tradebaas.strategies.loader import StrategyApiError, StrategyLoadError, load_class, source_version
from tradebaas.strategies.params import params_list, schema, validate_config
from tradebaas.strategies.registry import available, get_strategy


def over_the_wire(value: Any) -> Any:
    """``value`` as the client receives it: JSON-encoded by the server, decoded by the client."""
    return json.loads(encode(value))


def received_error(exc: RpcError) -> RpcError:
    """The error the sync client raises when the engine answers ``exc``: the server's error frame
    (``error_response``), sent as JSON, turned back into an exception by the client (``session.answer_result``)."""
    try:
        answer_result(over_the_wire(error_response(1, exc)))
    except RpcError as received:
        return received
    raise AssertionError("the client returned a result for an error answer")


def builtin_version(name: str) -> str:
    """A built-in's code version: sha256 of its module's source (the contract's rule)."""
    return source_version(inspect.getsource(sys.modules[get_strategy(name).__module__]))


def available_entry(cls: type, source: str, version: str, origin: str,
                    versions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"name": cls.name, "description": schema(cls)["description"],  # type: ignore[attr-defined]
            "params": params_list(cls), "source": source, "version": version, "origin": origin, "error": None,
            "versions": versions or []}


def available_answer() -> list[dict[str, Any]]:
    """``strategy.available`` as the engine answers it: every built-in with its source and code version."""
    return over_the_wire([available_entry(get_strategy(name), "builtin", builtin_version(name),
                                          f"{get_strategy(name).__module__}:{get_strategy(name).__name__}")
                          for name in available()])


BROKEN_TRACEBACK = ('Traceback (most recent call last):\n  File "/home/u/strategies/broken.py", line 3, in <module>\n'
                    "    import nothing_here\nModuleNotFoundError: No module named 'nothing_here'\n")


def broken_file_entry(stem: str = "broken") -> dict[str, Any]:
    """How ``strategy.available`` lists a file in ``TRADEBAAS_HOME/strategies/`` that fails to import."""
    return {"name": stem, "description": "", "params": [], "source": "file", "version": "ab" * 32,
            "origin": f"/home/u/strategies/{stem}.py", "error": BROKEN_TRACEBACK, "versions": []}


RAZOR_PARAMS: list[dict[str, Any]] = over_the_wire(params_list(get_strategy("razor")))
RAZOR_VERSION = builtin_version("razor")


def strategy_row(sid: str = "razor-1", state: str = "running", **extra: Any) -> dict[str, Any]:
    row = {
        "id": sid, "name": "razor", "instrument": "BTC_USDC-PERPETUAL", "state": state, "desired_state": state,
        "state_reason": "", "config": validate_config(get_strategy("razor"), {}),
        "created_ts_ms": 1_700_000_000_000, "started_ts_ms": 1_700_000_000_000,
        "uptime_s": 65, "trades": 2,
        "pnl": {"realized": 1.5, "fees": 0.1, "net": 1.4, "floating": -0.25, "currency": "USDC"},
        "position": None, "version": RAZOR_VERSION, "config_version": 1, "source": "builtin", "error": None,
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
        self.available = available_answer()
        self.deployed: dict[str, type] = {}  # name -> the class of its latest deployed version
        self.errors: dict[str, RpcError] = {}  # method -> the error the engine answers to it
        self.trade_extra: dict[str, Any] = {}  # keys a newer engine adds to every TradeRow
        # the engine's recorded 1-minute candles (market.candles), ending where the last decision was taken
        self.candles = [{"ts_ms": 1_700_000_000_000 - (9 - i) * 60_000, "open": 60000.0 + i, "high": 60010.0 + i,
                         "low": 59990.0 + i, "close": 60005.0 + i, "volume": 1.0} for i in range(10)]
        self.lock = threading.Lock()

    def facade(self) -> EngineFacade:
        """The user vocabulary (``eng.deploy``, ``eng.set``...) on top of this fake, as the real client has it."""
        fake = self

        class Facade(EngineFacade):
            def call(self, method: str, **params: Any) -> Any:
                return fake.call(method, **params)

        return Facade()

    def strategy_class(self, name: str) -> type:
        return self.deployed[name] if name in self.deployed else get_strategy(name)

    def row(self, sid: str) -> dict[str, Any]:
        for row in self.strategies:
            if row["id"] == sid:
                return row
        raise received_error(RpcError(INVALID_PARAMS, f"no strategy {sid!r}"))

    def status(self) -> dict[str, Any]:
        return {"version": "0.1.0", "pid": self.pid, "home": "/tmp/x", "started_ts_ms": self.pid * 1000,
                "uptime_s": 10, "exchange": {"name": "sim", "url": "ws://x", "connected": True, "since_ts_ms": 1,
                                             "reconnects": 0, "last_error": None},
                "strategies": {"total": len(self.strategies), "running": 1}}

    def call(self, method: str, **params: Any) -> Any:
        with self.lock:
            self.calls.append((method, params))
        if not self.up:
            raise EngineNotRunning("not connected to the engine (ws://x); still trying to reconnect")
        if method in self.errors:
            raise received_error(self.errors[method])
        return over_the_wire(self._answer(method, params))

    def _answer(self, method: str, params: dict[str, Any]) -> Any:
        if method == "engine.ping":
            return "pong"
        if method == "engine.status":
            return self.status()
        if method == "strategy.available":
            return self.available
        if method == "strategy.list":
            return self.strategies
        if method == "strategy.get":
            row = self.row(params["id"])
            return {**row, "last_decision": {
                "ts_ms": 1_700_000_060_000, "signal": "none", "indicators": {"rsi": 51.2, "ema_fast": 60010.5},
                "scores": {"long": 8, "short": 8, "strength": 8, "confidence": 10},
                "reasons": ["volatility in band +8"], "skipped": ""}, "decisions": 1,
                "params": params_list(self.strategy_class(row["name"]))}
        if method == "strategy.set":
            return self._set(params)
        if method == "strategy.deploy":
            return self._deploy(params)
        if method == "strategy.start":
            config = dict(params.get("config") or {})
            if params.get("instrument"):
                config["instrument"] = params["instrument"]
            try:  # the engine's own check (Supervisor.rpc_start); its refusal is -32602 with the same text
                validate_config(get_strategy(params["name"]), config)
            except UserError as exc:
                raise received_error(RpcError(INVALID_PARAMS, str(exc))) from None
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
                     "pnl": 0.39, "fees": 0.03, "net_pnl": 0.36, "exit_reason": "tp", "currency": "USDC",
                     **self.trade_extra}]
        if method == "equity.history":
            return [{"ts_ms": 1_700_000_000_000, "equity": 1000.0}, {"ts_ms": 1_700_000_300_000, "equity": 1000.36}]
        if method == "market.candles":
            return [c for c in self.candles if c["ts_ms"] >= (params.get("since") or 0)
                    and params.get("instrument") == "BTC_USDC-PERPETUAL"]
        if method == "risk.kill":
            return {"stopped": ["razor-1"], "cancelled": 2, "flattened": []}
        if method in ("subscribe", "unsubscribe"):
            return params.get("channels", [])
        raise received_error(RpcError(METHOD_NOT_FOUND, f"method not found: {method}"))

    def _set(self, params: dict[str, Any]) -> dict[str, Any]:
        """The engine's ``strategy.set``: the changes merged into the current config, validated as a whole with
        ``validate_config`` (a refusal is -32602 with its words), then a new config version."""
        row = self.row(params["id"])
        changes = dict(params.get("config") or {})
        if not changes:
            raise received_error(RpcError(INVALID_PARAMS, "strategy.set needs at least one config key"))
        try:
            config = validate_config(self.strategy_class(row["name"]), {**row["config"], **changes})
        except UserError as exc:
            raise received_error(RpcError(INVALID_PARAMS, str(exc))) from None
        row.update(config=config, config_version=int(row["config_version"]) + 1)
        return row

    def _deploy(self, params: dict[str, Any]) -> dict[str, Any]:
        """The engine's ``strategy.deploy`` without the backtest: load with the real loader, refuse with its
        message and traceback, list the new version as ``deployed``."""
        source, name = params["source"], params.get("name")
        version = source_version(source)
        try:
            cls = load_class(source, f"fake_deployed_{version[:16]}", f"<deployed {version[:12]}>", name)
        except (StrategyLoadError, StrategyApiError) as exc:
            vetting = {"ok": False, "error": str(exc), "traceback": exc.details}
            raise received_error(RpcError(INVALID_PARAMS, f"refused: {exc}", {"vetting": vetting})) from None
        deployed_name = name or cls.name  # type: ignore[attr-defined]
        self.deployed[deployed_name] = cls
        versions = [{"version": version, "deployed_ts_ms": 1_700_000_000_000, "warmup_candles": 0}]
        self.available = [a for a in self.available if a["name"] != deployed_name] + over_the_wire(
            [{**available_entry(cls, "deployed", version, f"deployed:{version[:12]}", versions),
              "name": deployed_name}])
        return {"name": deployed_name, "version": version, "class_name": cls.__name__, "warmup_candles": 0,
                "vetting": {"ok": True, "error": None, "traceback": None}}

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
