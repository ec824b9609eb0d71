"""The engine clients always reconnect: a real TCP proxy between client and engine drops the live connection and
then resets the next N connection attempts (at accept, mid-handshake, or a clean close before the HTTP answer);
both clients keep retrying until one attempt goes through, resubscribe, and calls work again."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tradebaas
from tests.conftest import wait_for
from tradebaas.errors import EngineNotRunning
from tradebaas.rpc.client import EngineClient

#: How the proxy refuses an attempt, in turn: RST at once; RST after reading the HTTP upgrade request; a clean
#: close (FIN) after reading it, which the client sees as "no valid HTTP response" (it used to end the reader).
RESET_MODES = ("rst-at-accept", "rst-mid-handshake", "fin-mid-handshake")


class ResetProxy:
    """A TCP proxy to ``127.0.0.1:target_port`` on its own event loop thread.

    ``refuse(n)`` makes it reset the next ``n`` connection attempts; ``drop_all()`` resets every live connection.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.to_refuse = 0
        self.refused = 0
        self.accepted = 0  # connections forwarded to the engine
        self._live: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="reset-proxy", daemon=True)
        self.thread.start()
        self.server = self._run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def refuse(self, n: int) -> None:
        async def arm() -> None:
            self.to_refuse = n

        self._run(arm())

    def drop_all(self) -> None:
        async def drop() -> None:
            for writer in list(self._live):
                _reset(writer)

        self._run(drop())

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for writer in list(self._live):
                _reset(writer)

        self._run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.to_refuse > 0:
            self.to_refuse -= 1
            mode = RESET_MODES[self.refused % len(RESET_MODES)]
            if mode != "rst-at-accept":
                await reader.readuntil(b"\r\n\r\n")  # the client's upgrade request: we are mid-handshake
            if mode == "fin-mid-handshake":
                writer.close()
            else:
                _reset(writer)
            self.refused += 1
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.accepted += 1
        self._live.update((writer, up_writer))
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._live.discard(w)
                _reset(w)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until either side goes away; then reset both (the proxy never half-closes)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (linger 0), not a polite FIN: what a crashed peer or a middlebox timing out looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


@pytest.fixture
def proxy_to(engine_proc) -> Iterator[Callable[[int], ResetProxy]]:
    made: list[ResetProxy] = []

    def make(port: int) -> ResetProxy:
        made.append(ResetProxy(port))
        return made[-1]

    yield make
    for p in made:
        p.close()


N_RESETS = 5  # more than one round of RESET_MODES


def test_sync_client_reconnects_through_reset_handshakes_and_resubscribes(engine_proc, proxy_to) -> None:
    eng = engine_proc()
    proxy = proxy_to(eng.info.port)
    client = EngineClient(url=proxy.url, token=eng.token, timeout=5)
    eng.clients.append(client)  # closed at teardown
    got: list[str] = []
    reconnected = threading.Event()
    client.subscribe("log", lambda rec: got.append(rec["message"]))
    client.on_reconnect(reconnected.set)
    assert client.ping() == "pong"

    proxy.refuse(N_RESETS)
    proxy.drop_all()
    wait_for(lambda: proxy.refused == N_RESETS and client.connected, timeout=20,
             what=f"the client to get through after {N_RESETS} reset attempts")
    assert client.ping() == "pong" and client.status()["pid"] == eng.pid
    assert client.reconnects == 1 and proxy.accepted == 2
    assert reconnected.wait(5)
    client.call("engine.log", message="after the resets")
    wait_for(lambda: "after the resets" in got, timeout=5, what="a log event on the restored subscription")


def test_sync_client_keeps_trying_until_closed(engine_proc, proxy_to) -> None:
    eng = engine_proc()
    proxy = proxy_to(eng.info.port)
    client = EngineClient(url=proxy.url, token=eng.token, timeout=0.5)
    eng.clients.append(client)
    proxy.refuse(10**9)
    proxy.drop_all()
    wait_for(lambda: proxy.refused >= 2 * len(RESET_MODES), timeout=20, what="repeated reconnect attempts")
    assert client._reader.is_alive()  # every kind of reset was retried: nothing ended the reader
    with pytest.raises(EngineNotRunning, match="still trying to reconnect"):
        client.ping()
    t0 = time.monotonic()
    client.close()
    assert not client._reader.is_alive() and time.monotonic() - t0 < 8
    with pytest.raises(tradebaas.errors.UserError, match="closed"):
        client.ping()


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_async_client_reconnects_through_reset_handshakes_and_resubscribes(engine_proc, proxy_to) -> None:
    eng = engine_proc()
    proxy = proxy_to(eng.info.port)

    async def scenario() -> None:
        got: list[str] = []
        reconnected = asyncio.Event()
        async with await tradebaas.connect_async(url=proxy.url, token=eng.token, timeout=5) as c:
            await c.subscribe("log", lambda rec: got.append(rec["message"]))
            c.on_reconnect(reconnected.set)
            assert await c.ping() == "pong"

            await asyncio.to_thread(proxy.refuse, N_RESETS)
            await asyncio.to_thread(proxy.drop_all)
            await _until(lambda: proxy.refused == N_RESETS and c.connected, 20,
                         f"the client to get through after {N_RESETS} reset attempts")
            assert await c.ping() == "pong" and (await c.status())["pid"] == eng.pid
            assert c.reconnects == 1 and proxy.accepted == 2
            await asyncio.wait_for(reconnected.wait(), 5)
            await c.call("engine.log", message="async after the resets")
            await _until(lambda: "async after the resets" in got, 5, "a log event on the restored subscription")

            await asyncio.to_thread(proxy.refuse, 10**9)  # and it never gives up by itself
            await asyncio.to_thread(proxy.drop_all)
            await _until(lambda: proxy.refused >= N_RESETS + 2 * len(RESET_MODES), 20, "repeated attempts")
            reader = c._tasks[0]
            assert not reader.done()
            with pytest.raises(EngineNotRunning, match="still trying to reconnect"):
                await c.call("engine.ping", timeout=0.3)
        assert reader.done()  # close() ended the reconnect loop

    asyncio.run(scenario())
