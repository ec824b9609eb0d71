"""The engine's RPC API: every method, who may call it, its parameters and its handler, in one place.

``METHODS`` is the one list of the engine's JSON-RPC methods (docs/rpc.md documents each; a test holds the two
equal). Each method has an access level: ``read`` methods answer questions and change nothing that trades (a
read-only token for reports and dashboards may call them); ``trade`` methods start, stop or change trading, run
code or change what the engine does, and need the full token.

The handlers here validate what the parameter schema cannot (unknown strategy or instrument, config rules), call
the live loop's operations (``engine/live/supervisor.py``) and shape the answers (``engine/live/views.py``). The
report service brings its own handlers (``reports.*``, ``journal.events``); ``subscribe``/``unsubscribe`` are the
RPC server's. ``register`` binds them all and refuses a method without a table entry or an entry without a method,
so nothing is served that is not listed here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradebaas.engine.core import guards
from tradebaas.engine.core.labels import is_valid_id
from tradebaas.engine.journal.event_query import EVENTS_MAX_LIMIT, check_kinds, query_events
from tradebaas.engine.live.catalog import FILE, Refused
from tradebaas.engine.live.strategy_runner import WARMUP_CANDLES
from tradebaas.engine.live.supervisor import Supervisor
from tradebaas.engine.process.app import Engine
from tradebaas.engine.process.logs import strategy_extra
from tradebaas.errors import UserError
from tradebaas.instruments import UnknownInstrumentError, get_instrument
from tradebaas.rpc.protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, Access, Param, Registry, RpcError
from tradebaas.strategies.params import ConfigError, params_list, validate_config

READ, TRADE = Access.READ, Access.TRADE
Handler = Callable[..., Any]

_LEVELS = ("debug", "info", "warning", "error")


def not_running(decisions: list[dict[str, Any]], candle_ts: Any, since: int, until: int,
                interval_ms: int = 60_000) -> list[tuple[int, int | None, str]]:
    """Periods of [since, until) (exchange time) with recorded candles but no live decision: the strategy was not
    running then (stopped, waiting for a person, the engine down or re-warming). Derived from the decisions
    themselves, so they are in the candles' own clock whatever the machine's clock says."""
    decided = {int(d["ts_ms"]) for d in decisions}
    periods: list[tuple[int, int | None, str]] = []
    start: int | None = None
    for t in (int(x) for x in candle_ts if since <= int(x) < until):
        if t not in decided and start is None:
            start = t
        elif t in decided and start is not None:
            periods.append((start, t, "the strategy was not running (no live decision on these candles)"))
            start = None
    if start is not None:
        periods.append((start, None, "the strategy was not running (no live decision on these candles)"))
    return periods


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _limit(lo: int, hi: int) -> Callable[[int], str | None]:
    return lambda v: None if lo <= v <= hi else f"{lo}..{hi}"


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One RPC method: its name, access level, parameter schema and a one-line summary (docs/rpc.md has more)."""

    name: str
    access: Access
    params: Mapping[str, Param] = field(default_factory=dict)
    summary: str = ""


_opt_str = Param(str, default=None, nullable=True)
_opt_int = Param(int, default=None, nullable=True)

#: Every method the engine serves. ``subscribe``/``unsubscribe`` are implemented by the RPC server itself.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("engine.ping", READ, summary="cheapest round trip"),
    MethodSpec("engine.status", READ, summary="health, uptime, exchange link, strategies"),
    MethodSpec("engine.log", READ, {"message": Param(str), "level": Param(
        str, default="info", check=lambda v: None if v.lower() in _LEVELS else "one of " + ", ".join(_LEVELS)),
        "strategy": Param(str, default=None, nullable=True,
                          check=lambda v: None if is_valid_id(v) else "a strategy id (letters, digits, '_', '-')")},
        "a note into the engine log (notebooks and reports annotate), tagged with a strategy if given"),
    MethodSpec("engine.shutdown", TRADE, summary="graceful stop, as SIGTERM"),
    MethodSpec("engine.reconcile", TRADE, summary="one reconciliation now"),
    MethodSpec("strategy.available", READ, summary="strategies that can be started, with their parameters"),
    MethodSpec("strategy.list", READ, summary="strategies with state and PnL"),
    MethodSpec("strategy.get", READ, {"id": Param(str)}, "one strategy with its last decision"),
    MethodSpec("strategy.start", TRADE, {"name": Param(str), "instrument": _opt_str,
                                         "config": Param(dict, default=None, nullable=True), "version": _opt_str,
                                         "allow_shared_instrument": Param(bool, default=False)},
               "validate and start"),
    MethodSpec("strategy.deploy", TRADE, {"source": Param(str), "name": _opt_str},
               "vet, store and journal a version of a strategy's code"),
    MethodSpec("strategy.upgrade", TRADE, {"id": Param(str), "version": Param(str)},
               "switch a running strategy to another code version from its next candle"),
    MethodSpec("strategy.set", TRADE, {"id": Param(str), "config": Param(dict),
                                       "apply_to_open": Param(bool, default=False)},
               "change a running strategy's parameters from its next candle (a new config version)"),
    MethodSpec("strategy.source", READ, {"name": Param(str), "version": _opt_str}, "the source of a version"),
    MethodSpec("strategy.compare", READ, {"id": Param(str), "since": _opt_int, "until": _opt_int},
               "live vs a backtest of the engine's own candles with the same code and config versions"),
    MethodSpec("strategy.stop", TRADE, {"id": Param(str), "flatten": Param(bool, default=False)}, "stop"),
    MethodSpec("strategy.resume", TRADE, {"id": Param(str), "allow_shared_instrument": Param(bool, default=False)},
               "run a stopped or needs_attention strategy again"),
    MethodSpec("trades.list", READ, {"strategy": _opt_str, "since": _opt_int, "until": _opt_int}, "trades"),
    MethodSpec("trades.mark_closed", TRADE, {
        "trade_id": Param(str), "exit_price": Param(float, check=_positive),
        "reason": Param(str, default="closed outside tradebaas")}, "record a close made outside tradebaas"),
    MethodSpec("positions.list", READ, summary="open positions of our strategies"),
    MethodSpec("orders.list", READ, {"open_only": Param(bool, default=True)}, "our orders"),
    MethodSpec("equity.history", READ, {"strategy": _opt_str, "capital": Param(float, default=0.0)},
               "capital + cumulative net PnL per closed trade"),
    MethodSpec("risk.kill", TRADE, {"flatten": Param(bool, default=False)}, "kill switch"),
    MethodSpec("market.candles", READ, {"instrument": Param(str), "since": _opt_int, "until": _opt_int},
               "recorded 1-minute candles, else the exchange's history"),
    MethodSpec("reports.list", READ, {"name": _opt_str, "limit": Param(int, default=50, check=_limit(1, 1000))},
               "configured reports and recent runs"),
    MethodSpec("reports.get", READ, {"run_id": Param(str)}, "one report run"),
    MethodSpec("reports.run", TRADE, {"name": Param(str), "params": Param(dict, default={}),
                                      "wait": Param(bool, default=False),
                                      "timeout": Param(float, default=None, nullable=True)},
               "run a configured report notebook now"),
    MethodSpec("journal.events", READ, {
        "kinds": Param(list, default=None, nullable=True, check=check_kinds), "since": _opt_int, "until": _opt_int,
        "strategy": _opt_str, "after_id": Param(int, default=0), "newest_first": Param(bool, default=False),
        "wall_clock": Param(bool, default=False), "limit": Param(int, default=1000, check=_limit(1, EVENTS_MAX_LIMIT))},
        "the journal's append-only events, read-only"),
    MethodSpec("subscribe", READ, summary="start receiving events on channels"),
    MethodSpec("unsubscribe", READ, summary="stop receiving events on channels"),
)

SERVER_METHODS = frozenset({"subscribe", "unsubscribe"})


def spec(name: str) -> MethodSpec:
    return next(m for m in METHODS if m.name == name)


def register(registry: Registry, handlers: Mapping[str, Handler], *, partial: bool = False) -> None:
    """Bind every method of ``METHODS`` to its handler, with its access level and schema.

    Raises ``ValueError`` for a handler the table does not list, or (unless ``partial``: a test hosting one
    service) a listed method nobody implements: the table is the whole API, so it can be documented and checked
    (docs/rpc.md) and no method escapes its access level.
    """
    listed = {m.name for m in METHODS}
    extra = sorted(set(handlers) - listed)
    if extra:
        raise ValueError(f"RPC handlers without an entry in engine/api.py METHODS: {extra}")
    missing = sorted(listed - set(handlers) - SERVER_METHODS)
    if missing and not partial:
        raise ValueError(f"RPC methods listed in engine/api.py without a handler: {missing}")
    for m in METHODS:
        if m.name in SERVER_METHODS:
            if m.name in registry:
                registry.set_access(m.name, m.access)
        elif m.name in handlers:
            registry.add(m.name, handlers[m.name], m.params, access=m.access)


class Recordings(Protocol):
    """What the API uses of the market recorder: recordings brought up to the live loop before they are read."""

    async def flush_now(self) -> int: ...


class EngineApi:
    """The handlers of the engine's own methods (everything but ``reports.*``/``journal.events`` and the server's)."""

    def __init__(self, engine: Engine, live: Supervisor, recordings: Recordings | None = None) -> None:
        self.engine = engine
        self.live = live
        self.store = live.store
        self.recordings = recordings

    def handlers(self) -> dict[str, Handler]:
        return {
            "engine.ping": self.ping, "engine.status": self.engine.status, "engine.log": self.log_message,
            "engine.shutdown": self.engine.request_shutdown, "engine.reconcile": self.reconcile,
            "strategy.available": self.available, "strategy.list": self.strategies, "strategy.get": self.strategy,
            "strategy.start": self.start, "strategy.stop": self.stop, "strategy.resume": self.resume,
            "strategy.deploy": self.deploy, "strategy.upgrade": self.upgrade, "strategy.set": self.set_config,
            "strategy.source": self.source, "strategy.compare": self.compare,
            "trades.list": self.trades, "trades.mark_closed": self.mark_closed, "positions.list": self.positions,
            "orders.list": self.orders, "equity.history": self.equity, "risk.kill": self.kill,
            "market.candles": self.candles,
        }

    # -- engine ----------------------------------------------------------------------------------------------
    @staticmethod
    def ping() -> str:
        """Cheapest round trip: answers "pong"."""
        return "pong"

    @staticmethod
    def log_message(message: str, level: str, strategy: str | None = None) -> None:
        """Write a note into the engine log (and so onto the ``log`` channel): notebooks and reports annotate. With
        ``strategy`` the line carries that strategy's id field, so ``tradebaas logs --strategy ID`` shows it."""
        logging.getLogger("tradebaas.user").log(logging.getLevelName(level.upper()), "%s", message,
                                                extra=strategy_extra(strategy))

    async def reconcile(self) -> dict[str, Any]:
        """Run a reconciliation now (the engine also runs one on every start and reconnect)."""
        actions = await self.live.reconcile_now()
        return {"actions": [type(a).__name__ for a in actions]}

    # -- strategies ------------------------------------------------------------------------------------------
    async def available(self) -> list[dict[str, Any]]:
        """Every strategy the engine can start (built-in, files, entry points, deployed), with its parameters; a
        file that fails to import is listed with its error."""
        return [e.as_dict() for e in await self.live.catalog.entries()]

    def strategies(self) -> list[dict[str, Any]]:
        return [info for s in self.store.strategies() if (info := self.live.strategy_info(s.id)) is not None]

    def _info(self, strategy_id: str) -> dict[str, Any]:
        info = self.live.strategy_info(strategy_id)
        if info is None:
            raise RpcError(NOT_FOUND, f"no strategy {strategy_id!r} (see strategy.list)")
        return info

    def strategy(self, id: str) -> dict[str, Any]:
        info = self._info(id)
        runner = self.live.runners.get(id)
        info["last_decision"] = runner.last_decision if runner else self.store.last_decision(id)
        info["decisions"] = self.store.decision_count(id)
        try:
            info["params"] = params_list(self.live.catalog.load(info["name"], info["version"]).cls)
        except UserError:
            info["params"] = []
        return info

    async def start(self, name: str, instrument: str | None = None, config: dict[str, Any] | None = None,
                    version: str | None = None, allow_shared_instrument: bool = False) -> dict[str, Any]:
        """Validate and start a strategy (of any source; ``version`` picks a stored version of a deployed one); it
        trades from the next closed candle, and after every restart.

        Refused (nothing is created): a config the class's parameters refuse; an order size below the instrument's
        minimum (``engine/core/guards.py``); an instrument another strategy of ours trades or holds a position on,
        unless ``allow_shared_instrument`` (Deribit nets their positions: one stop cannot protect both)."""
        catalog = self.live.catalog
        try:
            entry = await catalog.find(name)
            config = dict(config or {})
            declares_instrument = any(p.get("name") == "instrument" for p in entry.params)
            if instrument and declares_instrument:
                config["instrument"] = instrument
            inst_name = str(config.get("instrument") or instrument or "BTC_USDC-PERPETUAL")
            get_instrument(inst_name, self.live.instruments)
            if entry.source == FILE:
                code_version = (await catalog.accept_file(entry, self.live.budgets, inst_name)).version
            elif version:
                code_version = catalog.resolve_version(entry.name, version).version
            else:
                code_version = entry.version
            loaded = catalog.load(entry.name, code_version)
            valid = validate_config(loaded.cls, config)
            inst_name = str(valid.get("instrument") or inst_name)
            get_instrument(inst_name, self.live.instruments)
        except Refused as exc:
            raise RpcError(INVALID_PARAMS, str(exc), {"vetting": exc.report}) from None
        except (ConfigError, UnknownInstrumentError, UserError) as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        await self._check_size(loaded.cls, valid, inst_name)
        if not allow_shared_instrument:
            self._check_shared(inst_name)
        sid = await self.live.create_strategy(entry.name, inst_name, valid, loaded.code_version)
        return self._info(sid)

    async def _check_size(self, cls: type, config: dict[str, Any], instrument: str) -> None:
        """Refuse (-32602) an order size that rounds to less than the instrument's minimum amount."""
        inst = self.live.instruments[instrument]
        key = guards.size_param(cls)
        if key is None or config.get(key) is None:
            return
        price = None if inst.is_inverse else await self.live.reference_price(instrument)
        problem = guards.size_problem(cls, config, inst, price)
        if problem:
            raise RpcError(INVALID_PARAMS, problem)

    async def deploy(self, source: str, name: str | None = None) -> dict[str, Any]:
        """Vet a version of a strategy's code on the engine's own candles, store it content-addressed and journal
        it; a refusal answers -32602 with the reason and ``data.vetting`` (the report, traceback included)."""
        try:
            row = await self.live.catalog.deploy(source, name, self.live.budgets)
        except Refused as exc:
            raise RpcError(INVALID_PARAMS, str(exc), {"vetting": exc.report}) from None
        except UserError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        vetting = {k: v for k, v in row.vetting.items() if k != "describe"}
        return {"name": row.name, "version": row.version, "class_name": row.class_name,
                "warmup_candles": row.warmup_candles, "vetting": vetting}

    async def upgrade(self, id: str, version: str) -> dict[str, Any]:
        """Switch a running strategy to another stored version of its code from its next candle (rolling back is
        the same call with the older version); position, brackets and counters stay."""
        info = self._info(id)
        try:
            row = self.live.catalog.resolve_version(info["name"], version)
            await self.live.change_strategy(id, code_version=row.version)
        except (ConfigError, UserError) as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        return self._info(id)

    async def set_config(self, id: str, config: dict[str, Any], apply_to_open: bool = False) -> dict[str, Any]:
        """Change a strategy's parameters from its next candle (a new config version, validated like a start);
        ``apply_to_open`` also moves the open position's brackets on the exchange."""
        info = self._info(id)
        if not config:
            raise RpcError(INVALID_PARAMS, "config: give at least one key=value to change")
        try:
            cls = self.live.catalog.load(info["name"], info["version"]).cls
            key = guards.size_param(cls)
            if key is not None and key in config:  # a new size passes the rule a start passes
                merged = validate_config(cls, {**info["config"], **config})
                await self._check_size(cls, merged, info["instrument"])
            await self.live.change_strategy(id, changes=config, apply_to_open=apply_to_open)
        except (ConfigError, UserError) as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        return self._info(id)

    def source(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The source text of a strategy's code version."""
        try:
            found, text = self.live.catalog.source(name, version)
        except UserError as exc:
            raise RpcError(NOT_FOUND, str(exc)) from None
        return {"name": name, "version": found, "source": text}

    async def stop(self, id: str, flatten: bool = False) -> dict[str, Any]:
        """Stop a strategy: brackets stay on the exchange unless ``flatten`` closes its position."""
        self._info(id)
        await self.live.stop_strategy(id, flatten)
        return self._info(id)

    async def resume(self, id: str, allow_shared_instrument: bool = False) -> dict[str, Any]:
        """Run a stopped strategy again, or one that waited for a person once the cause is fixed. Refused, as a start
        is, while another strategy of ours trades or holds a position on its instrument, unless
        ``allow_shared_instrument``."""
        info = self._info(id)
        if not allow_shared_instrument:
            self._check_shared(info["instrument"], own_id=id)
        await self.live.resume_strategy(id)
        return self._info(id)

    def _check_shared(self, instrument: str, own_id: str | None = None) -> None:
        """Refuse (-32002) an instrument another strategy of ours trades or holds a position on."""
        shared = guards.shared_instrument_problem(
            instrument, ((s.id, s.instrument, s.state) for s in self.store.strategies()),
            {t.strategy_id for t in self.store.open_trades() if t.instrument == instrument}, own_id)
        if shared:
            raise RpcError(CONFLICT, shared)

    async def compare(self, id: str, since: int | None = None, until: int | None = None) -> dict[str, Any]:
        """Backtest the engine's own recorded candles over [since, until) with the strategy's journaled code and
        config versions (its segments), and set the result beside what it did live: every difference named and,
        where the cause is known, explained (``tradebaas.analytics.compare``)."""
        from tradebaas.analytics.compare import compare_runs
        from tradebaas.backtest.backtester import BacktestError
        from tradebaas.backtest.data import DataError, load_recorded
        from tradebaas.backtest.replay import Segment, replay_live

        info = self._info(id)
        segments = self.store.segments(id)
        if not segments:
            raise RpcError(NOT_FOUND, f"strategy {id} has no recorded versions to replay")
        if self.recordings is not None:
            await self.recordings.flush_now()  # every candle the live loop closed, not the last paced flush
        try:
            candles = await asyncio.to_thread(load_recorded, self.engine.home, info["instrument"])
        except DataError as exc:
            raise RpcError(NOT_FOUND, f"no recorded candles of {info['instrument']} to replay: {exc}") from None
        ts = candles.index.as_unit("ms").asi8
        first_decided = next((seg.from_ts_ms for seg in segments if seg.from_ts_ms > 0), int(ts[0]))
        since = int(since if since is not None else first_decided)
        until = int(until if until is not None else int(ts[-1]) + 60_000)
        try:
            replay_segments = []
            for seg in segments:
                loaded = self.live.catalog.load(info["name"], seg.code_version)
                replay_segments.append(Segment(seg.from_ts_ms, loaded.cls, seg.config, seg.code_version,
                                               seg.config_version, seg.apply_to_open,
                                               max(WARMUP_CANDLES, loaded.warmup_candles)))
        except UserError as exc:
            raise RpcError(NOT_FOUND, f"the code of a version of {info['name']} cannot be loaded: {exc}") from None
        instrument = self.live.instruments[info["instrument"]]
        decisions = [e["payload"] for e in self.engine_events("decision", id, since, until)]
        try:
            result = await asyncio.to_thread(replay_live, candles, replay_segments, instrument, since_ms=since,
                                             until_ms=until, warmup_candles=replay_segments[0].warmup_candles or WARMUP_CANDLES)
        except BacktestError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        comparison = compare_runs(self.store.trade_rows(id, since, until), decisions, result, instrument=instrument,
                                  not_running=not_running(decisions, ts, since, until), strategy_id=id,
                                  name=info["name"], since=since, until=until, segments=replay_segments)
        return comparison.to_json()

    def engine_events(self, kind: str, strategy_id: str, since: int, until: int) -> list[dict[str, Any]]:
        """Every journal event of ``kind`` of the strategy with ``ts_ms`` in [since, until), oldest first."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = query_events(self.engine.journal, [kind], since, until, strategy_id, after, EVENTS_MAX_LIMIT)
            out.extend(page)
            if len(page) < EVENTS_MAX_LIMIT:
                return out
            after = page[-1]["id"]

    # -- trades, positions, orders ---------------------------------------------------------------------------
    def trades(self, strategy: str | None = None, since: int | None = None, until: int | None = None
               ) -> list[dict[str, Any]]:
        return self.store.trade_rows(strategy, since, until)

    async def mark_closed(self, trade_id: str, exit_price: float, reason: str = "closed outside tradebaas"
                          ) -> dict[str, Any]:
        """Record that an open trade's position was closed outside tradebaas (a manual close, a liquidation) at
        ``exit_price``, so reconciliation stops reporting an unexplained difference. Its brackets are cancelled."""
        from tradebaas.engine.journal.store import trade_to_row

        trade = self.store.trade(trade_id)
        if trade is None:
            raise RpcError(NOT_FOUND, f"no trade {trade_id!r} (see trades.list)")
        if trade.state.is_terminal or trade.open_amount <= 0:
            raise RpcError(CONFLICT, f"trade {trade_id} is {trade.state.value}: nothing is open to mark closed")
        return trade_to_row(await self.live.mark_trade_closed(trade, exit_price, reason))

    def positions(self) -> list[dict[str, Any]]:
        return [p for t in self.store.open_trades() if (p := self.live.position_row(t)) is not None]

    def orders(self, open_only: bool = True) -> list[dict[str, Any]]:
        return self.store.order_rows(open_only)

    def equity(self, strategy: str | None = None, capital: float = 0.0) -> list[dict[str, Any]]:
        """Capital + cumulative net PnL, one point per closed trade (exchange time)."""
        equity = capital
        points = []
        for t in self.store.trade_rows(strategy):
            if t["state"] == "closed" and t["exit_ts_ms"]:
                equity += t["net_pnl"]
                points.append({"ts_ms": t["exit_ts_ms"], "equity": equity, "currency": t["currency"]})
        return points

    async def kill(self, flatten: bool = False) -> dict[str, Any]:
        """Kill switch: stop every strategy, cancel entry orders, with ``flatten`` close our positions."""
        return await self.live.kill(flatten)

    # -- market ----------------------------------------------------------------------------------------------
    async def candles(self, instrument: str, since: int | None = None, until: int | None = None
                      ) -> list[dict[str, Any]]:
        """1-minute candles of ``instrument`` (exchange time, ms): the engine's own recordings, else the exchange's
        chart history. For trades-on-price plots in notebooks that may run far from the engine's disk."""
        from tradebaas.backtest.data import DataError, load_recorded

        if instrument not in self.live.instruments:
            known = ", ".join(sorted(self.live.instruments))
            raise RpcError(INVALID_PARAMS, f"unknown instrument {instrument!r} (known: {known})")
        try:
            df = await asyncio.to_thread(load_recorded, self.engine.home, instrument,
                                         None if since is None else since * 1_000_000,
                                         None if until is None else until * 1_000_000)
            return [{"ts_ms": int(ts.value // 1_000_000), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                    for ts, (o, h, lo, c, v) in zip(df.index, df[["open", "high", "low", "close", "volume"]].itertuples(
                        index=False, name=None), strict=True)]
        except DataError:
            pass
        try:
            candles = await self.live.chart_candles(instrument, since, until)
        except UserError as exc:
            raise RpcError(NOT_FOUND, str(exc)) from None
        return [{"ts_ms": c.ts_ms, "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume}
                for c in candles]
