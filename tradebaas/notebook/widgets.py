"""Pure rendering: RPC answers (docs/rpc.md shapes) -> HTML strings for the control panel.

Everything here is a function of its arguments (no widgets, no clock, no I/O), so the panel's content is unit
tested without a kernel or a browser, and the panel only assigns the strings to ``HTML.value`` when they change.
Stable CSS classes (``tb-*``) and plain state words ("running", "stopped") are part of the contract: the browser
test and users' own CSS find elements by them.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradebaas.rpc.facade import error_summary, short_version

STATE_COLOURS = {
    "running": "#1e8449",
    "starting": "#b9770e",
    "stopping": "#b9770e",
    "stopped": "#566573",
    "error": "#c0392b",
    "needs_attention": "#c0392b",
    "killed": "#c0392b",
}

CONNECTION_TEXT = {
    "connected": ("connected", "#1e8449"),
    "connecting": ("connecting…", "#b9770e"),
    "reconnecting": ("engine restarted/reconnecting…", "#c0392b"),
    "disconnected": ("engine unreachable — reconnecting…", "#c0392b"),
}

_TABLE_STYLE = "border-collapse:collapse;font-size:12px;font-family:monospace"
_CELL = "padding:1px 6px;text-align:right;border-bottom:1px solid #eee;white-space:nowrap"
_HEAD = "padding:1px 6px;text-align:right;border-bottom:1px solid #999;font-weight:600;white-space:nowrap"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt_num(value: Any, digits: int = 2) -> str:
    """A number for a table cell; '-' for missing values, fewer decimals for large prices."""
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if math.isnan(number):
        return "-"
    if abs(number) >= 1000 and digits > 1:
        digits = 1
    return f"{number:,.{digits}f}"


def fmt_money(value: Any, currency: str | None = None) -> str:
    """Money with the settlement currency: BTC needs satoshi precision, USD/USDC cents."""
    if value is None:
        return "-"
    digits = 8 if (currency or "").upper() in {"BTC", "ETH"} else 2
    text = f"{float(value):+,.{digits}f}"
    return f"{text} {currency}" if currency else text


def fmt_duration(seconds: float | None) -> str:
    """Uptime as '3d 4h', '2h 05m', '4m 09s' or '12s'."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def fmt_ts(ts_ms: Any, seconds: bool = True) -> str:
    """Exchange/engine timestamps (Unix ms) as UTC 'MM-DD HH:MM:SS' (the panel is about today's session);
    'MM-DD HH:MM' without ``seconds`` (narrow tables)."""
    if ts_ms in (None, 0, ""):
        return "-"
    try:
        return datetime.fromtimestamp(float(ts_ms) / 1000, UTC).strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return esc(ts_ms)


def _signed_colour(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "inherit"
    return "#1e8449" if number > 0 else "#c0392b" if number < 0 else "inherit"


def state_badge(state: str | None) -> str:
    state = state or "unknown"
    colour = STATE_COLOURS.get(state, "#566573")
    return (f'<span class="tb-state tb-state-{esc(state)}" style="color:#fff;background:{colour};'
            f'border-radius:3px;padding:0 5px">{esc(state)}</span>')


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], css_class: str, empty: str = "none") -> str:
    """An HTML table; cells are already-escaped HTML."""
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<div class="{css_class} tb-empty" style="color:#888;font-size:12px">{esc(empty)}</div>'
    head = "".join(f'<th style="{_HEAD}">{esc(h)}</th>' for h in headers)
    # a panel narrower than the table scrolls it sideways rather than cutting columns off
    return (f'<div class="tb-table-scroll" style="overflow-x:auto;max-width:100%">'
            f'<table class="{css_class}" style="{_TABLE_STYLE}"><tr>{head}</tr>{body}</table></div>')


def status_html(status: Mapping[str, Any] | None, connection: str, uptime_s: float | None = None,
                note: str = "") -> str:
    """The header line: our link to the engine, the engine's version/uptime, and its link to the exchange."""
    conn_text, conn_colour = CONNECTION_TEXT.get(connection, (connection, "#566573"))
    parts = [f'<b>engine</b> <span class="tb-connection tb-connection-{esc(connection)}" '
             f'style="color:{conn_colour}">{esc(conn_text)}</span>']
    if status:
        up = uptime_s if uptime_s is not None else status.get("uptime_s")
        parts.append(f"v{esc(status.get('version'))} · pid {esc(status.get('pid'))} · up {fmt_duration(up)}")
        exchange = status.get("exchange") or {}
        ok = bool(exchange.get("connected"))
        link = ("connected" if ok else "disconnected")
        colour = "#1e8449" if ok else "#c0392b"
        text = (f'<b>exchange</b> {esc(exchange.get("name") or "?")} '
                f'<span class="tb-exchange tb-exchange-{link}" style="color:{colour}">{link}</span>')
        if exchange.get("reconnects"):
            text += f" · {esc(exchange.get('reconnects'))} reconnects"
        if exchange.get("last_error") and not ok:
            text += f' · <span style="color:#c0392b">{esc(exchange.get("last_error"))}</span>'
        parts.append(text)
        counts = status.get("strategies") or {}
        if counts:
            parts.append(f"strategies {esc(counts.get('running', 0))}/{esc(counts.get('total', 0))} running")
    if note:
        parts.append(f'<span class="tb-status-note">{esc(note)}</span>')
    return '<div class="tb-status" style="font-size:13px">' + " &nbsp;|&nbsp; ".join(parts) + "</div>"


def strategy_uptime(strategy: Mapping[str, Any], elapsed_s: float = 0.0) -> float | None:
    """A running strategy's uptime ``elapsed_s`` after its row was received; a stopped one's as reported."""
    up = strategy.get("uptime_s")
    if up is None:
        return None
    if strategy.get("state") == "running":
        return float(up) + max(elapsed_s, 0.0)
    return float(up)


#: How the panel names where a strategy comes from (``strategy.available``'s ``source``).
SOURCE_TEXT = {"builtin": "built-in", "file": "file", "entry_point": "package", "deployed": "deployed"}


def strategy_label(entry: Mapping[str, Any]) -> str:
    """A strategy as the start form's dropdown lists it: name, where it comes from, code version (12 chars);
    a file that does not load says so. An older engine's entry (no source, no version) is just its name."""
    parts = [str(entry.get("name") or "?")]
    source = entry.get("source")
    if source:
        parts.append(SOURCE_TEXT.get(str(source), str(source)))
    if entry.get("error"):
        parts.append("does not load")
    elif entry.get("version"):
        parts.append(str(short_version(entry.get("version"))))
    return " · ".join(parts)


def error_details_html(error: Any, css_class: str = "tb-error-details") -> str:
    """The full traceback behind a "details" toggle (``<details>``: the browser keeps it open or closed, and the
    panel re-assigns it only when the error text changes). Empty when there is no error."""
    if not error:
        return ""
    return (f'<details class="{css_class}" style="font-size:11px"><summary style="cursor:pointer;color:#c0392b">'
            f'details</summary><pre style="white-space:pre-wrap;overflow-wrap:anywhere;max-height:320px;'
            f'overflow:auto;margin:2px 0">{esc(error)}</pre></details>')


def strategy_row_html(strategy: Mapping[str, Any], uptime_s: float | None = None) -> str:
    """One strategy: id, name, instrument, code and config versions, state (with reason, or the error's summary),
    uptime, trades, realized and floating PnL. The cells wrap rather than run off a narrow panel."""
    pnl = strategy.get("pnl") or {}
    currency = pnl.get("currency")
    state = str(strategy.get("state") or "unknown")
    reason = error_summary(strategy.get("error")) or strategy.get("state_reason") or ""
    reason_class = "tb-strategy-error" if strategy.get("error") else "tb-state-reason"
    reason_colour = "#c0392b" if strategy.get("error") else "#888"
    version = strategy.get("version")
    config_version = strategy.get("config_version")
    versions = []
    if version:
        versions.append(f'<span class="tb-code-version" title="code version {esc(version)}">'
                        f"v {esc(short_version(version))}</span>")
    if config_version is not None:
        versions.append(f'<span class="tb-config-version" title="config version">cfg {esc(config_version)}</span>')
    up = uptime_s if uptime_s is not None else strategy.get("uptime_s")
    net = pnl.get("net")
    floating = pnl.get("floating")
    position = strategy.get("position") or None
    pos_text = "flat"
    if position and float(position.get("amount") or 0):
        pos_text = f"{esc(position.get('direction'))} {fmt_num(position.get('amount'), 4)}"
        if position.get("mark_price"):
            pos_text += f' · <span class="tb-mark">mark {fmt_num(position.get("mark_price"))}</span>'
    cells = [
        f'<b class="tb-strategy-id">{esc(strategy.get("id"))}</b>',
        f"{esc(strategy.get('name'))} · {esc(strategy.get('instrument'))}",
        *([" · ".join(versions)] if versions else []),
        state_badge(state) + (f' <span class="{reason_class}" style="color:{reason_colour}">{esc(reason)}</span>'
                              if reason else ""),
        f"up {fmt_duration(up)}",
        f"{esc(strategy.get('trades', 0))} trades",
        f'net <span style="color:{_signed_colour(net)}">{fmt_money(net, currency)}</span>',
        f'floating <span style="color:{_signed_colour(floating)}">{fmt_money(floating, currency)}</span>',
        pos_text,
    ]
    cells_html = "".join(f"<span>{cell}</span>" for cell in cells)
    return (f'<div class="tb-strategy-row tb-strategy-{esc(state)}" data-strategy-id="{esc(strategy.get("id"))}" '
            f'style="font-size:12px;font-family:monospace;display:flex;flex-wrap:wrap;column-gap:1.2em">'
            + cells_html + "</div>")


def positions_html(positions: Iterable[Mapping[str, Any]]) -> str:
    """Live positions with their protection: entry, stop, take-profit, mark and floating PnL."""
    rows = []
    for p in positions:
        if not float(p.get("amount") or 0):
            continue
        direction = str(p.get("direction") or "")
        rows.append([
            esc(p.get("strategy_id")), esc(p.get("instrument")),
            f'<span class="tb-direction-{esc(direction)}">{esc(direction)}</span>',
            fmt_num(p.get("amount"), 4), fmt_num(p.get("entry_price")),
            fmt_num(p.get("stop_price")), fmt_num(p.get("take_price")), fmt_num(p.get("mark_price")),
            f'<span style="color:{_signed_colour(p.get("floating_pnl"))}">'
            f'{fmt_money(p.get("floating_pnl"), p.get("currency"))}</span>',
        ])
    return table(["strategy", "instrument", "side", "amount", "entry", "stop", "take-profit", "mark", "floating PnL"],
                 rows, "tb-positions", empty="no open position")


def decision_html(strategy_id: str, decision: Mapping[str, Any] | None) -> str:
    """The latest decision and its checkpoints: signal, scores, indicator values and the reasons behind them."""
    if not decision:
        return (f'<div class="tb-decision tb-empty" style="color:#888;font-size:12px">'
                f"{esc(strategy_id)}: no decision yet</div>")
    signal = str(decision.get("signal") or "none")
    colour = {"long": "#1e8449", "short": "#c0392b"}.get(signal, "#566573")
    scores = decision.get("scores") or {}
    score_text = " · ".join(f"{esc(k)} {fmt_num(v, 1)}" for k, v in scores.items())
    indicators = decision.get("indicators") or {}
    ind_cells = []
    for key, value in indicators.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float):
            text = fmt_num(value, 4 if abs(float(value)) < 100 else 2)
        else:
            text = esc(value)
        ind_cells.append(f'<span class="tb-indicator" style="margin-right:10px">{esc(key)} <b>{text}</b></span>')
    reasons = decision.get("reasons") or []
    reason_items = "".join(f"<li>{esc(r)}</li>" for r in reasons)
    skipped = decision.get("skipped") or ""
    return (
        f'<div class="tb-decision" style="font-size:12px">'
        f"<b>{esc(strategy_id)}</b> @ {fmt_ts(decision.get('ts_ms'))} — signal "
        f'<span class="tb-signal tb-signal-{esc(signal)}" style="color:{colour};font-weight:600">{esc(signal)}</span>'
        + (f' · <span class="tb-skipped" style="color:#888">skipped: {esc(skipped)}</span>' if skipped else "")
        + f'<div class="tb-scores">{score_text}</div>'
        + f'<div class="tb-indicators" style="font-family:monospace">{"".join(ind_cells)}</div>'
        + (f'<ul class="tb-reasons" style="margin:2px 0 0 0">{reason_items}</ul>' if reason_items else "")
        + "</div>"
    )


def trades_html(trades: Iterable[Mapping[str, Any]], limit: int = 10) -> str:
    """The most recent trades (newest first), open ones included so an entry shows as soon as it fills."""
    ordered = sorted(trades, key=lambda t: (t.get("exit_ts_ms") or t.get("entry_ts_ms") or 0), reverse=True)
    rows = []
    currencies = {str(t.get("currency")) for t in ordered[:limit] if t.get("currency")}
    currency = next(iter(currencies)) if len(currencies) == 1 else None  # then said once, in the header
    for t in ordered[:limit]:
        net = t.get("net_pnl")
        state = str(t.get("state") or "")
        rows.append([
            esc(t.get("trade_id")), esc(t.get("strategy_id")), esc(t.get("direction")),
            f'<span class="tb-trade-state tb-trade-{esc(state)}">{esc(state)}</span>'
            + (f' <span class="tb-exit-reason">{esc(t.get("exit_reason"))}</span>' if t.get("exit_reason") else ""),
            fmt_num(t.get("amount"), 4), fmt_num(t.get("entry_price")), fmt_num(t.get("exit_price")),
            fmt_ts(t.get("entry_ts_ms"), seconds=False), fmt_ts(t.get("exit_ts_ms"), seconds=False),
            f'<span style="color:{_signed_colour(net)}">'
            f'{fmt_money(net, None if currency else t.get("currency")) if net is not None else "-"}</span>',
        ])
    return table(["trade", "strategy", "side", "state", "amount", "entry", "exit", "opened", "closed",
                  f"net {currency}" if currency else "net PnL"], rows, "tb-trades", empty="no trades yet")


def orders_html(orders: Iterable[Mapping[str, Any]], limit: int = 10) -> str:
    """Open orders: the brackets that protect positions on the exchange."""
    rows = []
    for o in list(orders)[:limit]:
        rows.append([esc(o.get("strategy_id")), esc(o.get("role")), esc(o.get("side")), esc(o.get("type")),
                     fmt_num(o.get("amount"), 4), fmt_num(o.get("price")), fmt_num(o.get("trigger_price")),
                     esc(o.get("state"))])
    return table(["strategy", "role", "side", "type", "amount", "price", "trigger", "state"], rows, "tb-orders",
                 empty="no open orders")


def reports_html(runs: Iterable[Mapping[str, Any]], limit: int = 6) -> str:
    """Recent report runs (newest first) with their status and links to the outputs the engine wrote.

    The links are ``file://`` URLs of the HTML report and the executed notebook under ``TRADEBAAS_HOME/reports``
    (the engine's machine); the path is also shown, for opening it on a server through the tunnel."""
    ordered = sorted(runs, key=lambda r: r.get("queued_ts_ms") or r.get("started_ts_ms") or 0, reverse=True)
    rows = []
    for r in ordered[:limit]:
        status = str(r.get("status") or "")
        links = []
        for key, text in (("html_path", "html"), ("notebook_path", "notebook")):
            path = r.get(key)
            if path and (key != "html_path" or status == "ok"):
                links.append(f'<a href="file://{esc(path)}" title="{esc(path)}" target="_blank">{text}</a>')
        error = str(r.get("error") or "")
        rows.append([
            esc(r.get("name")), f'<span class="tb-report-status tb-report-{esc(status)}">{esc(status)}</span>',
            esc(r.get("trigger") or ""), fmt_ts(r.get("finished_ts_ms") or r.get("started_ts_ms")),
            " ".join(links) or "-", esc(error[:80]),
        ])
    return table(["report", "status", "trigger", "when", "outputs", "error"], rows, "tb-reports",
                 empty="no report runs yet")


def sparkline_svg(values: Sequence[float], width: int = 260, height: int = 44, label: str = "") -> str:
    """An inline SVG sparkline of equity: the shape of the curve at a glance, without matplotlib in the hot path.

    The last value and the change from the first are printed beside it.
    """
    points = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(points) < 2:
        return ('<div class="tb-sparkline tb-empty" style="color:#888;font-size:12px">'
                f"equity: {fmt_num(points[-1]) if points else '-'} (not enough points for a curve)</div>")
    lo, hi = min(points), max(points)
    span = hi - lo or 1.0
    pad = 2
    step = (width - 2 * pad) / (len(points) - 1)
    coords = " ".join(
        f"{pad + i * step:.1f},{pad + (height - 2 * pad) * (1 - (v - lo) / span):.1f}" for i, v in enumerate(points)
    )
    change = points[-1] - points[0]
    colour = "#1e8449" if change >= 0 else "#c0392b"
    return (
        f'<div class="tb-sparkline" style="font-size:12px;display:flex;align-items:center;gap:8px">'
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/></svg>'
        f"<span>{esc(label)} {fmt_num(points[-1])} "
        f'<span style="color:{colour}">({change:+,.2f})</span></span></div>'
    )


def log_html(lines: Iterable[Mapping[str, Any]], limit: int = 15) -> str:
    """The tail of the engine's log, newest last, warnings and errors coloured."""
    tail = list(lines)[-limit:]
    if not tail:
        return '<pre class="tb-log tb-empty" style="color:#888;font-size:11px;margin:0">no log lines yet</pre>'
    out = []
    for line in tail:
        level = str(line.get("level") or "").upper()
        colour = {"WARNING": "#b9770e", "ERROR": "#c0392b", "CRITICAL": "#c0392b"}.get(level, "inherit")
        out.append(f'<span style="color:{colour}">{fmt_ts(line.get("ts_ms"))} {esc(level[:4]):4} '
                   f"{esc(line.get('logger'))}: {esc(line.get('message'))}</span>")
    return ('<pre class="tb-log" style="font-size:11px;margin:0;max-height:220px;overflow:auto">'
            + "\n".join(out) + "</pre>")


def kill_confirm_html(flatten: bool, running: int) -> str:
    """What the kill switch is about to do, spelled out before it is confirmed."""
    what = "stop every strategy and cancel their entry orders"
    if flatten:
        what += ", and CLOSE ALL POSITIONS at market"
    else:
        what += " (positions keep their stops on the exchange)"
    return (f'<span class="tb-kill-confirm" style="color:#c0392b"><b>Kill switch:</b> {esc(what)}. '
            f"{running} strategy(ies) running. Confirm?</span>")


#: The repository a source checkout runs from (docs/ beside the package); absent in a plain wheel install.
REPO_ROOT = Path(__file__).resolve().parents[2]
_DOC_REFERENCE = re.compile(r"\bdocs/[\w.-]+\.md\b")


def description_html(text: Any, repo_root: Path = REPO_ROOT) -> str:
    """A strategy's description, escaped; a ``docs/NAME.md`` it names becomes a link to that file of the
    repository when it exists there (a ``file://`` URL: the panel may run in a notebook far from the repository's
    folder), else stays plain text."""
    escaped = esc(text)

    def link(match: re.Match[str]) -> str:
        path = repo_root / match.group(0)
        if not path.is_file():
            return match.group(0)
        return (f'<a class="tb-doc-link" href="{esc(path.as_uri())}" title="{esc(path)}" target="_blank" '
                f'rel="noopener">{match.group(0)}</a>')

    return _DOC_REFERENCE.sub(link, escaped)


def stop_confirm_html(sid: str, position: Mapping[str, Any]) -> str:
    """The question Stop asks when the strategy holds a position: what happens to it."""
    return (f'<span class="tb-stop-question" style="font-size:12px;color:#b9770e">Stop <b>{esc(sid)}</b>: it holds '
            f'{esc(position.get("direction"))} {fmt_num(position.get("amount"), 4)} from '
            f'{fmt_num(position.get("entry_price"))} (floating {fmt_money(position.get("floating_pnl"), position.get("currency"))}). '
            "Leave the position with its stop and take-profit on the exchange, or flatten it at market?</span>")


def now_ms() -> int:
    """Wall clock in ms — only for display decisions (e.g. 'updated 3 s ago'), never for trading."""
    return int(time.time() * 1000)
