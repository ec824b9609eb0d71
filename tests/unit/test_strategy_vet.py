"""Vetting a strategy version before the engine accepts it: each kind of bad strategy is refused with the right
``refused`` kind and a readable error; good ones pass with a measured warm-up. Real strategies, real candles
(the bundled data), a real child process for the subprocess entry point."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import tradebaas.strategies.razor
from tests.conftest import wait_for
from tradebaas.backtest.data import load_default
from tradebaas.strategies.loader import source_version
from tradebaas.strategies.vet import VetReport, one_line, vet_in_subprocess, vet_request, vet_source

N_CANDLES = 3000
HEADER = textwrap.dedent('''
    from collections import deque
    from tradebaas.domain import Direction
    from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, Param
''')


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return load_default().iloc[-N_CANDLES:]


def strategy(body: str, name: str = "probe", params: str = "()") -> str:
    """A strategy class source around ``body`` (the methods, indented by 4)."""
    return HEADER + textwrap.dedent(f'''
        class Probe(BaseStrategy):
            name = "{name}"
            params = {params}
    ''') + textwrap.indent(textwrap.dedent(body), "    ")


def refused(report: VetReport, kind: str, *words: str) -> str:
    assert report.refused == kind and not report.ok, report.to_json()
    assert report.error is not None
    for word in words:
        assert word in report.error, f"{word!r} not in:\n{report.error}"
    return report.error


SMA_CROSS = strategy('''
    def __init__(self, config=None):
        super().__init__(config)
        self.fast = deque(maxlen=self.config["fast"])
        self.slow = deque(maxlen=self.config["slow"])
        self.above = None

    def on_candle(self, candle, context):
        self.fast.append(candle.close)
        self.slow.append(candle.close)
        if len(self.slow) < self.slow.maxlen:
            return Decision(candle.ts_ms, "none", {}, {}, ("warming up",), (), "warming up")
        f, s = sum(self.fast) / len(self.fast), sum(self.slow) / len(self.slow)
        above, crossed = f > s, self.above is not None and (f > s) != self.above
        self.above = above
        direction = Direction.LONG if above else Direction.SHORT
        scores = {"gap": (f - s) / s * 100}
        if not crossed:
            return Decision(candle.ts_ms, "none", {}, scores, ("no cross",))
        intents = (Exit("flip"), Enter(direction, 100.0, None, None, "cross")) if context.position else (
            Enter(direction, 100.0, None, None, "cross"),)
        return Decision(candle.ts_ms, str(direction), {}, scores, ("cross",), intents)
''', name="sma_cross", params='(Param("fast", int, 10, 1, 500), Param("slow", int, 40, 2, 2000))')


def test_the_builtin_razor_passes_and_needs_at_least_its_slow_ema_of_history(candles: pd.DataFrame) -> None:
    source = inspect.getsource(tradebaas.strategies.razor)
    report = vet_source(source, candles, data="bundled")
    assert report.ok and report.refused is None and report.error is None, report.error
    assert (report.name, report.class_name, report.version) == ("razor", "Razor", source_version(source))
    assert report.candles == report.decisions == N_CANDLES and report.entries > 0
    assert 0 < report.per_candle_ms["mean"] <= report.per_candle_ms["p99"] <= report.per_candle_ms["max"]
    assert report.warmup_candles >= 21 and report.warmup_settled
    assert report.data.startswith(f"bundled: {N_CANDLES} candles 2025-")
    assert json.loads(report.to_json())["warmup_candles"] == report.warmup_candles


def test_a_moving_average_crossover_needs_about_its_slow_period_of_history(candles: pd.DataFrame) -> None:
    report = vet_source(SMA_CROSS, candles)
    assert report.ok, report.error
    assert 39 <= report.warmup_candles <= 42 and report.warmup_settled, report.to_json()


def test_a_strategy_that_never_forgets_its_start_gets_the_longest_history_and_says_so(candles: pd.DataFrame) -> None:
    counting = strategy('''
        def __init__(self, config=None):
            super().__init__(config)
            self.n = 0

        def on_candle(self, candle, context):
            self.n += 1
            return Decision(candle.ts_ms, "none", {}, {"seen": float(self.n)}, ())
    ''')
    report = vet_source(counting, candles)
    assert report.ok and not report.warmup_settled
    assert report.warmup_candles >= N_CANDLES // 2
    assert any("never stopped depending on where the history starts" in note for note in report.notes)


def test_a_source_that_fails_to_import_is_refused_with_its_traceback(candles: pd.DataFrame) -> None:
    error = refused(vet_source("import no_such_module_for_vetting\n", candles), "import",
                    "ModuleNotFoundError", "Traceback", "no_such_module_for_vetting")
    assert error.splitlines()[0].startswith("<strategy ")


def test_a_strategy_that_raises_on_its_100th_candle_is_refused_naming_the_candle(candles: pd.DataFrame) -> None:
    source = strategy('''
        def __init__(self, config=None):
            super().__init__(config)
            self.n = 0

        def on_candle(self, candle, context):
            self.n += 1
            if self.n == 100:
                raise RuntimeError("the hundredth candle")
            return Decision(candle.ts_ms, "none", {}, {}, ())
    ''')
    error = refused(vet_source(source, candles), "raises", "RuntimeError: the hundredth candle",
                    f"(candle 100 of {N_CANDLES}) in the backtest", 'raise RuntimeError("the hundredth candle")')
    assert "vet_checks.py" not in error  # the traceback starts in the strategy's code


@pytest.mark.parametrize(("body", "words"), [
    ("class Probe:\n    name = 'probe'\n    params = ()\n", ("expected one strategy class",)),
    ("class Probe:\n    name = 'probe'\n    params = ()\n    def __init__(self, config):\n        self.config = config\n"
     "    def on_candle(self, candle, context):\n        return None\n", ("`on_start(context)` is missing",)),
    (strategy("def on_candle(self, candle, context):\n    return None\n", params="('x',)"), ("tuple of",)),
    (strategy("def on_candle(self, candle, context):\n    return 'long'\n"),
     ("on_candle returned str, not a tradebaas.strategies.base.Decision", "(candle 1 of")),
    (strategy("def on_candle(self, candle, context):\n"
              "    return Decision(candle.ts_ms, 'long', {}, {}, (), ('buy',))\n"),
     ("an intent is str, not Enter, MoveStop or Exit",)),
    (strategy("def on_candle(self, candle, context):\n"
              "    return Decision(candle.ts_ms, 'long', {}, {}, (), (Enter(Direction.LONG, float('nan'), 1, 1),))\n"),
     ("Enter.notional_usd is nan, not a positive number",)),
])
def test_a_class_that_breaks_the_strategy_api_is_refused_saying_how(candles: pd.DataFrame, body: str,
                                                                     words: tuple[str, ...]) -> None:
    refused(vet_source(body, candles), "api", *words)


def test_a_strategy_slower_than_the_budget_is_refused_saying_by_how_much(candles: pd.DataFrame) -> None:
    slow = strategy('''
        def on_candle(self, candle, context):
            import time
            time.sleep(0.008)
            return Decision(candle.ts_ms, "none", {}, {}, ())
    ''')
    refused(vet_source(slow, candles, budget_ms=5.0), "budget", "p99 time per candle is above the budget of 5 ms",
            "calls so far took longer", "by ")
    stall = strategy('''
        def __init__(self, config=None):
            super().__init__(config)
            self.n = 0

        def on_candle(self, candle, context):
            import time
            self.n += 1
            if self.n == 50:
                time.sleep(0.2)
            return Decision(candle.ts_ms, "none", {}, {}, ())
    ''')
    refused(vet_source(stall, candles, budget_ms=5.0, hard_budget_ms=100.0), "budget",
            "above the hard limit of 100 ms per call by", "(candle 50 of")


def test_a_slow_strategy_gets_look_ahead_and_warm_up_on_fewer_candles_and_the_report_says_so(
        candles: pd.DataFrame) -> None:
    slowish = strategy('''
        def on_candle(self, candle, context):
            import time
            time.sleep(0.0002)
            return Decision(candle.ts_ms, "none", {}, {}, ())
    ''')
    report = vet_source(slowish, candles.iloc[-1000:], work_s=0.3)
    assert report.ok and report.candles == 1000, report.error
    assert any(note.startswith("look-ahead and warm-up checked on the last 500 candles only") for note in report.notes)


def test_a_strategy_that_reads_the_next_close_from_the_data_file_is_refused_as_looking_ahead(
        candles: pd.DataFrame) -> None:
    cheat = strategy('''
        def on_candle(self, candle, context):
            nxt = _next_closes().get(candle.ts_ms)
            if nxt is None or nxt == candle.close:
                return Decision(candle.ts_ms, "none", {}, {}, ())
            direction = Direction.LONG if nxt > candle.close else Direction.SHORT
            return Decision(candle.ts_ms, str(direction), {}, {}, (), (Enter(direction, 100.0, 0.5, 0.5),))
    ''') + textwrap.dedent('''
        _CACHE = {}

        def _next_closes():
            if not _CACHE:
                import pandas as pd
                from tradebaas.backtest.data import default_path
                raw = pd.read_csv(default_path())
                ts = (raw["timestamp"] * 1000).astype("int64").tolist()
                _CACHE.update(zip(ts[:-1], raw["close"].tolist()[1:]))
            return _CACHE
    ''')
    refused(vet_source(cheat, candles), "lookahead", "foretell the close 1 candle later", "chance is about 50 %")


def test_state_shared_between_instances_that_leaks_later_candles_is_refused_as_looking_ahead(
        candles: pd.DataFrame) -> None:
    leak = strategy('''
        seen = {}  # class level: shared by every instance, so a later instance knows the "future"

        def on_candle(self, candle, context):
            Probe.seen[candle.ts_ms] = candle.close
            later = Probe.seen.get(candle.ts_ms + 60_000)
            signal = "none" if later is None else ("long" if later > candle.close else "short")
            return Decision(candle.ts_ms, signal, {}, {}, ())
    ''')
    refused(vet_source(leak, candles), "lookahead", "depends on later candles", "with the candles up to")


def test_a_strategy_that_is_not_reproducible_is_refused(candles: pd.DataFrame) -> None:
    noisy = strategy('''
        def on_candle(self, candle, context):
            import random
            return Decision(candle.ts_ms, "long" if random.random() < 0.3 else "none", {}, {}, ())
    ''')
    refused(vet_source(noisy, candles), "lookahead", "not reproducible", "fixed seed")


def test_recorded_data_with_too_few_candles_falls_back_to_the_bundled_data(tmp_path: Path) -> None:
    report = vet_request({"source": SMA_CROSS, "max_candles": 1500,
                          "data": {"kind": "recorded", "home": str(tmp_path), "instrument": "BTC_USDC-PERPETUAL"}})
    assert report.ok and report.candles == 1500
    assert "bundled" in report.data and "recorded 0 candles of BTC_USDC-PERPETUAL, fewer than 500" in report.data
    folder = tmp_path / "data" / "candles" / "BTC_USDC-PERPETUAL"
    folder.mkdir(parents=True)
    recorded = load_default().iloc[:800]
    recorded.insert(0, "timestamp", recorded.index.as_unit("ms").asi8)
    recorded.to_parquet(folder / "2025-01-07.parquet", index=False)  # the recorder's layout
    report = vet_request({"source": SMA_CROSS,
                          "data": {"kind": "recorded", "home": str(tmp_path), "instrument": "BTC_USDC-PERPETUAL"}})
    assert report.ok and report.candles == 800
    assert report.data.startswith("the engine's recorded BTC_USDC-PERPETUAL candles: 800 candles 2025-01-07")


def _write_candles(tmp_path: Path, n: int) -> str:
    path = tmp_path / "candles.csv"
    load_default().iloc[-n:].to_csv(path)
    return str(path)


def test_the_subprocess_answers_the_report_even_when_the_strategy_prints(tmp_path: Path) -> None:
    chatty = SMA_CROSS.replace("        self.fast.append(candle.close)",
                               "        print('candle', candle.ts_ms)\n        self.fast.append(candle.close)")
    report = asyncio.run(vet_in_subprocess(
        {"source": chatty, "data": {"kind": "file", "path": _write_candles(tmp_path, 1200)}}, timeout_s=120))
    assert report["ok"] is True and report["name"] == "sma_cross" and report["candles"] == 1200, report
    assert report["data"].startswith("file ")


def test_a_strategy_that_hangs_at_import_is_killed_with_its_process_group_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    hang = textwrap.dedent(f'''
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("loading forever", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    ''')
    report = asyncio.run(vet_in_subprocess(
        {"source": hang, "data": {"kind": "file", "path": _write_candles(tmp_path, 600)}}, timeout_s=8))
    assert report["refused"] == "budget" and report["ok"] is False
    assert "vetting took longer than 8 s" in report["error"] and "loading forever" in report["error"]
    assert report["version"] == source_version(hang)
    grandchild = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1].split()[0] == "Z"  # killed, not reaped

    wait_for(gone, timeout=10, what="the strategy's own child process to be killed with the group")


def test_a_process_the_strategy_leaves_running_outside_the_group_does_not_hold_up_the_report(tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    escaping = textwrap.dedent(f'''
        import subprocess, sys
        _child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        open({str(pid_file)!r}, "a").write(f"{{_child.pid}}\\n")  # vetting loads the source more than once
    ''') + SMA_CROSS
    try:
        report = asyncio.run(vet_in_subprocess(
            {"source": escaping, "data": {"kind": "file", "path": _write_candles(tmp_path, 1200)}}, timeout_s=60))
        assert report["ok"] is True, report
    finally:
        for pid in pid_file.read_text().split():
            os.kill(int(pid), signal.SIGKILL)


def test_a_child_that_dies_is_refused_as_raising_with_the_tail_of_its_stderr() -> None:
    dying = "import os, sys\nprint('about to vanish', file=sys.stderr, flush=True)\nos._exit(3)\n"
    report = asyncio.run(vet_in_subprocess({"source": dying}, timeout_s=60))
    assert report["refused"] == "raises"
    assert "exited with status 3 without a report" in report["error"] and "about to vanish" in report["error"]


def test_a_malformed_request_is_one_line_on_stderr_and_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "tradebaas.strategies.vet"], input='{"name": "x"}',
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("tradebaas vet: bad request: the vetting request must be a JSON object with a "
                                   "string 'source'")
    report = asyncio.run(vet_in_subprocess({"source": SMA_CROSS, "data": {"kind": "nope"}}, timeout_s=60))
    assert report["refused"] == "raises" and "vetting data must be" in report["error"]


def test_a_refusal_names_the_exception_when_the_error_opens_with_an_announcement() -> None:
    crashed = ("the vetting process exited with code 1; its stderr ends with:\nTraceback (most recent call last):\n"
               '  File "x.py", line 3, in <module>\nMemoryError: out of memory\n')
    assert one_line(crashed) == ("the vetting process exited with code 1; its stderr ends with: ... "
                                 "MemoryError: out of memory")
    assert one_line("decide raised ValueError: bad\n  at line 4") == "decide raised ValueError: bad"
    assert one_line("\n \n") == "refused"
