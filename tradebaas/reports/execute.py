"""Run one report: papermill in a subprocess, then nbconvert to HTML without code, every step on the record.

Why a subprocess (and not papermill in the engine's process): a report is user code. It may hang, leak memory,
import something that spins its own event loop or crash the interpreter; none of that may reach the loop that
trades. The child gets its own process group, so a timeout kills it and any kernel it started.

Outputs of run ``<run_id>`` of report ``<name>`` live in ``TRADEBAAS_HOME/reports/<name>/<run_id>/``:
``<name>.ipynb`` (the executed notebook; kept when a cell fails, so the traceback can be read), ``<name>.html``
(``nbconvert --no-input``: the results, no code; only on success), ``params.json`` (what was injected) and
``papermill.log`` (the child's stdout/stderr).

Each run is a row of the journal's ``report_runs`` table (schema v3), written in the same transaction as a
``report.run`` event carrying the row (append-only history of every status change): queued -> running -> ok |
failed. Parameters are not secret (they are what the user typed) and the error text is the notebook's exception
line or the child's last stderr lines; secrets never appear in either because the child's environment carries
none (the notifier's and Deribit's variables are removed).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradebaas.engine.journal.database import Journal, now_ms
from tradebaas.errors import UserError
from tradebaas.home import ENV_VAR, Home
from tradebaas.processes import kill_group
from tradebaas.reports.config import DEFAULT_KERNEL, ReportConfig

# the notebook's parameters, checked before any kernel starts (re-exported: callers import them from here)
from tradebaas.reports.params import check_params as check_params
from tradebaas.reports.params import notebook_parameters as notebook_parameters

log = logging.getLogger("tradebaas.reports")

STATUSES = ("queued", "running", "ok", "failed")
EVENT_KIND = "report.run"
#: Environment variables a report child never sees (it reads the engine over RPC; it needs no exchange keys).
STRIPPED_ENV = ("TRADEBAAS_DERIBIT_CLIENT_ID", "TRADEBAAS_DERIBIT_CLIENT_SECRET")
HTML_TIMEOUT_S = 120.0
ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored in ``report_runs`` and answered by ``reports.list`` / ``reports.run``."""

    run_id: str
    name: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    trigger: str = "manual"
    slot_ts_ms: int | None = None
    error: str = ""
    queued_ts_ms: int = 0
    started_ts_ms: int | None = None
    finished_ts_ms: int | None = None
    run_dir: str = ""
    notebook_path: str | None = None
    html_path: str | None = None

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        data = dict(row)
        data["params"] = json.loads(data.get("params") or "{}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: ``20250102T070000Z-a1b2`` (UTC start time + 4 random hex digits)."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


# -- the record --------------------------------------------------------------------------------------------------
class RunStore:
    """The ``report_runs`` table plus its ``report.run`` events, one transaction per status change."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def save(self, record: RunRecord) -> RunRecord:
        row = record.to_json()
        with self.journal.transaction() as conn:
            self.journal.append(EVENT_KIND, row, ts_ms=now_ms(), conn=conn)
            self.journal.upsert("report_runs", row, key=("run_id",), conn=conn)
        return record

    def get(self, run_id: str) -> RunRecord | None:
        row = self.journal.query_one("SELECT * FROM report_runs WHERE run_id = ?", (run_id,))
        return None if row is None else RunRecord.from_row(row)

    def list(self, name: str | None = None, limit: int = 50, status: str | None = None) -> list[RunRecord]:
        """Newest first."""
        where: list[str] = []
        params: list[str | int] = []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM report_runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY queued_ts_ms DESC, run_id DESC LIMIT ?"
        params.append(int(limit))
        return [RunRecord.from_row(r) for r in self.journal.query(sql, params)]

    def last_slots(self) -> dict[str, int]:
        """Per report, the latest cron slot a scheduled run was made for (the scheduler's marks after a restart)."""
        rows = self.journal.query(
            "SELECT name, max(slot_ts_ms) AS slot FROM report_runs WHERE slot_ts_ms IS NOT NULL GROUP BY name"
        )
        return {r["name"]: int(r["slot"]) for r in rows}

    def abandon_unfinished(self, reason: str) -> builtins.list[RunRecord]:  # ``list`` is the method above
        """Mark runs left queued/running by a previous engine (it crashed or stopped mid-run) as failed."""
        out = []
        for rec in self.list(limit=1000, status="queued") + self.list(limit=1000, status="running"):
            out.append(self.save(replace(rec, status="failed", error=reason, finished_ts_ms=now_ms())))
        return out


# -- the subprocesses --------------------------------------------------------------------------------------------
def installed_kernels() -> set[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        return set(KernelSpecManager().find_kernel_specs())
    except Exception:  # noqa: BLE001 - a broken jupyter path must not break reports: assume the default
        return set()


def choose_kernel(requested: str | None, available: Iterable[str] | None = None) -> str:
    """The report's kernel: as configured, else "tradebaas" when installed, else "python3" (logged, documented)."""
    if requested:
        return requested
    available = installed_kernels() if available is None else set(available)
    if DEFAULT_KERNEL in available or not available:
        return DEFAULT_KERNEL
    log.warning("kernel spec %r is not installed (`tradebaas kernel install`); running reports with 'python3'",
                DEFAULT_KERNEL)
    return "python3"


def child_env(home: Home, strip: Iterable[str] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The report child's environment: no secrets (``STRIPPED_ENV`` and ``strip``), this home, and ``extra`` (the
    engine passes the read-only RPC token: a report can read the engine, never trade)."""
    env = {k: v for k, v in os.environ.items() if k not in set(STRIPPED_ENV) | set(strip)}
    env.update(extra or {})
    env[ENV_VAR] = str(home.root)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "agg")
    return env


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str = ""
    notebook_path: Path | None = None
    html_path: Path | None = None


async def _run_child(argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path,
                     timeout_s: float) -> tuple[int | None, str]:
    """Run ``argv`` in its own process group with output appended to ``log_path``.

    Returns (exit code, output tail); exit code None means it timed out and the whole group was killed.
    """
    with open(log_path, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=dict(env), cwd=str(cwd),
            start_new_session=True,
        )
        code: int | None
        try:
            async with asyncio.timeout(timeout_s):
                code = await proc.wait()
        except TimeoutError:
            await _kill_group(proc)
            code = None
        except asyncio.CancelledError:
            await _kill_group(proc)
            raise
    return code, _tail(log_path)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (papermill and the kernel it started) and reap it."""
    kill_group(proc.pid)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await proc.wait()


def _cell_timed_out(log_path: Path) -> bool:
    try:
        return "CellTimeoutError" in log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def notebook_error(path: Path) -> str:
    """The first exception recorded in an executed notebook: ``"ValueError: period_days must be > 0"``."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "error":
                where = cell.get("execution_count") or index
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')} (cell {where})"
    return ""


async def execute(
    report: ReportConfig,
    params: Mapping[str, Any],
    run_dir: Path,
    home: Home,
    *,
    kernel: str | None = None,
    python: str = sys.executable,
    strip_env: Iterable[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Outcome:
    """papermill then nbconvert, in subprocesses; never raises for a failing report (the Outcome says why)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out_nb = run_dir / f"{report.name}.ipynb"
    html = run_dir / f"{report.name}.html"
    params_file = run_dir / "params.json"
    params_file.write_text(json.dumps(dict(params), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log_path = run_dir / "papermill.log"
    env = child_env(home, strip_env, extra_env)
    kernel_name = choose_kernel(kernel or report.kernel)
    argv = [python, "-m", "papermill", str(report.notebook), str(out_nb), "-f", str(params_file),
            "-k", kernel_name, "--cwd", str(run_dir), "--execution-timeout", str(int(report.timeout_s)),
            "--no-progress-bar", "--log-level", "WARNING"]
    code, tail = await _run_child(argv, env, run_dir, log_path, report.timeout_s + 30.0)
    kept = out_nb if out_nb.exists() else None
    if code is None:
        return Outcome(False, f"timed out after {report.timeout_s:g}s (the run was killed)", kept)
    if code != 0:
        if _cell_timed_out(log_path):  # papermill interrupts the kernel: the notebook only shows KeyboardInterrupt
            where = notebook_error(out_nb).rpartition("(")[2].rstrip(")")
            return Outcome(False, f"timed out: a cell ran longer than timeout_s = {report.timeout_s:g}s"
                           + (f" ({where})" if where else ""), kept)
        error = notebook_error(out_nb) or _last_error_line(tail) or f"papermill exited with code {code}"
        return Outcome(False, error[:ERROR_MAX_CHARS], kept)
    argv = [python, "-m", "nbconvert", "--to", "html", "--no-input", "--output", html.stem,
            "--output-dir", str(run_dir), str(out_nb)]
    code, tail = await _run_child(argv, env, run_dir, log_path, HTML_TIMEOUT_S)
    if code != 0 or not html.exists():
        reason = "timed out" if code is None else (_last_error_line(tail) or f"exit code {code}")
        return Outcome(False, f"HTML rendering failed: {reason}"[:ERROR_MAX_CHARS], kept)
    return Outcome(True, "", kept, html)


def _last_error_line(tail: str) -> str:
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith("$ ")]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else ""


# -- runs of configured reports ----------------------------------------------------------------------------------
class ReportRunner:
    """Queues and executes runs, one at a time per report, recording each status change.

    Used by the engine's service (runs start as tasks on the engine loop) and by ``tradebaas report run`` when no
    engine is running (``asyncio.run`` in the CLI). ``on_change(record)`` is called after every status change
    (the service publishes it on the ``reports`` channel and notifies report ready/failed).
    """

    def __init__(
        self,
        home: Home,
        store: RunStore,
        reports: Mapping[str, ReportConfig],
        *,
        on_change: Callable[[RunRecord], None] | None = None,
        strip_env: Iterable[str] = (),
        python: str = sys.executable,
        resolve: Callable[[str], ReportConfig] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.reports = dict(reports)
        self.on_change = on_change
        self.strip_env = tuple(strip_env)
        self.extra_env = dict(extra_env or {})
        self.python = python
        self._resolve = resolve
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}  # report name -> runs queued or running

    def report(self, name: str) -> ReportConfig:
        if name in self.reports:
            return self.reports[name]
        if self._resolve is not None:
            return self._resolve(name)
        raise UserError(f"no report named {name!r} (configured: {', '.join(sorted(self.reports)) or 'none'})")

    def busy(self, name: str) -> bool:
        """A run of ``name`` is queued or running in this process."""
        return self._pending.get(name, 0) > 0

    def _changed(self, record: RunRecord) -> RunRecord:
        self.store.save(record)
        if self.on_change is not None:
            try:
                self.on_change(record)
            except Exception:  # an observer must never break a run
                log.exception("report observer failed")
        return record

    def submit(self, name: str, params: Mapping[str, Any] | None = None, *, trigger: str = "manual",
               slot_ts_ms: int | None = None) -> RunRecord:
        """Record a queued run (or, for parameters the notebook does not take, a failed one) and return it.

        Raises ``UserError`` only for an unknown report (nothing to record then).
        """
        report = self.report(name)
        merged = {**report.params, **dict(params or {})}
        run_id = new_run_id()
        run_dir = self.home.reports_dir / name / run_id
        record = RunRecord(run_id=run_id, name=name, status="queued", params=merged, trigger=trigger,
                           slot_ts_ms=slot_ts_ms, queued_ts_ms=now_ms(), run_dir=str(run_dir))
        try:
            check_params(report, merged)
        except UserError as exc:
            now = now_ms()
            return self._changed(replace(record, status="failed", error=str(exc), started_ts_ms=now,
                                         finished_ts_ms=now))
        self._pending[name] = self._pending.get(name, 0) + 1
        return self._changed(record)

    async def execute(self, record: RunRecord) -> RunRecord:
        """Run a queued record to its end (waits for the report's earlier runs first). Never raises for a
        failing report; on cancellation (engine shutdown) the run is recorded as failed and the child killed."""
        if record.done:
            return record
        report = self.report(record.name)
        lock = self._locks.setdefault(record.name, asyncio.Lock())
        try:
            async with lock:
                record = self._changed(replace(record, status="running", started_ts_ms=now_ms()))
                log.info("report %s run %s started (%s)", record.name, record.run_id, record.trigger)
                try:
                    outcome = await execute(report, record.params, Path(record.run_dir), self.home,
                                            python=self.python, strip_env=self.strip_env,
                                            extra_env=self.extra_env)
                except asyncio.CancelledError:
                    self._changed(replace(record, status="failed", error="cancelled: the engine stopped",
                                          finished_ts_ms=now_ms()))
                    raise
                except Exception as exc:  # our own bug or an OS error: still a recorded failure
                    log.exception("report %s run %s could not be executed", record.name, record.run_id)
                    outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
                record = self._changed(replace(
                    record, status="ok" if outcome.ok else "failed", error=outcome.error,
                    finished_ts_ms=now_ms(),
                    notebook_path=str(outcome.notebook_path) if outcome.notebook_path else None,
                    html_path=str(outcome.html_path) if outcome.html_path else None,
                ))
                if outcome.ok:
                    log.info("report %s run %s ok: %s", record.name, record.run_id, record.html_path)
                else:
                    log.warning("report %s run %s failed: %s", record.name, record.run_id, record.error)
                return record
        finally:
            self._pending[record.name] = max(0, self._pending.get(record.name, 1) - 1)
