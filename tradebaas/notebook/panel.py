"""``tb.ControlPanel(eng)``: a trading desk inside JupyterLab, driven by the engine's pushed events.

Over 600 lines because the panel's pure state (``PanelState``) and the widget and thread wiring that feeds it
change together; the HTML rendering is apart (``widgets.py``).

Threads, and why:

- the kernel's main thread only builds widgets and runs button handlers; a handler never waits for the engine
  (RPC calls that a click triggers run on a short-lived worker thread), so the notebook stays responsive even
  when the engine is down;
- the RPC client's callback thread only hands events to a :class:`~tradebaas.notebook.coalesce.Pump` (no widget
  work there, so a slow frontend can never back-pressure the client);
- the pump's thread merges events, applies them to :class:`PanelState` and assigns the rendered HTML to widget
  traits at most a few times per second. It also fetches full snapshots: at start, and after every reconnect or
  engine restart, because events missed while disconnected are not replayed.

The state and the rendering are pure (``PanelState`` here, the HTML functions in ``widgets.py``); this module
wires them to ipywidgets and to the client.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w

from tradebaas.notebook import widgets as render
from tradebaas.notebook.chart import HISTORY_CANDLES, LiveChart
from tradebaas.notebook.coalesce import Batch, Pump
from tradebaas.notebook.forms import EditForm, StartForm
from tradebaas.notebook.magic import register_if_ipython

GLOBAL_CHANNELS = ("engine", "strategies", "orders", "trades", "positions", "reports", "log")
ACTIVE_STATES = {"running", "starting"}


def position_key(position: Mapping[str, Any]) -> tuple[str, str]:
    """Positions are per strategy and instrument (one open trade per strategy at a time)."""
    return (str(position.get("strategy_id") or ""), str(position.get("instrument") or ""))


@dataclass
class PanelState:
    """Everything the panel displays, merged from snapshots and pushed events. Pure: no widgets, no I/O.

    ``received_at`` remembers (monotonic seconds) when each strategy row arrived, so uptimes can keep counting
    between events without asking the engine.
    """

    connection: str = "connecting"
    note: str = ""
    status: dict[str, Any] | None = None
    status_at: float = 0.0
    available: list[dict[str, Any]] = field(default_factory=list)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)
    positions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    trades: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    equity: list[float] = field(default_factory=list)
    equity_label: str = ""
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    engine_identity: tuple[Any, Any] | None = None
    #: A restart was seen (a new engine identity) and not announced yet: set until a resync completes, so that a
    #: resync that fails half-way, or the one a pushed status event asks for, does not lose it.
    restart_unannounced: bool = False
    #: The note says the link was lost (set by a failed call): the next resync that succeeds clears it. Other
    #: notes (a restart announced, a refused stop) stay until something replaces them, so a second resync right
    #: after the first (the reconnect and the ping both ask for one) does not hide what the user has to know.
    note_is_link_loss: bool = False

    # -- snapshots --------------------------------------------------------------------------------------------
    def set_status(self, status: Mapping[str, Any], now: float) -> bool:
        """Store ``engine.status``; True when it comes from a different engine process than before (a restart),
        which also stays in ``restart_unannounced`` until a resync has shown it."""
        identity = (status.get("pid"), status.get("started_ts_ms"))
        restarted = self.engine_identity is not None and identity != self.engine_identity
        self.restart_unannounced |= restarted
        self.engine_identity = identity
        self.status, self.status_at = dict(status), now
        return restarted

    def set_strategies(self, rows: list[Mapping[str, Any]], now: float) -> None:
        self.strategies = {}
        for row in rows:
            self.update_strategy(row, now)

    def update_strategy(self, row: Mapping[str, Any], now: float) -> None:
        sid = str(row.get("id"))
        self.strategies[sid] = dict(row)
        self.received_at[sid] = now
        position = row.get("position")
        if isinstance(position, Mapping):
            self.update_position(position)
        if isinstance(row.get("last_decision"), Mapping):
            self.decisions[sid] = dict(row["last_decision"])

    def set_positions(self, rows: list[Mapping[str, Any]]) -> None:
        self.positions = {}
        for row in rows:
            self.update_position(row)

    def update_position(self, row: Mapping[str, Any]) -> None:
        """A position (``amount`` 0: closed). The engine pushes open ones about twice a second with the latest
        mark price and floating PnL, so the strategy's row takes its floating PnL and position from here too."""
        key = position_key(row)
        is_open = float(row.get("amount") or 0) != 0
        if is_open:
            self.positions[key] = dict(row)
        else:
            self.positions.pop(key, None)
        strategy = self.strategies.get(key[0])
        if strategy is not None and strategy.get("instrument") == row.get("instrument"):
            current = strategy.get("position") or {}
            if not is_open and current and current.get("trade_id") != row.get("trade_id"):
                return  # an older trade's close: the row already shows a newer position
            pnl = {**(strategy.get("pnl") or {}), "floating": float(row.get("floating_pnl") or 0) if is_open else 0.0}
            self.strategies[key[0]] = {**strategy, "pnl": pnl, "position": dict(row) if is_open else None}

    def position_of(self, sid: str) -> dict[str, Any] | None:
        """The open position of strategy ``sid`` (None when flat)."""
        return next((p for (owner, _inst), p in self.positions.items() if owner == sid), None)

    def set_orders(self, rows: list[Mapping[str, Any]]) -> None:
        self.orders = {}
        for row in rows:
            self.update_order(row)

    def update_order(self, row: Mapping[str, Any]) -> None:
        """Keep open orders only: filled/cancelled ones leave the table."""
        oid = str(row.get("order_id"))
        if str(row.get("state") or "open") in {"open", "untriggered", "new", "pending"}:
            self.orders[oid] = dict(row)
        else:
            self.orders.pop(oid, None)

    def set_trades(self, rows: list[Mapping[str, Any]], keep: int = 200) -> None:
        ordered = sorted(rows, key=lambda t: t.get("exit_ts_ms") or t.get("entry_ts_ms") or 0)
        self.trades = {str(t.get("trade_id")): dict(t) for t in ordered[-keep:]}

    def update_trade(self, row: Mapping[str, Any], keep: int = 200) -> None:
        self.trades[str(row.get("trade_id"))] = dict(row)
        while len(self.trades) > keep:
            self.trades.pop(next(iter(self.trades)))

    def set_reports(self, runs: list[Mapping[str, Any]]) -> None:
        self.reports = {}
        for run in runs:
            self.update_report(run)

    def update_report(self, run: Mapping[str, Any], keep: int = 50) -> None:
        self.reports[str(run.get("run_id"))] = dict(run)
        while len(self.reports) > keep:
            self.reports.pop(next(iter(self.reports)))

    def set_equity(self, points: list[Mapping[str, Any]], label: str = "") -> None:
        """``equity.history`` (one point per closed trade, from capital 0): the curve starts at 0, so the first
        closed trade already draws a line."""
        values = [float(p["equity"]) for p in points if p.get("equity") is not None]
        self.equity = [0.0, *values] if values else []
        self.equity_label = label

    # -- events -----------------------------------------------------------------------------------------------
    def apply_event(self, channel: str, data: Any, now: float) -> str | None:
        """Apply one pushed event; returns "restarted" when the engine behind the link changed, else None."""
        if not isinstance(data, Mapping):
            return None
        if channel == "engine":
            status = data.get("status")
            if isinstance(status, Mapping) and self.set_status(status, now):
                return "restarted"
        elif channel == "strategies" or channel.startswith("strategy."):
            kind = data.get("type")
            if kind == "state" and isinstance(data.get("strategy"), Mapping):
                self.update_strategy(data["strategy"], now)
            elif kind == "decision" and isinstance(data.get("decision"), Mapping):
                self.decisions[channel.removeprefix("strategy.")] = dict(data["decision"])
        elif channel == "positions":
            self.update_position(data)
        elif channel == "orders":
            self.update_order(data)
        elif channel == "trades":
            self.update_trade(data)
        elif channel == "reports":
            self.update_report(data)
        elif channel == "log":
            self.logs.append(dict(data))
        return None

    # -- derived ----------------------------------------------------------------------------------------------
    def uptime_of(self, sid: str, now: float) -> float | None:
        row = self.strategies.get(sid)
        if row is None:
            return None
        return render.strategy_uptime(row, now - self.received_at.get(sid, now))

    def engine_uptime(self, now: float) -> float | None:
        if not self.status or self.status.get("uptime_s") is None:
            return None
        if self.connection != "connected":
            return float(self.status["uptime_s"])
        return float(self.status["uptime_s"]) + (now - self.status_at)

    def running_count(self) -> int:
        return sum(1 for s in self.strategies.values() if s.get("state") in ACTIVE_STATES)

    def latest_decisions(self, limit: int = 2) -> list[tuple[str, dict[str, Any]]]:
        """Decisions of active strategies first, newest first: the ones a trader is watching."""
        def rank(item: tuple[str, dict[str, Any]]) -> tuple[int, int]:
            sid, decision = item
            active = self.strategies.get(sid, {}).get("state") in ACTIVE_STATES
            return (1 if active else 0, int(decision.get("ts_ms") or 0))

        return sorted(self.decisions.items(), key=rank, reverse=True)[:limit]


@dataclass
class StrategyRowWidgets:
    """The widgets of one strategy row: Stop and Edit, the rendered line, the error's traceback behind a
    "details" toggle, the question Stop asks when the strategy holds a position, and the place where its edit form
    opens (under the row it is about)."""

    box: w.VBox
    stop: w.Button
    edit: w.Button
    html: w.HTML
    details: w.HTML
    edit_box: w.VBox
    stop_box: w.HBox
    stop_text: w.HTML


def _rpc_error_parts(exc: BaseException) -> tuple[int | None, str, Any]:
    """(code, message, data) of a JSON-RPC error raised by the client, whatever its exact class."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    data = getattr(exc, "data", None)
    return (code if isinstance(code, int) else None, str(message), data)


class ControlPanel(w.VBox):
    """The control panel widget. ``ControlPanel(eng)`` shows at once (with "connecting…") and fills itself in
    from the engine on a background thread; it keeps updating until :meth:`close` or the kernel ends."""

    def __init__(self, eng: Any, max_updates_per_second: float = 4.0, trades_shown: int = 10,
                 log_lines: int = 15, ping_every_s: float = 2.0) -> None:
        register_if_ipython()  # so that eng.deploy(MyStrategy) works after a %%tradebaas_strategy cell
        self.eng = eng
        self.state = PanelState()
        self._trades_shown = trades_shown
        self._log_lines = log_lines
        self._ping_every_s = ping_every_s
        self._ping_timeout_s = min(2.0, max(ping_every_s, 0.5))
        self._last_ping = 0.0
        self._subscribed: set[str] = set()
        self._subscriptions: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.errors: deque[str] = deque(maxlen=20)  # panel-side failures, for debugging a silent widget

        # -- widgets --
        self.status_html = self._html("tb-status-box", render.status_html(None, "connecting"))
        self.strategy_rows = w.VBox()
        self.strategy_rows.add_class("tb-strategies")
        self._rows: dict[str, StrategyRowWidgets] = {}
        self.edit_form: EditForm | None = None  # the open edit form (one at a time)
        self._asked_available_for: set[str] = set()  # strategy names seen when strategy.available was last fetched
        self._editing: str | None = None
        self.no_strategies = self._html("tb-no-strategies", '<span style="color:#888">no strategies yet</span>')
        self.positions_html = self._html("tb-positions-box", render.positions_html([]))
        self.orders_html = self._html("tb-orders-box", render.orders_html([]))
        self.decision_html = self._html("tb-decision-box", "")
        self.trades_html = self._html("tb-trades-box", render.trades_html([]))
        self.equity_html = self._html("tb-equity-box", render.sparkline_svg([]))
        self.reports_html = self._html("tb-reports-box", render.reports_html([]))
        self.log_html = self._html("tb-log-box", render.log_html([]))
        self.chart = LiveChart(max_redraws_per_second=min(2.0, max_updates_per_second))
        self.chart.choice.observe(self._chart_chosen, names="value")
        self._chart_pending = False  # attached, history not loaded yet (waiting to learn the exchange's time)
        self.form_box = w.VBox([self._html("tb-form-loading", '<span style="color:#888">loading strategies…</span>')])
        self.form: StartForm | None = None

        self.kill_button = w.Button(description="Kill", button_style="danger", icon="power-off",
                                    tooltip="stop every strategy and cancel their entry orders")
        self.kill_button.add_class("tb-kill")
        self.flatten = w.Checkbox(value=False, description="flatten positions", indent=False)
        self.flatten.add_class("tb-kill-flatten")
        self.kill_confirm_text = w.HTML("")
        self.kill_confirm_button = w.Button(description="Confirm", button_style="danger", tooltip="yes, kill")
        self.kill_confirm_button.add_class("tb-kill-confirm-button")
        self.kill_cancel_button = w.Button(description="Cancel")
        self.kill_cancel_button.add_class("tb-kill-cancel")
        self.kill_confirm_text.layout = w.Layout(flex="1 1 100%", min_width="0")
        # wraps rather than pushing its buttons out of a narrow column
        self.kill_confirm_box = w.HBox([self.kill_confirm_text, self.kill_confirm_button, self.kill_cancel_button],
                                       layout=w.Layout(display="none", flex_flow="row wrap", align_items="center"))
        self.kill_result = self._html("tb-kill-result", "")
        self.kill_button.on_click(lambda _b: self._ask_kill())
        self.kill_cancel_button.on_click(lambda _b: self._hide_kill())
        self.kill_confirm_button.on_click(lambda _b: self._do_kill())

        def section(title: str, *children: w.Widget) -> w.VBox:
            return w.VBox([w.HTML(f"<b>{title}</b>"), *children],
                          layout=w.Layout(margin="4px 0", min_width="0", max_width="100%"))

        # A desk: what is happening on the left (wide tables), what you can do on the right, the log below. The
        # left column is wide enough for its tables (780 px) or the right one goes under it: at 1280 px the two
        # sit side by side in Voila and stack in JupyterLab beside its file browser.
        left = w.VBox([
            section("Strategies", self.no_strategies, self.strategy_rows),
            section("Position", self.positions_html, self.orders_html),
            section("Latest decision", self.decision_html),
            section("Recent trades", self.trades_html),
            section("Equity", self.equity_html),
        ], layout=w.Layout(flex="3 1 0%", min_width="780px", max_width="100%", margin="0 12px 0 0"))
        right = w.VBox([
            section("Kill switch", w.HBox([self.kill_button, self.flatten]), self.kill_confirm_box, self.kill_result),
            section("Start a strategy", self.form_box),
            section("Reports", self.reports_html),
        ], layout=w.Layout(flex="2 1 0%", min_width="440px", max_width="100%"))
        super().__init__([
            self.status_html,
            section("Market", self.chart),
            w.HBox([left, right], layout=w.Layout(flex_flow="row wrap", align_items="flex-start")),
            section("Log", self.log_html),
        ])
        self.add_class("tb-control-panel")

        self._pump = Pump(self._apply_batch, max_per_second=max_updates_per_second, tick=self._tick,
                          on_error=self._record_error)
        self._install_reconnect_hook()
        self._pump.flag("resync")
        self._pump.start()

    # -- small helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def _html(css_class: str, value: str) -> w.HTML:
        # never wider than the column: a table that does not fit scrolls sideways (tb-table-scroll) instead
        box = w.HTML(value, layout=w.Layout(max_width="100%", min_width="0"))
        box.add_class(css_class)
        return box

    @staticmethod
    def _set(widget: w.Widget, trait: str, value: Any) -> None:
        """Assign only when different: every assignment is a message to the browser."""
        if getattr(widget, trait) != value:
            setattr(widget, trait, value)

    def _record_error(self, exc: BaseException) -> None:
        self.errors.append("".join(traceback.format_exception(exc)))

    def _background(self, target: Callable[[], None]) -> None:
        """Run an RPC on a worker thread so a click never blocks the kernel while the engine answers (or not)."""
        def run() -> None:
            try:
                target()
            except Exception as exc:
                self._record_error(exc)

        threading.Thread(target=run, name="tradebaas-panel-action", daemon=True).start()

    # -- subscriptions ----------------------------------------------------------------------------------------
    def _install_reconnect_hook(self) -> None:
        """Ask the client to tell us about reconnects when it can; otherwise the periodic ping notices them."""
        for hook_name in ("on_reconnect", "add_reconnect_callback"):
            hook = getattr(self.eng, hook_name, None)
            if callable(hook):
                try:
                    hook(self._on_reconnected)
                    return
                except TypeError:
                    continue

    def _on_reconnected(self, *_args: Any) -> None:
        self._pump.flag("resync")

    def _subscribe(self, channel: str) -> None:
        with self._lock:
            if channel in self._subscribed or self._closed:
                return
            self._subscribed.add(channel)

        def callback(*args: Any) -> None:
            # The client may call back with (data), (channel, data) or (event dict); take the payload.
            data = args[-1] if args else None
            if isinstance(data, Mapping) and set(data) >= {"channel", "data"} and len(args) == 1:
                data = data["data"]
            self._on_event(channel, data)

        handle = self.eng.subscribe(channel, callback)
        self._subscriptions.append((channel, callback, handle))

    def _unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (the chart's market channels when it shows another instrument)."""
        with self._lock:
            self._subscribed.discard(channel)
            gone = [s for s in self._subscriptions if s[0] == channel]
            self._subscriptions = [s for s in self._subscriptions if s[0] != channel]
        for _channel, callback, handle in gone:
            if callable(getattr(handle, "cancel", None)):
                handle.cancel()
            elif callable(getattr(self.eng, "unsubscribe", None)):
                self.eng.unsubscribe(channel, callback)

    def _on_event(self, channel: str, data: Any) -> None:
        """On the client's callback thread: queue, never render."""
        if channel == "log":
            self._pump.append("log", data)
        elif channel == "trades" and isinstance(data, Mapping):
            self._pump.put("trades", data.get("trade_id"), data)
            if data.get("state") == "closed":
                self._pump.flag("equity")
        elif channel == "orders" and isinstance(data, Mapping):
            self._pump.put("orders", data.get("order_id"), data)
        elif channel == "reports" and isinstance(data, Mapping):
            self._pump.put("reports", data.get("run_id"), data)
        elif channel == "positions" and isinstance(data, Mapping):
            self._pump.put("positions", position_key(data), data)
        elif channel == "engine":
            self._pump.put("engine", "status", data)
        elif channel.startswith("candles.") and isinstance(data, Mapping):
            self._pump.put("chart_candles", (channel, data.get("ts_ms")), data)
        elif channel.startswith("ticker.") and isinstance(data, Mapping):
            self._pump.put("chart_ticker", channel, data)
        elif channel == "strategies" or channel.startswith("strategy."):
            if isinstance(data, Mapping) and data.get("type") == "decision":
                self._pump.put("decisions", channel, data)
            elif isinstance(data, Mapping) and isinstance(data.get("strategy"), Mapping):
                self._pump.put("strategies", data["strategy"].get("id"), data)

    def _ensure_strategy_channels(self) -> None:
        for sid in list(self.state.strategies):
            self._subscribe(f"strategy.{sid}")

    # -- the pump's thread ------------------------------------------------------------------------------------
    def _call(self, method: str, **params: Any) -> Any:
        return self.eng.call(method, **params)

    def _optional(self, method: str, default: Any, **params: Any) -> Any:
        """A call whose absence (older engine: -32601) must not stop the rest of the panel from working."""
        try:
            return self._call(method, **params)
        except Exception as exc:
            code, message, _data = _rpc_error_parts(exc)
            if code == -32601:
                self.errors.append(f"{method}: not available on this engine")
                return default
            raise

    def resync(self) -> None:
        """Fetch the whole picture again. Runs at start and after every reconnect: pushed events missed while
        disconnected are never replayed, so a snapshot is the only way back to the truth."""
        now = time.monotonic()
        state = self.state
        status = self._call("engine.status")
        state.set_status(status, now)
        for channel in GLOBAL_CHANNELS:  # before the snapshot, so nothing between the two is lost
            self._subscribe(channel)
        state.set_strategies(self._optional("strategy.list", []), now)
        self._refresh_available()
        for sid, row in list(state.strategies.items()):
            if row.get("state") in ACTIVE_STATES or sid not in state.decisions:
                detail = self._optional("strategy.get", None, id=sid)
                if isinstance(detail, Mapping) and isinstance(detail.get("last_decision"), Mapping):
                    state.decisions[sid] = dict(detail["last_decision"])
        self._ensure_strategy_channels()
        state.set_positions(self._optional("positions.list", []))
        state.set_orders(self._optional("orders.list", [], open_only=True))
        state.set_trades(self._optional("trades.list", []))
        reports = self._optional("reports.list", {})
        state.set_reports(reports.get("runs", []) if isinstance(reports, Mapping) else [])
        self._refresh_equity()
        state.connection = "connected"
        self._chart_events(None, reload=True)
        if state.restart_unannounced:
            state.note = f"engine restarted — state reloaded at {time.strftime('%H:%M:%S')}"
            state.note_is_link_loss = False
        elif state.note_is_link_loss:
            state.note, state.note_is_link_loss = "", False
        state.restart_unannounced = False
        self._last_ping = now

    def _refresh_equity(self) -> None:
        points = self._optional("equity.history", [])
        currency = next((t.get("currency") for t in self.state.trades.values() if t.get("currency")), "")
        self.state.set_equity(points, label=f"equity{(' ' + currency) if currency else ''}")

    def _apply_batch(self, batch: Batch) -> None:
        now = time.monotonic()
        if "resync" in batch.flags or self.state.connection != "connected":
            try:
                self.resync()
            except Exception as exc:
                self._lost(exc)
                self._render(now)
                return
        else:
            restarted = False
            for data in batch.get("engine").values():
                restarted |= self.state.apply_event("engine", data, now) == "restarted"
            for channel_key, data in batch.get("decisions").items():
                self.state.apply_event(str(channel_key), data, now)
            for data in batch.get("strategies").values():
                self.state.apply_event("strategies", data, now)
            for topic in ("positions", "orders", "trades", "reports"):
                for data in batch.get(topic).values():
                    self.state.apply_event(topic, data, now)
            if "available" in batch.flags or self._unknown_strategy_names():
                try:
                    self._refresh_available()
                except Exception as exc:
                    self._record_error(exc)
            if restarted:
                self._pump.flag("resync")
            elif "equity" in batch.flags:
                try:
                    self._refresh_equity()
                except Exception as exc:
                    self._record_error(exc)
            self._ensure_strategy_channels()
            self._chart_events(batch)
        for line in batch.items("log"):
            self.state.apply_event("log", line, now)
        self._render(now)

    # -- the chart (pump thread) -------------------------------------------------------------------------------
    def _chart_events(self, batch: Batch | None, reload: bool = False) -> None:
        """Keep the chart on the chosen strategy: (re)attach when the choice or the strategy list changed, load
        its history once the exchange's time is known, then feed it the batch's candles, ticks, trades and
        positions. Drawing is :meth:`LiveChart.draw`'s (rate-limited), from :meth:`_render`."""
        chart, state = self.chart, self.state
        if chart.set_strategies(state.strategies.values()) or reload:
            self._attach_chart()
        sid, instrument = chart.strategy_id, chart.instrument
        if sid is None or batch is None:
            return
        for data in batch.get("chart_candles").values():
            if data.get("instrument") == instrument:
                chart.model.add_candle(data)
        for data in batch.get("chart_ticker").values():
            if data.get("instrument") == instrument:
                if self._chart_pending:
                    self._load_chart_history(int(data.get("ts_ms") or 0))
                chart.model.on_tick(data.get("ts_ms"), data.get("last_price") or data.get("mark_price"))
        for data in batch.get("trades").values():
            if data.get("strategy_id") == sid:
                chart.model.update_trade(data)
        if batch.get("positions") or batch.get("strategies"):
            chart.model.set_position(state.position_of(sid))

    def _chart_chosen(self, _change: Any) -> None:
        """Another strategy chosen in the chart's chooser (kernel thread): the pump re-attaches the chart."""
        self._pump.flag("chart")

    def _attach_chart(self) -> None:
        chart = self.chart
        sid = chart.choice.value
        row = self.state.strategies.get(str(sid)) if sid is not None else None
        old = chart.instrument
        if row is None:
            return
        instrument = str(row.get("instrument"))
        chart.attach(str(sid), instrument)
        if old and old != instrument:
            self._unsubscribe(f"candles.{old}")
            self._unsubscribe(f"ticker.{old}")
        self._subscribe(f"candles.{instrument}")
        self._subscribe(f"ticker.{instrument}")
        self._chart_pending = True
        anchor = self._exchange_time_of(str(sid))
        if anchor:
            self._load_chart_history(anchor)

    def _exchange_time_of(self, sid: str) -> int:
        """The newest exchange time (ms) the panel knows for ``sid`` (its decisions and trades), else 0: the chart
        then waits for the first ticker. Never the wall clock: a replaying simulator does not share it."""
        decision = self.state.decisions.get(sid) or {}
        times = [int(decision.get("ts_ms") or 0)]
        times += [int(t.get("exit_ts_ms") or t.get("entry_ts_ms") or 0) for t in self.state.trades.values()
                  if t.get("strategy_id") == sid]
        return max(times)

    def _load_chart_history(self, now_ms: int) -> None:
        """The chosen strategy's last :data:`HISTORY_CANDLES` minutes (the engine's own candles), its trades and
        its position. A failure leaves the chart live (events still arrive) and says why under the chooser."""
        chart = self.chart
        sid, instrument = chart.strategy_id, chart.instrument
        if sid is None or instrument is None or not now_ms:
            return
        self._chart_pending = False
        try:
            candles = self._call("market.candles", instrument=instrument,
                                 since=now_ms - HISTORY_CANDLES * 60_000 - now_ms % 60_000)
            trades = self._optional("trades.list", [], strategy=sid)
        except Exception as exc:
            _code, message, _data = _rpc_error_parts(exc)
            chart.note.value = render.esc(f"history of {instrument} not loaded: {message}")
            return
        chart.load(list(candles or []), list(trades or []), self.state.position_of(sid))

    def _lost(self, exc: BaseException) -> None:
        # Having been connected once, a failure means the engine went away (restart, crash) and the client is
        # reconnecting; never having been connected means there is no engine to reach yet.
        was = self.state.connection
        self.state.connection = "reconnecting" if was in {"connected", "reconnecting"} else "disconnected"
        _code, message, _data = _rpc_error_parts(exc)
        self.state.note, self.state.note_is_link_loss = message[:200], True

    def _tick(self, now: float) -> None:
        """Once a second: keep uptimes moving and check the link (a ping), so a dead engine shows within seconds
        even when no event arrives. A failed ping marks the panel reconnecting; the next success resyncs."""
        link_up = getattr(self.eng, "connected", None)  # the real client knows at once when its socket dropped
        if link_up is False:
            if self.state.connection == "connected":
                self._lost(ConnectionError("connection to the engine lost"))
        elif now - self._last_ping >= self._ping_every_s or self.state.connection != "connected":
            self._last_ping = now
            try:
                self._call("engine.ping", timeout=self._ping_timeout_s)
                if self.state.connection != "connected":
                    self._pump.flag("resync")
            except Exception as exc:
                self._lost(exc)
        self._render(now)

    # -- rendering (pump thread) ------------------------------------------------------------------------------
    def _render(self, now: float) -> None:
        state = self.state
        status = state.status
        if status is not None:  # the counts follow the pushed strategy states, not the last engine.status
            status = {**status, "strategies": {"total": len(state.strategies), "running": state.running_count()}}
        self._set(self.status_html, "value",
                  render.status_html(status, state.connection, state.engine_uptime(now), state.note))
        self._render_strategies(now)
        self._set(self.positions_html, "value", render.positions_html(state.positions.values()))
        self._set(self.orders_html, "value", render.orders_html(state.orders.values()))
        decisions = state.latest_decisions()
        self._set(self.decision_html, "value",
                  "".join(render.decision_html(sid, d) for sid, d in decisions)
                  or '<span style="color:#888">no decision yet</span>')
        self._set(self.trades_html, "value", render.trades_html(state.trades.values(), self._trades_shown))
        self._set(self.equity_html, "value", render.sparkline_svg(state.equity, label=state.equity_label))
        self._set(self.reports_html, "value", render.reports_html(state.reports.values()))
        self._set(self.log_html, "value", render.log_html(state.logs, self._log_lines))
        self._set(self.kill_button, "disabled", state.connection != "connected")
        self.chart.draw(now)

    def row(self, sid: str) -> StrategyRowWidgets:
        """The widgets of strategy ``sid``'s row (KeyError before it was first rendered)."""
        return self._rows[sid]

    def _new_row(self, sid: str) -> StrategyRowWidgets:
        html_box = w.HTML("", layout=w.Layout(flex="1 1 auto", min_width="0"))
        html_box.add_class("tb-strategy")
        stop = w.Button(description="Stop", button_style="warning", icon="stop",
                        tooltip=f"stop {sid} (asks what to do with its position, if it holds one)",
                        layout=w.Layout(flex="0 0 auto"))
        stop.add_class("tb-stop")
        stop.add_class(f"tb-stop-{sid}")
        stop.on_click(lambda _b: self.ask_stop(sid))
        edit = w.Button(description="Edit", icon="sliders", tooltip=f"change {sid}'s parameters while it runs",
                        layout=w.Layout(flex="0 0 auto", width="auto"))
        edit.add_class("tb-edit")
        edit.add_class(f"tb-edit-{sid}")
        edit.on_click(lambda _b: self.close_edit() if self._editing == sid else self.edit(sid))
        details = w.HTML("")
        details.add_class("tb-strategy-details")
        edit_box = w.VBox()
        edit_box.add_class("tb-edit-box")
        line = w.HBox([stop, edit, html_box], layout=w.Layout(align_items="center"))
        stop_text = w.HTML("", layout=w.Layout(flex="1 1 100%", min_width="0"))
        keep = w.Button(description="Leave it with its brackets", button_style="warning",
                        tooltip="stop deciding; the position stays open with its stop and take-profit on the exchange",
                        layout=w.Layout(width="auto"))
        keep.add_class("tb-stop-keep")
        flatten = w.Button(description="Flatten", button_style="danger", icon="times",
                           tooltip="stop deciding and close the position at market", layout=w.Layout(width="auto"))
        flatten.add_class("tb-stop-flatten")
        cancel = w.Button(description="Cancel", layout=w.Layout(width="auto"))
        cancel.add_class("tb-stop-cancel")
        keep.on_click(lambda _b: self._confirm_stop(sid, flatten=False))
        flatten.on_click(lambda _b: self._confirm_stop(sid, flatten=True))
        cancel.on_click(lambda _b: self._hide_stop(sid))
        stop_box = w.HBox([stop_text, keep, flatten, cancel],
                          layout=w.Layout(display="none", flex_flow="row wrap", align_items="center"))
        stop_box.add_class("tb-stop-confirm")
        return StrategyRowWidgets(w.VBox([line, stop_box, details, edit_box]), stop, edit, html_box, details,
                                  edit_box, stop_box, stop_text)

    def _render_strategies(self, now: float) -> None:
        state = self.state
        ordered = sorted(state.strategies.values(), key=lambda s: (s.get("state") not in ACTIVE_STATES,
                                                                   -(s.get("created_ts_ms") or 0)))
        children = []
        for row in ordered:
            sid = str(row.get("id"))
            if sid not in self._rows:
                self._rows[sid] = self._new_row(sid)
            widgets = self._rows[sid]
            inactive = row.get("state") not in ACTIVE_STATES or state.connection != "connected"
            self._set(widgets.html, "value", render.strategy_row_html(row, state.uptime_of(sid, now)))
            self._set(widgets.details, "value", render.error_details_html(row.get("error")))
            self._set(widgets.stop, "disabled", inactive)
            self._set(widgets.edit, "disabled", inactive and self._editing != sid)
            children.append(widgets.box)
        if tuple(self.strategy_rows.children) != tuple(children):
            self.strategy_rows.children = children
        self._set(self.no_strategies.layout, "display", "none" if children else "")

    def _refresh_available(self) -> None:
        """Fetch ``strategy.available`` (at every resync, from the form's ↻ button, and when a strategy row names
        a strategy the list does not have: one deployed since) and update the start form without losing what was
        typed into it."""
        available = self._optional("strategy.available", [])
        self._asked_available_for |= {str(s.get("name")) for s in self.state.strategies.values()}
        if available == self.state.available and self.form is not None:
            return
        self.state.available = available
        if self.form is None:
            self._build_form()
        elif available:
            self.form.update_strategies(available)

    def _unknown_strategy_names(self) -> bool:
        """Whether a strategy row names a strategy the start form does not list, and the list was not fetched
        since that name first appeared (so a name the engine never lists costs one fetch, not one per event)."""
        known = {str(a.get("name")) for a in self.state.available} | self._asked_available_for
        return any(str(s.get("name")) not in known for s in self.state.strategies.values())

    def _build_form(self) -> None:
        if not self.state.available:
            self.form_box.children = [w.HTML('<span style="color:#888">the engine offers no strategies</span>')]
            return
        self.form = StartForm(self.state.available, self._start_from_form,
                              on_refresh=lambda: self._pump.flag("available"))
        self.form_box.children = [self.form]

    # -- actions (kernel thread -> worker thread) -------------------------------------------------------------
    def _start_from_form(self, name: str, instrument: str, config: dict[str, Any]) -> None:
        form = self.form

        def shown(s: dict[str, Any]) -> None:
            if form is not None:
                form.show_started(f"started {s.get('id')} ({s.get('state')})")

        self._strategy_call(form, shown, "strategy.start", name=name, instrument=instrument, config=config)

    def _strategy_call(self, form: Any, shown: Callable[[dict[str, Any]], None], method: str, **params: Any) -> None:
        """Call ``method`` on a worker thread for ``form``: the engine's refusal goes back to the form inline, the
        strategy it answers to ``shown`` and to the panel's own state."""

        def run() -> None:
            try:
                strategy = self._call(method, **params)
            except Exception as exc:
                _code, message, data = _rpc_error_parts(exc)
                if form is not None:
                    form.show_engine_error(message, data)
                return
            if form is not None:
                shown(strategy)
            self._on_event("strategies", {"type": "state", "strategy": strategy})

        self._background(run)

    def edit(self, sid: str) -> None:
        """Open the edit form of strategy ``sid`` under its row (what its Edit button does). Its current config
        and parameters are fetched (``strategy.get``) on a worker thread; ``panel.edit_form`` is the form once
        loaded. Opening one closes any other."""
        self.close_edit()
        self._editing = sid
        widgets = self._rows.get(sid)
        if widgets is not None:
            widgets.edit_box.children = [w.HTML('<span class="tb-edit-loading" style="color:#888">loading '
                                                "parameters…</span>")]

        def load() -> None:
            try:
                detail = self._call("strategy.get", id=sid)
                params = detail.get("params")
                if params is None:  # an engine that does not say: the strategy's declared ones
                    params = next((a.get("params") for a in self.state.available if a.get("name") ==
                                   detail.get("name")), [])
                form = EditForm(detail, params or [], self._apply_edit, on_close=self.close_edit)
            except Exception as exc:
                _code, message, _data = _rpc_error_parts(exc)
                content: w.Widget = w.HTML(render.esc(f"cannot edit {sid}: {message}"))
                content.add_class("tb-edit-failed")
                form = None
            else:
                content = form
            if self._editing != sid:  # closed, or another one opened, while this loaded
                return
            self.edit_form = form
            row = self._rows.get(sid)
            if row is not None:
                row.edit_box.children = [content]

        self._background(load)

    def close_edit(self) -> None:
        """Close the open edit form (nothing is sent)."""
        sid, self._editing, self.edit_form = self._editing, None, None
        if sid is not None and sid in self._rows:
            self._rows[sid].edit_box.children = []

    def _apply_edit(self, sid: str, changes: dict[str, Any], apply_to_open: bool) -> None:
        form = self.edit_form
        self._strategy_call(form, form.show_applied if form is not None else lambda _s: None, "strategy.set",
                            id=sid, config=changes, apply_to_open=apply_to_open)

    def start(self, name: str | None = None, **values: Any) -> bool:
        """Fill the form and press Start (scripts and tests); False when the form refused the values."""
        if self.form is None:
            raise RuntimeError("the panel has not loaded the strategy list yet")
        if name is not None:
            self.form.choice.value = name
        self.form.set_values(values)
        return self.form.submit()

    def ask_stop(self, sid: str) -> None:
        """What the Stop button does: a strategy that holds a position asks first whether to leave the position
        with its brackets or to flatten it (or cancel); one that is flat stops at once."""
        position = self.state.position_of(sid)
        widgets = self._rows.get(sid)
        if position is None or widgets is None:
            self.stop(sid)
            return
        widgets.stop_text.value = render.stop_confirm_html(sid, position)
        widgets.stop_box.layout.display = ""

    def _hide_stop(self, sid: str) -> None:
        widgets = self._rows.get(sid)
        if widgets is not None:
            widgets.stop_box.layout.display = "none"

    def _confirm_stop(self, sid: str, flatten: bool) -> None:
        self._hide_stop(sid)
        self.stop(sid, flatten=flatten)

    def stop(self, sid: str, flatten: bool = False) -> None:
        """Stop one strategy now: its position keeps its brackets on the exchange, or is closed with ``flatten``
        (the Stop button asks first, :meth:`ask_stop`)."""
        def run() -> None:
            try:
                strategy = self._call("strategy.stop", id=sid, flatten=flatten)
            except Exception as exc:
                _code, message, _data = _rpc_error_parts(exc)
                self.state.note, self.state.note_is_link_loss = f"stop {sid}: {message}", False
                self._pump.flag("refresh")
                return
            self._on_event("strategies", {"type": "state", "strategy": strategy})

        self._background(run)

    def _ask_kill(self) -> None:
        self.kill_confirm_text.value = render.kill_confirm_html(self.flatten.value, self.state.running_count())
        self.kill_confirm_box.layout.display = ""
        self.kill_result.value = ""

    def _hide_kill(self) -> None:
        self.kill_confirm_box.layout.display = "none"

    def _do_kill(self) -> None:
        flatten = bool(self.flatten.value)
        self._hide_kill()
        self.kill_result.value = '<span class="tb-kill-busy">killing…</span>'

        def run() -> None:
            try:
                result = self._call("risk.kill", flatten=flatten)
            except Exception as exc:
                _code, message, _data = _rpc_error_parts(exc)
                self.kill_result.value = render.esc(f"kill failed: {message}")
                return
            self.kill_result.value = (
                f'<span class="tb-kill-done">killed: stopped {len(result.get("stopped") or [])}, cancelled '
                f'{result.get("cancelled", 0)} order(s), flattened {len(result.get("flattened") or [])}</span>')
            self._pump.flag("resync")

        self._background(run)

    # -- lifetime ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop updating and drop the subscriptions (re-running the cell that made a panel should call this).

        Unsubscribing talks to the engine, so it happens on a worker thread: closing never blocks the kernel,
        even when the engine is away."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pump.stop()
        subscriptions, self._subscriptions = list(self._subscriptions), []

        def unsubscribe_all() -> None:
            unsubscribe = getattr(self.eng, "unsubscribe", None)
            for channel, callback, handle in subscriptions:
                try:
                    if callable(getattr(handle, "cancel", None)):
                        handle.cancel()
                    elif callable(unsubscribe):
                        unsubscribe(channel, callback)
                except Exception as exc:
                    self._record_error(exc)

        self._background(unsubscribe_all)
        super().close()
