"""The trading commands of the CLI against a real engine and simulator: what a trader types in a terminal.

``tradebaas strategy start|list|get|stop``, ``positions``, ``orders``, ``trades --csv|--json``, ``kill``: each is a
thin client of the engine's RPC, so these tests check what they print and how they fail (one line, non-zero).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest

from tests.conftest import run_cli, wait_for
from tests.integration.conftest import EngineProc, SimProc
from tradebaas.backtest.data import load_recorded, load_recorded_trades
from tradebaas.home import Home
from tradebaas.rpc.protocol import RpcError

pytestmark = pytest.mark.integration

RAZOR_OFTEN = ["--set", "rsiOversold=48", "--set", "rsiOverbought=52", "--set", "stopLossPercent=0.05",
               "--set", "takeProfitPercent=0.05", "--set", "cooldownMinutes=0"]


def test_a_strategy_started_from_the_cli_trades_and_every_view_shows_it(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=600)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    wait_for(lambda: c.call("engine.status")["exchange"]["reconciliations"] >= 1, timeout=30,
             what="the engine's first reconciliation")

    started = run_cli("strategy", "start", "razor", *RAZOR_OFTEN, home=tb_home)
    assert started.returncode == 0, started.stderr
    sid = started.stdout.strip()
    assert sid.startswith("razor-")

    wait_for(lambda: any(t["state"] == "closed" for t in c.call("trades.list", strategy=sid)), timeout=90,
             what="a closed trade of the strategy started from the CLI")

    listed = json.loads(run_cli("strategy", "list", "--json", home=tb_home).stdout)
    assert [s["id"] for s in listed] == [sid] and listed[0]["state"] == "running"
    table = run_cli("strategy", "list", home=tb_home).stdout
    assert sid in table and "running" in table

    rows = list(csv.DictReader(io.StringIO(run_cli("trades", "--strategy", sid, "--csv", home=tb_home).stdout)))
    closed = [r for r in rows if r["state"] == "closed"]
    assert closed and all(r["exit_reason"] in ("sl", "tp", "exit") for r in closed)
    journal = {t["trade_id"]: t for t in c.call("trades.list", strategy=sid)}
    for r in closed:  # the CSV is the journal's numbers, not a copy that could drift
        assert float(r["net_pnl"]) == pytest.approx(journal[r["trade_id"]]["net_pnl"])

    detail = json.loads(run_cli("strategy", "get", sid, home=tb_home).stdout)
    assert detail["last_decision"]["signal"] in ("long", "short", "none")
    assert run_cli("positions", "--json", home=tb_home).returncode == 0
    assert run_cli("orders", "--json", home=tb_home).returncode == 0

    killed = run_cli("kill", "--flatten", home=tb_home)
    assert killed.returncode == 0 and "kill switch: stopped 1 strategy" in killed.stdout
    assert c.call("strategy.get", id=sid)["state"] == "stopped"
    wait_for(lambda: sim.position_size() == 0, timeout=30, what="the simulator's position flattened")
    assert json.loads(run_cli("positions", "--json", home=tb_home).stdout) == []
    assert [o for o in json.loads(run_cli("orders", "--json", home=tb_home).stdout) if o["strategy_id"] == sid] == []

    # `tradebaas trades` and eng.trades() agree: the closed trades (open ones only when asked for, by both)
    wait_for(lambda: all(t["state"] in ("closed", "failed") for t in c.call("trades.list", strategy=sid)),
             timeout=30, what="every trade ended after the flatten")
    cli_ids = [r["trade_id"] for r in json.loads(run_cli("trades", "--strategy", sid, "--json", home=tb_home).stdout)]
    assert cli_ids == list(c.trades(strategy=sid)["trade_id"])
    every = json.loads(run_cli("trades", "--strategy", sid, "--include-open", "--json", home=tb_home).stdout)
    assert [r["trade_id"] for r in every] == list(c.trades(strategy=sid, include_open=True)["trade_id"])

    # The engine log tells the story of the strategy's trades, and only that strategy's with --strategy
    c.call("engine.log", message=f"a note about {sid} without its field")
    logged = run_cli("logs", "--strategy", sid, "-n", "0", home=tb_home)
    assert logged.returncode == 0, logged.stderr
    lines = logged.stdout.splitlines()
    records = [ln for ln in lines if ln[:4].isdigit()]
    assert records and all(f" [{sid}]: " in ln for ln in records)
    text = "\n".join(records)
    first = next(t for t in c.call("trades.list", strategy=sid) if t["state"] == "closed" and t["exit_reason"] != "kill")
    tid = first["trade_id"]
    for expected in (f"order sent: entry of trade {tid}: ", f"order acknowledged: entry of trade {tid}: ",
                     f"fill: entry of trade {tid}: ", f"trade {tid} opened: ", f"trade {tid} protected: stop ",
                     f"trade {tid} closed ({first['exit_reason']}): ", "decision on the candle of ",
                     "kill switch: stop the strategy: kill"):
        assert expected in text, expected
    # the flatten closed a trade only when one was open at the kill (Razor may be between trades then)
    killed_trades = [t for t in c.call("trades.list", strategy=sid) if t["exit_reason"] == "kill"]
    assert all(f"kill switch: close trade {t['trade_id']} " in text for t in killed_trades)
    assert "without its field" not in text
    assert "0.000000000" not in text and "99999999" not in text  # prices and amounts without float noise

    # ... one line per decision that acted or started a skip: quiet candles write nothing
    decisions = [e["payload"] for e in c.call("journal.events", kinds=["decision"], strategy=sid, limit=10_000)]
    expected_lines, previous = 0, ""
    for d in decisions:
        skipped = d.get("skipped") or ""
        if d.get("intents") or (skipped not in ("", "warming up") and skipped != previous):
            expected_lines += 1
        previous = skipped
    decision_lines = [ln for ln in records if ": decision on the candle of " in ln]
    assert len(decision_lines) == expected_lines < len(decisions)

    # The engine recorded what it traded on: the closed candles and the market's trades, as Parquet in its home.
    eng.stop()
    candles = load_recorded(tb_home, "BTC_USDC-PERPETUAL")
    trades = load_recorded_trades(tb_home, "BTC_USDC-PERPETUAL")
    assert len(candles) >= 5 and candles.index.is_monotonic_increasing
    assert len(trades) > 0 and trades["trade_id"].is_unique  # quiet minutes (volume 0) have candles but no trades
    minute = trades.index.floor("1min")
    inside = minute.isin(candles.index)  # trades of the forming minute at the stop have no closed candle yet
    assert inside.sum() > 0
    low, high = candles["low"].reindex(minute[inside]).to_numpy(), candles["high"].reindex(minute[inside]).to_numpy()
    prices = trades["price"].to_numpy()[inside]
    assert ((prices >= low) & (prices <= high)).all()  # every recorded trade lies inside its minute's candle


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["strategy", "start", "razor", "--set", "tradeSize=-1"], "tradeSize"),
        (["strategy", "start", "razor", "--set", "nonsense=1"], "unknown config key 'nonsense'"),
        (["strategy", "start", "razor", "--instrument", "ETH-PERPETUAL"], "unknown instrument 'ETH-PERPETUAL'"),
        (["strategy", "start", "martingale"], "martingale"),
        (["strategy", "stop", "razor-nope"], "no strategy 'razor-nope'"),
        (["trades", "--since", "yesterday-ish"], "--since"),
    ],
)
def test_bad_input_is_one_readable_line_and_a_non_zero_exit(
    engine_proc: Callable[..., EngineProc], tb_home: Home, args: list[str], message: str
) -> None:
    eng = engine_proc()
    done = run_cli(*args, home=tb_home)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert eng.client().call("strategy.list") == []  # nothing was created


def test_a_size_below_the_minimum_and_a_second_strategy_on_one_instrument_are_refused_with_the_reason(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    wait_for(lambda: c.call("engine.status")["exchange"]["connected"], timeout=30, what="the engine connected")

    def refused(*args: str) -> str:
        done = run_cli(*args, home=tb_home)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        return done.stderr

    error = refused("strategy", "start", "razor", "--set", "tradeSize=0")
    assert "tradeSize 0 USD is below the minimum order of BTC_USDC-PERPETUAL: 0.001 BTC, about " in error
    assert "tradeSize must be at least" in error
    error = refused("strategy", "start", "razor", "--instrument", "BTC-PERPETUAL", "--set", "tradeSize=4")
    assert "minimum order of BTC-PERPETUAL: 10 USD" in error
    assert c.call("strategy.list") == []  # nothing was created

    first = run_cli("strategy", "start", "razor", home=tb_home)
    assert first.returncode == 0, first.stderr
    sid = first.stdout.strip()
    error = refused("strategy", "start", "ema_cross")
    assert f"BTC_USDC-PERPETUAL is already traded by {sid} (running)" in error and "nets" in error
    assert "--allow-shared-instrument" in error
    other = run_cli("strategy", "start", "ema_cross", "--instrument", "BTC-PERPETUAL", home=tb_home)
    assert other.returncode == 0, other.stderr  # another instrument is free
    shared = run_cli("strategy", "start", "ema_cross", "--allow-shared-instrument", home=tb_home)
    assert shared.returncode == 0, shared.stderr  # the user opted in
    assert sorted(s["instrument"] for s in c.call("strategy.list")) == [
        "BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC_USDC-PERPETUAL"]
    with pytest.raises(RpcError) as err:  # the facade's keyword, and the code of a conflict
        c.start("razor", instrument="BTC-PERPETUAL")
    assert err.value.code == -32002

    error = refused("strategy", "set", sid, "tradeSize=1")
    assert "tradeSize 1 USD is below the minimum order" in error
    assert c.call("strategy.get", id=sid)["config"]["tradeSize"] == 100  # unchanged
    assert run_cli("strategy", "set", sid, "tradeSize=250", home=tb_home).returncode == 0

    # a resume passes the same rule: the stopped razor's instrument is traded by the shared ema_cross meanwhile
    assert run_cli("strategy", "stop", sid, home=tb_home).returncode == 0
    error = refused("strategy", "resume", sid)
    assert f"is already traded by {shared.stdout.strip()} (running)" in error
    assert c.call("strategy.get", id=sid)["state"] == "stopped"
    resumed = run_cli("strategy", "resume", sid, "--allow-shared-instrument", home=tb_home)
    assert resumed.returncode == 0 and resumed.stdout.startswith(f"{sid}: "), resumed


def test_trading_commands_without_an_engine_say_so(tb_home: Home) -> None:
    done = run_cli("strategy", "list", home=tb_home)
    assert done.returncode != 0 and "no engine running" in done.stderr


@pytest.mark.parametrize(
    ("exchange", "message"),
    [("ftp://example", "unknown --exchange 'ftp://example'"), ("deribit-testnet", "needs API credentials"),
     ("ws://127.0.0.1:9", "needs API credentials")],
)
def test_a_bad_exchange_is_refused_before_any_engine_starts(tb_home: Home, exchange: str, message: str) -> None:
    env = {"TRADEBAAS_DERIBIT_CLIENT_ID": "", "TRADEBAAS_DERIBIT_CLIENT_SECRET": ""}
    done = run_cli("engine", "start", "--exchange", exchange, home=tb_home, env=env)
    assert done.returncode != 0 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tb_home.root / "engine.json").exists()


def test_a_position_closed_outside_tradebaas_needs_a_person_then_mark_closed_and_resume(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    c = engine_proc(exchange="sim").client()
    wait_for(lambda: c.call("engine.status")["exchange"]["reconciliations"] >= 1, timeout=30, what="reconciliation")
    config = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 1.5, "takeProfitPercent": 1.5,
              "breakEvenEnabled": False}
    sid = c.call("strategy.start", name="razor", config=config)["id"]
    position = wait_for(lambda: next((p for p in c.call("positions.list") if p["strategy_id"] == sid), None),
                        timeout=60, what="an open position")

    # Someone closes it on the exchange's website: an unlabelled fill the engine cannot explain.
    closing = sim.call("private/close_position", instrument_name="BTC_USDC-PERPETUAL", type="market")
    exit_price = closing["order"]["average_price"]
    wait_for(lambda: c.call("strategy.get", id=sid)["state"] == "needs_attention", timeout=30,
             what="the strategy waiting for a person")
    reason = c.call("strategy.get", id=sid)["state_reason"]
    assert "exchange shows no position" in reason and position["trade_id"] in reason and "--mark-closed" in reason
    assert sim.open_orders() == []  # its orders were cancelled: no bracket outlives the position

    marked = run_cli("trades", "--mark-closed", position["trade_id"], "--price", str(exit_price), home=tb_home)
    assert marked.returncode == 0, marked.stderr
    trade = next(t for t in c.call("trades.list", strategy=sid) if t["trade_id"] == position["trade_id"])
    assert trade["state"] == "closed" and trade["exit_reason"] == "closed outside tradebaas"
    assert trade["exit_price"] == pytest.approx(exit_price)

    resumed = run_cli("strategy", "resume", sid, home=tb_home)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    wait_for(lambda: c.call("strategy.get", id=sid)["state"] == "running", timeout=30, what="running again")
    again = run_cli("trades", "--mark-closed", position["trade_id"], "--price", "1", home=tb_home)
    assert again.returncode != 0 and "nothing is open" in again.stderr
