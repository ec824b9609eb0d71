"""The checks behind vetting a strategy version (``tradebaas.strategies.vet``), as plain functions over candles.

Everything here runs the strategy in this process and returns (or raises) a verdict; nothing reads files or talks
to anyone. A failing check raises ``Refusal`` with the ``refused`` kind of the VetReport contract ("raises",
"api", "budget", "lookahead") and a message a person can act on (which candle, what changed, by how much).

"Signal-only" runs feed a fresh instance every candle with a ``StrategyContext`` that never holds a position
(intents are not executed: no fills, no cooldown, no daily count); they isolate what the strategy computes from
the fill model, so two such runs can be compared decision by decision.
"""

from __future__ import annotations

import math
import numbers
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tradebaas.domain import Candle, Direction
from tradebaas.instruments import Instrument
from tradebaas.strategies.base import Decision, Enter, Exit, MoveStop, StrategyContext, roll_day

SIGNALS = ("long", "short", "none")
#: Floats of decisions (intent fields, scores) are compared to this many significant digits when measuring the
#: warm-up (two runs from different starts converge, an EMA only up to rounding); look-ahead compares exactly.
WARMUP_DIGITS = 6
#: Prescience: signals that foretell the close this many candles later ...
PRESCIENCE_HORIZONS = (1, 2, 3, 5)
#: ... at least this often, over at least ``PRESCIENCE_MIN_SIGNALS`` signals, cannot come from past candles.
PRESCIENCE_MAX_HIT_RATE = 0.8
PRESCIENCE_MIN_SIGNALS = 50
_OWN_FILES = {str(Path(__file__).resolve())}


class Refusal(Exception):
    """A check failed: ``kind`` is the VetReport ``refused`` value, ``details`` a traceback (or "")."""

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details


# --- candles and words ----------------------------------------------------------------------------------------


def candle_list(df: pd.DataFrame) -> list[Candle]:
    """The normalised candle frame as ``Candle`` objects, oldest first (built once, shared by every run)."""
    ts = df.index.as_unit("ms").asi8.tolist()
    cols = (df[k].tolist() for k in ("open", "high", "low", "close", "volume"))
    return [Candle(t, o, h, lo, c, v) for t, o, h, lo, c, v in zip(ts, *cols, strict=True)]


def when(candles: Sequence[Candle], i: int) -> str:
    """``"2025-01-10 12:34 UTC (candle 100 of 3000)"`` for index ``i``."""
    stamp = pd.Timestamp(candles[i].ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    return f"{stamp} (candle {i + 1} of {len(candles)})"


def user_traceback(exc: BaseException) -> str:
    """The traceback of an exception from strategy code, without the vetting frames above it."""
    tb = exc.__traceback__
    while tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()) in _OWN_FILES:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe(decision: Decision) -> str:
    """One decision in words: ``long [Enter(long, 100 USD, sl 0.5 %, tp 0.65 %)]``."""
    parts = []
    for i in decision.intents:
        if isinstance(i, Enter):
            parts.append(f"Enter({i.direction}, {i.notional_usd:g} USD, sl {_pct(i.sl_pct)}, tp {_pct(i.tp_pct)})")
        elif isinstance(i, MoveStop):
            parts.append(f"MoveStop({i.stop_price:g})")
        else:
            parts.append(type(i).__name__)
    return f"{decision.signal} [{', '.join(parts)}]" if parts else str(decision.signal)


def _pct(x: float | None) -> str:
    return "none" if x is None else f"{x:g} %"


# --- what a decision must look like ---------------------------------------------------------------------------


def decision_problem(decision: Any, candle: Candle) -> str | None:
    """Why ``decision`` breaks the strategy API (``strategies/base.py``), or None. The live runner journals the
    decision and turns its intents into orders, so a malformed one must be caught here, not on the exchange."""
    if type(decision) is not Decision and not isinstance(decision, Decision):
        return f"on_candle returned {type(decision).__name__}, not a tradebaas.strategies.base.Decision"
    if decision.ts_ms != candle.ts_ms:
        return f"Decision.ts_ms is {decision.ts_ms!r}, not the candle's start {candle.ts_ms}"
    if decision.signal not in SIGNALS:
        return f"Decision.signal is {decision.signal!r}, not one of {', '.join(SIGNALS)}"
    if not isinstance(decision.intents, tuple | list):
        return f"Decision.intents is {type(decision.intents).__name__}, not a tuple of Enter/MoveStop/Exit"
    for intent in decision.intents:
        if isinstance(intent, Enter):
            if not isinstance(intent.direction, Direction):
                return f"Enter.direction is {intent.direction!r}, not a tradebaas.domain.Direction"
            if not _finite(intent.notional_usd) or intent.notional_usd <= 0:
                return f"Enter.notional_usd is {intent.notional_usd!r}, not a positive number"
            for field in ("sl_pct", "tp_pct"):
                value = getattr(intent, field)
                if value is not None and (not _finite(value) or value < 0):
                    return f"Enter.{field} is {value!r}, not None or a number >= 0"
        elif isinstance(intent, MoveStop):
            if not _finite(intent.stop_price) or intent.stop_price <= 0:
                return f"MoveStop.stop_price is {intent.stop_price!r}, not a positive price"
        elif not isinstance(intent, Exit):
            return f"an intent is {type(intent).__name__}, not Enter, MoveStop or Exit"
    return None


def _finite(x: Any) -> bool:
    if type(x) is float or type(x) is int:
        return math.isfinite(x)
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def decision_key(decision: Decision, digits: int | None = None) -> tuple[Any, ...]:
    """What two runs must agree on: the signal, the intents (type and fields) and the scores (``scores``,
    ``strength``, ``confidence``); not ``indicators`` and ``reason``/``reasons``, which are diagnostics. ``digits``:
    compare floats to that many significant digits (None: exactly)."""
    intents = tuple((type(i).__name__, *(_number(getattr(i, f), digits) for f in i.__slots__ if f != "reason"))
                    for i in decision.intents)
    scores = decision.scores if isinstance(decision.scores, dict) else {}
    return (decision.signal, intents, tuple((k, _number(v, digits)) for k, v in scores.items()),
            _number(decision.strength, digits), _number(decision.confidence, digits))


def _number(x: Any, digits: int | None) -> Any:
    """``x`` made comparable: floats rounded to ``digits`` (NaN equal to NaN), other values as they are when they
    compare plainly, else by ``repr``."""
    kind = type(x)
    if kind is float or (kind is not bool and isinstance(x, numbers.Real) and not isinstance(x, int)):
        f = float(x)
        if f != f or f in (math.inf, -math.inf):
            return repr(f)
        return f if digits is None else float(f"{f:.{digits}g}")
    if kind in (int, str, bool) or x is None or isinstance(x, int | str):
        return x
    return repr(x)


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """The first index where ``a`` and ``b`` differ (including one being shorter), or None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# --- running strategy code ------------------------------------------------------------------------------------


def call(what: str | Callable[[], str], fn: Callable[..., Any], *args: Any) -> Any:
    """Call strategy code; any exception (SystemExit too) becomes ``Refusal("raises")`` saying ``what`` (a text,
    or a function giving it, so the hot path formats nothing)."""
    try:
        return fn(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        text = what if isinstance(what, str) else what()
        raise Refusal("raises", f"{text} raised {type(exc).__name__}: {exc}", user_traceback(exc)) from None


def checked(decision: Any, candle: Candle, where: Callable[[], str]) -> Decision:
    """``decision`` if it keeps the API (``decision_problem``), else ``Refusal("api")`` naming ``where()``."""
    problem = decision_problem(decision, candle)
    if problem is not None:
        raise Refusal("api", f"at {where()}: {problem}")
    return decision


def signal_run(make: Callable[[], Any], candles: Sequence[Candle], instrument: Instrument, step_ms: int,
               start: int = 0, stop: int | None = None, label: str = "a signal-only run") -> list[Decision]:
    """A fresh instance fed ``candles[start:stop]`` with a context that never holds a position: its decisions."""
    strategy = call(f"constructing the strategy for {label}", make)
    context = StrategyContext(instrument)
    call(f"on_start in {label}", strategy.on_start, context)
    stop = len(candles) if stop is None else stop
    out: list[Decision] = []
    on_candle = strategy.on_candle
    for i in range(start, stop):
        candle = candles[i]
        roll_day(context, candle.ts_ms + step_ms)

        def where(i: int = i) -> str:
            return f"{when(candles, i)} in {label}"

        out.append(checked(call(lambda: f"on_candle at {where()}", on_candle, candle, context), candle, where))
    return out


# --- budget ---------------------------------------------------------------------------------------------------


class CallTimer:
    """Times ``on_candle`` calls and stops a run as soon as the budget is certainly broken.

    Refused (``Refusal("budget")``) when the mean or the p99 (nearest rank) of all ``total`` calls is above
    ``budget_ms``, or any call but the first (which pays lazy imports and caches) is above ``hard_ms``. The mean
    and p99 verdicts are raised as early as they are certain (time so far above ``budget_ms * total``; more than
    1 % of calls above the budget), so a slow strategy does not need to be run to the end.
    """

    def __init__(self, total: int, budget_ms: float, hard_ms: float) -> None:
        self.total = max(total, 1)
        self.budget_ms = budget_ms
        self.hard_ms = hard_ms
        self.times_ms: list[float] = []
        self.sum_ms = 0.0
        self.over = 0
        # nearest-rank p99 = sorted[ceil(0.99 n) - 1] is above the budget once this many calls are
        self.over_limit = self.total - math.ceil(0.99 * self.total) + 1

    def record(self, elapsed_ms: float, where: Callable[[], str]) -> None:
        self.times_ms.append(elapsed_ms)
        self.sum_ms += elapsed_ms
        n = len(self.times_ms)
        if n > 1 and elapsed_ms > self.hard_ms:
            raise Refusal("budget", f"on_candle took {elapsed_ms:.1f} ms at {where()}, above the hard limit of "
                                    f"{self.hard_ms:g} ms per call by {elapsed_ms - self.hard_ms:.1f} ms")
        if elapsed_ms > self.budget_ms:
            self.over += 1
            if self.over >= self.over_limit:
                raise Refusal("budget", f"p99 time per candle is above the budget of {self.budget_ms:g} ms: "
                                        f"{self.over} of {n} calls so far took longer (slowest "
                                        f"{max(self.times_ms):.1f} ms, by {max(self.times_ms) - self.budget_ms:.1f}"
                                        f" ms), more than 1 % of the {self.total} candles")
        if self.sum_ms > self.budget_ms * self.total:
            raise Refusal("budget", f"mean time per candle is above the budget of {self.budget_ms:g} ms: "
                                    f"{n} calls already took {self.sum_ms:.0f} ms, the budget of all "
                                    f"{self.total} candles (so far {self.sum_ms / n:.1f} ms per call, "
                                    f"{self.sum_ms / n - self.budget_ms:.1f} ms over)")

    def summary(self) -> dict[str, float]:
        """``{mean, p99, max}`` in ms over the calls so far (zeros when none)."""
        if not self.times_ms:
            return {"mean": 0.0, "p99": 0.0, "max": 0.0}
        ordered = sorted(self.times_ms)
        p99 = ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]
        return {"mean": round(self.sum_ms / len(ordered), 4), "p99": round(p99, 4), "max": round(ordered[-1], 4)}


class TimedStrategy:
    """A strategy instance as the backtester sees it, with every ``on_candle`` timed and its answer checked.

    Attributes are read from and written to the wrapped instance (the backtester sets ``verbose_skips``), so the
    backtest runs the strategy exactly as it would run it unwrapped.
    """

    def __init__(self, strategy: Any, timer: CallTimer, candles: Sequence[Candle]) -> None:
        object.__setattr__(self, "_strategy", strategy)
        object.__setattr__(self, "_timer", timer)
        object.__setattr__(self, "_candles", candles)
        object.__setattr__(self, "_index", 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._strategy, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._strategy, name, value)

    def on_start(self, context: StrategyContext) -> None:
        call("on_start in the backtest", self._strategy.on_start, context)

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        i = self._index
        object.__setattr__(self, "_index", i + 1)

        def where() -> str:
            return f"{when(self._candles, i)} in the backtest"

        started = time.perf_counter()
        decision = call(lambda: f"on_candle at {where()}", self._strategy.on_candle, candle, context)
        self._timer.record((time.perf_counter() - started) * 1000.0, where)
        return checked(decision, candle, where)


# --- look-ahead -----------------------------------------------------------------------------------------------


def cut_points(n: int, cuts: int) -> list[int]:
    """``cuts`` prefix lengths spread evenly over ``n`` candles (distinct, each in [1, n - 1])."""
    if n < 2 or cuts <= 0:
        return []
    return sorted({min(max(n * j // (cuts + 1), 1), n - 1) for j in range(1, cuts + 1)})


def check_lookahead(make: Callable[[], Any], candles: Sequence[Candle], instrument: Instrument, step_ms: int,
                    full: Sequence[Decision], cuts: int) -> None:
    """Refuse ("lookahead") a strategy whose decisions on a candle depend on candles after it.

    1. Truncation: for each cut ``k`` a fresh instance runs on ``candles[:k]``; its decisions must equal the first
       ``k`` of ``full``, a signal-only run over all candles by an instance of a freshly loaded module (the caller
       gives it), while ``make`` builds instances of the module the backtest ran in. This catches a strategy that
       finds later candles through the feed, and one whose state outside the instance (class or module
       attributes) carries candles from one run into the next: a fresh instance must decide as if it were the
       first. If two runs on the same prefix disagree, the strategy is not reproducible (randomness, the clock) and
       is refused for that, since look-ahead cannot be told from chance then.
    2. Prescience: a strategy that reads later prices from elsewhere (the data file itself, the network) decides
       the same on every prefix, so truncation cannot see it; but its signals foretell the next closes far better
       than any decision from past candles can: refused when ``long``/``short`` signals match the direction of
       the close 1, 2, 3 or 5 candles later in at least 80 % of at least 50 cases (chance is about 50 %, a good
       1-minute strategy a few points more).
    """
    full_keys = [decision_key(d) for d in full]
    for k in cut_points(len(candles), cuts):
        label = f"a run on the first {k} candles"
        cut = signal_run(make, candles, instrument, step_ms, 0, k, label)
        j = first_difference([decision_key(d) for d in cut], full_keys[:k])
        if j is None:
            continue
        again = signal_run(make, candles, instrument, step_ms, 0, k, f"a second {label}")
        r = first_difference([decision_key(d) for d in again], [decision_key(d) for d in cut])
        if r is not None:
            raise Refusal("lookahead", f"its decisions are not reproducible: two runs on the same first {k} "
                                       f"candles decide differently at {when(candles, r)} ({describe(cut[r])} vs "
                                       f"{describe(again[r])}); look-ahead cannot be ruled out. Use no randomness "
                                       f"without a fixed seed and no clock but the candle's ts_ms.")
        raise Refusal("lookahead", f"its decision at {when(candles, j)} depends on later candles: a run with the "
                                   f"candles up to {when(candles, k - 1)} decides {describe(cut[j])}, the first run "
                                   f"over all {len(candles)} candles {describe(full[j])} (state kept outside the "
                                   f"instance, in the class or module, counts: a new instance must decide as if it "
                                   f"were the first)")
    message = prescience(full, [c.close for c in candles])
    if message is not None:
        raise Refusal("lookahead", message)


def prescience(decisions: Sequence[Decision], closes: Sequence[float],
               horizons: Sequence[int] = PRESCIENCE_HORIZONS) -> str | None:
    """Why the signals look like they know later closes (see ``check_lookahead``), or None."""
    n = min(len(decisions), len(closes))
    for h in horizons:
        hits = count = 0
        for i in range(n - h):
            sign = {"long": 1, "short": -1}.get(decisions[i].signal, 0)
            move = closes[i + h] - closes[i]
            if sign == 0 or move == 0:
                continue
            count += 1
            hits += (move > 0) == (sign > 0)
        if count >= PRESCIENCE_MIN_SIGNALS and hits >= PRESCIENCE_MAX_HIT_RATE * count:
            return (f"its long/short signals foretell the close {h} candle{'s' if h > 1 else ''} later in {hits} "
                    f"of {count} cases ({hits / count:.0%}; chance is about 50 %): decisions made from past "
                    f"candles cannot do that, so it reads later prices from somewhere (a data file, the network)")
    return None


# --- warm-up --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarmUp:
    """The measured warm-up: ``candles`` of history needed; ``settled`` False when it could not be confirmed (the
    decisions of some run still depended on its start near the end of the data); ``note`` says how it was found."""

    candles: int
    settled: bool
    note: str


def measure_warmup(make: Callable[[], Any], candles: Sequence[Candle], instrument: Instrument, step_ms: int,
                   full: Sequence[Decision], starts: int = 12, confirm: int | None = None) -> WarmUp:
    """The smallest history ``w`` after which the strategy's decisions no longer depend on where history starts.

    Algorithm: the reference is ``full``, a signal-only run from the very first candle. For ``starts`` start
    candles ``s`` spread over the data before its last ``confirm`` candles (default a quarter of the data, at most
    1000), a fresh instance runs from ``s`` to the end; its warm-up is the number of candles from ``s`` up to and
    including its last decision that differs from the reference (``decision_key``: signal, intents and scores,
    floats to 6 significant digits), so every later decision equals the reference's. The answer is the largest
    over the starts. It is *settled* when every run agreed with the reference over at least the last
    ``confirm`` candles (and the largest warm-up fits in the earliest run's span before them).

    Comparing each run over all the data after its start (rather than one window) makes a borderline decision
    that flips because an indicator was seeded differently count, and needs no assumption that more history
    always helps; several starts sample different market states at the start. Limits: it is measured on this data
    (a condition that never happens here can need more history elsewhere), with decisions of a position-free
    context. A strategy whose decisions never settle (it keeps all-time state) gets the longest history tried,
    with ``settled=False`` and a note saying so.
    """
    n = len(candles)
    confirm = confirm if confirm is not None else min(1000, max(n // 4, 1))
    room = n - confirm  # start candles lie in [1, room)
    if room < 2 or starts < 1:
        return WarmUp(0, False, f"too few candles ({n}) to measure the warm-up")
    points = sorted({max(room * j // (starts + 1), 1) for j in range(1, starts + 1)})
    reference = [decision_key(d, WARMUP_DIGITS) for d in full]
    needed: list[int] = []
    unsettled: list[str] = []
    for s in points:
        run = signal_run(make, candles, instrument, step_ms, s, n, f"a warm-up run from candle {s + 1}")
        last = -1
        for offset, decision in enumerate(run):
            if decision_key(decision, WARMUP_DIGITS) != reference[s + offset]:
                last = offset
        needed.append(last + 1)
        if s + last + 1 > room:
            unsettled.append(f"the run from {when(candles, s)} still differed at {when(candles, s + last)}")
    warm = max(needed)
    span = room - points[0]
    if unsettled or warm > span:
        return WarmUp(max(warm, span), False,
                      f"its decisions never stopped depending on where the history starts ({'; '.join(unsettled)})"
                      f": warm-up set to the longest history tried, {max(warm, span)} candles")
    return WarmUp(warm, True, f"largest of {len(points)} runs from different starts, each compared with the "
                              f"run from the first candle up to the end of the data")
