"""Notifications to a Telegram bot and/or a generic webhook, which can never block or crash trading.

Why the shape: ``notify()`` is called from the trading loop (a fill arrived, a strategy needs attention). It only
does ``queue.put_nowait`` and returns: no I/O, no await, no exception (a full queue drops the message and logs
it, throttled). One task (``run()``) drains the queue, sends with a timeout, retries with exponential back-off,
and contains every exception. A dead receiver therefore costs one background task some retries, never a late
order. Throttling: at most one message per ``min_interval_s`` per sink; what arrives meanwhile is coalesced into
the next message ("3 events: ..."), so a burst of fills becomes one message, not a rate-limit ban.

Secrets: the Telegram token is part of the URL (``/bot<token>/sendMessage``); it is only ever revealed into the
request itself. Log lines and error texts go through ``redact`` (the token becomes ``***``). Webhook bodies are
signed with HMAC-SHA256 of the raw body when a secret is configured: header ``X-Tradebaas-Signature:
sha256=<hex>``; the secret itself is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tradebaas.reports.config import NotifyConfig, TelegramConfig, WebhookConfig

log = logging.getLogger("tradebaas.notify")

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
MAX_COALESCED = 20  # at most this many events are listed in one message; the rest are counted
TELEGRAM_MAX_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str
    text: str
    data: Mapping[str, Any] = field(default_factory=dict)
    ts_ms: int = 0


class SendError(Exception):
    """A sink could not deliver (the message is redacted)."""


class Sink:
    """Where messages go. ``send`` raises ``SendError`` (or anything: the notifier contains it) on failure."""

    name = "sink"

    def secrets(self) -> list[str]:
        return []

    async def send(self, session: Any, batch: list[Notification], timeout_s: float) -> None:
        raise NotImplementedError


def format_batch(batch: list[Notification]) -> str:
    """One text for one or many events (a coalesced burst lists them, newest last)."""
    if len(batch) == 1:
        return batch[0].text
    shown = batch[-MAX_COALESCED:]
    lines = [f"{len(batch)} events:"] + [f"- {n.text}" for n in shown]
    if len(batch) > len(shown):
        lines.insert(1, f"(… {len(batch) - len(shown)} earlier not shown)")
    return "\n".join(lines)


class TelegramSink(Sink):
    name = "telegram"

    def __init__(self, cfg: TelegramConfig) -> None:
        self.cfg = cfg

    def secrets(self) -> list[str]:
        return [self.cfg.token.reveal()]

    def redacted_url(self) -> str:
        return f"{self.cfg.base_url}/bot***/sendMessage"

    async def send(self, session: Any, batch: list[Notification], timeout_s: float) -> None:
        import aiohttp

        url = f"{self.cfg.base_url}/bot{self.cfg.token.reveal()}/sendMessage"
        body = {"chat_id": self.cfg.chat_id, "text": format_batch(batch)[:TELEGRAM_MAX_CHARS],
                "disable_web_page_preview": True}
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status >= 300:
                detail = (await resp.text())[:200]
                raise SendError(f"HTTP {resp.status} from {self.redacted_url()}: {detail}")


class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg

    def secrets(self) -> list[str]:
        return [self.cfg.secret.reveal()] if self.cfg.secret else []

    def payload(self, batch: list[Notification]) -> bytes:
        doc = {
            "source": "tradebaas",
            "text": format_batch(batch),
            "events": [{"kind": n.kind, "text": n.text, "data": dict(n.data), "ts_ms": n.ts_ms} for n in batch],
        }
        return json.dumps(doc, separators=(",", ":"), default=str).encode()

    async def send(self, session: Any, batch: list[Notification], timeout_s: float) -> None:
        import aiohttp

        body = self.payload(batch)
        headers = {"Content-Type": "application/json", "User-Agent": "tradebaas-notify"}
        if self.cfg.secret:
            digest = hmac.new(self.cfg.secret.reveal().encode(), body, hashlib.sha256).hexdigest()
            headers[self.cfg.signature_header] = f"sha256={digest}"
        async with session.post(self.cfg.url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status >= 300:
                raise SendError(f"HTTP {resp.status} from webhook")


def sign(secret: str, body: bytes) -> str:
    """The signature header value a receiver recomputes to check a webhook body: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """A bounded queue and one sending task per sink. Create with ``Notifier.from_config(cfg)``.

    ``notify(kind, text, data)`` is synchronous, non-blocking and never raises. ``await run()`` sends until
    ``close()``; ``stats`` counts sent/failed/dropped messages (for tests and ``engine.status``-like views).
    """

    def __init__(
        self,
        sinks: list[Sink],
        *,
        events: frozenset[str] | None = None,
        min_interval_s: float = 1.0,
        retries: int = 3,
        queue_size: int = 100,
        timeout_s: float = 10.0,
        backoff_base_s: float = BACKOFF_BASE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sinks = sinks
        self.events = events
        self.min_interval_s = min_interval_s
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self._clock = clock
        self._sleep = sleep
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue(maxsize=queue_size)
        self._secrets = [s for sink in sinks for s in sink.secrets() if s]
        self._closed = False
        self._last_drop_log = 0.0
        self.stats = {"queued": 0, "sent": 0, "failed": 0, "dropped": 0, "filtered": 0}
        self.last_error = ""

    @classmethod
    def from_config(cls, cfg: NotifyConfig, **kwargs: Any) -> Notifier:
        sinks: list[Sink] = []
        if cfg.telegram is not None:
            sinks.append(TelegramSink(cfg.telegram))
        if cfg.webhook is not None:
            sinks.append(WebhookSink(cfg.webhook))
        return cls(sinks, events=cfg.events, min_interval_s=cfg.min_interval_s, retries=cfg.retries,
                   queue_size=cfg.queue_size, timeout_s=cfg.timeout_s, **kwargs)

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if len(s) >= 4:
                text = text.replace(s, "***")
        return text

    # -- the producer side (the trading loop) ------------------------------------------------------------------
    def notify(self, kind: str, text: str, data: Mapping[str, Any] | None = None) -> bool:
        """Queue a message; returns at once. False if not queued (kind not selected, queue full, closed)."""
        try:
            if not self.sinks or self._closed:
                return False
            if self.events is not None and kind not in self.events:
                self.stats["filtered"] += 1
                return False
            item = Notification(kind, str(text), dict(data or {}), int(time.time() * 1000))
            self._queue.put_nowait(item)
            self.stats["queued"] += 1
            return True
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            now = self._clock()
            if now - self._last_drop_log >= 10.0:
                self._last_drop_log = now
                log.warning("notification queue full: dropped %r (%d dropped so far); is the receiver down?",
                            kind, self.stats["dropped"])
            return False
        except Exception:  # nothing the notifier does may reach the caller
            log.exception("notify(%r) failed", kind)
            return False

    # -- the consumer side (its own task) ----------------------------------------------------------------------
    async def run(self) -> None:
        """Drain the queue until ``close()``; contains every exception (a sink failing is logged, not raised)."""
        if not self.sinks:
            return
        import aiohttp

        last_sent = -float("inf")
        async with aiohttp.ClientSession() as session:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                wait_s = last_sent + self.min_interval_s - self._clock()
                if wait_s > 0:
                    await self._sleep(wait_s)  # throttle: what arrives meanwhile joins this message
                batch = [item]
                stop = False
                while not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                for sink in self.sinks:
                    await self._deliver(sink, session, batch)
                last_sent = self._clock()
                if stop:
                    return

    async def _deliver(self, sink: Sink, session: Any, batch: list[Notification]) -> bool:
        for attempt in range(self.retries + 1):
            try:
                await sink.send(session, batch, self.timeout_s)
                self.stats["sent"] += len(batch)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - contained by design
                self.last_error = self.redact(f"{type(exc).__name__}: {exc}")
                if attempt < self.retries:
                    delay = min(BACKOFF_MAX_S, self.backoff_base_s * 2**attempt)
                    log.info("notification via %s failed (attempt %d/%d, retry in %.1fs): %s", sink.name,
                             attempt + 1, self.retries + 1, delay, self.last_error)
                    await self._sleep(delay)
        self.stats["failed"] += len(batch)
        log.warning("notification via %s failed after %d attempt(s), %d message(s) lost: %s", sink.name,
                    self.retries + 1, len(batch), self.last_error)
        return False

    async def close(self) -> None:
        """Stop accepting; the task sends what is queued, then ends (the owner awaits it with a timeout)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:  # make room for the sentinel: the oldest message is dropped
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.stats["dropped"] += 1
            self._queue.put_nowait(None)


async def run_contained(notifier: Notifier) -> None:
    """``notifier.run()`` that logs instead of raising, for ``asyncio.create_task`` in the engine."""
    try:
        await notifier.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the notifier stopped unexpectedly; notifications are off until restart")
