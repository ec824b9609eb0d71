"""Live vs backtest: a live strategy's trades and decisions beside a backtest of the same candles, with every
difference named and, where the cause is known, explained.

``compare_runs`` is pure: journal rows in (``trades.list`` TradeRows, ``decision`` events), a ``BacktestResult``
in (``tradebaas.backtest.replay.replay_live`` over the engine's own recorded candles, with the strategy's actual
code and config versions), a ``Comparison`` out. The engine's ``strategy.compare`` runs it and answers the
Comparison's JSON; ``compare(eng, ...)`` (``tb.compare``) asks for it and wraps the answer.

How trades are paired (one row per pair in ``Comparison.trades``):

1. same entry minute and direction;
2. then, among the rest, same entry minute (a ``direction`` difference);
3. then, same direction with entries at most ``max_shift_candles`` candles apart, nearest first (an
   ``entry_minute`` difference);
4. the rest are ``missing_in_backtest`` (live only) or ``extra_in_backtest`` (backtest only).

What counts as explained (anything else is unexplained, with what is known in its ``explanation``):

- ``entry_price``/``exit_price`` within one tick (``ONE_TICK``: the exchange fills at the best bid/ask, the
  backtest at the candle's open);
- ``fee``: when the live fee is the fill model's for the live fills (amount, prices, the exit's liquidity), it
  follows from the pair's other differences, and is explained when they all are;
- a backtest trade entered while the live strategy was not running (``not_running``: stopped, error,
  needs_attention, engine down); an exit difference of a pair during whose life the live strategy was not running
  (it could not move its stop or exit);
- consequences: a trade (or a shifted entry, or a differing decision) on one side while the *other* side was
  still in a position that itself differs. It is explained when every difference of that position is: e.g. the
  backtest still held a trade it entered while the live strategy was stopped, so it skipped the live entry;
- a one-tick entry difference puts the brackets (and a break-even computed from the entry) a tick apart: a stop
  move made on one side only while both hold the pair, and the exit differences that follow it, or an exit whose
  candle passed the bracket by at most one tick, are explained by it.

Decisions are compared per candle (``ts_ms``, the candle start) on the signal and the intents' types, for the
candles both sides decided on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from tradebaas import fillmodel
from tradebaas.analytics.comparison import (
    KINDS,
    ONE_TICK,
    Comparison,
    ComparisonError,
    Difference,
    TradePair,
    format_summary,
    minute_text,
    to_ms,
)
from tradebaas.domain import Liquidity
from tradebaas.instruments import Instrument, get_instrument

if TYPE_CHECKING:
    from tradebaas.backtest.backtester import BacktestResult

__all__ = ["KINDS", "ONE_TICK", "Difference", "TradePair", "Comparison", "ComparisonError", "compare_runs",
           "compare", "format_summary", "backtest_rows"]

_INF = math.inf
_EPS = 1e-9


# -- building one ------------------------------------------------------------------------------------------------


def compare_runs(
    live_trades: list[dict[str, Any]],
    live_decisions: list[dict[str, Any]],
    backtest: BacktestResult,
    *,
    instrument: str | Instrument,
    not_running: Iterable[tuple[int, int | None, str]] = (),
    strategy_id: str = "",
    name: str | None = None,
    since: int | None = None,
    until: int | None = None,
    segments: Iterable[Any] = (),
    max_shift_candles: int = 5,
) -> Comparison:
    """Set the live strategy's trades and decisions beside ``backtest`` (module docstring: pairing, explanations).

    ``live_trades``: TradeRows (``trades.list``); rows that never entered (``failed``, ``pending_entry``) and rows
    entered outside the backtest's candles are left out. ``live_decisions``: the journal's ``decision`` events
    (or their payloads): ``ts_ms`` (candle start), ``signal``, ``intents`` (``[{type, ...}]``). ``backtest``: a
    ``replay_live`` result (``decisions="all"``). ``not_running``: ``(from_ms, to_ms, reason)`` periods when the
    live strategy was not running (``to_ms`` None: until the end). ``segments``: ``replay.Segment`` objects or
    their JSON, for the record. ``since``/``until`` default to the backtest's candles.
    """
    inst = instrument if isinstance(instrument, Instrument) else _instrument(instrument)
    return _Comparer(live_trades, live_decisions, backtest, inst, list(not_running), max_shift_candles).run(
        strategy_id=strategy_id, name=name if name is not None else backtest.strategy, since=since, until=until,
        segments=[s.as_json() if hasattr(s, "as_json") else dict(s) for s in segments])


def backtest_rows(result: BacktestResult) -> list[dict[str, Any]]:
    """A backtest's trades (and its open position, ``state: "open"``) as BacktestTradeRows: the TradeRow keys that
    apply (times in ms), with ``code_version``/``config_version`` when it is a ``replay_live`` result."""
    inst = result.instrument
    rows: list[dict[str, Any]] = []
    for r in result.trades.to_dict("records"):
        versions = result.versions_of(str(r["trade_id"]))
        rows.append({
            "trade_id": str(r["trade_id"]), "instrument": r.get("instrument"), "direction": r["direction"],
            "state": "closed", "amount": float(r["amount"]), "entry_price": float(r["entry_price"]),
            "exit_price": float(r["exit_price"]), "entry_ts_ms": _ms(r["entry_time"]),
            "exit_ts_ms": _ms(r["exit_time"]), "pnl": float(r["pnl"]), "fees": float(r["fees"]),
            "net_pnl": float(r["net_pnl"]), "exit_reason": r["exit_reason"], "currency": r.get("currency"),
            "code_version": versions[0] if versions else None,
            "config_version": versions[1] if versions else None,
        })
    pos = result.open_position
    if pos is not None:
        versions = result.versions_of(pos.trade_id)
        rows.append({
            "trade_id": pos.trade_id, "instrument": inst.name, "direction": str(pos.direction), "state": "open",
            "amount": pos.amount, "entry_price": pos.entry_price, "exit_price": None,
            "entry_ts_ms": int(pos.opened_ts_ms), "exit_ts_ms": None, "pnl": None,
            "fees": fillmodel.fee(inst, pos.amount, pos.entry_price, Liquidity.TAKER), "net_pnl": None,
            "exit_reason": None, "currency": inst.settlement_currency,
            "code_version": versions[0] if versions else None,
            "config_version": versions[1] if versions else None,
        })
    return rows


class _Comparer:
    """One comparison's working state; ``run`` does the steps in dependency order (see the module docstring)."""

    def __init__(self, live_trades: list[dict[str, Any]], live_decisions: list[dict[str, Any]],
                 bt: BacktestResult, inst: Instrument, not_running: list[tuple[int, int | None, str]],
                 max_shift: int) -> None:
        self.bt = bt
        self.inst = inst
        self.tick = float(inst.tick_size)
        candles = bt.candles
        ts = candles.index.as_unit("ms").asi8.tolist() if len(candles) else []
        steps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        self.step = int(pd.Series(steps).mode().iloc[0]) if steps else 60_000
        self.lo = ts[0] if ts else 0
        self.hi = ts[-1] + self.step if ts else 0
        self.candles = {t: row for t, row in zip(ts, candles[["open", "high", "low", "close"]].itertuples(
            index=False, name=None), strict=True)}
        self.n_candles = len(ts)
        self.max_shift = max(0, int(max_shift))
        self.not_running = [(int(a), _INF if b is None else int(b), str(r)) for a, b, r in not_running]
        self.live = sorted((_live_row(r) for r in live_trades if _entered(r)), key=lambda r: r["entry_ts_ms"])
        self.live = [r for r in self.live if self.lo <= r["entry_ts_ms"] < self.hi]
        self.back = backtest_rows(bt)
        self.live_dec: dict[int, tuple[str, tuple[str, ...]]] = {}
        for e in live_decisions:
            p = e["payload"] if isinstance(e.get("payload"), Mapping) else e
            raw_ts = p.get("ts_ms", e.get("ts_ms"))
            if raw_ts is None:
                raise ComparisonError(f"a live decision without ts_ms: {dict(p)!r:.200}")
            t = int(raw_ts)
            if self.lo <= t < self.hi:
                self.live_dec[t] = _decision_key(p.get("signal"), [i.get("type") for i in p.get("intents") or []])
        self.bt_dec = {d.ts_ms: _decision_key(d.signal, [type(i).__name__ for i in d.intents]) for d in bt.decisions}
        self.pairs: list[TradePair] = []
        self.holder: dict[int, TradePair] = {}  # id(row) -> its pair

    # -- steps -----------------------------------------------------------------------------------------------
    def run(self, *, strategy_id: str, name: str, since: int | None, until: int | None,
            segments: list[dict[str, Any]]) -> Comparison:
        self.pairs = self._pair()
        for p in self.pairs:
            for r in (p.live, p.backtest):
                if r is not None:
                    self.holder[id(r)] = p
        self.differing = sorted(t for t in self.live_dec.keys() & self.bt_dec.keys()
                                if self.live_dec[t] != self.bt_dec[t])
        for p in sorted(self.pairs, key=lambda p: p.first_entry_ms):
            p.differences = self._trade_differences(p)
        decision_diffs = [self._decision_difference(t) for t in self.differing]
        differing = [{"ts_ms": t, "live": _decision_json(self.live_dec[t]), "backtest": _decision_json(self.bt_dec[t])}
                     for t in self.differing]
        return Comparison(strategy_id, name, since if since is not None else self.lo,
                          until if until is not None else self.hi, self.n_candles, segments,
                          sorted(self.pairs, key=lambda p: p.first_entry_ms), len(self.live_dec), len(self.bt_dec),
                          differing, decision_diffs)

    def _pair(self) -> list[TradePair]:
        live, back = list(self.live), list(self.back)
        pairs: list[TradePair] = []

        def take(match: Any) -> None:
            for lr in list(live):
                br = next((b for b in back if match(lr, b)), None)
                if br is not None:
                    live.remove(lr)
                    back.remove(br)
                    pairs.append(TradePair(lr, br))

        take(lambda lr, b: self._minute(lr) == self._minute(b) and lr["direction"] == b["direction"])
        take(lambda lr, b: self._minute(lr) == self._minute(b))
        near = sorted(((abs(self._minute(lr) - self._minute(b)), lr["entry_ts_ms"], i, j)
                       for i, lr in enumerate(live) for j, b in enumerate(back)
                       if lr["direction"] == b["direction"]
                       and abs(self._minute(lr) - self._minute(b)) <= self.max_shift * self.step))
        used_l: set[int] = set()
        used_b: set[int] = set()
        for _, _, i, j in near:
            if i not in used_l and j not in used_b:
                used_l.add(i)
                used_b.add(j)
                pairs.append(TradePair(live[i], back[j]))
        pairs += [TradePair(r, None) for i, r in enumerate(live) if i not in used_l]
        pairs += [TradePair(None, r) for j, r in enumerate(back) if j not in used_b]
        return pairs

    # -- trades ----------------------------------------------------------------------------------------------
    def _trade_differences(self, p: TradePair) -> list[Difference]:
        lr, br = p.live, p.backtest
        if lr is None or br is None:
            return [self._unmatched(p)]
        out: list[Difference] = []
        tid = str(lr["trade_id"])
        lm, bm = self._minute(lr), self._minute(br)
        if lr["direction"] != br["direction"]:
            return [Difference("direction", lr["direction"], br["direction"], False,
                               f"at {_hm(lm)} live went {lr['direction']}, the backtest {br['direction']}: the "
                               "strategy decided differently on the same candle", tid, lm)]
        entry = None
        if lm != bm:  # entered on other candles: their prices differ by the market's move, not a fill's
            out.append(self._shifted_entry(p, lm, bm, tid))
        else:
            entry = self._price("entry_price", lr, br, tid, lm)
            if entry is not None:
                out.append(entry)
        out += self._exit_differences(p, entry, tid, out)
        exits = [r["exit_ts_ms"] for r in (lr, br) if r.get("exit_ts_ms") is not None]
        fee = self._fee(p, out, tid, self._floor(max(exits)) if exits else min(lm, bm))  # fees are final at the exit
        if fee is not None:
            out.append(fee)
        return out

    def _price(self, kind: str, lr: dict[str, Any], br: dict[str, Any], tid: str, at: int) -> Difference | None:
        a, b = lr.get(kind), br.get(kind)
        if a is None or b is None or abs(float(a) - float(b)) <= _EPS * max(1.0, abs(float(b))):
            return None
        ticks = abs(float(a) - float(b)) / self.tick
        if ticks <= 1 + 1e-6:
            return Difference(kind, a, b, True, ONE_TICK, tid, at)
        return Difference(kind, a, b, False, f"{ticks:.1f} ticks apart ({self.tick:g} a tick): more than the spread",
                          tid, at)

    def _exit_differences(self, p: TradePair, entry: Difference | None, tid: str,
                          before: list[Difference]) -> list[Difference]:
        lr, br = p.live, p.backtest
        assert lr is not None and br is not None
        le, be = lr.get("exit_ts_ms"), br.get("exit_ts_ms")
        raw: list[tuple[str, Any, Any]] = []
        if le is None or be is None:
            if le is None and be is None:
                return []  # open on both sides
            at = self._floor(int(le if le is not None else be))  # type: ignore[arg-type]  # one is not None
            raw.append(("exit_minute", None if le is None else self._floor(le),
                        None if be is None else self._floor(be)))
        else:
            lx, bx = self._floor(le), self._floor(be)
            at = min(lx, bx)
            if lx != bx:
                raw.append(("exit_minute", lx, bx))
            if (lr.get("exit_reason") or "") != (br.get("exit_reason") or ""):
                raw.append(("exit_reason", lr.get("exit_reason"), br.get("exit_reason")))
            price = self._price("exit_price", lr, br, tid, at)
            if price is not None and price.explained and not raw:
                return [price]  # the same exit, filled within a tick
            if price is not None:
                raw.append(("exit_price", price.live, price.backtest))
        if not raw:
            return []
        explained, why = self._why_exit_differs(p, entry, at, before)
        return [Difference(kind, a, b, explained, why, tid, at) for kind, a, b in raw]

    def _why_exit_differs(self, p: TradePair, entry: Difference | None, at: int,
                          before: list[Difference]) -> tuple[bool, str]:
        lr, br = p.live, p.backtest
        assert lr is not None and br is not None
        start = min(lr["entry_ts_ms"], br["entry_ts_ms"])
        ends = [x for x in (lr.get("exit_ts_ms"), br.get("exit_ts_ms")) if x is not None]
        end = max(ends) if len(ends) == 2 else _INF
        stopped = self._not_running_between(start, end)
        if stopped is not None:
            return True, (f"the live strategy was not running from {_hm(stopped[0])} ({stopped[2]}) while this trade "
                          "was open: it could not move its stop or exit as the backtest did")
        shifted = next((d for d in before if d.kind == "entry_minute"), None)
        if shifted is not None:
            return shifted.explained, f"follows from the entry at another minute: {shifted.explanation}"
        if entry is not None and entry.explained:
            moves = [t for t in self.differing if start <= t + self.step <= min(ends or [_INF])
                     and _only_stop_moves_differ(self.live_dec[t], self.bt_dec[t])]
            if moves:
                return True, (f"the entries are a tick apart ({ONE_TICK}), so the stop move computed from the entry "
                              f"came at {_hm(moves[0])} on one side only; the exit follows from it")
            edge = self._bracket_edge(lr, br, at)
            if edge:
                return True, edge
        return False, self._describe_exit(lr, br)

    def _bracket_edge(self, lr: dict[str, Any], br: dict[str, Any], at: int) -> str:
        """An exit on ``at``'s candle by a bracket the candle passed by at most one tick, the other side's bracket
        being a tick away because the entries are (``ONE_TICK``)."""
        first = [r for r in (lr, br) if r.get("exit_ts_ms") is not None and self._floor(r["exit_ts_ms"]) == at
                 and r.get("exit_reason") in ("sl", "tp")]
        candle = self.candles.get(at)
        if not first or candle is None:
            return ""
        r = first[0]
        o, h, lo, _ = candle
        price = float(r["exit_price"])
        beyond = (price - lo) if price <= o else (h - price)
        if 0 <= beyond <= self.tick * (1 + 1e-6):
            side = "live" if r is lr else "backtest"
            return (f"the entries are a tick apart ({ONE_TICK}), so the brackets are too; the {_hm(at)} candle "
                    f"reached the {side} {r['exit_reason']} at {price:g} by {beyond / self.tick:.0f} tick(s) and "
                    "missed the other side's")
        return ""

    def _describe_exit(self, lr: dict[str, Any], br: dict[str, Any]) -> str:
        def one(r: dict[str, Any]) -> str:
            if r.get("exit_ts_ms") is None:
                return "still open"
            return f"{r.get('exit_reason')} at {_hm(self._floor(r['exit_ts_ms']))} ({r.get('exit_price')})"

        why = f"live exited {one(lr)}, the backtest {one(br)}"
        if lr.get("exit_reason") in ("flatten", "kill", "external", "closed_outside"):
            why += ": the live position was closed from outside the strategy"
        return why

    def _fee(self, p: TradePair, others: list[Difference], tid: str, at: int) -> Difference | None:
        lr, br = p.live, p.backtest
        assert lr is not None and br is not None
        if lr.get("exit_ts_ms") is None or br.get("exit_ts_ms") is None:
            return None  # an open trade's fees are not final
        a, b = float(lr.get("fees") or 0.0), float(br.get("fees") or 0.0)
        if abs(a - b) <= _EPS * max(1.0, abs(b)):
            return None
        model = self._model_fee(lr)
        amounts = "" if abs(float(lr["amount"]) - float(br["amount"])) <= _EPS else (
            f"; the amounts differ: live {lr['amount']} vs backtest {br['amount']}")
        if model is None:
            return Difference("fee", a, b, False, f"the live trade has no fill prices to check its fees by{amounts}",
                              tid, at)
        if abs(model - a) > _EPS * max(1.0, abs(a)):
            return Difference("fee", a, b, False, f"the live fees {a:.10g} are not the fill model's {model:.10g} for "
                              f"the live fills: the exchange charged other rates (give the replay its fees){amounts}",
                              tid, at)
        if not others:
            return Difference("fee", a, b, False, f"fees differ with equal fills{amounts}", tid, at)
        kinds = ", ".join(sorted({d.kind for d in others}))
        if all(d.explained for d in others) and not amounts:
            return Difference("fee", a, b, True, f"follows from the explained {kinds} difference(s): the live fee is "
                              "the fill model's for the live fills", tid, at)
        return Difference("fee", a, b, False, f"follows from the {kinds} difference(s){amounts}", tid, at)

    def _model_fee(self, lr: dict[str, Any]) -> float | None:
        try:
            amount, entry, exit_ = float(lr["amount"]), float(lr["entry_price"]), float(lr["exit_price"])
        except (KeyError, TypeError, ValueError):
            return None
        exit_liq = Liquidity.MAKER if lr.get("exit_reason") == "tp" else Liquidity.TAKER
        return (fillmodel.fee(self.inst, amount, entry, Liquidity.TAKER)
                + fillmodel.fee(self.inst, amount, exit_, exit_liq))

    # -- consequences --------------------------------------------------------------------------------------------
    def _unmatched(self, p: TradePair) -> Difference:
        if p.live is not None:
            r, kind, other = p.live, "missing_in_backtest", "backtest"
        else:
            assert p.backtest is not None
            r, kind, other = p.backtest, "extra_in_backtest", "live"
        at = self._minute(r)
        summary = {"trade_id": r["trade_id"], "direction": r["direction"], "entry_ts_ms": int(r["entry_ts_ms"]),
                   "entry_price": r.get("entry_price")}
        live, back = (summary, None) if p.live is not None else (None, summary)
        if kind == "extra_in_backtest":
            stopped = self._not_running_at(int(r["entry_ts_ms"]))
            if stopped is not None:
                return Difference(kind, live, back, True, f"entered at {_hm(at)} while the live strategy was not "
                                  f"running ({stopped[2]}, from {_hm(stopped[0])})", str(r["trade_id"]), at)
        explained, why = self._consequence(other, int(r["entry_ts_ms"]), p)
        if not why:
            why = self._no_counterpart(r, kind, at)
        return Difference(kind, live, back, explained, why, str(r["trade_id"]), at)

    def _shifted_entry(self, p: TradePair, lm: int, bm: int, tid: str) -> Difference:
        assert p.live is not None and p.backtest is not None
        early, late_side = (p.live, "backtest") if lm < bm else (p.backtest, "live")
        explained, why = False, ""
        if early is p.backtest:
            stopped = self._not_running_at(int(early["entry_ts_ms"]))
            if stopped is not None:
                explained, why = True, (f"the live strategy was not running at {_hm(bm)} ({stopped[2]}); it entered "
                                        f"when it ran again, at {_hm(lm)}")
        if not why:
            explained, why = self._consequence(late_side, int(early["entry_ts_ms"]), p)
        if not why:
            why = f"live entered at {_hm(lm)}, the backtest at {_hm(bm)}: the decisions differ (see the decisions)"
        return Difference("entry_minute", lm, bm, explained, why, tid, min(lm, bm))

    def _consequence(self, side: str, instant: int, effect: TradePair | None) -> tuple[bool, str]:
        """Why ``side`` did not act at ``instant``: it still held a position whose own pair differs."""
        cause = self._held(side, instant)
        if cause is None or cause is effect or not cause.differences:
            return False, ""
        held = cause.live if side == "live" else cause.backtest
        assert held is not None
        first = cause.differences[0]
        if cause.explained:
            return True, (f"the {side} side was still in trade {held['trade_id']} (entered "
                          f"{_hm(self._minute(held))}), itself explained: {first.explanation}")
        return False, (f"follows from trade {held['trade_id']} (entered {_hm(self._minute(held))}), which the {side} "
                       f"side still held: {first.kind} unexplained")

    def _held(self, side: str, instant: int) -> TradePair | None:
        rows = self.live if side == "live" else self.back
        for r in rows:
            exit_ = r.get("exit_ts_ms")
            if r["entry_ts_ms"] < instant <= (_INF if exit_ is None else exit_):
                return self.holder.get(id(r))
        return None

    def _no_counterpart(self, r: dict[str, Any], kind: str, at: int) -> str:
        decided = at - self.step
        if kind == "missing_in_backtest":
            if decided not in self.candles:
                return f"the engine recorded no candle at {_hm(decided)}: the backtest could not decide there"
            return (f"live entered {r['direction']} at {_hm(at)}; the backtest decided "
                    f"{_decision_text(self.bt_dec.get(decided))} on the {_hm(decided)} candle")
        why = (f"the backtest entered {r['direction']} at {_hm(at)}; live decided "
               f"{_decision_text(self.live_dec.get(decided))} on the {_hm(decided)} candle")
        if decided not in self.live_dec:
            why += " (no live decision journaled for that candle)"
        return why

    # -- decisions ---------------------------------------------------------------------------------------------
    def _decision_difference(self, t: int) -> Difference:
        a, b = self.live_dec[t], self.bt_dec[t]
        instant = t + self.step
        live_pair, bt_pair = self._held("live", instant), self._held("backtest", instant)
        explained, why = False, ""
        if live_pair is not None and live_pair is bt_pair and _only_stop_moves_differ(a, b):
            entry = next((d for d in live_pair.differences if d.kind == "entry_price"), None)
            if entry is not None and entry.explained:
                explained, why = True, (f"the stop move is computed from the entry price, and the entries are a tick "
                                        f"apart ({ONE_TICK})")
        elif live_pair is not bt_pair:
            side = "backtest" if bt_pair is not None and (live_pair is None or bt_pair.differences) else "live"
            explained, why = self._consequence(side, instant, None)
            if not why:
                why = "the two sides held different positions"
        if not why:
            why = ("same position on both sides, yet the strategy decided differently: it saw different candles or "
                   "state (warm-up, cooldown, a restart)")
        return Difference("decision", _decision_json(a), _decision_json(b), explained, why, None, t)

    # -- time ------------------------------------------------------------------------------------------------
    def _floor(self, ts: int) -> int:
        return int(ts) // self.step * self.step

    def _minute(self, r: dict[str, Any]) -> int:
        return self._floor(int(r["entry_ts_ms"]))

    def _not_running_at(self, ts: int) -> tuple[int, float, str] | None:
        return next(((a, b, r) for a, b, r in self.not_running if a <= ts < b), None)

    def _not_running_between(self, start: int, end: float) -> tuple[int, float, str] | None:
        return next(((a, b, r) for a, b, r in self.not_running if a < end and start < b), None)


# -- the client side -------------------------------------------------------------------------------------------


def compare(eng: Any, strategy_id: str, since: Any = None, until: Any = None) -> Comparison:
    """``tb.compare(eng, strategy_id, since=None, until=None)``: the engine backtests its own recorded candles with
    the strategy's actual code and config versions over the period (``strategy.compare``) and sets them beside the
    live trades and decisions. ``since``/``until``: ms, ISO text, datetimes or Timestamps (naive = UTC); None:
    the engine's defaults (the strategy's start, now)."""
    if not isinstance(strategy_id, str) or not strategy_id:
        raise ComparisonError(f"strategy_id must be a strategy id string, got {strategy_id!r}")
    params: dict[str, Any] = {"id": strategy_id}
    for key, value in (("since", since), ("until", until)):
        if value is not None:
            params[key] = to_ms(value, key)
    return Comparison.from_json(eng.call("strategy.compare", **params))


# -- helpers -----------------------------------------------------------------------------------------------------


def _instrument(name: str) -> Instrument:
    try:
        return get_instrument(str(name))
    except ValueError as exc:
        raise ComparisonError(str(exc)) from None


def _entered(r: Mapping[str, Any]) -> bool:
    return r.get("entry_ts_ms") is not None and r.get("entry_price") is not None and r.get("state") not in (
        "failed", "pending_entry")


def _live_row(r: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(r)
    row["entry_ts_ms"] = int(row["entry_ts_ms"])
    if row.get("exit_ts_ms") is not None:
        row["exit_ts_ms"] = int(row["exit_ts_ms"])
    row["direction"] = str(row.get("direction") or "").lower()
    return row


def _decision_key(signal: Any, intents: Iterable[Any]) -> tuple[str, tuple[str, ...]]:
    return (str(signal or "none"), tuple(str(i).lower() for i in intents))


def _decision_json(key: tuple[str, tuple[str, ...]] | None) -> dict[str, Any] | None:
    return None if key is None else {"signal": key[0], "intents": list(key[1])}


def _decision_text(key: tuple[str, tuple[str, ...]] | None) -> str:
    if key is None:
        return "nothing (no decision)"
    return f"{key[0]}" + (f" with {', '.join(key[1])}" if key[1] else ", no intents")


def _only_stop_moves_differ(a: tuple[str, tuple[str, ...]], b: tuple[str, tuple[str, ...]]) -> bool:
    strip = tuple(i for i in a[1] if i != "movestop"), tuple(i for i in b[1] if i != "movestop")
    return a[0] == b[0] and strip[0] == strip[1] and a[1] != b[1]


def _ms(value: Any) -> int | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return int(pd.Timestamp(value).value // 1_000_000)


def _hm(ts_ms: float | int) -> str:
    return "the end" if ts_ms == _INF else minute_text(int(ts_ms))


