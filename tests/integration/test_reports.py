"""Reports and notifications against a real engine process: papermill runs of daily.ipynb, the CLI, the journal
record, a catch-up run at engine start, and notifications reaching (or failing to reach) a local receiver."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli, wait_for
from tradebaas.engine.journal.database import Journal
from tradebaas.home import Home
from tradebaas.reports.execute import installed_kernels
from tradebaas.reports.scheduler import BASELINE_META

SECTIONS = ("PnL and fees", "Equity and drawdown", "Trades", "Per-strategy stats", "Decisions taken and skipped",
            "Restarts and reconciliations", "Risk events")
REPORT_TIMEOUT = 240.0
TOKEN = "987654:telegram-bot-token-that-must-not-leak"


@pytest.fixture(scope="module", autouse=True)
def tradebaas_kernel() -> None:
    if "tradebaas" not in installed_kernels():
        result = run_cli("kernel", "install", "--sys-prefix")
        assert result.returncode == 0, result.stderr


class Receiver:
    """A local HTTP receiver (its own thread) that records JSON POSTs."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "json": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok":true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kinds(self) -> list[str]:
        return [e["kind"] for p in self.posts for e in p["json"].get("events", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


def run_report(client: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    return client.call("reports.run", {"name": name, "params": params, "wait": True, "timeout": REPORT_TIMEOUT},
                       timeout=REPORT_TIMEOUT + 10)


def code_cells(html: str) -> list[str]:
    """The HTML of each code cell (split at the cell divs nbconvert's lab template writes)."""
    parts = re.split(r'(?=<div[^>]*class="jp-Cell )', html)
    return [p for p in parts if "jp-CodeCell" in p.split(">", 1)[0]]


def test_daily_report_through_the_cli_and_the_engine_renders_every_section_without_code(
    engine_proc: Callable[..., Any], tb_home: Home,
) -> None:
    eng = engine_proc()
    result = run_cli("report", "run", "daily", "-p", "period_days", "2", home=tb_home, timeout=REPORT_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok" in result.stdout

    listed = json.loads(run_cli("report", "list", "--json", home=tb_home).stdout)
    run = listed["runs"][0]
    assert run["status"] == "ok" and run["trigger"] == "manual" and run["params"] == {"period_days": 2}
    assert run["started_ts_ms"] <= run["finished_ts_ms"]
    run_dir = tb_home.reports_dir / "daily" / run["run_id"]
    assert Path(run["html_path"]) == run_dir / "daily.html"
    assert Path(run["notebook_path"]) == run_dir / "daily.ipynb" and (run_dir / "daily.ipynb").is_file()

    html = Path(run["html_path"]).read_text()
    for section in SECTIONS:
        assert f">{section}<" in html, section
    assert "no trades in the period" in html  # a fresh engine has none
    cells = code_cells(html)
    assert cells, "the notebook's code cells should still be there, as outputs"
    for cell in cells:
        assert "jp-mod-noInput" in cell.split(">", 1)[0]
        assert "jp-InputArea" not in cell and "input_area" not in cell
    for source in ("tb.connect(", "def journal_events", "period_days = 1", "import pandas"):
        assert source not in html

    # the run is in the journal (table and event), written by the engine
    with eng.client() as c:
        events = c.call("journal.events", kinds=["report.run"])
    assert [e["payload"]["status"] for e in events if e["payload"]["run_id"] == run["run_id"]] == [
        "queued", "running", "ok"]


def test_a_bad_parameter_fails_the_run_before_a_kernel_or_in_the_notebook_which_is_kept(
    engine_proc: Callable[..., Any], tb_home: Home
) -> None:
    eng = engine_proc()
    started = time.monotonic()
    result = run_cli("report", "run", "daily", "-p", "period_days", "-3", home=tb_home, timeout=REPORT_TIMEOUT)
    assert result.returncode == 1
    assert "failed" in result.stdout and "period_days must be a positive number of days, got -3" in result.stdout
    assert time.monotonic() - started < 15  # no papermill, no kernel: refused from the notebook file alone

    with eng.client() as c:
        runs = c.call("reports.list")["runs"]
        assert runs[0]["status"] == "failed" and runs[0]["notebook_path"] is None
        assert not Path(runs[0]["run_dir"]).exists()

    # a value only the notebook can judge (it parses times with pandas) fails there, and the notebook is kept
    result = run_cli("report", "run", "daily", "-p", "until", "soon-ish", home=tb_home, timeout=REPORT_TIMEOUT)
    assert result.returncode == 1 and "report daily: " in result.stderr  # progress while it ran
    with eng.client() as c:
        runs = c.call("reports.list")["runs"]
        assert runs[0]["status"] == "failed"
        assert "ValueError: until must be None, an ISO time or Unix ms, got 'soon-ish'" in runs[0]["error"]
        kept = Path(runs[0]["notebook_path"])
        assert kept.is_file() and runs[0]["html_path"] is None
        nb = json.loads(kept.read_text())
        assert any(o.get("output_type") == "error" for cell in nb["cells"] for o in cell.get("outputs", []))

        unknown = run_report(c, "daily", {"period_dayz": 3})
        assert unknown["status"] == "failed" and "unknown parameter(s) period_dayz" in unknown["error"]

    listing = run_cli("report", "list", home=tb_home)
    assert listing.returncode == 0 and "failed" in listing.stdout


def test_a_report_missed_while_the_engine_was_down_runs_once_when_it_starts(
    engine_proc: Callable[..., Any], tb_home: Home,
) -> None:
    tb_home.config_file.write_text('[reports.daily]\ncron = "0 * * * *"\ncatch_up = true\n'
                                   f"timeout_s = {REPORT_TIMEOUT:g}\n")
    five_hours_ago = datetime.now(UTC) - timedelta(hours=5)  # five hourly slots missed
    with Journal.open(tb_home.journal_path) as journal:
        journal.set_meta(BASELINE_META, {"daily": int(five_hours_ago.timestamp() * 1000)})
    eng = engine_proc()
    with eng.client() as c:
        done = wait_for(lambda: [r for r in c.call("reports.list")["runs"] if r["status"] in ("ok", "failed")],
                        timeout=REPORT_TIMEOUT, what="the catch-up run to finish")
        assert len(done) == 1
        assert done[0]["trigger"] == "catch_up" and done[0]["status"] == "ok", done[0]["error"]
        assert Path(done[0]["html_path"]).is_file()
        listed = c.call("reports.list")
        assert len(listed["runs"]) == 1  # once, not once per missed slot
        assert listed["reports"][0]["next_run_ts_ms"] > int(time.time() * 1000)


def test_notifications_reach_a_local_receiver(engine_proc: Callable[..., Any], tb_home: Home,
                                              receiver: Receiver) -> None:
    tb_home.config_file.write_text(
        "[notify]\nmin_interval_s = 0\n"
        'events = ["engine_restarted", "report_ready", "report_failed"]\n'
        f'webhook = {{ url = "{receiver.url}/hook" }}\n'
    )
    eng = engine_proc()
    wait_for(lambda: "engine_restarted" in receiver.kinds(), timeout=30, what="the engine-started notification")
    with eng.client() as c:
        assert run_report(c, "daily", {"period_days": -1})["status"] == "failed"
    wait_for(lambda: "report_failed" in receiver.kinds(), timeout=30, what="the report-failed notification")
    failed = next(e for p in receiver.posts for e in p["json"]["events"] if e["kind"] == "report_failed")
    assert "period_days must be a positive number" in failed["text"]
    assert all(p["path"] == "/hook" for p in receiver.posts)


def test_a_dead_receiver_does_not_disturb_the_engine(engine_proc: Callable[..., Any], tb_home: Home) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens
    tb_home.config_file.write_text(
        "[notify]\nmin_interval_s = 0\nretries = 4\ntimeout_s = 2\n"
        f'telegram = {{ token_env = "TB_TEST_TELEGRAM_TOKEN", chat_id = "1", base_url = "{dead}" }}\n'
        f'webhook = {{ url = "{dead}/hook" }}\n'
    )
    eng = engine_proc(env={"TB_TEST_TELEGRAM_TOKEN": TOKEN})
    with eng.client() as c:
        # the engine answers promptly while the notifier retries in the background
        for _ in range(20):
            started = time.monotonic()
            assert c.ping() == "pong"
            assert time.monotonic() - started < 1.0
        assert run_report(c, "daily", {"period_days": 1})["status"] == "ok"
        notify = wait_for(lambda: (n := c.call("reports.list")["notify"])["stats"].get("failed") and n,
                          timeout=60, what="the notifier to give up on the dead receiver")
        assert notify["enabled"] and set(notify["sinks"]) == {"telegram", "webhook"}
        assert TOKEN not in json.dumps(notify)
        assert c.ping() == "pong"
    log_text = tb_home.engine_log.read_text()
    assert "notification via" in log_text and "failed after 5 attempt(s)" in log_text
    assert TOKEN not in log_text
    assert eng.alive()


def test_daily_report_of_a_paper_trading_session_on_the_simulator(
    sim_proc: Callable[..., Any], engine_proc: Callable[..., Any], tb_home: Home,
) -> None:
    """The sim replays past market data: the report's period follows its market time, so the session shows up."""
    sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    with eng.client() as c:
        fast = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 0.05, "takeProfitPercent": 0.05,
                "cooldownMinutes": 0}
        sid = c.call("strategy.start", name="razor", config=fast)["id"]
        closed = wait_for(lambda: [t for t in c.call("trades.list", strategy=sid) if t["state"] == "closed"][:2]
                          if sum(t["state"] == "closed" for t in c.call("trades.list", strategy=sid)) >= 2 else None,
                          timeout=90, what="two closed trades")
        run = run_report(c, "daily", {"period_days": 1})
    assert run["status"] == "ok", run["error"]
    html = Path(run["html_path"]).read_text()
    assert "no trades in the period" not in html
    for t in closed:
        assert t["trade_id"] in html
    assert "of the simulator&#39;s market time" in html or "of the simulator's market time" in html
    assert sid in html and "taken" in html               # decisions per strategy
    assert "started pid" in html
    assert "Key figures" in html and "win rate" in html and "max drawdown" in html
    assert html.count("<img") >= 2 and "no candles of" not in html  # equity, and the trades on the price
    # the start's reconciliation changed nothing on a fresh account: counted, not listed as a row
    assert "found nothing to change (" in html and "start: 1" in html and "nothing to change</td>" not in html
