"""The engine side of reports: the scheduler, the RPC methods, and the notifier, as one engine service.

The engine picks this up by itself: ``tradebaas.engine.process.app`` probes ``tradebaas.reports.scheduler`` for
``create_service(engine)`` (that module re-exports the one below), so the engine needs no line of its own.
What the service promises the engine:

- nothing it does can stop or slow trading: report runs are subprocesses awaited by tasks; journal reads and
  writes are single short statements on the loop; notifications go through a bounded queue and their own task;
  a bad ``tradebaas.toml`` is logged (and shown by ``reports.list``), the engine starts anyway;
- RPC: ``reports.list``, ``reports.get``, ``reports.run`` and ``journal.events`` (read-only view of the journal's
  append-only events, for the report notebooks); status changes are pushed on the ``reports`` channel;
- on stop, running reports are killed and recorded as failed ("cancelled: the engine stopped"); runs a crashed
  engine left queued/running are recorded as failed at the next start.

Notifications are derived from what the engine already publishes (the ``trades`` channel) and journals
(``engine.started``, ``reconcile``, ``risk.kill``, ``strategy.state``), so the trading code does not call the
notifier and cannot be held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tradebaas.errors import UserError
from tradebaas.reports.config import Config, ReportConfig, default_report, load_config
from tradebaas.reports.execute import ReportRunner, RunRecord, RunStore
from tradebaas.reports.notify import Notifier, run_contained
from tradebaas.reports.schedule import DEFAULT_GRACE_S, Spec, next_due, plan
from tradebaas.rpc.protocol import NOT_FOUND, Param, RpcError, to_jsonable

log = logging.getLogger("tradebaas.reports")

MAX_TICK_S = 30.0  # the scheduler re-reads the clock at least this often (suspend/resume, clock steps)
TAIL_INTERVAL_S = 1.0
BASELINE_META = "reports.baseline"
EVENTS_MAX_LIMIT = 10_000
#: Journal event kinds (``*`` = prefix) that become notifications.
TAIL_KINDS = ("engine.started", "reconcile", "risk.*", "kill*", "strategy.state")


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _kinds_sql(kinds: list[str]) -> tuple[str, list[str]]:
    """``kind IN (..) OR kind GLOB 'prefix*'``: exact names, or a prefix ending in ``*``."""
    exact = [k for k in kinds if not k.endswith("*")]
    prefixes = [k[:-1] for k in kinds if k.endswith("*")]
    parts, params = [], []
    if exact:
        parts.append(f"kind IN ({','.join('?' * len(exact))})")
        params += exact
    for p in prefixes:
        parts.append("kind GLOB ?")
        params.append(p + "*")
    return "(" + " OR ".join(parts) + ")", params


def _check_kinds(value: Any) -> str | None:
    if not all(isinstance(k, str) and k and all(c.isalnum() or c in "._-" for c in k.rstrip("*"))
               and "*" not in k.rstrip("*") for k in value):
        return "kinds are event names, or a prefix ending in '*' (e.g. \"reconcile*\")"
    return None


class ReportService:
    """One per engine. ``clock`` is injectable so tests cross a cron slot without waiting for it."""

    name = "reports"

    def __init__(self, engine: Any, *, clock: Callable[[], datetime] | None = None,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.engine = engine
        self.home = engine.home
        self.clock = clock or (lambda: datetime.now(UTC))
        self.grace_s = grace_s
        self.config = Config()
        self.config_error: str | None = None
        self.runner: ReportRunner | None = None
        self.notifier: Notifier | None = None
        self.marks: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[str, asyncio.Task[RunRecord]] = {}
        self._wake = asyncio.Event()
        #: Scheduler passes completed (``_tick`` returned); ``wait_for_tick`` lets a test see one happen.
        self.ticks = 0
        self._ticked = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._states: dict[str, str] = {}  # strategy id -> last seen state (needs_attention transitions)
        self._trade_states: dict[str, str] = {}
        self._tail_after = 0
        self.register(engine.registry)

    # -- RPC ---------------------------------------------------------------------------------------------------
    def register(self, registry: Any) -> None:
        registry.add("reports.list", self.rpc_list,
                     {"name": Param(str, default=None, nullable=True),
                      "limit": Param(int, default=50, check=lambda v: None if 1 <= v <= 1000 else "1..1000")})
        registry.add("reports.get", self.rpc_get, {"run_id": Param(str)})
        registry.add("reports.run", self.rpc_run,
                     {"name": Param(str), "params": Param(dict, default={}),
                      "wait": Param(bool, default=False),
                      "timeout": Param(float, default=None, nullable=True)})
        registry.add("journal.events", self.rpc_events,
                     {"kinds": Param(list, default=None, nullable=True, check=_check_kinds),
                      "since": Param(int, default=None, nullable=True),
                      "until": Param(int, default=None, nullable=True),
                      "strategy": Param(str, default=None, nullable=True),
                      "after_id": Param(int, default=0),
                      "newest_first": Param(bool, default=False),
                      "wall_clock": Param(bool, default=False),
                      "limit": Param(int, default=1000,
                                     check=lambda v: None if 1 <= v <= EVENTS_MAX_LIMIT else f"1..{EVENTS_MAX_LIMIT}")})

    def _store(self) -> RunStore:
        if self.engine.journal is None:
            raise UserError("the engine's journal is not open yet")
        return RunStore(self.engine.journal)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, rep in sorted(self.config.reports.items()):
            nxt = None
            if rep.cron:
                nxt = next_due({name: Spec(rep.cron, rep.catch_up, rep.tz)}, self.marks, self.clock())
            out.append({"name": name, "notebook": str(rep.notebook), "cron": rep.cron, "tz": rep.tz,
                        "catch_up": rep.catch_up, "timeout_s": rep.timeout_s, "params": dict(rep.params),
                        "next_run_ts_ms": _ms(nxt) if nxt else None,
                        "busy": bool(self.runner and self.runner.busy(name))})
        return out

    def rpc_list(self, name: str | None = None, limit: int = 50) -> dict[str, Any]:
        """Configured reports (with their next run) and recent runs, newest first."""
        runs = self._store().list(name=name, limit=limit)
        notify = {"enabled": bool(self.notifier and self.notifier.enabled),
                  "sinks": [s.name for s in self.notifier.sinks] if self.notifier else [],
                  "stats": dict(self.notifier.stats) if self.notifier else {},
                  "last_error": self.notifier.last_error if self.notifier else ""}
        return {"reports": self.describe(), "runs": [r.to_json() for r in runs],
                "config_error": self.config_error, "notify": notify}

    def rpc_get(self, run_id: str) -> dict[str, Any]:
        rec = self._store().get(run_id)
        if rec is None:
            raise RpcError(NOT_FOUND, f"no report run {run_id!r}")
        return rec.to_json()

    async def rpc_run(self, name: str, params: dict[str, Any], wait: bool = False,
                      timeout: float | None = None) -> dict[str, Any]:
        """Queue a run now; with ``wait`` answer when it finished (or at ``timeout``, with its current state)."""
        record = self.submit(name, params)
        task = self._runs.get(record.run_id)
        if wait and task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    record = await asyncio.shield(task)
            if not record.done:
                record = self._store().get(record.run_id) or record
        return record.to_json()

    def rpc_events(self, kinds: list[str] | None = None, since: int | None = None, until: int | None = None,
                   strategy: str | None = None, after_id: int = 0, limit: int = 1000, newest_first: bool = False,
                   wall_clock: bool = False) -> list[dict[str, Any]]:
        """Journal events (read-only), oldest first: ``{id, ts_ms, wall_ts_ms, kind, strategy_id, payload}``.

        ``since``/``until`` bound ``ts_ms`` (ms, until exclusive), or ``wall_ts_ms`` with ``wall_clock`` (the two
        differ on a simulator replaying past market data: decisions and fills carry market time, restarts the
        machine's). Page with ``after_id`` = the last id seen; ``newest_first`` for "the latest N".
        """
        import json

        if self.engine.journal is None:
            raise UserError("the engine's journal is not open yet")
        where, args = ["id > ?"], [after_id]
        if kinds:
            clause, kparams = _kinds_sql(kinds)
            where.append(clause)
            args += kparams
        column = "wall_ts_ms" if wall_clock else "ts_ms"
        if since is not None:
            where.append(f"{column} >= ?")
            args.append(since)
        if until is not None:
            where.append(f"{column} < ?")
            args.append(until)
        if strategy is not None:
            where.append("strategy_id = ?")
            args.append(strategy)
        rows = self.engine.journal.query(
            f"SELECT id, ts_ms, wall_ts_ms, kind, strategy_id, payload FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT {int(limit)}", args)
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    # -- runs --------------------------------------------------------------------------------------------------
    def _resolve(self, name: str) -> ReportConfig:
        return default_report(name, self.home)

    def submit(self, name: str, params: Mapping[str, Any] | None = None, *, trigger: str = "manual",
               slot_ts_ms: int | None = None) -> RunRecord:
        if self.runner is None:
            raise UserError("the report service is not started")
        record = self.runner.submit(name, params, trigger=trigger, slot_ts_ms=slot_ts_ms)
        if not record.done:
            task = asyncio.get_running_loop().create_task(self.runner.execute(record),
                                                          name=f"report:{name}:{record.run_id}")
            self._runs[record.run_id] = task
            task.add_done_callback(lambda t, rid=record.run_id: self._runs.pop(rid, None))
        return record

    def _on_change(self, record: RunRecord) -> None:
        self.engine.publish("reports", record.to_json())
        if record.status == "ok":
            self.notify("report_ready", f"report {record.name} ready: {record.html_path}", record.to_json())
        elif record.status == "failed":
            self.notify("report_failed", f"report {record.name} failed: {record.error}", record.to_json())

    def notify(self, kind: str, text: str, data: Mapping[str, Any] | None = None) -> None:
        if self.notifier is not None:
            self.notifier.notify(kind, text, data)

    # -- life --------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self.config = load_config(self.home)
        except UserError as exc:
            self.config_error = str(exc)
            log.error("reports and notifications are off: %s", exc)
        store = self._store()
        for rec in store.abandon_unfinished("abandoned: the engine stopped during the run"):
            log.warning("report %s run %s was left %s by the previous engine: recorded as failed",
                        rec.name, rec.run_id, "unfinished")
        self.runner = ReportRunner(self.home, store, self.config.reports, on_change=self._on_change,
                                   strip_env=self.config.notify.secret_envs, resolve=self._resolve)
        if self.config.notify.enabled:
            from tradebaas.engine.process.logs import REDACT

            for secret in self.config.notify.secrets():
                REDACT.add_secret(secret)
            self.notifier = Notifier.from_config(self.config.notify)
            self._notifier_task = asyncio.get_running_loop().create_task(run_contained(self.notifier),
                                                                         name="reports:notifier")
            self._remove_listener = self.engine.add_listener(self._on_published)
            last = self.engine.journal.last_event("engine.started")
            self._tail_after = (last.id - 1) if last is not None else self.engine.journal.last_event_id()
            self._tail_task = asyncio.get_running_loop().create_task(self._tail_journal(), name="reports:tail")
        self._scheduler_task = asyncio.get_running_loop().create_task(self.run_scheduler(), name="reports:scheduler")

    async def stop(self) -> None:
        for task in (self._scheduler_task, self._tail_task):
            if task is not None:
                task.cancel()
        runs = list(self._runs.values())
        for task in runs:
            task.cancel()
        await asyncio.gather(*(t for t in (self._scheduler_task, self._tail_task, *runs) if t is not None),
                             return_exceptions=True)
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self.notifier is not None and self._notifier_task is not None:
            await self.notifier.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._notifier_task), 5.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - a stuck receiver must not hold the shutdown
                self._notifier_task.cancel()
                await asyncio.gather(self._notifier_task, return_exceptions=True)

    def poke(self) -> None:
        """Make the scheduler look at the clock now (tests with an injected clock; config reloads)."""
        self._wake.set()

    async def wait_for_tick(self, after: int, timeout: float) -> int:
        """Wait until the scheduler has completed a pass numbered above ``after``; returns ``ticks``.

        For tests: read ``ticks``, change the clock and ``poke()``, then wait for ``ticks`` to pass the value read:
        that pass started after the poke, so whatever it would fire has been submitted. Raises ``TimeoutError``
        when no pass completes in time (no scheduled report, or a pass that keeps failing).
        """
        async with asyncio.timeout(timeout):
            while self.ticks <= after:
                self._ticked.clear()
                await self._ticked.wait()
        return self.ticks

    # -- the scheduler -----------------------------------------------------------------------------------------
    def _specs(self) -> dict[str, Spec]:
        return {n: Spec(r.cron, r.catch_up, r.tz) for n, r in self.config.reports.items() if r.cron}

    def _initial_marks(self, specs: Mapping[str, Spec]) -> dict[str, datetime]:
        """Marks after a restart: each report's last scheduled slot, else the time it was first scheduled."""
        journal = self.engine.journal
        slots = self._store().last_slots()
        baseline = dict(journal.get_meta(BASELINE_META, {}) or {})
        now_ts = _ms(self.clock())
        if any(n not in baseline for n in specs):
            baseline.update({n: now_ts for n in specs if n not in baseline})
            journal.set_meta(BASELINE_META, baseline)
        return {n: _dt(max(slots.get(n, 0), int(baseline[n]))) for n in specs}

    async def run_scheduler(self) -> None:
        """Fire due reports (one run per report at a time; a missed slot once on start when ``catch_up``)."""
        specs = self._specs()
        if not specs:
            return
        self.marks = self._initial_marks(specs)
        log.info("report scheduler: %s", ", ".join(f"{n} [{s.cron} {s.tz}]" for n, s in sorted(specs.items())))
        while True:
            try:
                self._tick(specs)
            except Exception:  # a bug here must not end the scheduler (or the engine)
                log.exception("report scheduler tick failed")
            else:
                self.ticks += 1
                self._ticked.set()
            now = self.clock()
            nxt = next_due(specs, self.marks, now)
            wait_s = MAX_TICK_S if nxt is None else min(MAX_TICK_S, max(0.05, (nxt - now).total_seconds()))
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the wake-up,
            # and the engine's shutdown would then wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    def _tick(self, specs: Mapping[str, Spec]) -> None:
        assert self.runner is not None
        now = self.clock()
        busy = {n for n in specs if self.runner.busy(n)}
        decided = plan(specs, self.marks, now, busy=busy, grace_s=self.grace_s)
        for skip in decided.skips:
            log.warning("report %s: slot %s skipped (%s)", skip.name, skip.slot.isoformat(),
                        "previous run still going" if skip.reason == "running" else "missed while down; catch_up off")
        for fire in decided.fires:
            if fire.late:
                log.info("report %s: slot %s was missed, running it once now (catch_up)", fire.name,
                         fire.slot.isoformat())
            try:
                self.submit(fire.name, trigger="catch_up" if fire.late else "schedule", slot_ts_ms=_ms(fire.slot))
            except Exception:
                log.exception("report %s could not be started", fire.name)
        self.marks = decided.handled

    # -- notifications from engine events ----------------------------------------------------------------------
    def _on_published(self, channel: str, data: Any) -> None:
        # Strategy states come from the journal tail (one source, so a transition is notified once).
        if channel == "trades":
            self._on_trade(to_jsonable(data))

    def _on_trade(self, t: Any) -> None:
        if not isinstance(t, dict) or not t.get("trade_id"):
            return
        tid, state = str(t["trade_id"]), str(t.get("state"))
        if self._trade_states.get(tid) == state:
            return
        self._trade_states[tid] = state
        if len(self._trade_states) > 10_000:
            self._trade_states.pop(next(iter(self._trade_states)))
        cur = t.get("currency") or ""
        if state == "open":
            self.notify("trade_opened", f"trade opened: {t.get('strategy_id')} {t.get('direction')} {t.get('amount')} "
                        f"{t.get('instrument')} @ {t.get('entry_price')}", t)
        elif state == "closed":
            self.notify("trade_closed", f"trade closed: {t.get('strategy_id')} {t.get('direction')} "
                        f"{t.get('instrument')} @ {t.get('exit_price')} ({t.get('exit_reason') or 'exit'}), "
                        f"net {t.get('net_pnl')} {cur}", t)

    def _on_state(self, strategy_id: str, state: str, reason: str) -> None:
        previous = self._states.get(strategy_id)
        self._states[strategy_id] = state
        if state == "needs_attention" and previous != "needs_attention":
            self.notify("needs_attention", f"strategy {strategy_id} needs attention: {reason or 'see the log'}",
                        {"strategy_id": strategy_id, "reason": reason})

    async def _tail_journal(self) -> None:
        """Notifications for journaled events (restart, reconciliation, kill switch, needs_attention)."""
        while True:
            try:
                for e in self.rpc_events(kinds=list(TAIL_KINDS), after_id=self._tail_after, limit=500):
                    self._tail_after = e["id"]
                    self._on_journal_event(e)
            except Exception:
                log.exception("notification journal tail failed")
            await asyncio.sleep(TAIL_INTERVAL_S)

    def _on_journal_event(self, e: Mapping[str, Any]) -> None:
        kind, p = str(e["kind"]), e.get("payload") or {}
        if kind == "engine.started":
            self.notify("engine_restarted", f"engine started (pid {p.get('pid')}, version {p.get('version')}, "
                        f"exchange {p.get('exchange')})", p)
        elif kind == "reconcile":
            actions = p.get("actions") or []
            what = ", ".join(map(str, actions)) if actions else "nothing to change"
            self.notify("reconciled", f"reconciled with the exchange ({p.get('reason', '')}): {what}", p)
        elif "kill" in kind:
            self.notify("kill_switch", f"KILL SWITCH (flatten={p.get('flatten', False)})"
                        + (f": {p['reason']}" if p.get("reason") else ""), p)
        elif kind == "strategy.state":
            state = str(p.get("state") or "")
            if state:
                self._on_state(str(e.get("strategy_id") or p.get("id")), state, str(p.get("reason") or
                                                                                  p.get("state_reason") or ""))


def create_service(engine: Any) -> ReportService:
    """Called by the engine at start (``tradebaas.engine.process.app.SERVICE_MODULES``); registers the RPC methods."""
    return ReportService(engine)


def register(engine: Any) -> ReportService:
    """For an engine that does not probe plugin modules: create, register and add the service in one call."""
    service = ReportService(engine)
    engine.add_service(service)
    return service
