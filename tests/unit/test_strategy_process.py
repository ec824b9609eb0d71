"""The strategy process's protocol (``tradebaas.engine.live.strategy_process``): the child's ``serve`` over an
in-memory pipe, how a class travels, and the engine's side against a real child (cancelled and crashed calls)."""

from __future__ import annotations

import asyncio
import io
import pickle
import textwrap

import pytest

from tradebaas.domain import Candle
from tradebaas.engine.live.strategy_process import (
    _LENGTH,
    ProcessLost,
    StrategyProcess,
    StrategyRaised,
    class_ref,
    frame,
    resolve_class,
    serve,
)
from tradebaas.instruments import get_instrument
from tradebaas.strategies.base import Decision, StrategyContext
from tradebaas.strategies.ema_cross import EmaCross
from tradebaas.strategies.loader import load_class

#: Counts candles (warm-up included) and reports what it saw; raises on a candle with volume 13; ends its own
#: process on volume 99 (as a crash would).
COUNTER = textwrap.dedent('''
    import os

    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Counter(BaseStrategy):
        name = "counter"
        params = (Param("step", int, 1, 1, 10, "added per candle"),)

        def __init__(self, config):
            super().__init__(config)
            self.seen = 0
            self.started = False

        def on_start(self, context):
            self.started = True

        def on_candle(self, candle, context):
            if candle.volume == 13:
                raise ValueError("unlucky candle")
            if candle.volume == 99:
                os._exit(3)
            self.seen += self.config["step"]
            context.extra["touched"] = True  # stays in the child: the engine's context is the engine's
            return Decision(candle.ts_ms, "none", {"seen": self.seen, "started": self.started,
                                                   "warming": context.warming_up, "pid": os.getpid()}, {}, ())
''')


def candle(minute: int, volume: float = 1.0) -> Candle:
    return Candle(minute * 60_000, 100.0, 101.0, 99.0, 100.5, volume)


def counter_ref() -> tuple[str, ...]:
    return class_ref(load_class(COUNTER, "tb_test_counter", "<counter>", "counter"))


def context() -> StrategyContext:
    return StrategyContext(get_instrument("BTC-PERPETUAL"))


def answers_of(*requests: tuple[object, ...]) -> list[tuple[object, ...]]:
    """Run ``serve`` over the framed ``requests``; its answers, decoded."""
    out = io.BytesIO()
    serve(io.BytesIO(b"".join(frame(r) for r in requests)), out)
    data, answers = out.getvalue(), []
    while data:
        size = _LENGTH.unpack(data[:_LENGTH.size])[0]
        answers.append(pickle.loads(data[_LENGTH.size:_LENGTH.size + size]))
        data = data[_LENGTH.size + size:]
    return answers


def test_a_source_class_travels_as_its_source_and_an_installed_one_by_its_import_path() -> None:
    ref = counter_ref()
    assert ref[0] == "source" and ref[1] == COUNTER and ref[-1] == "Counter"
    assert class_ref(EmaCross) == ("import", "tradebaas.strategies.ema_cross", "EmaCross")
    assert resolve_class(class_ref(EmaCross)) is EmaCross
    assert resolve_class(ref).__name__ == "Counter"


def test_serve_warms_up_starts_and_decides_on_the_context_it_is_sent() -> None:
    ctx = context()
    start, first, second = answers_of(("start", counter_ref(), {"step": 2}, [candle(1), candle(2)], ctx),
                                      ("decide", candle(3), ctx), ("decide", candle(4), ctx))
    assert start == ("ok", None)
    assert first[0] == "ok" and isinstance(first[1], Decision)
    assert first[1].indicators["seen"] == 6 and first[1].indicators["started"] is True
    assert first[1].indicators["warming"] is False
    assert second[1].indicators["seen"] == 8
    assert ctx.extra == {}  # pickled: the child's changes never reach the sender's object


def test_serve_answers_an_exception_with_its_traceback_and_a_decision_before_a_start_as_lost() -> None:
    ctx = context()
    lost, _, raised, after = answers_of(("decide", candle(1), ctx), ("start", counter_ref(), {}, [], ctx),
                                        ("decide", candle(2, volume=13), ctx), ("decide", candle(3), ctx))
    assert lost[0] == "lost"
    assert raised[:3] == ("raised", "ValueError", "unlucky candle")
    assert "Traceback" in raised[3] and "<counter>" in raised[3]
    assert after[0] == "ok"  # a raising decision leaves the instance as it was


def test_the_engine_side_against_a_real_child() -> None:
    """Decisions in another process; a new start (a swap) reuses it; a raising strategy keeps its process; a crashed one is reported as lost
    and the next start gets a fresh process; a cancelled call ends the child (its answer must not become the
    answer to the next request)."""

    async def scenario() -> None:
        proc = StrategyProcess("test")
        try:
            ctx = context()
            await proc.prepare()  # started ahead (outside the supervisor's lock): the start finds it running
            prepared = proc.pid
            assert prepared is not None and not proc.started
            await proc.start(counter_ref(), {}, [candle(1)], ctx)
            decision = await proc.decide(candle(2), ctx)
            pid = decision.indicators["pid"]
            assert pid == proc.pid == prepared and decision.indicators["seen"] == 2
            await proc.start(counter_ref(), {"step": 3}, [], ctx)  # a swap: a new instance in the same process
            decision = await proc.decide(candle(2), ctx)
            assert decision.indicators["pid"] == pid and decision.indicators["seen"] == 3
            with pytest.raises(StrategyRaised, match="unlucky"):
                await proc.decide(candle(3, volume=13), ctx)
            assert proc.pid == pid and proc.started
            with pytest.raises(ProcessLost, match="exited with status 3"):
                await proc.decide(candle(4, volume=99), ctx)
            assert proc.pid is None and not proc.started
            await proc.start(counter_ref(), {}, [], ctx)
            assert (await proc.decide(candle(5), ctx)).indicators["pid"] not in (pid, None)
            task = asyncio.ensure_future(proc.decide(candle(6), ctx))
            await asyncio.sleep(0)  # the request is on its way; the answer is not read yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert proc.pid is None and not proc.started
        finally:
            await proc.aclose()

    asyncio.run(scenario())
