"""The notification service: engine events become messages to Telegram or a webhook (``reports/notify.py``).

Notifications are derived from what the engine already publishes (the ``trades`` and ``reports`` channels) and
journals (``engine.started``, ``reconcile``, ``risk.kill``, ``strategy.state``), so the trading code never calls
the notifier and cannot be held up by it: messages go through the notifier's bounded queue and its own task, and a
dead receiver only fills that queue. Each event becomes one message at most (a trade's state change, a strategy
entering ``needs_attention``, a journaled event by id), however often it is published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from tradebaas.engine.journal.event_query import query_events
from tradebaas.engine.process.app import EngineContext
from tradebaas.engine.process.logs import REDACT
from tradebaas.errors import UserError
from tradebaas.reports.config import NotifyConfig, load_config
from tradebaas.reports.notify import Notifier, run_contained
from tradebaas.rpc.protocol import to_jsonable

log = logging.getLogger("tradebaas.reports.notifications")

TAIL_INTERVAL_S = 1.0
#: Journal event kinds (``*`` = prefix) that become notifications.
TAIL_KINDS = ("engine.started", "reconcile", "risk.*", "kill*", "strategy.state")


class NotificationService:
    """One per engine; does nothing unless ``tradebaas.toml`` configures a sink (``[notify]``)."""

    name = "notifications"

    def __init__(self, engine: EngineContext) -> None:
        self.engine = engine
        self.notifier: Notifier | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._states: dict[str, str] = {}  # strategy id -> last seen state (needs_attention transitions)
        self._trade_states: dict[str, str] = {}
        self._tail_after = 0

    def describe(self) -> dict[str, Any]:
        """What ``reports.list`` shows of notifications: on/off, sinks, counters, the last delivery error."""
        if self.notifier is None:
            return self.describe_off()
        return {"enabled": self.notifier.enabled, "sinks": [s.name for s in self.notifier.sinks],
                "stats": dict(self.notifier.stats), "last_error": self.notifier.last_error}

    @staticmethod
    def describe_off() -> dict[str, Any]:
        return {"enabled": False, "sinks": [], "stats": {}, "last_error": ""}

    def notify(self, kind: str, text: str, data: Mapping[str, Any] | None = None) -> None:
        if self.notifier is not None:
            self.notifier.notify(kind, text, data)

    # -- life --------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            config: NotifyConfig = load_config(self.engine.home).notify
        except UserError as exc:
            log.error("notifications are off: %s", exc)
            return
        if not config.enabled:
            return
        for secret in config.secrets():
            REDACT.add_secret(secret)
        self.notifier = Notifier.from_config(config)
        loop = asyncio.get_running_loop()
        self._notifier_task = loop.create_task(run_contained(self.notifier), name="notifications:sender")
        self._remove_listener = self.engine.add_listener(self._on_published)
        journal = self.engine.journal
        last = journal.last_event("engine.started")
        self._tail_after = (last.id - 1) if last is not None else journal.last_event_id()
        self._tail_task = loop.create_task(self._tail_journal(), name="notifications:tail")

    async def stop(self) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()
            await asyncio.gather(self._tail_task, return_exceptions=True)
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self.notifier is not None and self._notifier_task is not None:
            await self.notifier.close()
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(self._notifier_task)
            except (TimeoutError, Exception):  # noqa: BLE001 - a stuck receiver must not hold the shutdown
                self._notifier_task.cancel()
                await asyncio.gather(self._notifier_task, return_exceptions=True)

    # -- published events --------------------------------------------------------------------------------------
    def _on_published(self, channel: str, data: Any) -> None:
        # Strategy states come from the journal tail (one source, so a transition is notified once).
        if channel == "trades":
            self._on_trade(to_jsonable(data))
        elif channel == "reports":
            self._on_report(to_jsonable(data))

    def _on_report(self, run: Any) -> None:
        if not isinstance(run, dict):
            return
        if run.get("status") == "ok":
            self.notify("report_ready", f"report {run.get('name')} ready: {run.get('html_path')}", run)
        elif run.get("status") == "failed":
            self.notify("report_failed", f"report {run.get('name')} failed: {run.get('error')}", run)

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
                for e in query_events(self.engine.journal, kinds=list(TAIL_KINDS), after_id=self._tail_after,
                                      limit=500):
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
