"""RpcServer + sync client in one process: publish/subscribe, patterns, slow callbacks, redaction."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tradebaas.engine.process.logs import RedactFilter
from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.protocol import Registry
from tradebaas.rpc.server import WRITE_BATCH, RpcServer

TOKEN = "test-token-0123456789"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[tuple[RpcServer, LoopThread]]:
    lt = LoopThread()
    reg = Registry()
    reg.add("engine.ping", lambda: "pong")
    srv = RpcServer(reg, TOKEN)
    lt.run(srv.start())
    yield srv, lt
    lt.run(srv.stop())
    lt.close()


def client_for(srv: RpcServer) -> EngineClient:
    return EngineClient(url=f"ws://127.0.0.1:{srv.port}/", token=TOKEN, timeout=5)


def test_publish_reaches_pattern_subscribers_with_channel(server: tuple[RpcServer, LoopThread]) -> None:
    srv, lt = server
    got: list[tuple[str, Any]] = []
    with client_for(srv) as c:
        c.subscribe("strategy.*", lambda channel, data: got.append((channel, data)))
        only_data: list[Any] = []
        c.subscribe("orders", only_data.append)
        srv.publish_threadsafe("strategy.s1", {"type": "state"})
        srv.publish_threadsafe("orders", {"order_id": "o1"})
        srv.publish_threadsafe("trades", {"ignored": True})
        wait_for(lambda: got and only_data, timeout=5, what="events")
        assert got == [("strategy.s1", {"type": "state"})]
        assert only_data == [{"order_id": "o1"}]


def test_unsubscribe_stops_delivery(server: tuple[RpcServer, LoopThread]) -> None:
    srv, lt = server
    got: list[Any] = []
    with client_for(srv) as c:
        sub = c.subscribe("log", got.append)
        sub.cancel()
        wait_for(lambda: not srv.has_subscribers("log"), timeout=5, what="unsubscribe")
        assert lt.run(_publish(srv, "log", {"m": 1})) == 0


async def _publish(srv: RpcServer, channel: str, data: Any) -> int:
    return srv.publish(channel, data)


def test_a_slow_callback_does_not_stall_replies(server: tuple[RpcServer, LoopThread]) -> None:
    srv, lt = server
    release = threading.Event()
    entered = threading.Event()

    def slow(_data: Any) -> None:
        entered.set()
        release.wait(10)

    with client_for(srv) as c:
        c.subscribe("log", slow)
        srv.publish_threadsafe("log", {"m": 1})
        assert entered.wait(5)
        t0 = time.monotonic()
        assert c.ping() == "pong"
        assert time.monotonic() - t0 < 2
        release.set()


def test_callbacks_can_call_the_engine(server: tuple[RpcServer, LoopThread]) -> None:
    srv, lt = server
    answers: list[str] = []
    with client_for(srv) as c:
        c.subscribe("log", lambda _d: answers.append(c.ping()))
        srv.publish_threadsafe("log", {})
        wait_for(lambda: answers == ["pong"], timeout=5, what="ping from callback")


def test_redaction_masks_tokens_and_secret_values() -> None:
    f = RedactFilter()
    f.add_secret("s3cr3t-token-value")
    text = f.redact("url ws://x/?token=abc123 auth Bearer xyz client_secret=hunter2 raw s3cr3t-token-value")
    assert "abc123" not in text and "xyz" not in text and "hunter2" not in text
    assert "s3cr3t-token-value" not in text
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "token=%s", ("leak",), None)
    f.filter(record)
    assert "leak" not in record.getMessage()


def count_writes(srv: RpcServer) -> list[int]:
    """The sizes of the socket writes to the server's only client, from now on."""
    [session] = srv.sessions
    writes: list[int] = []
    transport = session.ws.transport
    real_write = transport.write

    def counting_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write  # type: ignore[method-assign]
    return writes


def test_pushes_queued_in_one_loop_pass_go_out_in_order_in_few_writes(server: tuple[RpcServer, LoopThread]) -> None:
    """A candle close pushes a decision per strategy to every panel: frames queued meanwhile are written together
    (``write_frames``), whole and in order, not one system call each."""
    srv, lt = server
    got: list[Any] = []
    with client_for(srv) as c:
        c.subscribe("strategy.*", lambda channel, data: got.append(data["n"]))
        writes = count_writes(srv)

        async def burst() -> None:
            for n in range(600):
                srv.publish(f"strategy.s{n % 50}", {"n": n, "pad": "x" * 200})

        lt.run(burst())
        wait_for(lambda: len(got) >= 600, timeout=10, what="600 pushes")
        assert got == list(range(600))
        assert 1 <= len(writes) <= 600 // WRITE_BATCH + 2, len(writes)
        assert c.call("engine.ping") == "pong"  # answers still flow after the bursts


def test_held_writes_queue_until_released_then_go_out_in_order(server: tuple[RpcServer, LoopThread]) -> None:
    """While the live loop's strategies decide, pushes wait (``hold_writes``); released, they all go out, in
    order. Holds nest: writing resumes when the last is released."""
    srv, lt = server
    got: list[Any] = []
    with client_for(srv) as c:
        c.subscribe("strategy.*", lambda channel, data: got.append(data["n"]))
        writes = count_writes(srv)

        async def held_burst() -> tuple[int, int]:
            outer, inner = srv.hold_writes(), srv.hold_writes()
            for n in range(100):
                srv.publish(f"strategy.s{n % 7}", {"n": n})
                await asyncio.sleep(0)  # loop passes in which the writer would otherwise write
            inner()
            inner()  # a second call of the same release changes nothing
            for _ in range(5):
                await asyncio.sleep(0)
            during = len(writes)
            outer()
            for _ in range(5):
                await asyncio.sleep(0)
            return during, len(writes)

        during, after = lt.run(held_burst())
        assert during == 0 and after >= 1
        wait_for(lambda: len(got) >= 100, timeout=10, what="the held pushes")
        assert got == list(range(100))
        assert c.call("engine.ping") == "pong"
