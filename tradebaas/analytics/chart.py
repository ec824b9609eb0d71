"""One chart of the market for research and live: candles, entries and exits as markers, and the open position's
entry, stop and take-profit as lines.

Why one module for both: a backtest (``BacktestResult.plot()``) and the control panel's live chart draw the same
picture from the same :class:`ChartModel`, so what research shows is what live shows.

The model is pure (no plotly, no clock, no I/O): it takes plain data -- candle rows ``{ts_ms, open, high, low,
close}``, ``TradeRow``-like dicts, a ``Position`` dict (docs/rpc.md shapes), or a backtest's frames -- and answers
plotly trace dictionaries in a fixed order (:data:`TRACES`), so a live figure can update only the traces that
changed (:meth:`ChartModel.take_dirty`) inside one ``batch_update``. Times are exchange time (Unix ms), drawn as
UTC. :func:`figure` and :func:`update_figure` are the only functions that import plotly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tradebaas.analytics.palette import COLORS

#: The traces of every chart, in this order (their index is stable: live updates address traces by it).
TRACES = ("candles", "long entry", "short entry", "exit", "entry", "stop", "take-profit")
CANDLES, LONG_ENTRY, SHORT_ENTRY, EXIT, ENTRY_LINE, STOP_LINE, TAKE_LINE = range(len(TRACES))
_LINE_STYLE = {
    ENTRY_LINE: {"color": COLORS["price"], "width": 1.5, "dash": "solid"},
    STOP_LINE: {"color": COLORS["loss"], "width": 1.5, "dash": "dash"},
    TAKE_LINE: {"color": COLORS["win"], "width": 1.5, "dash": "dash"},
}
MINUTE_MS = 60_000


def utc_text(ts_ms: int) -> str:
    """Unix ms as the naive UTC text plotly reads as a date ("2026-01-02 03:04:05")."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN -> None


def _ms(value: Any) -> int | None:
    """Unix ms from an int/float or a pandas/datetime timestamp (None for missing values)."""
    if value is None:
        return None
    if hasattr(value, "timestamp") and callable(value.timestamp):
        try:
            if value != value:  # NaT
                return None
            return int(round(value.timestamp() * 1000))
        except (TypeError, ValueError):
            return None
    number = _num(value)
    return int(number) if number else None


@dataclass(frozen=True, slots=True)
class TradeMark:
    """A trade as the chart marks it: the entry (by direction) and, once closed, the exit (by outcome)."""

    trade_id: str
    direction: str
    entry_ts_ms: int | None
    entry_price: float | None
    exit_ts_ms: int | None = None
    exit_price: float | None = None
    net_pnl: float | None = None
    exit_reason: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TradeMark:
        """From a ``TradeRow`` (``*_ts_ms``) or a trades-frame row (``entry_time``/``exit_time``)."""
        entry = row.get("entry_ts_ms") if "entry_ts_ms" in row else row.get("entry_time")
        exit_ = row.get("exit_ts_ms") if "exit_ts_ms" in row else row.get("exit_time")
        exit_price = _num(row.get("exit_price"))
        return cls(str(row.get("trade_id") or ""), str(row.get("direction") or ""), _ms(entry),
                   _num(row.get("entry_price")) or None, _ms(exit_), exit_price or None,
                   _num(row.get("net_pnl")), str(row.get("exit_reason") or ""))


@dataclass(frozen=True, slots=True)
class Levels:
    """The open position's prices: entry, stop and take-profit (None when it has no such bracket)."""

    direction: str
    entry_price: float
    stop_price: float | None
    take_price: float | None
    opened_ts_ms: int | None

    @classmethod
    def from_position(cls, position: Mapping[str, Any] | Any | None) -> Levels | None:
        """From a ``Position`` dict or a ``PositionView``; None when flat."""
        if position is None:
            return None
        get = position.get if isinstance(position, Mapping) else (lambda k: getattr(position, k, None))
        entry = _num(get("entry_price"))
        if not _num(get("amount")) or not entry:
            return None
        direction = get("direction")
        return cls(str(getattr(direction, "value", direction) or ""), entry,
                   _num(get("stop_price")), _num(get("take_price")), _ms(get("opened_ts_ms")))


class ChartModel:
    """What one chart shows, kept up to date from snapshots and events. Not thread-safe: one thread feeds it.

    Candles are 1-minute bars by start time; a tick (:meth:`on_tick`) moves the forming bar, a closed candle
    (:meth:`add_candle`) replaces it. Only the newest ``max_candles`` are kept, and only trades entered from the
    first kept candle on are marked (so the time axis is the candles').
    """

    def __init__(self, instrument: str = "", max_candles: int | None = 240, interval_ms: int = MINUTE_MS) -> None:
        self.instrument = instrument
        self.max_candles = max_candles
        self.interval_ms = interval_ms
        self.candles: dict[int, tuple[float, float, float, float]] = {}
        self.trades: dict[str, TradeMark] = {}
        self.levels: Levels | None = None
        self.currency = ""
        self._dirty: set[int] = set(range(len(TRACES)))

    # -- input ------------------------------------------------------------------------------------------------
    def set_candles(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the candles (a history snapshot); rows without a full OHLC are skipped."""
        self.candles = {}
        for row in rows:
            self._put_candle(row)
        self._trim()
        self._dirty.update(range(len(TRACES)))

    def add_candle(self, row: Mapping[str, Any]) -> None:
        """A closed candle (``candles.<instrument>``): it replaces the bar its ticks formed."""
        if self._put_candle(row):
            self._trim()
            self._dirty.update((CANDLES, ENTRY_LINE, STOP_LINE, TAKE_LINE))

    def on_tick(self, ts_ms: Any, price: Any) -> None:
        """A price at exchange time ``ts_ms``: the forming bar moves (a new bar starts at a new minute). A tick
        older than the newest bar is ignored (candles already closed stay as the engine closed them)."""
        ts, px = _ms(ts_ms), _num(price)
        if ts is None or not px:
            return
        start = ts - ts % self.interval_ms
        newest = max(self.candles, default=None)
        if newest is not None and start < newest:
            return
        bar = self.candles.get(start)
        if bar is None:
            self.candles[start] = (px, px, px, px)
            self._trim()
        else:
            o, h, lo, c = bar
            if (max(h, px), min(lo, px), px) == (h, lo, c):
                return
            self.candles[start] = (o, max(h, px), min(lo, px), px)
        self._dirty.update((CANDLES, ENTRY_LINE, STOP_LINE, TAKE_LINE))

    def set_trades(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.trades = {}
        for row in rows:
            mark = TradeMark.from_row(row)
            self.trades[mark.trade_id] = mark
        self._dirty.update((LONG_ENTRY, SHORT_ENTRY, EXIT))

    def update_trade(self, row: Mapping[str, Any]) -> None:
        mark = TradeMark.from_row(row)
        if self.trades.get(mark.trade_id) != mark:
            self.trades[mark.trade_id] = mark
            self._dirty.update((LONG_ENTRY, SHORT_ENTRY, EXIT))

    def set_position(self, position: Mapping[str, Any] | Any | None) -> None:
        """The open position (None or amount 0: flat). Its lines move when its stop moves (break-even)."""
        levels = Levels.from_position(position)
        if isinstance(position, Mapping) and position.get("currency"):
            self.currency = str(position["currency"])
        if levels != self.levels:
            self.levels = levels
            self._dirty.update((ENTRY_LINE, STOP_LINE, TAKE_LINE))

    def take_dirty(self) -> set[int]:
        """Indexes of the traces that changed since the last call (all of them at first)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def _put_candle(self, row: Mapping[str, Any]) -> bool:
        ts = _ms(row.get("ts_ms") if "ts_ms" in row else row.get("timestamp"))
        values = tuple(_num(row.get(k)) for k in ("open", "high", "low", "close"))
        if ts is None or any(v is None for v in values):
            return False
        bar = (float(values[0] or 0), float(values[1] or 0), float(values[2] or 0), float(values[3] or 0))
        if self.candles.get(ts) == bar:
            return False
        self.candles[ts] = bar
        return True

    def _trim(self) -> None:
        if self.max_candles is not None and len(self.candles) > self.max_candles:
            for ts in sorted(self.candles)[: len(self.candles) - self.max_candles]:
                del self.candles[ts]

    # -- output -----------------------------------------------------------------------------------------------
    def first_ts(self) -> int | None:
        return min(self.candles, default=None)

    def _visible_trades(self) -> list[TradeMark]:
        first = self.first_ts()
        return sorted((t for t in self.trades.values() if t.entry_ts_ms is not None and t.entry_price
                       and (first is None or t.entry_ts_ms >= first)), key=lambda t: t.entry_ts_ms or 0)

    def trace(self, index: int) -> dict[str, Any]:
        """Trace ``index`` (see :data:`TRACES`) as a plotly dictionary."""
        if index == CANDLES:
            times = sorted(self.candles)
            bars = [self.candles[t] for t in times]
            return {"type": "candlestick", "name": "candles", "x": [utc_text(t) for t in times],
                    "open": [b[0] for b in bars], "high": [b[1] for b in bars], "low": [b[2] for b in bars],
                    "close": [b[3] for b in bars], "showlegend": False,
                    "increasing": {"line": {"color": COLORS["win"]}}, "decreasing": {"line": {"color": COLORS["loss"]}}}
        if index in (LONG_ENTRY, SHORT_ENTRY):
            side = "long" if index == LONG_ENTRY else "short"
            marks = [t for t in self._visible_trades() if t.direction == side]
            return {"type": "scatter", "mode": "markers", "name": f"{side} entry",
                    "x": [utc_text(int(t.entry_ts_ms or 0)) for t in marks], "y": [t.entry_price for t in marks],
                    "text": [f"{t.trade_id} {side} entry" for t in marks], "hoverinfo": "x+y+text",
                    "marker": {"symbol": "triangle-up" if side == "long" else "triangle-down", "size": 11,
                               "color": COLORS[side], "line": {"color": "black", "width": 0.5}}}
        if index == EXIT:
            marks = [t for t in self._visible_trades() if t.exit_ts_ms and t.exit_price]
            outcome = ["win" if (t.net_pnl or 0) > 0 else "loss" if (t.net_pnl or 0) < 0 else "flat" for t in marks]
            return {"type": "scatter", "mode": "markers", "name": "exit",
                    "x": [utc_text(int(t.exit_ts_ms or 0)) for t in marks], "y": [t.exit_price for t in marks],
                    "text": [f"{t.trade_id} exit {t.exit_reason} net {t.net_pnl:+,.2f}" if t.net_pnl is not None
                             else f"{t.trade_id} exit {t.exit_reason}" for t in marks],
                    "hoverinfo": "x+y+text",
                    "marker": {"symbol": "circle", "size": 9, "color": [COLORS[o] for o in outcome],
                               "line": {"color": "black", "width": 0.5}}}
        if index in _LINE_STYLE:
            return self._line(index)
        raise IndexError(f"no trace {index}")

    def _line(self, index: int) -> dict[str, Any]:
        """A horizontal line at one of the open position's prices, from its opening (or the first candle) to the
        end of the newest candle; empty when flat or when the position has no such price."""
        levels = self.levels
        label = TRACES[index]
        price = None
        if levels is not None:
            price = {ENTRY_LINE: levels.entry_price, STOP_LINE: levels.stop_price,
                     TAKE_LINE: levels.take_price}[index]
        x: list[str] = []
        y: list[float] = []
        if price is not None and self.candles:
            start = max(levels.opened_ts_ms or 0, min(self.candles)) if levels else min(self.candles)
            end = max(self.candles) + self.interval_ms
            x, y = [utc_text(start), utc_text(end)], [price, price]
        name = f"{label} {price:,.1f}" if price is not None else label
        return {"type": "scatter", "mode": "lines", "name": name, "x": x, "y": y, "hoverinfo": "y+name",
                "line": dict(_LINE_STYLE[index]), "showlegend": price is not None}

    def traces(self) -> list[dict[str, Any]]:
        return [self.trace(i) for i in range(len(TRACES))]

    def layout(self, title: str | None = None, height: int = 380) -> dict[str, Any]:
        return {
            "title": {"text": title or (f"{self.instrument} · 1 min" if self.instrument else ""), "x": 0.01,
                      "font": {"size": 13}},
            "height": height, "autosize": True, "margin": {"l": 56, "r": 12, "t": 36, "b": 32},
            "xaxis": {"rangeslider": {"visible": False}, "type": "date", "title": {"text": ""}},
            "yaxis": {"title": {"text": "price"}, "tickformat": ",.1f"},
            "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom",
                       "font": {"size": 11}},
            "uirevision": self.instrument or "chart",  # a zoom the user chose survives updates
            "template": "plotly_white",
        }


def figure(model: ChartModel, *, widget: bool = False, title: str | None = None, height: int = 380) -> Any:
    """The model as a plotly ``Figure`` (or a live ``FigureWidget`` with ``widget=True``)."""
    import plotly.graph_objects as go

    model.take_dirty()
    if not widget:
        return go.Figure(data=model.traces(), layout=model.layout(title, height))
    fig = go.FigureWidget(data=model.traces(), layout=model.layout(title, height))
    fig._config = {"responsive": True, "displaylogo": False}  # as wide as the panel, whatever its width
    return fig


def update_figure(fig: Any, model: ChartModel) -> int:
    """Apply the model's changes to ``fig`` (made by :func:`figure`) in one ``batch_update``: one message to the
    browser for any number of changes. Returns the number of traces updated (0: nothing was sent)."""
    dirty = sorted(model.take_dirty())
    if not dirty:
        return 0
    with fig.batch_update():
        for index in dirty:
            trace = model.trace(index)
            trace.pop("type")
            fig.data[index].update(trace)
    return len(dirty)


def chart_of_backtest(result: Any, max_candles: int | None = 2000) -> ChartModel:
    """A backtest's candles, trades and (still open at the end) position, as the live chart draws them."""
    model = ChartModel(result.instrument.name, max_candles=max_candles)
    frame = result.candles
    rows = ({"ts_ms": _ms(ts), "open": o, "high": h, "low": lo, "close": c}
            for ts, o, h, lo, c in zip(frame.index, frame["open"], frame["high"], frame["low"], frame["close"],
                                       strict=True))
    model.set_candles(rows)
    model.set_trades(result.trades.to_dict("records"))
    model.set_position(result.open_position)
    model.currency = result.instrument.settlement_currency
    return model
