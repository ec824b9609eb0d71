"""The engine daemon: detached start, one per home, stale connection files, graceful stop, side by side."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import run_cli
from tradebaas.connection import read_connection_file
from tradebaas.engine.journal.database import Journal
from tradebaas.errors import EngineNotRunning
from tradebaas.home import Home
from tradebaas.rpc.client import connect


def test_cli_start_status_stop_round_trip(tb_home: Home, stop_detached) -> None:
    stop_detached(tb_home)
    started = run_cli("engine", "start", "--exchange", "sim", home=tb_home)
    assert started.returncode == 0, started.stderr
    info = read_connection_file(tb_home)
    assert info is not None and f"pid {info.pid}" in started.stdout
    assert stat.S_IMODE(tb_home.engine_json.stat().st_mode) == 0o600
    assert set(json.loads(tb_home.engine_json.read_text())) >= {"pid", "port", "token", "version", "started_ts_ms"}

    # detached: its own session, so the terminal's hang-up cannot reach it
    assert os.getsid(info.pid) == info.pid

    status = run_cli("engine", "status", "--json", home=tb_home)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["running"] and st["health"] == "ok" and st["pid"] == info.pid and st["port"] == info.port
    assert st["strategies"] == {"total": 0, "running": 0}
    assert {"name", "url", "connected"} <= set(st["exchange"]) and "uptime_s" in st and st["version"]
    assert "token" not in status.stdout and info.token not in status.stdout
    human = run_cli("engine", "status", home=tb_home)
    assert "ok" in human.stdout and str(info.pid) in human.stdout

    second = run_cli("engine", "start", home=tb_home)
    assert second.returncode != 0
    assert f"pid {info.pid}" in second.stderr and f"port {info.port}" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1

    stopped = run_cli("engine", "stop", home=tb_home)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not tb_home.engine_json.exists()
    assert run_cli("engine", "status", home=tb_home).returncode == 1

    with Journal.open(tb_home.journal_path, readonly=True) as j:
        kinds = [e.kind for e in j.events()]
    assert kinds == ["engine.started", "engine.stopped"]

    # and it starts again, without --exchange: on the exchange its journal remembers
    again = run_cli("engine", "start", home=tb_home)
    assert again.returncode == 0, again.stderr
    with connect(tb_home) as c:
        assert c.ping() == "pong" and c.status()["exchange"]["name"] == "sim"


def test_sigterm_stops_gracefully_and_journals_it(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    assert eng.stop() == 0
    assert not tb_home.engine_json.exists()
    with Journal.open(tb_home.journal_path, readonly=True) as j:
        stopped = j.last_event("engine.stopped")
    assert stopped is not None and stopped.payload["reason"] == "SIGTERM"


def test_stale_engine_json_after_sigkill_is_detected_and_replaced(engine_proc, tb_home: Home) -> None:
    first = engine_proc()
    first.kill()
    assert read_connection_file(tb_home).pid == first.pid  # left behind by the crash

    status = run_cli("engine", "status", "--json", home=tb_home)
    assert status.returncode == 1 and json.loads(status.stdout)["state"] == "stale"
    with pytest.raises(EngineNotRunning, match="stale"):
        connect(tb_home)

    second = engine_proc()
    info = read_connection_file(tb_home)
    assert info.pid == second.pid != first.pid and info.token != first.token
    assert "replacing stale engine.json" in tb_home.engine_log.read_text()
    with second.client() as c:
        assert c.ping() == "pong"


def test_second_foreground_engine_in_same_home_is_refused(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    second = run_cli("engine", "start", "--foreground", home=tb_home, timeout=30)
    assert second.returncode != 0
    assert f"pid {eng.pid}" in second.stderr and "already running" in second.stderr
    with eng.client() as c:
        assert c.ping() == "pong"


def test_two_engines_in_two_homes_run_side_by_side(engine_proc, make_home) -> None:
    a, b = make_home("a"), make_home("b")
    ea, eb = engine_proc(a), engine_proc(b)
    assert ea.info.port != eb.info.port and ea.token != eb.token
    ca, cb = ea.client(), eb.client()
    assert ca.status()["home"] == str(a.root) and cb.status()["home"] == str(b.root)
    ea.stop()
    assert cb.ping() == "pong"
    assert read_connection_file(b).pid == eb.pid


def test_stop_when_nothing_runs_is_harmless(tb_home: Home) -> None:
    result = run_cli("engine", "stop", home=tb_home)
    assert result.returncode == 0 and "no engine running" in result.stdout


def test_connect_without_engine_says_so(tb_home: Home) -> None:
    with pytest.raises(EngineNotRunning, match="no engine running"):
        connect(tb_home)


def test_log_file_is_written_without_the_token(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    with eng.client() as c:
        c.call("engine.log", message=f"note with token={eng.token} inside")
    eng.stop()
    text = tb_home.engine_log.read_text()
    assert "ready on 127.0.0.1" in text and "note with token=***" in text
    assert eng.token not in text
