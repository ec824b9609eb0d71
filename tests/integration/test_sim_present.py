"""``tradebaas sim --clock present`` (what ``tradebaas up`` runs): the replay at wall-clock time, kept across a
restart; the default ``tradebaas sim`` stays in the data's own time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_sim_fixtures import SimProcess

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def test_the_present_clock_is_the_wall_clock_with_history_behind_it_and_survives_a_restart(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path, "--clock", "present")
    try:
        assert abs(sim.get("public/get_time")["result"] - now_ms()) < 5_000
        end = now_ms()
        chart = sim.get("public/get_tradingview_chart_data", instrument_name="BTC-PERPETUAL", resolution="1",
                        start_timestamp=end - 10 * 60_000, end_timestamp=end)["result"]
        assert chart["status"] == "ok" and len(chart["ticks"]) >= 10 and end - chart["ticks"][-1] < 2 * 60_000
        last = sim.get("public/get_last_trades_by_instrument", instrument_name="BTC-PERPETUAL", count=1)["result"]
        assert abs(last["trades"][0]["timestamp"] - now_ms()) < 60_000
        price = sim.get("public/ticker", instrument_name="BTC-PERPETUAL")["result"]["last_price"]
    finally:
        assert sim.stop() == 0
    saved = json.loads((tmp_path / "sim" / "state.json").read_text())
    assert saved["extra"]["clock"] == "present" and saved["extra"]["offset_ms"] % 86_400_000 == 0
    again = SimProcess(tmp_path, "--clock", "present")
    try:
        assert abs(again.get("public/get_time")["result"] - now_ms()) < 5_000
        # the same offset: the market went on from where it was (seconds later), not from another day
        moved = again.get("public/ticker", instrument_name="BTC-PERPETUAL")["result"]["last_price"]
        assert abs(moved - price) / price < 0.02
    finally:
        assert again.stop() == 0
    assert json.loads((tmp_path / "sim" / "state.json").read_text())["extra"] == saved["extra"]


def test_plain_sim_replays_in_the_datas_time_and_present_refuses_another_speed(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "replay", "--no-persist")
    try:
        assert sim.get("public/get_time")["result"] < now_ms() - 86_400_000  # January 2025 says January 2025
    finally:
        assert sim.stop() == 0
    bad = subprocess.run([sys.executable, "-m", "tradebaas.exchange.sim.cli", "--clock", "present", "--speed", "60",
                          "--no-persist"], capture_output=True, text=True, timeout=60,
                         env={"TRADEBAAS_HOME": str(tmp_path / "bad"), "PATH": "/usr/bin:/bin"})
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --clock present runs at the wall clock's pace: leave --speed at 1"]
