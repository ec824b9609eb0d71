"""``tradebaas doctor`` against real simulator processes: it passes on a healthy account, leaves nothing behind, and
fails on the right line in each bad set-up (a wrong secret, a key without trade scope, a skewed clock).

The simulator runs at speed 1 (a replayed minute per minute) so the market cannot reach the doctor's brackets
while it checks them; its rate limits are Deribit's shape (``default``), so the rate-limit line has numbers to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import EngineProc, SimProc
from tradebaas.home import Home

pytestmark = pytest.mark.integration

GOOD = "good:g00d-secret:50000"
READ_ONLY = "reader:r3ad-secret::account:read,trade:read"
SIM_ARGS = ["--rate-limits", "default", "--account", GOOD, "--account", READ_ONLY]


def doctor(home: Home, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``tradebaas doctor --json``; its exit code and the checks by name."""
    done = run_cli("doctor", "--json", *args, home=home, env=env, timeout=120)
    assert done.stdout, done.stderr
    answer = json.loads(done.stdout)
    return done.returncode, {c["name"]: c for c in answer["checks"]}


def failing(checks: dict[str, Any]) -> list[str]:
    return [name for name, c in checks.items() if c["status"] == "fail"]


def key_env(spec: str, secret: str | None = None) -> dict[str, str]:
    client_id, real_secret = spec.split(":")[:2]
    return {"TRADEBAAS_DERIBIT_CLIENT_ID": client_id, "TRADEBAAS_DERIBIT_CLIENT_SECRET": secret or real_secret}


def test_doctor_passes_on_a_healthy_account_and_leaves_no_order_and_no_position(
    sim_proc: Callable[..., SimProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=1, extra_args=SIM_ARGS)

    code, checks = doctor(tb_home, "--exchange", "sim")
    assert code == 0 and not failing(checks), checks
    for name in ("connection", "credentials", "scope", "clock", "instruments", "margin", "order", "rate limits",
                 "engine"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["brackets"]["status"] == "skip" and "--allow-trade" in checks["brackets"]["fix"]
    assert checks["order"]["data"]["label"].startswith("tb:doctor:")
    assert sim.open_orders() == [] and sim.position_size() == 0.0

    code, checks = doctor(tb_home, "--exchange", "sim", "--allow-trade")
    assert code == 0 and not failing(checks), checks
    assert checks["brackets"]["status"] == "pass", checks["brackets"]
    assert "one OCO pair" in checks["brackets"]["detail"] and "flat, no orders left" in checks["brackets"]["detail"]
    # checked on the exchange itself: nothing left, and the fills were the doctor's (labelled, entry and exit)
    assert sim.open_orders() == [] and sim.position_size() == 0.0
    labels = [t["label"] for t in sim.user_trades()]
    assert len(labels) == 2 and all(label.startswith("tb:doctor:") for label in labels), labels
    assert labels[0].endswith(":entry") and labels[1].endswith(":exit")


def test_doctor_fails_on_the_credentials_line_for_a_wrong_secret_and_on_the_scope_line_without_trade_scope(
    sim_proc: Callable[..., SimProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=1, extra_args=SIM_ARGS)

    code, checks = doctor(tb_home, "--exchange", sim.ws_url, env=key_env(GOOD, secret="not-the-secret"))
    assert code == 1 and failing(checks) == ["credentials"], checks
    assert "13004" in checks["credentials"]["detail"] and checks["credentials"]["fix"]
    assert "not-the-secret" not in json.dumps(checks)  # a secret, even a wrong one, never reaches the output
    assert checks["clock"]["status"] == "pass" and checks["instruments"]["status"] == "pass"  # public checks still run
    assert checks["order"]["status"] == "skip"

    code, checks = doctor(tb_home, "--exchange", sim.ws_url, "--allow-trade", env=key_env(READ_ONLY))
    assert code == 1 and failing(checks) == ["scope"], checks
    assert "trade:read_write" in checks["scope"]["detail"] and checks["scope"]["data"]["trade"] == "read"
    assert checks["order"]["status"] == "skip" and checks["brackets"]["status"] == "skip"
    assert checks["margin"]["status"] == "pass"  # account:read is enough to read the funds
    assert sim.open_orders() == [] and sim.position_size() == 0.0

    # the simulator enforces what it granted: the read-only key cannot trade (13021), and a requested scope narrows
    client_id, secret = READ_ONLY.split(":")[:2]
    auth = sim.request("public/auth", {"grant_type": "client_credentials", "client_id": client_id,
                                       "client_secret": secret})["result"]
    assert "trade:read" in auth["scope"].split() and "trade:read_write" not in auth["scope"]
    refused = sim.request("private/buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.001, "type": "market",
                                          "access_token": auth["access_token"]})
    assert refused["error"]["code"] == 13021
    narrowed = sim.request("public/auth", {"grant_type": "client_credentials", "client_id": "good",
                                           "client_secret": "g00d-secret", "scope": "trade:read"})["result"]
    assert "trade:read" in narrowed["scope"].split() and "trade:read_write" not in narrowed["scope"]
    answer = sim.request("private/get_open_orders_by_instrument", {"instrument_name": "BTC_USDC-PERPETUAL",
                                                                   "access_token": narrowed["access_token"]})
    assert answer["result"] == []


def test_doctor_fails_on_the_clock_line_when_the_exchange_clock_is_skewed(
    sim_proc: Callable[..., SimProc], tb_home: Home
) -> None:
    sim_proc(speed=1, extra_args=[*SIM_ARGS, "--clock-offset", "30"])
    code, checks = doctor(tb_home, "--exchange", "sim")
    assert code == 1 and failing(checks) == ["clock"], checks
    assert checks["clock"]["data"]["skew_s"] == pytest.approx(-30, abs=1)
    assert "behind the exchange" in checks["clock"]["detail"] and "timedatectl" in checks["clock"]["fix"]
    human = run_cli("doctor", "--exchange", "sim", home=tb_home, timeout=120)
    assert human.returncode == 1
    assert any(line.split()[:2] == ["FAIL", "clock"] for line in human.stdout.splitlines()), human.stdout


def test_doctor_takes_sizes_from_the_running_engine_and_will_not_trade_its_instrument(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=1, extra_args=SIM_ARGS)
    eng = engine_proc(exchange="sim")
    started = run_cli("strategy", "start", "razor", "--set", "tradeSize=250", home=tb_home)
    assert started.returncode == 0, started.stderr
    sid = started.stdout.strip()

    code, checks = doctor(tb_home, "--allow-trade")  # --exchange defaults to the engine's
    assert checks["engine"]["status"] == "pass" and checks["engine"]["data"]["exchange"] == "sim", checks["engine"]
    assert sid in checks["margin"]["detail"] and "250 USD" in checks["margin"]["detail"], checks["margin"]
    assert code == 1 and failing(checks) == ["brackets"], checks
    assert "running engine" in checks["brackets"]["detail"]
    assert sim.position_size() == 0.0 and sim.open_orders() == []
    assert eng.alive()
