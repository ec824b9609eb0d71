"""The engine's RPC against a real engine process: auth, browsers, garbage, dead clients, reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

import tradebaas
from tests.conftest import wait_for
from tradebaas.home import Home


def raw(url: str, **kwargs: Any):
    return ws_connect(url, proxy=None, open_timeout=5, legacy=True, **kwargs)


def rpc(ws: Any, payload: str | bytes) -> dict[str, Any]:
    ws.send(payload)
    return json.loads(ws.recv(timeout=5))


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic x"}])
def test_missing_or_wrong_token_is_refused(engine_proc, headers: dict[str, str] | None) -> None:
    eng = engine_proc()
    with pytest.raises(InvalidStatus) as err:
        raw(eng.url, additional_headers=headers)
    assert err.value.response.status_code == 401


def test_browser_origin_is_refused_even_with_the_token(engine_proc) -> None:
    eng = engine_proc()
    with pytest.raises(InvalidStatus) as err:
        raw(eng.url, additional_headers={"Authorization": f"Bearer {eng.token}"}, origin="http://localhost:8888")
    assert err.value.response.status_code == 403


def test_token_as_query_parameter_is_accepted(engine_proc) -> None:
    eng = engine_proc()
    with raw(f"{eng.url}?token={eng.token}") as ws:
        assert rpc(ws, '{"jsonrpc":"2.0","id":1,"method":"engine.ping"}')["result"] == "pong"


def test_garbage_frames_get_json_rpc_errors_and_the_connection_stays_usable(engine_proc) -> None:
    eng = engine_proc()
    with raw(eng.url, additional_headers={"Authorization": f"Bearer {eng.token}"}) as ws:
        assert rpc(ws, "{{{ not json")["error"]["code"] == -32700
        assert rpc(ws, b"\x00\x01\x02")["error"]["code"] == -32700
        assert rpc(ws, "[]")["error"]["code"] == -32600
        assert rpc(ws, '{"jsonrpc":"2.0","id":2}')["error"]["code"] == -32600
        assert rpc(ws, '{"jsonrpc":"2.0","id":3,"method":"no.such"}')["error"]["code"] == -32601
        bad = rpc(ws, '{"jsonrpc":"2.0","id":4,"method":"subscribe","params":{"channels":"log"}}')
        assert bad["error"]["code"] == -32602
        bad = rpc(ws, '{"jsonrpc":"2.0","id":5,"method":"engine.ping","params":{"x":1}}')
        assert bad["error"]["code"] == -32602
        assert rpc(ws, '{"jsonrpc":"2.0","id":6,"method":"engine.ping"}') == {"jsonrpc": "2.0", "id": 6,
                                                                            "result": "pong"}


def test_oversized_frame_closes_only_that_connection(engine_proc) -> None:
    eng = engine_proc()
    with raw(eng.url, additional_headers={"Authorization": f"Bearer {eng.token}"}) as ws:
        ws.send("x" * (2 << 20))
        with pytest.raises(ConnectionClosed) as err:
            ws.recv(timeout=5)
        assert err.value.rcvd is not None and err.value.rcvd.code == 1009
    with eng.client() as c:
        assert c.ping() == "pong"


CLIENT = textwrap.dedent("""
    import sys, time, tradebaas
    c = tradebaas.connect(sys.argv[1])
    c.subscribe("log", lambda d: None)
    c.ping()
    print("ready", flush=True)
    while True:
        c.ping()
        time.sleep(0.01)
""")


def test_a_sigkilled_client_does_not_disturb_the_engine(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    watcher = eng.client()
    victim = subprocess.Popen([sys.executable, "-c", CLIENT, str(tb_home.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "ready"
        wait_for(lambda: watcher.status()["clients"] == 2, timeout=10, what="two clients")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    wait_for(lambda: watcher.status()["clients"] == 1, timeout=10, what="the dead client to be dropped")
    watcher.call("engine.log", message="still here")  # publishing to the log channel must not trip on it
    assert watcher.ping() == "pong"
    with eng.client() as other:
        assert other.ping() == "pong"


def test_log_channel_pushes_engine_log_records(engine_proc) -> None:
    eng = engine_proc()
    got: list[dict[str, Any]] = []
    with eng.client() as c:
        c.subscribe("log", got.append)
        c.call("engine.log", message="hello from the test", level="warning")
        rec = wait_for(lambda: next((r for r in got if r["message"] == "hello from the test"), None), timeout=5,
                       what="log record")
        assert rec["level"] == "WARNING" and rec["logger"] == "tradebaas.user" and rec["ts_ms"] > 0


def test_client_reconnects_and_resubscribes_after_engine_restart(engine_proc, tb_home: Home) -> None:
    first = engine_proc()
    client = first.client()
    got: list[str] = []
    reconnected: list[bool] = []
    client.subscribe("log", lambda rec: got.append(rec["message"]))
    client.on_reconnect(lambda: reconnected.append(True))
    first.stop()
    wait_for(lambda: not client.connected, timeout=10, what="disconnect noticed")
    second = engine_proc()  # new port, new token: the client re-reads engine.json
    assert second.info.port != first.info.port or second.token != first.token
    wait_for(lambda: client.connected, timeout=15, what="reconnect")
    assert client.ping() == "pong" and client.status()["pid"] == second.pid
    wait_for(lambda: reconnected, timeout=5, what="on_reconnect callback")
    client.call("engine.log", message="after restart")
    wait_for(lambda: "after restart" in got, timeout=5, what="log event after resubscribe")


def test_calls_while_engine_is_down_fail_clearly(engine_proc) -> None:
    eng = engine_proc()
    client = eng.client(timeout=0.5)
    eng.stop()
    wait_for(lambda: not client.connected, timeout=10, what="disconnect noticed")
    with pytest.raises(tradebaas.errors.EngineNotRunning):
        client.ping()


def test_async_client_has_the_same_methods(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()

    async def scenario() -> None:
        got: list[Any] = []
        async with await tradebaas.connect_async(tb_home) as c:
            assert await c.ping() == "pong"
            assert (await c.status())["pid"] == eng.pid

            async def on_log(rec: dict[str, Any]) -> None:
                got.append(rec["message"])

            await c.subscribe("log", on_log)
            await c.call("engine.log", message="async hello")
            for _ in range(200):
                if "async hello" in got:
                    break
                await asyncio.sleep(0.02)
            assert "async hello" in got
            with pytest.raises(tradebaas.rpc.protocol.RpcError) as err:
                await c.call("no.such")
            assert err.value.code == -32601

    asyncio.run(scenario())


def test_sync_client_raises_rpc_errors_with_codes(engine_proc) -> None:
    eng = engine_proc()
    with eng.client() as c:
        with pytest.raises(tradebaas.rpc.protocol.RpcError) as err:
            c.call("engine.ping", bogus=1)
        assert err.value.code == -32602 and "bogus" in str(err.value)


def test_connect_by_url_and_token_like_through_a_tunnel(engine_proc, make_home) -> None:
    eng = engine_proc()
    elsewhere = make_home("laptop")  # no engine.json there
    with tradebaas.connect(elsewhere, url=eng.url, token=eng.token) as c:
        assert c.status()["pid"] == eng.pid


def test_notes_over_rpc_cannot_forge_log_lines(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    forged = "note\n2025-01-01 00:00:00,000 CRITICAL tradebaas.engine: kill switch engaged\x00\x1b[2J"
    got: list[dict[str, Any]] = []
    with eng.client() as c:
        c.subscribe("log", got.append)
        c.call("engine.log", message=forged)
        rec = wait_for(lambda: next((r for r in got if r["message"].startswith("note")), None), timeout=5,
                       what="the note on the log channel")
    escaped = "note\\n2025-01-01 00:00:00,000 CRITICAL tradebaas.engine: kill switch engaged\\x00\\x1b[2J"
    assert rec["message"] == escaped
    lines = wait_for(lambda: [ln for ln in tb_home.engine_log.read_text().splitlines() if "tradebaas.user" in ln],
                     timeout=5, what="the note in engine.log")
    assert lines[-1].endswith("tradebaas.user: " + escaped)
    assert not any(ln.startswith("2025-01-01") for ln in tb_home.engine_log.read_text().splitlines())


def test_the_read_only_token_reads_but_never_trades(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    readonly = eng.info.readonly_token
    assert readonly and readonly != eng.token
    with raw(eng.url, additional_headers={"Authorization": f"Bearer {readonly}"}) as ws:
        assert rpc(ws, '{"jsonrpc":"2.0","id":1,"method":"engine.status"}')["result"]["pid"] == eng.pid
        assert rpc(ws, '{"jsonrpc":"2.0","id":2,"method":"strategy.list"}')["result"] == []
        for i, (method, params) in enumerate((("strategy.start", {"name": "razor"}), ("risk.kill", {}),
                                              ("reports.run", {"name": "daily"}), ("engine.shutdown", {}))):
            frame = json.dumps({"jsonrpc": "2.0", "id": 10 + i, "method": method, "params": params})
            answer = rpc(ws, frame)
            assert answer["error"]["code"] == -32003, answer
    with eng.client() as c:
        assert c.call("strategy.list") == []  # the full token still does everything
        assert eng.alive()


def test_reports_run_never_runs_a_notebook_path(engine_proc, tb_home: Home) -> None:
    (tb_home.root / "evil.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    eng = engine_proc()
    with eng.client() as c:
        for name in (str(tb_home.root / "evil.ipynb"), "evil.ipynb", "../evil"):
            with pytest.raises(tradebaas.rpc.protocol.RpcError, match="not a notebook path"):
                c.call("reports.run", name=name)
        assert c.call("reports.list")["runs"] == []


def test_a_report_notebook_reads_the_engine_with_the_read_only_token(engine_proc, tb_home: Home) -> None:
    import nbformat

    from tradebaas.reports.execute import installed_kernels

    assert "tradebaas" in installed_kernels(), "run `tradebaas kernel install --sys-prefix` (make test does)"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent("""
        import tradebaas as tb
        from tradebaas.rpc.protocol import RpcError
        eng = tb.connect()
        assert eng.status()["health"] == "ok"
        try:
            eng.call("risk.kill")
        except RpcError as exc:
            assert exc.code == -32003, exc
        else:
            raise AssertionError("a report could use the kill switch")
    """))]
    nbformat.write(nb, tb_home.root / "peek.ipynb")
    tb_home.config_file.write_text('[reports.peek]\nnotebook = "peek.ipynb"\ntimeout_s = 120\n')
    eng = engine_proc()
    with eng.client() as c:
        run = c.call("reports.run", {"name": "peek", "wait": True, "timeout": 150}, timeout=180)
        assert run["status"] == "ok", run["error"]
        assert [s for s in c.call("strategy.list")] == []
