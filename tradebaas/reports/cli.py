"""``tradebaas report run NAME [-p key value ...]`` and ``tradebaas report list [--json]``.

``report run`` goes through the running engine (``reports.run`` with ``wait``), so the run is recorded in the
engine's journal and respects its one-run-per-report rule; with no engine running it runs the report in this
process the same way (papermill subprocess, same output layout, same journal table). ``-p`` values are read as
JSON when they parse (``-p period_days 7`` is a number, ``-p strategies '["ab12"]'`` a list), else as text.
Exit code: 0 when the run is ok, 1 when it failed (the error and the kept notebook are printed).

While it runs, the cell being executed and its section are shown on stderr (``reports/progress.py``). Parameters
are checked before anything starts (``reports/params.py``): a bad name or value fails the run at once, without a
kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradebaas.commands.output import dumps
from tradebaas.errors import UserError
from tradebaas.home import Home, get_home

WAIT_MARGIN_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run a report notebook now")
    run.add_argument("name", help="a report of tradebaas.toml [reports.<name>], or a notebook of notebooks/reports")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                     help="override a parameter (VALUE is JSON if it parses, else text); repeatable")
    run.add_argument("--local", action="store_true", help="run in this process even if an engine is running")
    run.add_argument("--json", action="store_true", help="print the run record as JSON")
    lst = sub.add_parser("list", help="list report runs with status and output paths")
    lst.add_argument("--name", help="only runs of this report")
    lst.add_argument("--limit", type=int, default=20, help="at most N runs (default 20)")
    lst.add_argument("--json", action="store_true", help="machine-readable")


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run(args: argparse.Namespace) -> int:
    home = get_home(getattr(args, "home", None))
    if args.report_command == "run":
        params = {key: parse_value(value) for key, value in args.param}
        # a notebook path runs here, in this shell: the engine runs only the reports its configuration names
        by_path = "/" in args.name or args.name.endswith(".ipynb")
        record = _run_via_engine(home, args.name, params) if not (args.local or by_path) else None
        if record is None:
            record = _run_locally(home, args.name, params)
        if args.json:
            print(dumps(record, sort_keys=True))
        else:
            print(_format_run(record))
        return 0 if record.get("status") == "ok" else 1
    if args.report_command == "list":
        answer = _list(home, args.name, args.limit)
        if args.json:
            print(dumps(answer, sort_keys=True))
        else:
            print(_format_list(answer))
        return 0
    raise UserError(f"unknown report action {args.report_command!r}")


# -- through the engine, or here ---------------------------------------------------------------------------------
def _engine_running(home: Home) -> bool:
    from tradebaas.engine.process import daemon

    state, _info = daemon.engine_state(home)
    return state == "running"


def _timeout_for(home: Home, name: str) -> float:
    from tradebaas.reports.config import DEFAULT_TIMEOUT_S, load_config

    try:
        rep = load_config(home).reports.get(name)
    except UserError:
        rep = None
    return (rep.timeout_s if rep else DEFAULT_TIMEOUT_S) + WAIT_MARGIN_S


#: How often a run's status and progress are looked at while waiting for it (a person watches, nothing waits on it).
POLL_S = 0.5


def _run_via_engine(home: Home, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Start the run in the engine, then follow it (status from ``reports.get``, progress from its notebook) to
    its end."""
    if not _engine_running(home):
        return None
    from tradebaas.reports.progress import ProgressLine, notebook_progress
    from tradebaas.rpc.client import connect

    timeout = _timeout_for(home, name)
    with connect(home, reconnect=False) as client:
        record = client.call("reports.run", {"name": name, "params": params, "wait": False}, timeout=30)
        line = ProgressLine(name)
        deadline = time.monotonic() + timeout
        try:
            while record["status"] not in ("ok", "failed"):
                if time.monotonic() > deadline:
                    raise UserError(f"report {name} run {record['run_id']} did not finish within {timeout:.0f} s; "
                                    "see `tradebaas report list`")
                line.show(notebook_progress(Path(record["run_dir"]) / f"{record['name']}.ipynb"), record["status"])
                time.sleep(POLL_S)
                record = client.call("reports.get", {"run_id": record["run_id"]})
        finally:
            line.done()
        return dict(record)


def _open_store(home: Home, create: bool) -> Any:
    from tradebaas.engine.journal.database import Journal
    from tradebaas.reports.execute import RunStore

    if not create and not home.journal_path.exists():
        return None
    home.ensure()
    return RunStore(Journal.open(home.journal_path))


def _run_locally(home: Home, name: str, params: dict[str, Any]) -> dict[str, Any]:
    from tradebaas.reports.config import default_report, load_config
    from tradebaas.reports.execute import ReportRunner

    config = load_config(home)
    store = _open_store(home, create=True)
    try:
        runner = ReportRunner(home, store, config.reports, strip_env=config.notify.secret_envs,
                              resolve=lambda n: default_report(n, home))
        record = runner.submit(name, params)
        if not record.done:
            print(f"running report {name} locally (no engine running): {record.run_dir}", file=sys.stderr)
            record = asyncio.run(_with_progress(runner, record))
        return record.to_json()
    finally:
        store.journal.close()


async def _with_progress(runner: Any, record: Any) -> Any:
    """``runner.execute(record)``, showing the notebook's progress meanwhile."""
    from tradebaas.reports.progress import ProgressLine, notebook_progress

    task = asyncio.ensure_future(runner.execute(record))
    line = ProgressLine(record.name)
    path = Path(record.run_dir) / f"{record.name}.ipynb"
    try:
        while not task.done():
            line.show(notebook_progress(path), "running")
            await asyncio.wait({task}, timeout=POLL_S)
    finally:
        line.done()
    return task.result()


def _list(home: Home, name: str | None, limit: int) -> dict[str, Any]:
    if _engine_running(home):
        from tradebaas.rpc.client import connect

        with connect(home, reconnect=False) as client:
            params: dict[str, Any] = {"limit": limit}
            if name:
                params["name"] = name
            return client.call("reports.list", params)
    from tradebaas.reports.config import load_config

    answer: dict[str, Any] = {"reports": [], "runs": [], "config_error": None}
    try:
        cfg = load_config(home)
        answer["reports"] = [{"name": n, "notebook": str(r.notebook), "cron": r.cron, "tz": r.tz,
                              "catch_up": r.catch_up, "next_run_ts_ms": None}
                             for n, r in sorted(cfg.reports.items())]
    except UserError as exc:
        answer["config_error"] = str(exc)
    store = _open_store(home, create=False)
    if store is not None:
        try:
            answer["runs"] = [r.to_json() for r in store.list(name=name, limit=limit)]
        finally:
            store.journal.close()
    return answer


# -- output ------------------------------------------------------------------------------------------------------
def _when(ts_ms: int | None) -> str:
    if not ts_ms:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _format_run(r: dict[str, Any]) -> str:
    lines = [f"report {r['name']} run {r['run_id']}: {r['status']}"]
    if r.get("error"):
        lines.append(f"error:    {r['error']}")
    if r.get("html_path"):
        lines.append(f"html:     {r['html_path']}")
    if r.get("notebook_path"):
        lines.append(f"notebook: {r['notebook_path']}")
    return "\n".join(lines)


def _format_list(answer: dict[str, Any]) -> str:
    lines = []
    if answer.get("config_error"):
        lines.append(f"config error: {answer['config_error']}")
    for rep in answer.get("reports", []):
        nxt = f", next {_when(rep['next_run_ts_ms'])} UTC" if rep.get("next_run_ts_ms") else ""
        lines.append(f"report {rep['name']}: cron {rep.get('cron') or '(on demand)'} {rep.get('tz', '')}{nxt}")
    runs = answer.get("runs", [])
    if not runs:
        lines.append("no report runs yet")
    for r in runs:
        dur = ""
        if r.get("started_ts_ms") and r.get("finished_ts_ms"):
            dur = f" {(r['finished_ts_ms'] - r['started_ts_ms']) / 1000:.1f}s"
        out = r.get("html_path") or r.get("notebook_path") or ""
        err = f"  error: {r['error']}" if r.get("error") else ""
        lines.append(f"{r['run_id']}  {r['name']:<12} {r['status']:<7} {r.get('trigger', ''):<9} "
                     f"{_when(r.get('queued_ts_ms'))}{dur}  {out}{err}")
    return "\n".join(lines)
