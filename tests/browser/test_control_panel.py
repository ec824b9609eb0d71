"""The control notebook in a real JupyterLab and headless Chromium, against a real engine and the accelerated
simulator: the panel renders, connects, starts Razor from its form, shows it running and trading, changes one of
its parameters in the edit form (a new config version, in the panel and on the engine), and stops it.

Waiting is always for a visible condition with a deadline (playwright's ``expect``), never a sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import Locator, expect

from tests.browser.conftest import Stack
from tests.browser.harness import KERNEL_NAME, LabPage

PANEL = ".jp-OutputArea-output .tb-control-panel"

# Razor tuned to trade on almost every candle of the replayed data: RSI below 100 always scores long (and never
# short), no cooldown, and brackets close enough that the market reaches one within a few replayed minutes.
FAST_RAZOR = {
    "rsiOversold": "100",
    "rsiOverbought": "100",
    "cooldownMinutes": "0",
    "stopLossPercent": "0.05",
    "takeProfitPercent": "0.05",
}


def open_panel(lab_page: LabPage) -> None:
    """Open control.ipynb on the project's kernel, run all cells, wait for the panel to connect."""
    lab_page.open_notebook("control.ipynb")
    assert lab_page.kernel_name() == KERNEL_NAME
    lab_page.run_all()
    panel = lab_page.page.locator(PANEL)
    expect(panel).to_be_visible(timeout=60_000)
    expect(panel.locator(".tb-connection")).to_have_text("connected", timeout=30_000)


def test_control_notebook_runs_and_the_panel_connects(lab_page: LabPage, stack: Stack) -> None:
    open_panel(lab_page)
    page = lab_page.page
    lab_page.wait_all_executed()
    assert lab_page.errors() == []
    panel = page.locator(PANEL)
    expect(panel.locator(".tb-status")).to_contain_text(f"pid {stack.engine.pid}")
    expect(panel.locator(".widget-button", has_text="Kill")).to_be_visible()
    # the kill switch asks first
    panel.locator(".widget-button", has_text="Kill").click()
    expect(panel.locator(".tb-kill-confirm")).to_be_visible(timeout=10_000)
    panel.locator(".widget-button", has_text="Cancel").click()
    expect(panel.locator(".tb-kill-confirm")).to_be_hidden(timeout=10_000)
    lab_page.screenshot("control_panel_connected.png", PANEL)


def test_start_razor_from_the_panel_see_it_trade_and_stop_it(lab_page: LabPage, stack: Stack) -> None:
    open_panel(lab_page)
    page = lab_page.page
    panel = page.locator(PANEL)
    form = panel.locator(".tb-start-form")
    expect(form.locator(".widget-button", has_text="Start")).to_be_visible(timeout=30_000)
    choice = form.locator(".tb-strategy-choice select")  # options read "razor · built-in · <version>"
    choice.select_option(choice.locator("option").filter(has_text=re.compile(r"^razor(\W|$)")).first
                         .get_attribute("value"))

    # an invalid value is explained next to its field, and nothing is started
    field = form.locator(".tb-field-rsiOversold input")
    field.fill("lots")
    expect(form.locator(".tb-error-rsiOversold")).to_contain_text("not a number", timeout=10_000)
    form.locator(".widget-button", has_text="Start").click()
    expect(form.locator(".tb-form-message")).to_contain_text("invalid value", timeout=10_000)
    expect(panel.locator(".tb-strategy-row")).to_have_count(0)

    # a value only the engine can judge (an unknown instrument): its -32602 message is shown
    for name, value in FAST_RAZOR.items():
        form.locator(f".tb-field-{name} input").fill(value)
    form.locator(".tb-field-instrument input").fill("NOPE-PERPETUAL")
    form.locator(".widget-button", has_text="Start").click()
    expect(form.locator(".tb-form-message")).to_contain_text("engine:", timeout=30_000)
    expect(form.locator(".tb-form-message")).to_contain_text("NOPE-PERPETUAL")

    form.locator(".tb-field-instrument input").fill("BTC_USDC-PERPETUAL")
    form.locator(".widget-button", has_text="Start").click()
    expect(form.locator(".tb-form-ok")).to_contain_text("started", timeout=30_000)

    row = panel.locator(".tb-strategy-row").first
    expect(row.locator(".tb-state")).to_have_text("running", timeout=30_000)
    expect(panel.locator(".tb-decision .tb-signal")).to_be_visible(timeout=90_000)

    # a trade appears (open or closed) in the recent-trades table
    expect(panel.locator("table.tb-trades .tb-trade-state").first).to_have_text(re.compile("open|closed"),
                                                                                timeout=180_000)
    lab_page.screenshot("control_panel_trading.png", PANEL)

    edit_a_running_strategy(lab_page, stack, row)

    panel.locator(".widget-button", has_text="Stop").first.click()
    # holding a position, Stop first asks what to do with it (test_cockpit.py checks the question): flatten it
    question = panel.locator(".tb-stop-confirm .tb-stop-question")
    stopped = row.locator(".tb-state", has_text="stopped")
    expect(stopped.or_(question).first).to_be_visible(timeout=30_000)
    if question.is_visible():
        panel.locator(".tb-stop-confirm .widget-button.tb-stop-flatten").click()
    expect(row.locator(".tb-state")).to_have_text("stopped", timeout=30_000)
    lab_page.screenshot("control_panel.png", PANEL)
    lab_page.screenshot("control_panel_page.png")


def edit_a_running_strategy(lab_page: LabPage, stack: Stack, row: Locator) -> None:
    """The Edit button of a running strategy's row opens its form, prefilled with the running config; a changed
    field applied is a new config version, shown by the form and the row, and what the engine runs from then on."""
    panel = lab_page.page.locator(PANEL)
    sid = row.get_attribute("data-strategy-id")
    assert sid
    expect(row.locator(".tb-config-version")).to_have_text("cfg 1")
    panel.locator(f".widget-button.tb-edit-{sid}").click()
    form = panel.locator(f".tb-edit-form-{sid}")
    expect(form).to_be_visible(timeout=30_000)
    expect(form.locator(".tb-edit-title")).to_contain_text("config version 1")
    field = form.locator(".tb-field-takeProfitPercent input")
    expect(field).to_have_value(FAST_RAZOR["takeProfitPercent"])  # the running config, not the default
    field.fill("0.08")
    form.locator(".widget-button.tb-edit-apply").click()
    expect(form.locator(".tb-edit-message")).to_contain_text("config version 2 from the next candle",
                                                             timeout=30_000)
    expect(form.locator(".tb-edit-title")).to_contain_text("config version 2")
    expect(row.locator(".tb-config-version")).to_have_text("cfg 2", timeout=30_000)
    lab_page.screenshot("control_panel_edit.png", PANEL)
    with stack.engine.client() as c:
        info = c.call("strategy.get", id=sid)
        assert info["config_version"] == 2 and info["config"]["takeProfitPercent"] == 0.08, info
        assert info["config"]["stopLossPercent"] == float(FAST_RAZOR["stopLossPercent"])  # only the changed key
        changed = c.call("journal.events", kinds=["strategy.changed"], strategy=sid)
        assert changed[-1]["payload"]["config_version"] == 2
    form.locator(".widget-button.tb-edit-close").click()
    expect(form).to_have_count(0, timeout=10_000)


def test_the_panel_survives_an_engine_restart(lab_page: LabPage, stack: Stack) -> None:
    from tests.integration.conftest import start_engine_process

    open_panel(lab_page)
    panel = lab_page.page.locator(PANEL)
    old_pid = stack.engine.pid
    assert stack.engine.stop() == 0
    expect(panel.locator(".tb-connection")).to_contain_text("reconnecting", timeout=30_000)
    lab_page.screenshot("control_panel_reconnecting.png", PANEL)

    stack.engine = start_engine_process(stack.home, exchange="sim", timeout=60)
    assert stack.engine.pid != old_pid
    expect(panel.locator(".tb-connection")).to_have_text("connected", timeout=60_000)
    expect(panel.locator(".tb-status")).to_contain_text(f"pid {stack.engine.pid}")
    expect(panel.locator(".tb-status-note")).to_contain_text("engine restarted")
