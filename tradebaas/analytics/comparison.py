"""The result of comparing a live strategy with its backtest: ``Comparison`` and its parts, as Python objects and
as the ``strategy.compare`` JSON, with the views a notebook and the CLI show (docs/strategies.md, "Live vs backtest").

Building one is ``tradebaas.analytics.compare.compare_runs``'s job; this module only holds, reads, writes and shows
it, so the CLI and the notebook side can read an engine's answer without the comparison machinery.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tradebaas.errors import UserError

__all__ = ["KINDS", "ONE_TICK", "ComparisonError", "Difference", "TradePair", "Comparison", "format_summary",
           "minute_text", "to_ms"]

KINDS: tuple[str, ...] = ("entry_minute", "direction", "entry_price", "exit_price", "exit_minute", "exit_reason",
                          "fee", "missing_in_backtest", "extra_in_backtest", "decision")
ONE_TICK = "the exchange fills at the best bid/ask, the backtest at the candle's open: within one tick"


class ComparisonError(UserError):
    """A comparison cannot be built or read (bad input rows, a malformed ``strategy.compare`` answer)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One way live and backtest differ. ``live``/``backtest``: the two values (ms for minutes, prices, fees,
    reasons; a small dict for a missing trade or a decision; None where a side has nothing)."""

    kind: str
    live: Any
    backtest: Any
    explained: bool
    explanation: str
    trade_id: str | None = None
    ts_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.trade_id is not None:
            out["trade_id"] = self.trade_id
        if self.ts_ms is not None:
            out["ts_ms"] = int(self.ts_ms)
        out.update(live=self.live, backtest=self.backtest, explained=self.explained, explanation=self.explanation)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Difference:
        _need(d, ("kind", "live", "backtest", "explained", "explanation"), "a Difference")
        ts = d.get("ts_ms")
        return cls(str(d["kind"]), d["live"], d["backtest"], bool(d["explained"]), str(d["explanation"]),
                   d.get("trade_id"), None if ts is None else int(ts))


@dataclass(slots=True)
class TradePair:
    """A live trade and its backtest counterpart (either may be None) with their differences."""

    live: dict[str, Any] | None
    backtest: dict[str, Any] | None
    differences: list[Difference] = field(default_factory=list)

    @property
    def first_entry_ms(self) -> int:
        return min(int(r["entry_ts_ms"]) for r in (self.live, self.backtest) if r is not None)

    @property
    def explained(self) -> bool:
        return all(d.explained for d in self.differences)

    def to_json(self) -> dict[str, Any]:
        return {"live": self.live, "backtest": self.backtest, "differences": [d.to_json() for d in self.differences]}


@dataclass(slots=True)
class Comparison:
    """Live vs backtest of one strategy over a period (the ``strategy.compare`` answer).

    ``summary`` (dict), ``trades`` (side-by-side DataFrame), ``differences`` (DataFrame), ``unexplained`` (list of
    ``Difference``); ``to_json``/``from_json`` give and read the RPC's JSON; in a notebook it shows its summary and
    its differences table.
    """

    strategy_id: str
    name: str
    since: int | None
    until: int | None
    candles: int
    segments: list[dict[str, Any]]
    pairs: list[TradePair]
    decisions_live: int
    decisions_backtest: int
    differing_decisions: list[dict[str, Any]]
    decision_differences: list[Difference]

    # -- views ---------------------------------------------------------------------------------------------------
    @property
    def all_differences(self) -> list[Difference]:
        """Every difference (trades' and decisions'), in time order."""
        diffs = [d for p in self.pairs for d in p.differences] + list(self.decision_differences)
        return sorted(diffs, key=lambda d: (d.ts_ms if d.ts_ms is not None else -1))

    @property
    def unexplained(self) -> list[Difference]:
        return [d for d in self.all_differences if not d.explained]

    @property
    def summary(self) -> dict[str, int]:
        diffs = self.all_differences
        return {
            "trades_live": sum(p.live is not None for p in self.pairs),
            "trades_backtest": sum(p.backtest is not None for p in self.pairs),
            "matched": sum(p.live is not None and p.backtest is not None for p in self.pairs),
            "differences": len(diffs),
            "unexplained": sum(not d.explained for d in diffs),
        }

    @property
    def trades(self) -> pd.DataFrame:
        """One row per pair: ``live_*`` and ``backtest_*`` columns side by side, then the differences' kinds and
        whether all of them are explained."""
        cols = ("trade_id", "direction", "entry_time", "exit_time", "entry_price", "exit_price", "amount",
                "exit_reason", "fees", "pnl", "code_version", "config_version")
        rows = []
        for p in self.pairs:
            row: dict[str, Any] = {}
            for side, r in (("live", p.live), ("backtest", p.backtest)):
                for c in cols:
                    key = {"entry_time": "entry_ts_ms", "exit_time": "exit_ts_ms"}.get(c, c)
                    v = r.get(key) if r is not None else None
                    if c.endswith("_time"):
                        v = pd.NaT if v is None else pd.Timestamp(int(v), unit="ms", tz="UTC")
                    row[f"{side}_{c}"] = v
            row["differences"] = ", ".join(d.kind for d in p.differences)
            row["explained"] = p.explained
            rows.append(row)
        columns = [f"{s}_{c}" for s in ("live", "backtest") for c in cols] + ["differences", "explained"]
        return pd.DataFrame(rows, columns=columns)

    @property
    def differences(self) -> pd.DataFrame:
        """Every difference: time, kind, trade, the two values, explained, explanation."""
        rows = [{"time": pd.NaT if d.ts_ms is None else pd.Timestamp(d.ts_ms, unit="ms", tz="UTC"),
                 "kind": d.kind, "trade_id": d.trade_id, "live": _show(d.kind, d.live),
                 "backtest": _show(d.kind, d.backtest), "explained": d.explained, "explanation": d.explanation}
                for d in self.all_differences]
        return pd.DataFrame(rows, columns=["time", "kind", "trade_id", "live", "backtest", "explained",
                                           "explanation"])

    # -- JSON ----------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The ``strategy.compare`` answer (docs/strategies.md, "Live vs backtest")."""
        return {
            "strategy_id": self.strategy_id, "name": self.name, "since": self.since, "until": self.until,
            "candles": self.candles, "segments": copy.deepcopy(self.segments),
            "trades": [p.to_json() for p in self.pairs],
            "decisions": {"live": self.decisions_live, "backtest": self.decisions_backtest,
                          "differing": copy.deepcopy(self.differing_decisions)},
            "differences": [d.to_json() for d in self.all_differences],
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        """Read a ``strategy.compare`` answer; a malformed one is a ``ComparisonError`` naming what is missing."""
        if not isinstance(data, Mapping):
            raise ComparisonError(f"not a Comparison: expected an object, got {type(data).__name__}")
        _need(data, ("strategy_id", "trades", "decisions", "differences"), "a Comparison")
        pairs = [TradePair(t.get("live"), t.get("backtest"),
                           [Difference.from_json(d) for d in t.get("differences") or []])
                 for t in data["trades"]]
        dec = data["decisions"]
        if not isinstance(dec, Mapping) or not isinstance(data["trades"], list):
            raise ComparisonError("not a Comparison: decisions must be an object and trades a list")
        everything = [Difference.from_json(d) for d in data["differences"]]  # checks every entry's shape
        decision_diffs = [d for d in everything if d.kind == "decision"]
        return cls(str(data["strategy_id"]), str(data.get("name") or ""), data.get("since"), data.get("until"),
                   int(data.get("candles") or 0), list(data.get("segments") or []), pairs,
                   int(dec.get("live") or 0), int(dec.get("backtest") or 0), list(dec.get("differing") or []),
                   decision_diffs)

    # -- notebooks -----------------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        s = self.summary
        head = (f"<b>{html.escape(self.name)}</b> ({html.escape(self.strategy_id)}) live vs backtest, "
                f"{html.escape(_period(self.since, self.until))}, {self.candles} candles")
        table = pd.DataFrame([s]).to_html(index=False)
        diffs = self.differences
        body = diffs.to_html(index=False) if len(diffs) else "<p>no differences</p>"
        return f"<div><p>{head}</p>{table}{body}</div>"

    def __repr__(self) -> str:
        return format_summary(self)


def format_summary(c: Comparison) -> str:
    """The lines ``tradebaas strategy compare ID`` prints: the counts, then one line per unexplained difference."""
    s = c.summary
    lines = [
        f"{c.name} ({c.strategy_id}) live vs backtest, {_period(c.since, c.until)}, {c.candles} candles",
        f"trades: live {s['trades_live']}, backtest {s['trades_backtest']}, matched {s['matched']}",
        f"decisions: live {c.decisions_live}, backtest {c.decisions_backtest}, differing {len(c.differing_decisions)}",
        f"differences: {s['differences']}, unexplained: {s['unexplained']}",
    ]
    for d in c.unexplained:
        when = minute_text(d.ts_ms) if d.ts_ms is not None else "?"
        trade = f" trade {d.trade_id}" if d.trade_id else ""
        lines.append(f"  {when} {d.kind}{trade}: live {_show(d.kind, d.live)}, backtest "
                     f"{_show(d.kind, d.backtest)}: {d.explanation}")
    return "\n".join(lines)


# -- helpers -----------------------------------------------------------------------------------------------------


def _need(d: Mapping[str, Any], keys: Iterable[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise ComparisonError(f"not {what}: expected an object, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ComparisonError(f"not {what}: missing {', '.join(missing)}")


def to_ms(value: Any, what: str) -> int:
    """A time the user gave (ms, ISO text, datetime, Timestamp; naive = UTC) -> exchange ms."""
    if isinstance(value, bool):
        raise ComparisonError(f"{what} must be a time (ms, ISO text or a Timestamp), got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ComparisonError(f"{what} must be a time (ms, ISO text or a Timestamp), got {value!r}") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def minute_text(ts_ms: int | None) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of an exchange ms time; "" for None."""
    return "" if ts_ms is None else pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


def _period(since: int | None, until: int | None) -> str:
    return f"{minute_text(since) or '?'} .. {minute_text(until) or 'now'} UTC"


def _show(kind: str, value: Any) -> Any:
    """A difference's value for people: minutes as times, trades and decisions as short text."""
    if value is None:
        return "-"
    if kind in ("entry_minute", "exit_minute") and isinstance(value, int | float):
        return minute_text(int(value))
    if isinstance(value, Mapping):
        if "signal" in value:
            return f"{value['signal']}" + (f" {'+'.join(value.get('intents') or [])}" if value.get("intents") else "")
        return f"{value.get('direction')} {minute_text(value.get('entry_ts_ms'))} @ {value.get('entry_price')}"
    return value
