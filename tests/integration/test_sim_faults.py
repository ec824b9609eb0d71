"""Fault injection through ``admin/set_fault``: scripted errors, delays, stalls and dropped connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.test_sim_fixtures import SimProcess
from tests.integration.test_sim_server import Rpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = SimProcess(tmp_path_factory.mktemp("faulthome"))
    yield p
    assert p.stop() == 0


@pytest.fixture(autouse=True)
def clear(sim: SimProcess) -> Any:
    yield
    sim.post("admin/set_fault", {"action": "clear"})


def test_error_rule_answers_n_times_then_stops(sim: SimProcess) -> None:
    sim.post("admin/set_fault", {"action": "error", "methods": ["public/ticker"], "code": 10028,
                                 "message": "too_many_requests", "count": 2})
    for _ in range(2):
        r = sim.get("public/ticker", instrument_name="BTC-PERPETUAL")
        assert r["_status"] == 400 and r["error"] == {"code": 10028, "message": "too_many_requests"}
    assert "result" in sim.get("public/ticker", instrument_name="BTC-PERPETUAL")


def test_error_rule_until_cleared(sim: SimProcess) -> None:
    sim.get("admin/set_fault", action="error", methods="public/get_time", code=11094)
    for _ in range(3):
        assert sim.get("public/get_time")["error"]["code"] == 11094
    assert sim.get("admin/get_faults")["result"]["errors"][0]["remaining"] is None
    sim.get("admin/set_fault", action="clear")
    assert "result" in sim.get("public/get_time")


def test_delay_slows_every_answer(sim: SimProcess) -> None:
    sim.post("admin/set_fault", {"action": "delay", "ms": 300})
    t0 = time.monotonic()
    sim.get("public/test")
    assert time.monotonic() - t0 >= 0.3

    async def ws() -> float:
        c = await Rpc.connect(sim.ws_url)
        t = time.monotonic()
        await c.result("public/test")
        await c.close()
        return time.monotonic() - t
    assert asyncio.run(ws()) >= 0.3


def test_stall_accepts_but_does_not_answer(sim: SimProcess) -> None:
    async def go() -> None:
        c = await Rpc.connect(sim.ws_url)
        sim.post("admin/set_fault", {"action": "stall", "seconds": 1.5})
        with pytest.raises(asyncio.TimeoutError):
            await c.call("public/get_time", timeout=1.0)
        await asyncio.sleep(0.6)  # let the stall window pass (the behaviour under test is time-based)
        assert await c.result("public/get_time") > 0
        await c.close()
    asyncio.run(go())


def test_drop_closes_every_connection(sim: SimProcess) -> None:
    async def go() -> None:
        a, b = await Rpc.connect(sim.ws_url), await Rpc.connect(sim.ws_url)
        await a.result("public/test")
        await a.result("admin/set_fault", action="drop")
        await asyncio.wait_for(asyncio.gather(a.ws.wait_closed(), b.ws.wait_closed()), 5)
        c = await Rpc.connect(sim.ws_url)  # the server itself is fine
        assert await c.result("public/test")
        await c.close()
    asyncio.run(go())


def test_bad_fault_request_is_invalid_params(sim: SimProcess) -> None:
    assert sim.post("admin/set_fault", {"action": "explode"})["error"]["code"] == -32602
