"""The simulator remembers orders, positions, balances and its clock across a restart (SIGTERM or SIGKILL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_sim_fixtures import SimProcess

pytestmark = pytest.mark.integration


def _login(sim: SimProcess) -> dict[str, str]:
    tok = sim.post("public/auth", {"grant_type": "client_credentials", "client_id": sim.client_id,
                                   "client_secret": sim.client_secret})["result"]["access_token"]
    return {"Authorization": f"Bearer {tok}"}


def _snapshot(sim: SimProcess, h: dict[str, str]) -> tuple[list[str], float, float]:
    orders = sim.post("private/get_open_orders_by_instrument", {"instrument_name": "BTC-PERPETUAL"}, h)["result"]
    pos = sim.post("private/get_position", {"instrument_name": "BTC-PERPETUAL"}, h)["result"]
    bal = sim.post("private/get_account_summary", {"currency": "BTC"}, h)["result"]["balance"]
    return sorted(o["order_id"] for o in orders), pos["size"], bal


def test_state_survives_sigterm_restart_with_same_credentials_and_clock(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path, "--speed", "10")
    h = _login(sim)
    far = sim.get("public/ticker", instrument_name="BTC-PERPETUAL")["result"]["best_bid_price"] - 5000
    sim.post("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 50, "type": "limit", "price": far,
                             "label": "keep"}, h)
    sim.post("private/sell", {"instrument_name": "BTC-PERPETUAL", "amount": 30, "type": "market"}, h)
    before = _snapshot(sim, h)
    clock_before = sim.get("public/get_time")["result"]
    creds = (tmp_path / "sim" / "credentials.json").read_text()
    assert sim.stop() == 0

    again = SimProcess(tmp_path, "--speed", "10")
    try:
        assert (tmp_path / "sim" / "credentials.json").read_text() == creds
        h2 = _login(again)
        assert _snapshot(again, h2) == before
        assert before[1] == -30 and len(before[0]) == 1
        clock_after = again.get("public/get_time")["result"]
        assert clock_before <= clock_after < clock_before + 60_000  # resumed, not reset to the data start
    finally:
        assert again.stop() == 0


def test_an_acknowledged_order_survives_a_sigkill_right_after_its_answer(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path)
    h = _login(sim)
    far = sim.get("public/ticker", instrument_name="BTC-PERPETUAL")["result"]["best_bid_price"] - 5000
    oid = sim.post("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
                                   "price": far}, h)["result"]["order"]["order_id"]
    sim.kill()  # no waiting: what was answered is in the journal
    assert oid.encode() in (tmp_path / "sim" / "journal.log").read_bytes()
    again = SimProcess(tmp_path)
    try:
        h2 = _login(again)
        assert again.post("private/get_order_state", {"order_id": oid}, h2)["result"]["order_state"] == "open"
    finally:
        assert again.stop() == 0
