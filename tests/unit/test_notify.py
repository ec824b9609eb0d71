"""Notifications reach a local HTTP receiver; a dead or failing receiver never blocks the caller's loop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from tradebaas.reports.config import NotifyConfig, TelegramConfig, WebhookConfig
from tradebaas.reports.notify import Notifier, run_contained, sign
from tradebaas.secrets import Secret

TOKEN = "123456:AAH-very-secret-bot-token"


class Receiver:
    """A local HTTP server that records requests; ``fail_first`` answers 500 to that many requests first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.changed = asyncio.Event()
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body,
                              "json": json.loads(body)})
        self.changed.set()
        if len(self.requests) <= self.fail_first:
            return web.Response(status=500, text="boom")
        return web.json_response({"ok": True})

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while len(self.requests) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", receiver.port)
    await site.start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    task = asyncio.create_task(run_contained(notifier))
    try:
        yield notifier
    finally:
        await notifier.close()
        try:
            await asyncio.wait_for(task, 5)
        except TimeoutError:
            task.cancel()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def webhook_cfg(url: str, **kw: Any) -> NotifyConfig:
    return NotifyConfig(webhook=WebhookConfig(url=url, secret=Secret("hook-key")), min_interval_s=0, **kw)


def test_a_webhook_notification_reaches_the_receiver_signed() -> None:
    async def main() -> None:
        async with serving(Receiver()) as rx:
            async with running(Notifier.from_config(webhook_cfg(f"{rx.url}/hook"))) as n:
                assert n.notify("trade_opened", "trade opened: ab12 long", {"trade_id": "t1"}) is True
                await rx.wait(1)
        req = rx.requests[0]
        assert req["path"] == "/hook"
        assert req["json"]["text"] == "trade opened: ab12 long"
        assert req["json"]["events"][0]["kind"] == "trade_opened"
        assert req["json"]["events"][0]["data"] == {"trade_id": "t1"}
        assert req["headers"]["X-Tradebaas-Signature"] == sign("hook-key", req["body"])
        assert b"hook-key" not in req["body"]

    run(main)


def test_a_telegram_message_goes_to_the_bot_api_at_the_configured_base_url() -> None:
    async def main() -> None:
        async with serving(Receiver()) as rx:
            cfg = NotifyConfig(telegram=TelegramConfig(Secret(TOKEN), "4242", base_url=rx.url), min_interval_s=0)
            async with running(Notifier.from_config(cfg)) as n:
                n.notify("kill_switch", "KILL SWITCH")
                await rx.wait(1)
        assert rx.requests[0]["path"] == f"/bot{TOKEN}/sendMessage"
        assert rx.requests[0]["json"]["chat_id"] == "4242"
        assert rx.requests[0]["json"]["text"] == "KILL SWITCH"

    run(main)


def test_a_dead_receiver_does_not_block_the_loop_and_the_failure_is_logged_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tradebaas.notify")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> None:
        cfg = NotifyConfig(telegram=TelegramConfig(Secret(TOKEN), "1", base_url=dead),
                           webhook=WebhookConfig(url=f"{dead}/hook"), min_interval_s=0, retries=2, timeout_s=1)
        notifier = Notifier.from_config(cfg, backoff_base_s=0.01)
        ticks = 0
        failed = asyncio.Event()

        async def trading_loop() -> None:
            nonlocal ticks
            while not failed.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        async with running(notifier):
            loop_task = asyncio.create_task(trading_loop())
            started = time.perf_counter()
            for i in range(20):
                notifier.notify("trade_closed", f"trade closed {i}")
            assert time.perf_counter() - started < 0.05  # notify() only queues

            async def wait_failed() -> None:
                while notifier.stats["failed"] == 0:
                    await asyncio.sleep(0.01)
                failed.set()

            await asyncio.wait_for(wait_failed(), 20)
            await loop_task
        assert ticks > 10  # the loop kept running while the notifier retried
        assert notifier.stats["sent"] == 0

    run(main)
    text = caplog.text
    assert "failed after 3 attempt(s)" in text
    assert TOKEN not in text
    assert "very-secret" not in text


def test_a_failing_receiver_is_retried_with_back_off_until_it_answers() -> None:
    async def main() -> None:
        async with serving(Receiver(fail_first=2)) as rx:
            notifier = Notifier.from_config(webhook_cfg(rx.url, retries=3), backoff_base_s=0.01)
            async with running(notifier):
                notifier.notify("report_ready", "report daily ready")
                await rx.wait(3)
            assert notifier.stats["sent"] == 1 and notifier.stats["failed"] == 0
        assert all(r["json"]["text"] == "report daily ready" for r in rx.requests)

    run(main)


def test_a_burst_is_coalesced_into_one_message_within_the_min_interval() -> None:
    async def main() -> None:
        async with serving(Receiver()) as rx:
            cfg = NotifyConfig(webhook=WebhookConfig(url=rx.url), min_interval_s=0.3)
            notifier = Notifier.from_config(cfg)
            async with running(notifier):
                notifier.notify("trade_opened", "first")
                await rx.wait(1)
                for i in range(5):
                    notifier.notify("trade_closed", f"burst {i}")
                await rx.wait(2)
                assert notifier.stats["sent"] == 6
        assert len(rx.requests) == 2
        second = rx.requests[1]["json"]
        assert second["text"].startswith("5 events:")
        assert [e["text"] for e in second["events"]] == [f"burst {i}" for i in range(5)]

    run(main)


def test_a_full_queue_drops_and_logs_instead_of_blocking(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        cfg = NotifyConfig(webhook=WebhookConfig(url="http://127.0.0.1:9/"), queue_size=3, min_interval_s=0)
        notifier = Notifier.from_config(cfg)  # not running: nothing drains the queue
        results = [notifier.notify("trade_opened", f"m{i}") for i in range(5)]
        assert results == [True, True, True, False, False]
        assert notifier.stats["dropped"] == 2

    run(main)
    assert "notification queue full" in caplog.text


def test_only_selected_events_are_sent_and_a_notifier_without_sinks_is_a_no_op() -> None:
    async def main() -> None:
        cfg = NotifyConfig(webhook=WebhookConfig(url="http://127.0.0.1:9/"), events=frozenset({"kill_switch"}))
        notifier = Notifier.from_config(cfg)
        assert notifier.notify("trade_opened", "x") is False
        assert notifier.notify("kill_switch", "x") is True
        idle = Notifier.from_config(NotifyConfig())
        assert not idle.enabled and idle.notify("kill_switch", "x") is False
        await idle.run()  # returns at once

    run(main)
