"""The doctor's verdicts as specifications: facts in, one checklist line out (``tradebaas/doctor/checks.py``), and
the promise that a running engine never takes the doctor's labelled orders for its own."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tradebaas.commands.doctor import render
from tradebaas.doctor import checks as ck
from tradebaas.doctor.checks import Check, ClockSample, Status, StrategySize
from tradebaas.doctor.exchange import DOCTOR_STRATEGY_ID, far_price
from tradebaas.domain import (
    ExchangeSnapshot,
    Fill,
    Order,
    OrderRole,
    OrderState,
    OrderType,
    Side,
    StrategyState,
)
from tradebaas.engine.core.labels import make_label, new_strategy_id, parse_label
from tradebaas.engine.core.reconcile import JournalView, StrategyView, plan
from tradebaas.home import get_home
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL, DEFAULT_INSTRUMENTS

LIN, INV = BTC_USDC_PERPETUAL, BTC_PERPETUAL
NOW_S = 1_760_000_000.0


# ---------------------------------------------------------------------------------------------------- scope

def test_a_key_that_can_trade_and_read_its_account_passes() -> None:
    c = ck.scope_check("connection mainaccount account:read trade:read_write")
    assert c.status is Status.PASS and c.data["trade"] == "read_write"


@pytest.mark.parametrize("granted, lacking", [
    ("connection mainaccount account:read_write trade:read", "trade:read_write"),
    ("connection mainaccount trade:read_write", "account:read"),
    ("connection mainaccount", "trade:read_write and account:read"),
])
def test_a_key_without_trade_or_account_scope_fails_naming_what_it_lacks(granted: str, lacking: str) -> None:
    c = ck.scope_check(granted)
    assert c.status is Status.FAIL and f"lacks {lacking}" in c.detail and "Trade: read+write" in c.fix


def test_a_withdrawal_scope_is_flagged_as_a_risk() -> None:
    c = ck.scope_check("account:read_write trade:read_write wallet:read_write connection")
    assert c.status is Status.WARN and "withdraw" in c.detail and "Wallet" in c.fix


# ---------------------------------------------------------------------------------------------------- clock

def sample(skew_s: float, rtt_s: float = 0.02, exchange_ms: int | None = None, usout: bool = True) -> ClockSample:
    """A round trip at NOW_S on this machine to an exchange whose clock is ``skew_s`` behind it."""
    server_s = NOW_S + rtt_s / 2 - skew_s
    ms = int(server_s * 1000) if exchange_ms is None else exchange_ms
    return ClockSample(NOW_S, NOW_S + rtt_s, int(server_s * 1e6) if usout else None, ms)


@pytest.mark.parametrize("skew, status", [(0.004, Status.PASS), (-0.9, Status.PASS), (2.5, Status.WARN),
                                          (-30.0, Status.FAIL), (30.0, Status.FAIL)])
def test_clock_skew_thresholds(skew: float, status: Status) -> None:
    c = ck.clock_check([sample(skew)])
    assert c.status is status and c.data["skew_s"] == pytest.approx(skew, abs=1e-3)
    assert ("ahead of" if skew > 0 else "behind") in c.detail
    assert (c.fix != "") == (status is not Status.PASS)


def test_clock_uses_the_fastest_round_trip_and_a_slow_network_does_not_make_a_failure() -> None:
    noisy = [sample(4.0, rtt_s=9.0), sample(0.01, rtt_s=0.01)]
    assert ck.clock_check(noisy).data["rtt_s"] == pytest.approx(0.01)
    assert ck.clock_check([sample(5.5, rtt_s=2.0)]).status is Status.WARN  # 5.5 s +- 1 s: not surely over 5


def test_a_replaying_exchange_is_measured_on_its_wall_clock_and_said_to_replay() -> None:
    january_2025_ms = 1_736_000_000_000
    c = ck.clock_check([sample(0.0, exchange_ms=january_2025_ms)])
    assert c.status is Status.PASS and "replayed history" in c.detail and c.data["source"] == "usOut"


def test_without_usout_the_present_get_time_is_used_and_a_replayed_one_is_not() -> None:
    assert ck.clock_check([sample(30.0, usout=False)]).status is Status.FAIL
    c = ck.clock_check([sample(0.0, exchange_ms=1_736_000_000_000, usout=False)])
    assert c.status is Status.WARN and "not measured" in c.detail


# ---------------------------------------------------------------------------------------------- instruments

def test_instruments_as_built_in_pass_and_show_their_specification() -> None:
    c = ck.instruments_check(DEFAULT_INSTRUMENTS, [LIN.name, INV.name])
    assert c.status is Status.PASS and "tick 1," in c.detail and "minimum 10 USD" in c.detail


def test_an_instrument_the_exchange_changed_warns_with_each_difference() -> None:
    listed = {LIN.name: replace(LIN, tick_size=0.5, taker_fee=0.0004)}
    c = ck.instruments_check(listed, [LIN.name])
    assert c.status is Status.WARN and "tick_size 1 -> 0.5" in c.detail and "taker_fee 0.0005 -> 0.0004" in c.detail


def test_an_unlisted_instrument_fails() -> None:
    c = ck.instruments_check({LIN.name: LIN}, [LIN.name, "ETH-PERPETUAL"])
    assert c.status is Status.FAIL and "ETH-PERPETUAL" in c.detail


# --------------------------------------------------------------------------------------------------- margin

RAZOR = StrategySize("razor-abc123", LIN.name, 100.0)
MARK = {LIN.name: 100_000.0, INV.name: 100_000.0}


def test_margin_passes_with_room_and_counts_concurrent_positions() -> None:
    one = ck.margin_check([RAZOR], DEFAULT_INSTRUMENTS, MARK, {"USDC": 1000.0}, "test")
    three = ck.margin_check([replace(RAZOR, concurrent=3)], DEFAULT_INSTRUMENTS, MARK, {"USDC": 1000.0}, "test")
    assert one.status is Status.PASS
    # 0.001 BTC at 100,000 = 100 USDC: margin 100/50 = 2 plus two taker fees 0.1
    assert one.data["need"]["USDC"] == pytest.approx(2.1)
    assert three.data["need"]["USDC"] == pytest.approx(6.3)


def test_margin_fails_when_the_settlement_currency_is_short() -> None:
    c = ck.margin_check([RAZOR, StrategySize("inv-1", INV.name, 1000.0)], DEFAULT_INSTRUMENTS, MARK,
                        {"USDC": 1000.0, "BTC": 0.0001}, "test")
    assert c.status is Status.FAIL and c.detail.startswith("BTC 0.0001 available < 0.00021 needed") and c.fix


def test_a_size_below_the_minimum_order_warns_with_what_it_really_trades() -> None:
    c = ck.margin_check([replace(RAZOR, notional_usd=10.0)], DEFAULT_INSTRUMENTS, MARK, {"USDC": 1000.0}, "test")
    assert c.status is Status.WARN and "below the minimum order" in c.detail and "trades 100 USD" in c.detail


# ---------------------------------------------------------------------------------------------- rate limits

DERIBIT_LIMITS = {"limits_per_currency": False, "non_matching_engine": {"burst": 1500, "rate": 1000},
                  "matching_engine": {"trading": {"total": {"burst": 250, "rate": 200}}}}


def test_rate_limits_read_deribits_extended_summary() -> None:
    c = ck.rate_limit_check(DERIBIT_LIMITS, 3, throttled=False)
    assert c.status is Status.PASS and "burst 250, 200/s" in c.detail and c.data["need_burst"] == 12


@pytest.mark.parametrize("burst, strategies, status", [(20, 5, Status.PASS), (12, 5, Status.WARN),
                                                       (6, 5, Status.FAIL)])
def test_rate_limit_headroom_against_the_kill_switch_and_an_entry(burst: int, strategies: int, status: Status) -> None:
    flat = {"matching_engine": {"burst": burst, "rate": 5}}  # the older, flat shape
    assert ck.rate_limit_check(flat, strategies, throttled=False).status is status


def test_unknown_limits_or_a_10028_during_the_doctor_warn() -> None:
    assert ck.rate_limit_check(None, 1, throttled=False).status is Status.WARN
    assert "10028" in ck.rate_limit_check(DERIBIT_LIMITS, 1, throttled=True).detail


# ------------------------------------------------------------------------------------------ order and labels

def test_the_far_order_goes_to_the_exchanges_lowest_allowed_price_on_the_tick_grid() -> None:
    assert far_price(INV, {"mark_price": 100_000.0, "min_price": 97_499.75}) == 97_500.0
    assert far_price(LIN, {"mark_price": 100_000.0}) == 97_500.0  # no band stated: 2.5 % below the mark


def test_doctor_labels_parse_but_are_never_a_strategy_of_an_engine() -> None:
    label = make_label(DOCTOR_STRATEGY_ID, "mx7ehniic988", OrderRole.ENTRY)
    assert parse_label(label) is not None and parse_label(label).strategy_id == DOCTOR_STRATEGY_ID  # type: ignore[union-attr]
    assert all(new_strategy_id(name) != DOCTOR_STRATEGY_ID for name in ("doctor", "Doctor", "doc tor"))


def test_a_running_engines_reconciliation_leaves_the_doctors_orders_and_fills_alone() -> None:
    sid = new_strategy_id("razor")
    view = JournalView(strategies=(StrategyView(sid, LIN.name, StrategyState.RUNNING, StrategyState.RUNNING),),
                       last_fill_ts_ms=0)
    far = Order("o1", LIN.name, Side.BUY, OrderType.LIMIT, 0.001, 0.0, OrderState.OPEN,
                make_label(DOCTOR_STRATEGY_ID, "run1", OrderRole.ENTRY), price=97_000.0)
    stop = Order("o2", INV.name, Side.SELL, OrderType.STOP_MARKET, 10.0, 0.0, OrderState.UNTRIGGERED,
                 make_label(DOCTOR_STRATEGY_ID, "run1", OrderRole.STOP_LOSS), trigger_price=95_000.0, reduce_only=True)
    entry = Fill("f1", "o3", INV.name, Side.BUY, 10.0, 100_000.0, 0.0, "BTC", 10,
                 label=make_label(DOCTOR_STRATEGY_ID, "run1", OrderRole.ENTRY))
    snapshot = ExchangeSnapshot(open_orders=(far, stop), fills=(entry,))
    assert plan(view, snapshot) == []


# --------------------------------------------------------------------------------------------------- output

def test_the_checklist_shows_a_line_per_check_and_the_fix_under_each_failure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    checks = [Check("credentials", Status.PASS, "accepted"), Check("clock", Status.FAIL, "30 s behind", "sync it"),
              Check("notifications", Status.WARN, "none", "add [notify]")]
    text = render("sim", "ws://127.0.0.1:1/ws/api/v2", get_home(tmp_path), checks)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["PASS", "credentials", "accepted"]
    assert lines[2].split()[:2] == ["FAIL", "clock"] and lines[3].strip() == "fix: sync it"
    assert lines[-1].startswith("1 check(s) failed, 1 warning(s)")
    assert not ck.passed(checks) and ck.passed(checks[:1] + checks[2:])
