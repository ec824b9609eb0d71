"""The engine side of reports: the cron scheduler, report runs and the report RPC methods, as one engine service.

The daemon lists it among the engine's services (``engine/process/daemon.py``). What the service promises the engine:

- nothing it does can stop or slow trading: report runs are subprocesses awaited by tasks; journal reads and
  writes are single short statements on the loop; a bad ``tradebaas.toml`` is logged (and shown by
  ``reports.list``), the engine starts anyway;
- RPC (access levels in ``engine/api.py``): ``reports.list``, ``reports.get``, ``reports.run`` and
  ``journal.events`` (read-only view of the journal's append-only events, for the report notebooks); status
  changes are pushed on the ``reports`` channel (the notification service turns them into messages);
- on stop, running reports are killed and recorded as failed ("cancelled: the engine stopped"); runs a crashed
  engine left queued/running are recorded as failed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tradebaas.engine.journal.event_query import query_events
from tradebaas.engine.process.app import EngineContext
from tradebaas.errors import UserError
from tradebaas.reports.config import Config, ReportConfig, default_report, load_config
from tradebaas.reports.execute import ReportRunner, RunRecord, RunStore
from tradebaas.reports.notifications import NotificationService
from tradebaas.reports.schedule import DEFAULT_GRACE_S, Spec, next_due, plan
from tradebaas.rpc.client import TOKEN_ENV_VAR
from tradebaas.rpc.protocol import NOT_FOUND, RpcError

log = logging.getLogger("tradebaas.reports")

MAX_TICK_S = 30.0  # the scheduler re-reads the clock at least this often (suspend/resume, clock steps)
BASELINE_META = "reports.baseline"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class ReportService:
    """One per engine. ``clock`` is injectable so tests cross a cron slot without waiting for it."""

    name = "reports"

    def __init__(self, engine: EngineContext, *, clock: Callable[[], datetime] | None = None,
                 grace_s: float = DEFAULT_GRACE_S, notifications: NotificationService | None = None) -> None:
        self.engine = engine
        self.home = engine.home
        self.clock = clock or (lambda: datetime.now(UTC))
        self.grace_s = grace_s
        self.config = Config()
        self.config_error: str | None = None
        self.runner: ReportRunner | None = None
        self.notifications = notifications
        self.marks: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[str, asyncio.Task[RunRecord]] = {}
        self._wake = asyncio.Event()
        #: Scheduler passes completed (``_tick`` returned); ``wait_for_tick`` lets a test see one happen.
        self.ticks = 0
        self._ticked = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None

    # -- RPC ---------------------------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The RPC methods this service answers; their access levels and schemas are in ``engine/api.py``."""
        return {"reports.list": self.rpc_list, "reports.get": self.rpc_get, "reports.run": self.rpc_run,
                "journal.events": self.rpc_events}

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
        notify = self.notifications.describe() if self.notifications else NotificationService.describe_off()
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
        return query_events(self.engine.journal, kinds, since, until, strategy, after_id, limit, newest_first,
                            wall_clock)

    # -- runs --------------------------------------------------------------------------------------------------
    def _resolve(self, name: str) -> ReportConfig:
        """A report not named in ``[reports]``: only a bundled report notebook, by name (``daily``). Never a path:
        ``reports.run`` must not become a way to run any notebook (any code) in the engine's name."""
        if "/" in name or "\\" in name or name.endswith(".ipynb"):
            raise UserError(f"reports.run runs the reports named in {self.home.config_file} [reports] and the bundled "
                            f"ones by name, not a notebook path ({name!r}); add it to [reports] to run it")
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
            task.add_done_callback(functools.partial(self._forget_run, record.run_id))
        return record

    def _forget_run(self, run_id: str, _task: asyncio.Task[RunRecord]) -> None:
        self._runs.pop(run_id, None)

    def _on_change(self, record: RunRecord) -> None:
        self.engine.publish("reports", record.to_json())

    # -- life --------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self.config = load_config(self.home)
        except UserError as exc:
            self.config_error = str(exc)
            log.error("reports are off: %s", exc)
        store = self._store()
        for rec in store.abandon_unfinished("abandoned: the engine stopped during the run"):
            log.warning("report %s run %s was left %s by the previous engine: recorded as failed",
                        rec.name, rec.run_id, "unfinished")
        self.runner = ReportRunner(self.home, store, self.config.reports, on_change=self._on_change,
                                   strip_env=self.config.notify.secret_envs, resolve=self._resolve,
                                   extra_env={TOKEN_ENV_VAR: self.engine.readonly_token})
        self._scheduler_task = asyncio.get_running_loop().create_task(self.run_scheduler(), name="reports:scheduler")

    async def stop(self) -> None:
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
        runs = list(self._runs.values())
        for task in runs:
            task.cancel()
        await asyncio.gather(*(t for t in (self._scheduler_task, *runs) if t is not None), return_exceptions=True)

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
