"""The control panel's live market chart: a strategy chooser over a plotly ``FigureWidget``.

What it draws comes from :class:`tradebaas.analytics.chart.ChartModel` (the same model ``BacktestResult.plot()``
draws), so research and live look alike. The widget only holds the model, the figure and the chooser; the panel
feeds it from its pump thread (history on attach from ``market.candles`` and ``trades.list``, then the pushed
``candles.<instrument>``, ``ticker.<instrument>``, ``trades`` and ``positions`` events) and calls :meth:`draw`,
which sends at most ``max_redraws_per_second`` batched updates to the browser, each with only the traces that
changed. plotly's widget is an anywidget: JupyterLab 4 and Voilà render it with no extension build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ipywidgets as w

from tradebaas.analytics.chart import ChartModel, figure, update_figure

#: How much history the chart asks for on attach, and keeps: four hours of 1-minute candles.
HISTORY_CANDLES = 240


def choice_label(row: Mapping[str, Any]) -> str:
    """A strategy as the chooser lists it: ``razor-1a2b · razor · BTC_USDC-PERPETUAL · running``."""
    return " · ".join(str(row.get(k) or "?") for k in ("id", "name", "instrument", "state"))


def default_choice(rows: Iterable[Mapping[str, Any]]) -> str | None:
    """The strategy a trader most likely wants to watch: the newest running one, else the newest of all."""
    ordered = sorted(rows, key=lambda r: (r.get("state") in {"running", "starting"}, r.get("created_ts_ms") or 0))
    return str(ordered[-1].get("id")) if ordered else None


class LiveChart(w.VBox):
    """The chart and its chooser. ``strategy_id``/``instrument`` say what it shows (None: nothing yet)."""

    def __init__(self, max_redraws_per_second: float = 2.0, height: int = 360) -> None:
        self.model = ChartModel(max_candles=HISTORY_CANDLES)
        self.strategy_id: str | None = None
        self.instrument: str | None = None
        self.redraws = 0  # batched updates sent to the browser (tests and the curious)
        self._interval_s = 1.0 / max_redraws_per_second
        self._last_draw = float("-inf")
        self.choice = w.Dropdown(options=[], description="strategy", layout=w.Layout(width="auto", max_width="100%"),
                                 style={"description_width": "initial"})
        self.choice.add_class("tb-chart-choice")
        self.note = w.HTML('<span style="color:#888;font-size:12px">no strategy to chart yet</span>')
        self.note.add_class("tb-chart-note")
        self.figure = figure(self.model, widget=True, height=height)
        # hidden until there is a strategy to chart: empty axes would only puzzle
        self.figure_box = w.VBox([self.figure], layout=w.Layout(width="100%", min_width="0", display="none"))
        super().__init__([w.HBox([self.choice, self.note], layout=w.Layout(align_items="center", flex_flow="row wrap")),
                          self.figure_box], layout=w.Layout(width="100%", min_width="0"))
        self.add_class("tb-chart")

    def set_strategies(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """List ``rows`` in the chooser (keeping the choice; choosing the likeliest one when there is none).
        True when the chosen strategy changed (the caller then loads its history)."""
        rows = list(rows)
        options = [(choice_label(r), str(r.get("id"))) for r in sorted(rows, key=lambda r: -(r.get("created_ts_ms") or 0))]
        current = self.choice.value
        if options != list(self.choice.options):
            ids = {sid for _label, sid in options}
            keep = current if current in ids else default_choice(rows)
            self.choice.options = options
            if keep is not None:
                self.choice.value = keep
        return self.choice.value != self.strategy_id

    def attach(self, strategy_id: str, instrument: str) -> None:
        """Show ``strategy_id`` on ``instrument``: an empty chart until :meth:`load` brings its history."""
        self.strategy_id, self.instrument = strategy_id, instrument
        self.model = ChartModel(instrument, max_candles=HISTORY_CANDLES)
        self.figure.layout.title.text = self.model.layout()["title"]["text"]
        self.figure.layout.uirevision = instrument
        self.figure_box.layout.display = ""
        self.note.value = '<span style="color:#888;font-size:12px">loading history…</span>'

    def load(self, candles: list[Mapping[str, Any]], trades: list[Mapping[str, Any]],
             position: Mapping[str, Any] | None) -> None:
        """The history on attach: candles, the strategy's trades and its open position."""
        self.model.set_candles(candles)
        self.model.set_trades(trades)
        self.model.set_position(position)
        self.note.value = (f'<span class="tb-chart-ready" style="color:#888;font-size:12px">{len(self.model.candles)} '
                           "candles · entries ▲▼, exits ●, the open position's entry, stop and take-profit</span>")

    def draw(self, now: float, force: bool = False) -> bool:
        """Send what changed to the browser, unless the previous redraw was less than the interval ago (the
        changes then wait for the next call: the panel calls at least once a second). True when something was sent."""
        if not force and now - self._last_draw < self._interval_s:
            return False
        if update_figure(self.figure, self.model):
            self._last_draw = now
            self.redraws += 1
            return True
        return False
