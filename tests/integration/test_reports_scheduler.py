"""The report scheduler inside an engine-like host with an injected clock: a slot fires without waiting for it.

The service is the real one, the runs are real papermill subprocesses (of a tiny notebook, so each takes a few
seconds); only the engine around the service is a stand-in (journal, RPC registry, publish), and the clock.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tradebaas.engine import api
from tradebaas.engine.journal.database import Journal
from tradebaas.engine.process.app import Engine
from tradebaas.home import Home
from tradebaas.reports.execute import installed_kernels
from tradebaas.reports.notifications import NotificationService
from tradebaas.reports.scheduler import BASELINE_META, ReportService
from tradebaas.rpc.protocol import CallContext


@pytest.fixture(scope="module", autouse=True)
def tradebaas_kernel() -> None:
    if "tradebaas" not in installed_kernels():
        from tests.conftest import run_cli

        result = run_cli("kernel", "install", "--sys-prefix")
        assert result.returncode == 0, result.stderr


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def engine_for(home: Home) -> Engine:
    """A real ``Engine`` object (registry, publish, listeners, journal) whose RPC server is not started: the
    report service runs inside it with an injected clock, and every published event is kept for the asserts."""
    engine = Engine(home, Journal.open(home.journal_path))
    published: list[tuple[str, Any]] = []
    engine.add_listener(lambda channel, data: published.append((channel, data)))
    engine.published = published  # type: ignore[attr-defined]
    return engine


def report_service(engine: Engine, **kwargs: Any) -> ReportService:
    """The report service with its RPC methods bound as the daemon binds them (``engine/api.py``)."""
    service = ReportService(engine, **kwargs)
    api.register(engine.registry, service.handlers(), partial=True)
    return service


def tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("assert x > 0, 'x must be positive'\nprint('x is', x)")]
    nb.metadata["kernelspec"] = {"name": "tradebaas", "display_name": "tradebaas", "language": "python"}
    nbformat.write(nb, path)
    return path


async def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def call(engine: Engine, method: str, **params: Any) -> Any:
    return await engine.registry.call(method, params, CallContext())


def configure(home: Home, cron: str, catch_up: bool = True) -> None:
    tiny_notebook(home.root / "tiny.ipynb")
    home.config_file.write_text(
        f'[reports.tiny]\nnotebook = "tiny.ipynb"\ncron = "{cron}"\ncatch_up = {str(catch_up).lower()}\n'
        "timeout_s = 120\nparams = { x = 2 }\n"
    )


def test_a_scheduled_run_fires_when_the_clock_reaches_its_slot(tb_home: Home) -> None:
    configure(tb_home, "0 7 * * *")
    clock = Clock(datetime(2030, 1, 2, 6, 59, 50, tzinfo=UTC))

    async def main() -> None:
        engine = engine_for(tb_home)
        service = report_service(engine, clock=clock)
        await service.start()
        try:
            await service.wait_for_tick(0, 10)  # the scheduler has taken its first look
            listed = await call(engine, "reports.list")
            assert listed["runs"] == []
            assert listed["reports"][0]["next_run_ts_ms"] == int(datetime(2030, 1, 2, 7, tzinfo=UTC).timestamp() * 1000)

            clock.now = datetime(2030, 1, 2, 7, 0, 1, tzinfo=UTC)
            service.poke()
            runs = await wait_until(
                lambda: [r for r in service._store().list() if r.status in ("ok", "failed")], 120, "the run to end")
            assert len(runs) == 1
            run = runs[0]
            assert run.status == "ok", run.error
            assert run.trigger == "schedule"
            assert run.slot_ts_ms == int(datetime(2030, 1, 2, 7, tzinfo=UTC).timestamp() * 1000)
            assert run.params == {"x": 2}
            assert Path(run.html_path or "").is_file() and Path(run.notebook_path or "").is_file()
            statuses = [d["status"] for ch, d in engine.published if ch == "reports"]
            assert statuses == ["queued", "running", "ok"]

            seen = service.ticks
            service.poke()  # the same slot never fires twice
            await service.wait_for_tick(seen, 10)
            assert len(service._store().list()) == 1
        finally:
            await service.stop()
            engine.journal.close()

    asyncio.run(main())


def test_wait_for_tick_waits_for_a_pass_that_starts_after_it_was_asked(tb_home: Home) -> None:
    """The hook the "never twice" checks rely on: it returns only after a new scheduler pass, never at once."""
    configure(tb_home, "0 7 * * *")
    clock = Clock(datetime(2030, 1, 2, 6, 0, tzinfo=UTC))

    async def main() -> None:
        engine = engine_for(tb_home)
        service = report_service(engine, clock=clock)
        await service.start()
        try:
            first = await service.wait_for_tick(0, 10)
            assert first >= 1
            with pytest.raises(TimeoutError):  # the next slot is an hour away: no pass until poked
                await service.wait_for_tick(first, 0.3)
            assert service.ticks == first
            service.poke()
            assert await service.wait_for_tick(first, 10) == first + 1
            assert service._store().list() == []
        finally:
            await service.stop()
            engine.journal.close()

    asyncio.run(main())


def test_after_downtime_a_missed_slot_runs_once_on_start(tb_home: Home) -> None:
    configure(tb_home, "0 * * * *")  # hourly: five slots were missed
    now = datetime(2030, 1, 2, 12, 30, tzinfo=UTC)
    with Journal.open(tb_home.journal_path) as journal:
        journal.set_meta(BASELINE_META, {"tiny": int((now - timedelta(hours=5)).timestamp() * 1000)})

    async def main() -> None:
        engine = engine_for(tb_home)
        service = report_service(engine, clock=Clock(now))
        await service.start()
        try:
            runs = await wait_until(lambda: [r for r in service._store().list() if r.done], 120, "the catch-up run")
            assert [(r.trigger, r.status) for r in runs] == [("catch_up", "ok")], runs[0].error
            assert runs[0].slot_ts_ms == int(datetime(2030, 1, 2, 12, tzinfo=UTC).timestamp() * 1000)
            seen = service.ticks
            service.poke()  # the missed slot ran once; it never runs again
            await service.wait_for_tick(seen, 10)
            assert len(service._store().list()) == 1
        finally:
            await service.stop()
            engine.journal.close()

    asyncio.run(main())


def test_a_missed_slot_is_not_run_when_catch_up_is_off(tb_home: Home) -> None:
    configure(tb_home, "0 * * * *", catch_up=False)
    now = datetime(2030, 1, 2, 12, 30, tzinfo=UTC)
    with Journal.open(tb_home.journal_path) as journal:
        journal.set_meta(BASELINE_META, {"tiny": int((now - timedelta(hours=5)).timestamp() * 1000)})

    async def main() -> None:
        engine = engine_for(tb_home)
        service = report_service(engine, clock=Clock(now))
        await service.start()
        try:
            await wait_until(lambda: service.marks.get("tiny") == datetime(2030, 1, 2, 12, tzinfo=UTC), 10,
                             "the scheduler to mark the missed slot")
            assert service._store().list() == []
        finally:
            await service.stop()
            engine.journal.close()

    asyncio.run(main())


def test_runs_of_one_report_never_overlap_and_a_failure_keeps_its_notebook(tb_home: Home) -> None:
    configure(tb_home, "0 7 * * *")

    async def main() -> None:
        engine = engine_for(tb_home)
        service = report_service(engine, clock=Clock(datetime(2030, 1, 2, 8, tzinfo=UTC)))
        await service.start()
        try:
            first = await call(engine, "reports.run", name="tiny", params={"x": -1})
            second = await call(engine, "reports.run", name="tiny", params={"x": 3})
            assert first["status"] == "queued" and second["status"] == "queued"
            done = await wait_until(lambda: [r for r in service._store().list() if r.done] if all(
                r.done for r in service._store().list()) else None, 120, "both runs")
            by_id = {r.run_id: r for r in done}
            bad, good = by_id[first["run_id"]], by_id[second["run_id"]]
            assert bad.status == "failed" and "x must be positive" in bad.error
            assert Path(bad.notebook_path or "").is_file() and bad.html_path is None
            assert good.status == "ok"
            assert (good.started_ts_ms or 0) >= (bad.finished_ts_ms or 0)  # one at a time
            kept = json.loads(Path(bad.notebook_path or "").read_text())
            assert any(o.get("output_type") == "error" for c in kept["cells"] for o in c.get("outputs", []))
        finally:
            await service.stop()
            engine.journal.close()

    asyncio.run(main())


def test_engine_events_become_notifications_once_each(tb_home: Home) -> None:
    """Trades from the ``trades`` channel; restart, reconciliation, kill switch and needs_attention from the journal."""
    from tests.unit.test_notify import Receiver, serving

    async def main() -> None:
        async with serving(Receiver()) as rx:
            tb_home.config_file.write_text(f'[notify]\nmin_interval_s = 0\nwebhook = {{ url = "{rx.url}/h" }}\n')
            engine = engine_for(tb_home)
            engine.journal.append("engine.started", {"pid": 7, "version": "0.1.0", "exchange": "sim"}, ts_ms=1)
            service = NotificationService(engine)
            await service.start()
            try:
                row = {"trade_id": "t1", "strategy_id": "s1", "instrument": "BTC-PERPETUAL", "direction": "long",
                       "amount": 10.0, "entry_price": 60000.0, "state": "open", "currency": "BTC"}
                engine.publish("trades", row)
                engine.publish("trades", {**row, "stop_price": 59000.0})  # an update of an open trade: no message
                engine.publish("trades", {**row, "state": "closed", "exit_price": 60600.0, "net_pnl": 0.0001,
                                          "exit_reason": "tp"})
                j = engine.journal
                j.append("reconcile", {"reason": "startup", "actions": ["PlaceStop"]}, ts_ms=2)
                j.append("reconcile.action", {"action": "PlaceStop", "trade_id": "t9"}, ts_ms=2)
                j.append("strategy.state", {"state": "needs_attention", "reason": "unexplained position"}, 3, "s2")
                j.append("strategy.state", {"state": "needs_attention", "reason": "unexplained position"}, 4, "s2")
                j.append("risk.kill", {"flatten": True}, ts_ms=5)
                want = ["engine_restarted", "trade_opened", "trade_closed", "reconciled", "needs_attention",
                        "kill_switch"]

                def kinds() -> list[str]:
                    return [e["kind"] for r in rx.requests for e in r["json"]["events"]]

                await wait_until(lambda: set(want) <= set(kinds()), 20, "the notifications")
                texts = {e["kind"]: e["text"] for r in rx.requests for e in r["json"]["events"]}
                assert sorted(kinds()) == sorted(want)  # each once
                assert texts["trade_closed"].startswith("trade closed: s1 long BTC-PERPETUAL @ 60600.0 (tp)")
                assert texts["reconciled"] == "reconciled with the exchange (startup): PlaceStop"
                assert texts["needs_attention"] == "strategy s2 needs attention: unexplained position"
                assert texts["kill_switch"] == "KILL SWITCH (flatten=True)"
            finally:
                await service.stop()
                engine.journal.close()

    asyncio.run(main())


def test_journal_events_reads_the_append_only_log_with_filters_and_paging(tb_home: Home) -> None:
    from tradebaas.rpc.protocol import INVALID_PARAMS, RpcError

    async def main() -> None:
        engine = engine_for(tb_home)
        report_service(engine)
        j = engine.journal
        j.append("reconcile", {"actions": []}, ts_ms=100)
        j.append("reconcile.action", {"action": "PlaceStop"}, ts_ms=200)
        j.append("decision", {"signal": "long"}, ts_ms=300, strategy_id="s1")
        j.append("decision", {"signal": "none"}, ts_ms=400, strategy_id="s2")
        j.append("risk.kill", {"flatten": False}, ts_ms=500)
        try:
            kinds = [e["kind"] for e in await call(engine, "journal.events", kinds=["reconcile*", "risk.*"])]
            assert kinds == ["reconcile", "reconcile.action", "risk.kill"]
            window = await call(engine, "journal.events", since=200, until=400)
            assert [e["ts_ms"] for e in window] == [200, 300]
            s2 = await call(engine, "journal.events", kinds=["decision"], strategy="s2")
            assert [e["payload"] for e in s2] == [{"signal": "none"}]
            page1 = await call(engine, "journal.events", limit=2)
            page2 = await call(engine, "journal.events", after_id=page1[-1]["id"], limit=2)
            assert len(page1) == 2 and page2[0]["id"] == page1[-1]["id"] + 1
            with pytest.raises(RpcError) as err:
                await call(engine, "journal.events", kinds=["x' OR 1=1 --"])
            assert err.value.code == INVALID_PARAMS
            count = j.last_event_id()
            await call(engine, "journal.events")
            assert j.last_event_id() == count  # read-only
        finally:
            engine.journal.close()

    asyncio.run(main())
