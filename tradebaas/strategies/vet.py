"""Vetting a strategy version: the check the engine runs on every deploy before it accepts the code.

``vet_source(source, candles)`` loads the source and runs it over candles; it answers a ``VetReport`` that says
whether the version is accepted and, if not, why (``refused``: "import", "api", "raises", "budget",
"lookahead") with the message and the strategy's own traceback. In order (the first failure ends it):

1. load (``loader.load_class``): a source that fails to execute is refused "import", a class that breaks the
   strategy API (``strategies/base.py``) "api";
2. backtest with its default config (``tradebaas.backtest.backtester``, every ``on_candle`` timed and its answer
   checked): an exception is refused "raises" (with the candle), an answer that is not a ``Decision`` with
   ``Enter``/``MoveStop``/``Exit`` intents "api";
3. budget: mean or p99 time per candle above ``budget_ms``, or one call (the first excepted) above
   ``hard_budget_ms`` (default 50x the budget): "budget";
4. look-ahead (``vet_checks.check_lookahead``): decisions that change when later candles are removed, that are
   not reproducible, or that foretell later closes: "lookahead";
5. warm-up (``vet_checks.measure_warmup``): how many candles of history its decisions need, ``warmup_candles``
   (the live runner warms up with at least that).

User code may hang or crash the interpreter, so the engine never calls ``vet_source`` itself: it runs
``python -m tradebaas.strategies.vet`` (one JSON request on stdin, the report JSON on stdout) through
``vet_in_subprocess``, which kills the child's process group at a timeout. Vetting is bounded: at most
``max_candles`` (the most recent) candles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import linecache
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from tradebaas.backtest.backtester import backtest
from tradebaas.backtest.data import DataError, interval_ms, load_candles, load_default, load_recorded
from tradebaas.errors import UserError
from tradebaas.processes import kill_group
from tradebaas.strategies.loader import StrategyApiError, StrategyLoadError, load_class, source_version
from tradebaas.strategies.params import validate_config
from tradebaas.strategies.vet_checks import (
    CallTimer,
    Refusal,
    TimedStrategy,
    call,
    candle_list,
    check_lookahead,
    measure_warmup,
    signal_run,
    user_traceback,
)

DEFAULT_BUDGET_MS = 20.0
HARD_BUDGET_FACTOR = 50.0
DEFAULT_MAX_CANDLES = 10_000
#: Seconds the look-ahead and warm-up runs may take (estimated from the backtest's time per candle); a slow
#: strategy gets them on fewer, the most recent, candles (at least ``MIN_EXTRA_CANDLES``).
DEFAULT_WORK_S = 60.0
MIN_EXTRA_CANDLES = 500
WARMUP_STARTS = 12
#: Fewer recorded candles than this and vetting runs on the bundled data instead.
MIN_RECORDED_CANDLES = 500
MAX_ERROR_CHARS = 20_000
STDERR_TAIL_BYTES = 8_000
MAX_REPORT_BYTES = 1_000_000
#: Files the child writes (its stderr among them) stop growing here: a strategy printing without end fails
#: with "File too large" instead of filling the disk.
CHILD_MAX_FILE_BYTES = 64 * 1024 * 1024
BUNDLED_LABEL = "bundled Bitstamp BTC/USD 1-minute candles"


@dataclass
class VetReport:
    """The verdict on one strategy version (the VetReport JSON of the RPC contract, plus ``notes``,
    ``warmup_settled`` and ``hard_budget_ms``). ``ok`` is True exactly when ``refused`` is None."""

    ok: bool
    name: str | None
    class_name: str | None
    version: str
    refused: str | None = None
    error: str | None = None
    candles: int = 0
    decisions: int = 0
    entries: int = 0
    per_candle_ms: dict[str, float] = field(default_factory=lambda: {"mean": 0.0, "p99": 0.0, "max": 0.0})
    budget_ms: float = DEFAULT_BUDGET_MS
    hard_budget_ms: float = DEFAULT_BUDGET_MS * HARD_BUDGET_FACTOR
    warmup_candles: int = 0
    warmup_settled: bool = False
    data: str = ""
    notes: list[str] = field(default_factory=list)

    def refuse(self, kind: str, message: str, details: str = "") -> VetReport:
        self.ok, self.refused = False, kind
        text = f"{message}\n\n{details.rstrip()}" if details.strip() else message
        self.error = text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "\n... (cut)"
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def vet_source(source: str, candles: pd.DataFrame, *, name: str | None = None,
               budget_ms: float = DEFAULT_BUDGET_MS, hard_budget_ms: float | None = None,
               lookahead_cuts: int = 6, max_candles: int = DEFAULT_MAX_CANDLES, data: str = "DataFrame",
               work_s: float = DEFAULT_WORK_S) -> VetReport:
    """Vet ``source`` on ``candles`` (a candle frame; the last ``max_candles`` are used); ``name`` picks the class
    when the source holds several; ``data`` says what the candles are (for the report); ``work_s`` bounds the
    look-ahead and warm-up runs (about 12 times the backtest's work; a strategy too slow for that runs them on
    fewer candles, and the report's notes say so). Never raises for anything the strategy does: every failure
    is a refused report."""
    version = source_version(source)
    hard = float(hard_budget_ms) if hard_budget_ms is not None else budget_ms * HARD_BUDGET_FACTOR
    report = VetReport(False, name, None, version, budget_ms=float(budget_ms), hard_budget_ms=hard)
    frame = load_candles(candles).iloc[-max(int(max_candles), 1):]
    report.candles = len(frame)
    first, last = frame.index[0], frame.index[-1]
    report.data = f"{data}: {len(frame)} candles {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"
    filename = f"<strategy {version[:12]}>"
    # tracebacks quote the strategy's lines only if linecache knows them (mtime None: never invalidated)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    try:
        cls = load_class(source, f"tb_vet_{version[:16]}", filename, name)
    except StrategyLoadError as exc:
        return report.refuse("import", str(exc), exc.details)
    except StrategyApiError as exc:
        return report.refuse("api", str(exc), exc.details)
    report.name, report.class_name = str(getattr(cls, "name", "")), cls.__name__
    try:
        # the look-ahead reference runs on a second, untouched load of the source (see check_lookahead)
        reference = load_class(source, f"tb_vet_{version[:16]}_ref", filename, name)
        _run_checks(cls, reference, frame, report, lookahead_cuts, work_s)
    except (StrategyLoadError, StrategyApiError) as exc:  # loaded once, failed the second time: not reproducible
        return report.refuse("import", f"loading it a second time failed: {exc}", exc.details)
    except Refusal as refusal:
        return report.refuse(refusal.kind, refusal.message, refusal.details)
    report.ok = True
    return report


def _run_checks(cls: type, reference: type, frame: pd.DataFrame, report: VetReport, lookahead_cuts: int,
                work_s: float) -> None:
    """Steps 2-5 of the module docstring; fills ``report`` and raises ``Refusal`` at the first failure.
    ``reference`` is the same class from a second load of the source, for the look-ahead reference run."""
    config = validate_config(cls, {})

    def make() -> Any:
        return cls(config)

    def make_reference() -> Any:
        return reference(validate_config(reference, {}))

    if not callable(getattr(call("constructing the strategy", make), "on_start", None)):
        raise Refusal("api", f"strategy class {cls.__name__}: `on_start(context)` is missing (subclass "
                             "tradebaas.strategies.base.BaseStrategy for the no-op hooks)")
    candles = candle_list(frame)
    step = interval_ms(frame)
    timer = CallTimer(len(candles), report.budget_ms, report.hard_budget_ms)
    timed = TimedStrategy(call("constructing the strategy for the backtest", make), timer, candles)
    try:
        result = backtest(timed, frame, decisions="all")
    except UserError as exc:  # the backtester refuses what the strategy declared (e.g. an unknown instrument)
        raise Refusal("api", f"the backtest cannot run it: {exc}") from None
    except Refusal:
        raise
    except Exception as exc:  # noqa: BLE001 - an answer of the strategy broke the backtester: say what it was
        raise Refusal("raises", f"the backtest failed on the strategy's answer: {type(exc).__name__}: {exc}",
                      user_traceback(exc)) from None
    finally:
        report.per_candle_ms = timer.summary()
        report.decisions = len(timer.times_ms)
    report.entries = len(result.trades) + (result.open_position is not None)
    # the signal-only runs below cost about this many passes over the candles (cuts: half a pass each on average;
    # warm-up runs: from starts spread over the first three quarters to the end)
    passes = 1 + lookahead_cuts / 2 + WARMUP_STARTS * 0.7
    per_candle_s = report.per_candle_ms["mean"] / 1000.0
    fit = int(work_s / (per_candle_s * passes)) if per_candle_s > 0 else len(candles)
    if fit < len(candles):
        keep = min(max(fit, MIN_EXTRA_CANDLES), len(candles))
        report.notes.append(f"look-ahead and warm-up checked on the last {keep} candles only (at "
                            f"{report.per_candle_ms['mean']:.2f} ms per candle all {len(candles)} would take "
                            f"about {per_candle_s * passes * len(candles):.0f} s, more than {work_s:g} s)")
        candles = candles[-keep:]
    instrument = result.instrument
    full = signal_run(make_reference, candles, instrument, step, label="a signal-only run over all candles")
    check_lookahead(make, candles, instrument, step, full, lookahead_cuts)
    warm = measure_warmup(make, candles, instrument, step, full, starts=WARMUP_STARTS)
    report.warmup_candles, report.warmup_settled = warm.candles, warm.settled
    report.notes.append(f"warm-up: {warm.note}")


# --- the subprocess -------------------------------------------------------------------------------------------


class VetRequestError(UserError):
    """The vetting request (JSON on stdin) is malformed or names data that cannot be loaded."""


def request_data(spec: Any, max_candles: int) -> tuple[pd.DataFrame, str]:
    """The candles a request names and the words for the report: ``{"kind": "bundled"}``, ``{"kind": "file",
    "path"}`` or ``{"kind": "recorded", "home", "instrument"}`` (the engine's recordings; the bundled data when it
    has fewer than ``MIN_RECORDED_CANDLES``)."""
    spec = spec if spec is not None else {"kind": "bundled"}
    kind = spec.get("kind") if isinstance(spec, dict) else None
    try:
        if kind == "bundled":
            return load_default(), BUNDLED_LABEL
        if kind == "file" and isinstance(spec.get("path"), str):
            return load_candles(spec["path"]), f"file {spec['path']}"
        if kind == "recorded" and isinstance(spec.get("instrument"), str):
            instrument = spec["instrument"]
            try:
                recorded = load_recorded(spec.get("home"), instrument)
            except DataError:
                recorded = None
            have = 0 if recorded is None else len(recorded)
            if recorded is not None and have >= MIN_RECORDED_CANDLES:
                return recorded.iloc[-max_candles:], f"the engine's recorded {instrument} candles"
            return load_default(), (f"{BUNDLED_LABEL} (the engine has recorded {have} candles of {instrument}, "
                                     f"fewer than {MIN_RECORDED_CANDLES})")
    except DataError as exc:
        raise VetRequestError(f"vetting data: {exc}") from None
    raise VetRequestError(f"vetting data must be {{'kind': 'bundled'}}, {{'kind': 'file', 'path': ...}} or "
                          f"{{'kind': 'recorded', 'home': ..., 'instrument': ...}}, not {spec!r}")


def vet_request(request: Any) -> VetReport:
    """Answer one request ``{source, name?, data?, budget_ms?, max_candles?, work_s?}`` (``VetRequestError`` if
    malformed)."""
    if not isinstance(request, dict) or not isinstance(request.get("source"), str):
        raise VetRequestError("the vetting request must be a JSON object with a string 'source'")
    name = request.get("name")
    budget = request.get("budget_ms", DEFAULT_BUDGET_MS)
    max_candles = request.get("max_candles", DEFAULT_MAX_CANDLES)
    if name is not None and not isinstance(name, str):
        raise VetRequestError(f"'name' must be a string, not {name!r}")
    if not isinstance(budget, int | float) or isinstance(budget, bool) or not budget > 0:
        raise VetRequestError(f"'budget_ms' must be a number > 0, not {budget!r}")
    if not isinstance(max_candles, int) or isinstance(max_candles, bool) or max_candles < 1:
        raise VetRequestError(f"'max_candles' must be an integer >= 1, not {max_candles!r}")
    work = request.get("work_s", DEFAULT_WORK_S)
    if not isinstance(work, int | float) or isinstance(work, bool) or not work > 0:
        raise VetRequestError(f"'work_s' must be a number > 0, not {work!r}")
    frame, label = request_data(request.get("data"), max_candles)
    return vet_source(request["source"], frame, name=name, budget_ms=float(budget), max_candles=max_candles,
                      data=label, work_s=float(work))


def main() -> int:
    """``python -m tradebaas.strategies.vet``: a request on stdin, the report on stdout (exit 0 whatever the
    verdict; exit 2 with one line on stderr for a malformed request). Whatever the strategy prints, even from C
    code writing to file descriptor 1, goes to stderr, so stdout holds nothing but the report; no file it
    writes grows past ``CHILD_MAX_FILE_BYTES``."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises OSError instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (CHILD_MAX_FILE_BYTES, CHILD_MAX_FILE_BYTES))
    report_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.read())
        report = vet_request(request)
    except (ValueError, UserError) as exc:
        print(f"tradebaas vet: bad request: {exc}", file=sys.stderr)
        return 2
    with os.fdopen(report_fd, "w", encoding="utf-8") as out:
        out.write(report.to_json())
    return 0


def failed_report(request: Any, kind: str, message: str) -> dict[str, Any]:
    """A refused report made by the parent when the child could not give one (timeout, crash)."""
    req = request if isinstance(request, dict) else {}
    source = req.get("source")
    name = req.get("name") if isinstance(req.get("name"), str) else None
    version = source_version(source) if isinstance(source, str) else ""
    budget = req.get("budget_ms", DEFAULT_BUDGET_MS)
    budget = float(budget) if isinstance(budget, int | float) and not isinstance(budget, bool) else DEFAULT_BUDGET_MS
    report = VetReport(False, name, None, version, budget_ms=budget, hard_budget_ms=budget * HARD_BUDGET_FACTOR)
    return report.refuse(kind, message).to_dict()


async def vet_in_subprocess(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Vet in a child process (``python -m tradebaas.strategies.vet``, its own process group) and return the
    report as a dict. Past ``timeout_s`` the group is killed and the answer is refused "budget"; a child that
    dies or answers no report gives refused "raises" with the tail of its stderr. Never raises, except
    ``asyncio.CancelledError`` (the child's group is killed first). Unless the request sets ``work_s``, the
    look-ahead and warm-up runs get half of ``timeout_s``; the backtest itself needs up to ``budget_ms`` per
    candle, so ``timeout_s`` should exceed ``budget_ms * max_candles`` by a margin.

    The child's stdout and stderr go to temporary files, not pipes: a process the strategy started (and left
    running outside the group) may hold them open, and waiting for a pipe's end would then never finish.
    """
    try:
        if isinstance(request, dict) and "work_s" not in request:
            request = {**request, "work_s": max(timeout_s / 2, 0.001)}
        payload = json.dumps(request).encode("utf-8")
    except (TypeError, ValueError) as exc:
        return failed_report(request, "raises", f"the vetting request cannot be sent: {exc}")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradebaas.strategies.vet", stdin=asyncio.subprocess.PIPE, stdout=out,
                stderr=err, start_new_session=True)
        except OSError as exc:
            return failed_report(request, "raises", f"cannot start the vetting process: {exc}")
        try:
            async with asyncio.timeout(timeout_s):
                await _send_and_wait(proc, payload)
        except TimeoutError:
            await _kill(proc)
            return failed_report(request, "budget", f"vetting took longer than {timeout_s:g} s (loading the source, "
                                                    f"the backtest and the look-ahead and warm-up runs); the "
                                                    f"process was killed{_tail(err)}")
        except asyncio.CancelledError:
            await asyncio.shield(_kill(proc))
            raise
        kill_group(proc.pid)  # whatever the strategy left running in its group
        if proc.returncode == 0:
            out.seek(0)
            try:
                answer = json.loads(out.read(MAX_REPORT_BYTES))
            except ValueError:
                answer = None
            if isinstance(answer, dict) and "ok" in answer:
                return answer
        rc = proc.returncode
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
        return failed_report(request, "raises", f"the vetting process {how} without a report{_tail(err)}")


async def _send_and_wait(proc: asyncio.subprocess.Process, payload: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(payload)
        await proc.stdin.drain()
    proc.stdin.close()
    await proc.wait()


def one_line(error: str) -> str:
    """A vetting error in one line for a refusal message: its first line, and when that only announces more (a
    crashed child's "its stderr ends with:" and a traceback) the last line too, which names the exception; the
    whole text stays in the refusal's data."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "refused"
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} ... {lines[-1]}"
    return lines[0]


def _tail(err: Any) -> str:
    """``"; its stderr ends with: ..."`` from the child's stderr file (the last ``STDERR_TAIL_BYTES``)."""
    size = err.seek(0, os.SEEK_END)
    err.seek(max(size - STDERR_TAIL_BYTES, 0))
    text = err.read().decode("utf-8", "replace").strip()
    return f"; its stderr ends with:\n{text}" if text else ""


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the child's group and reap the child (its stdin closed, so nothing else is waited for)."""
    kill_group(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
