"""The trader's cockpit at 1280 x 800 in JupyterLab (issue 14a), against a real engine trading on the accelerated
simulator: the chart of the strategy's market with its entry marker and the open position's entry, stop and
take-profit lines; floating PnL that moves while the position is open; nothing cut off (position columns, the
start form's hints, the kill confirmation's buttons); Razor's description linking a file of the repository; and
Stop asking whether to leave the position with its brackets or to flatten it.

Screenshots (test-artifacts/): ``cockpit_chart_position.png`` (the chart with a position and its lines, at 1280 x
800), ``cockpit_kill_confirm.png``, ``cockpit_start_form.png`` (hints, Razor's link), ``cockpit_stop_question.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Stack
from tests.browser.harness import REPO_ROOT, LabPage
from tests.browser.layout import cut_off, inside_viewport, whole_in_viewport
from tests.conftest import wait_for

PANEL = ".jp-OutputArea-output .tb-control-panel"
INSTRUMENT = "BTC_USDC-PERPETUAL"
# Razor entering at once (RSI below 100 always scores long) with brackets wide enough to stay open for a while
# on the replayed market, and break-even on: the stop line moves when the market goes half way to the target.
HOLDING_RAZOR = {"rsiOversold": 100, "rsiOverbought": 100, "cooldownMinutes": 0, "stopLossPercent": 1.0,
                 "takeProfitPercent": 1.0, "breakEvenTriggerToTP": 0.3}

CHART_JS = """() => {
  const gd = document.querySelector('.tb-chart .js-plotly-plot');
  if (!gd || !gd.data) return null;
  const line = (name) => { const t = gd.data.find(t => (t.name || '').startsWith(name)); return t ? t.y : null; };
  return {candles: (gd.data[0].x || []).length, entries: (gd.data[1].x || []).length + (gd.data[2].x || []).length,
          entry: line('entry '), stop: line('stop'), take: line('take-profit')};
}"""


@pytest.fixture
def page_1280(chromium: Any, stack: Stack) -> Iterator[LabPage]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield LabPage(context.new_page(), stack.lab)
    finally:
        context.close()


def shot(lab_page: LabPage, name: str, showing: Any = None) -> None:
    """A screenshot of the 1280 x 800 window as a person sees it, ``showing`` (a locator) scrolled into view first.
    (Not an element screenshot: playwright would grow the page around a panel taller than the window, and JupyterLab's
    fixed frame would be drawn across it.)"""
    if showing is not None:
        showing.scroll_into_view_if_needed()
    lab_page.screenshot(name)


def test_the_cockpit_at_1280_charts_the_position_moves_its_numbers_fits_and_stops_as_asked(
        page_1280: LabPage, stack: Stack) -> None:
    lab_page, page = page_1280, page_1280.page
    with stack.engine.client() as c:
        sid = c.call("strategy.start", name="razor", instrument=INSTRUMENT, config=HOLDING_RAZOR)["id"]
        position = wait_for(lambda: next((p for p in c.call("positions.list") if p["strategy_id"] == sid
                                          and p["stop_price"] and p["take_price"]), None),
                            timeout=120, what="Razor's position to open with its brackets")

    lab_page.open_notebook("control.ipynb")
    lab_page.run_all()
    panel = page.locator(PANEL)
    expect(panel.locator(".tb-connection")).to_have_text("connected", timeout=60_000)
    row = panel.locator(f'.tb-strategy-row[data-strategy-id="{sid}"]')
    expect(row.locator(".tb-state")).to_have_text("running", timeout=30_000)

    # the chart: the engine's candles with history, the entry marker, the position's three lines
    chart = panel.locator(".tb-chart .js-plotly-plot")
    expect(chart).to_be_visible(timeout=30_000)
    drawn = wait_for(lambda: (d := page.evaluate(CHART_JS)) and d["candles"] >= 20 and d["entries"] >= 1
                     and d["stop"] and d["entry"] and d["take"] and d, timeout=60,
                     what="the chart with candles, an entry marker and the position's lines")
    assert drawn is not None and position is not None
    assert drawn["entry"] == [position["entry_price"]] * 2
    assert drawn["take"] == [position["take_price"]] * 2
    assert len(set(drawn["stop"])) == 1 and drawn["stop"][0] > 0

    def stop_follows_the_engine() -> bool:
        # the stop line is where the engine's stop is now (break-even may have moved it since the position opened)
        with stack.engine.client() as c:
            now = next((p for p in c.call("positions.list") if p["strategy_id"] == sid), None)
        stop = (page.evaluate(CHART_JS) or {}).get("stop")
        return now is None or (stop is not None and stop[0] == now["stop_price"])

    wait_for(stop_follows_the_engine, timeout=30, what="the chart's stop line at the engine's stop price")
    chart.scroll_into_view_if_needed()
    shot(lab_page, "cockpit_chart_position.png")
    assert inside_viewport(page, chart)

    # numbers that move: the position's floating PnL, pushed by the engine, changes while it is open
    floating = panel.locator("table.tb-positions tr:nth-child(2) td:last-child")
    first = floating.inner_text()
    expect(floating).not_to_have_text(first, timeout=30_000)
    expect(row).to_contain_text("mark ")

    # nothing cut off at 1280 px: the panel, the position's columns, the form's hints, the kill confirmation
    expect(panel.locator(".tb-start-form .tb-hint").first).to_be_visible(timeout=30_000)
    panel.locator(".widget-button.tb-kill").click()
    confirm = panel.locator(".tb-kill-confirm-button")
    expect(confirm).to_be_visible(timeout=10_000)
    assert cut_off(page, PANEL) == []
    for button in (confirm, panel.locator(".tb-kill-cancel")):
        button.scroll_into_view_if_needed()
        assert inside_viewport(page, button)
    shot(lab_page, "cockpit_kill_confirm.png")
    panel.locator(".tb-kill-cancel").click()
    assert whole_in_viewport(page, f"{PANEL} table.tb-positions"), "the positions table is cut off"
    for hint in panel.locator(".tb-start-form .tb-hint").all():
        hint.scroll_into_view_if_needed()
        assert inside_viewport(page, hint)
        assert float(hint.locator("span").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 11

    # Razor's description links a file that exists in the repository
    link = panel.locator(".tb-start-form .tb-strategy-description a.tb-doc-link")
    expect(link).to_have_text("docs/razor.md")
    target = Path(unquote(urlparse(str(link.get_attribute("href"))).path))
    assert target.is_file() and target.resolve() == (REPO_ROOT / "docs" / "razor.md").resolve()

    shot(lab_page, "cockpit_start_form.png", link)

    # Stop asks: leave the position with its brackets (chosen here), flatten it, or cancel
    row_box = panel.locator(".tb-strategies > .widget-vbox").filter(has=page.locator(f".tb-stop-{sid}"))
    row_box.locator(f".widget-button.tb-stop-{sid}").click()
    question = row_box.locator(".tb-stop-confirm")
    expect(question.locator(".tb-stop-question")).to_contain_text("Leave the position", timeout=10_000)
    for button in ("tb-stop-keep", "tb-stop-flatten", "tb-stop-cancel"):
        locator = question.locator(f".widget-button.{button}")
        locator.scroll_into_view_if_needed()
        assert inside_viewport(page, locator)
    shot(lab_page, "cockpit_stop_question.png", question)
    question.locator(".widget-button.tb-stop-keep").click()
    expect(row.locator(".tb-state")).to_have_text("stopped", timeout=30_000)
    with stack.engine.client() as c:
        kept = [p for p in c.call("positions.list") if p["strategy_id"] == sid]
        assert kept and kept[0]["stop_price"], "the position and its stop stay on the exchange"
        roles = {o["role"] for o in c.call("orders.list") if o["strategy_id"] == sid}
        assert "sl" in roles
