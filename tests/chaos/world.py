"""The chaos world: a real ``tradebaas sim`` at high speed and a real engine sharing one temporary TRADEBAAS_HOME,
Razor trading one perpetual and ema_cross the other (Deribit nets positions per instrument: one strategy per
instrument), swapped every few rounds so both strategies trade both instruments.

What it promises its tests: processes it started are the only ones it kills (by their own pid), each restart is
timed from the moment the exchange is back, and every wait is on a condition with a limit (``wait_for``), never a
sleep. ``World.close()`` stops whatever still runs.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from tests.chaos.invariants import Checker
from tests.conftest import wait_for
from tests.integration.conftest import EngineProc, SimProc, start_engine_process
from tradebaas.home import Home
from tradebaas.rpc.client import EngineClient

INSTRUMENTS = ("BTC_USDC-PERPETUAL", "BTC-PERPETUAL")
#: Razor tuned to trade often on the replayed Bitstamp data, with tight brackets (trades open and close within a
#: few simulated minutes) and no daily cap in the way of a long run.
RAZOR_CHAOS: dict[str, Any] = {"rsiOversold": 48, "rsiOverbought": 52, "stopLossPercent": 0.05,
                               "takeProfitPercent": 0.05, "cooldownMinutes": 0, "maxDailyTrades": 100_000}
#: ema_cross on short EMAs: a flip every few minutes (exit and entry in one decision), no brackets.
EMA_CHAOS: dict[str, Any] = {"fast": 3, "slow": 8}
#: User fills the simulator keeps per instrument: enough for a whole full run, so the fill check sees every fill.
SIM_HISTORY = 200_000


@dataclass
class Slot:
    """A strategy the world started and wants running."""

    sid: str
    name: str
    instrument: str


class NotResumed(Exception):
    """The strategies that should run did not run again (why: the message)."""


@dataclass
class Resume:
    """How a restart went: wall seconds from the exchange being back (for an engine kill: the restarted engine
    answering) to every strategy that should run ``running`` and each of them deciding a new candle; from the
    engine's spawn (the same moment as "back" unless the engine was restarted); and from the link up."""

    spawn_to_running_s: float
    back_to_running_s: float
    back_to_deciding_s: float
    link_to_running_s: float


class World:
    def __init__(self, home: Home, speed: float, *, sim_args: list[str] | None = None,
                 engine_args: list[str] | None = None) -> None:
        self.home = home.ensure()
        self.engine_args = list(engine_args or [])
        self.sim = SimProc(self.home, speed, extra_args=["--history", str(SIM_HISTORY), *(sim_args or [])])
        self.eng: EngineProc | None = None
        self.c: EngineClient | None = None
        self.answered_at = 0.0  # when the engine last answered after a spawn (start_engine)
        self.slots: list[Slot] = []
        self.stopped: list[str] = []
        self.layout = 0
        self.checker = Checker(self.sim, self.home, INSTRUMENTS)
        self.start_engine()
        self._wait_link()

    # -- processes -----------------------------------------------------------------------------------------------
    def start_engine(self) -> float:
        """Spawn the engine (``--exchange sim``) and wait for its RPC; returns the wall time of the spawn, and keeps
        the moment it answered in ``answered_at`` (the engine is back: what a restart costs from there on is the
        engine's recovery, while spawn -> answering is the interpreter's start-up, which CPU contention stretches)."""
        spawned = time.time()
        self.eng = start_engine_process(self.home, "sim", timeout=90, extra_args=self.engine_args)
        self.answered_at = time.time()
        self.c = EngineClient(home=self.home, timeout=60)
        return spawned

    def kill_engine(self) -> None:
        """SIGKILL the engine (its pid only)."""
        assert self.eng is not None
        if self.c is not None:
            self.c.close()
            self.c = None
        self.eng.kill()

    def kill_sim(self) -> None:
        self.sim.kill()

    def start_sim(self) -> float:
        """Start the simulator again on the same port and home; returns the wall time it printed its URLs (the
        exchange is back)."""
        self.sim._launch()  # the same port: the engine's retries find it there
        return time.time()

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
        if self.eng is not None and self.eng.alive():
            self.eng.stop(30)
        if self.sim.alive():
            self.sim.stop(30)

    # -- engine views ----------------------------------------------------------------------------------------------
    @property
    def client(self) -> EngineClient:
        assert self.c is not None
        return self.c

    def link(self) -> dict[str, Any]:
        return dict(self.client.call("engine.status")["exchange"])

    def _wait_link(self, timeout: float = 60) -> None:
        wait_for(lambda: (s := self.link())["connected"] and s["reconciliations"] >= 1, timeout=timeout,
                 what="the engine connected and reconciled")

    def should_run(self) -> set[str]:
        return {s.sid for s in self.slots}

    def decisions(self) -> dict[str, int]:
        """Decisions journaled per strategy (read-only journal: works while the engine is dead)."""
        conn = sqlite3.connect(f"file:{self.home.root / 'journal.sqlite'}?mode=ro", uri=True, timeout=30)
        try:
            return {sid: n for sid, n in conn.execute("SELECT strategy_id, count(*) FROM decisions GROUP BY 1")}
        finally:
            conn.close()

    # -- strategies ------------------------------------------------------------------------------------------------
    def start_strategies(self, razor: dict[str, Any] | None = None, ema: dict[str, Any] | None = None) -> None:
        """Razor on one instrument and ema_cross on the other (which one where: by ``layout``)."""
        razor_inst, ema_inst = INSTRUMENTS if self.layout % 2 == 0 else INSTRUMENTS[::-1]
        for name, inst, config in (("razor", razor_inst, razor or RAZOR_CHAOS), ("ema_cross", ema_inst, ema or EMA_CHAOS)):
            info = self.client.call("strategy.start", name=name, instrument=inst, config=config)
            assert info["state"] == "running", info
            self.slots.append(Slot(info["id"], name, inst))

    def swap(self, timeout: float = 60) -> None:
        """Stop both strategies flat (``flatten``), then start them on each other's instrument."""
        for slot in self.slots:
            self.client.call("strategy.stop", id=slot.sid, flatten=True)
            self.stopped.append(slot.sid)
        old = {s.sid for s in self.slots}

        def flat() -> bool:
            for inst in INSTRUMENTS:
                if self.sim.position_size(inst) != 0:
                    return False
                if [o for o in self.sim.open_orders(inst) if str(o.get("label", "")).split(":")[1:2] and
                        str(o["label"]).split(":")[1] in old]:
                    return False
            return True

        wait_for(flat, timeout=timeout, what="both instruments flat and no orders of the stopped strategies")
        self.slots = []
        self.layout += 1
        self.start_strategies()

    def wait_resumed(self, back: float, spawned: float | None = None, reconciled_before: int = 0,
                     timeout: float = 60) -> Resume:
        """Wait until the link is up and reconciled (more than ``reconciled_before`` times), every strategy that
        should run is ``running``, and each decided a candle after ``back``; time each step from ``back``.

        Raises ``NotResumed`` at once when a strategy that should run waits for a person or failed (waiting longer
        cannot help: the round's invariant check then says why), or when ``timeout`` passes."""
        baseline = self.decisions()
        running_at: float | None = None
        link_since = 0.0
        why = "no look yet"

        def resumed() -> bool:
            nonlocal running_at, link_since, why
            if self.c is None:
                return False
            link = self.link()
            if not link["connected"] or link["reconciliations"] <= reconciled_before:
                why = f"link {link}"
                return False
            states = {s["id"]: (s["state"], s["state_reason"]) for s in self.client.call("strategy.list")}
            stuck = {sid: states[sid] for sid in self.should_run()
                     if states.get(sid, ("",))[0] in ("needs_attention", "error")}
            if stuck:
                raise NotResumed(f"strategies stuck: {stuck}")
            if not all(states.get(sid, ("",))[0] == "running" for sid in self.should_run()):
                why = f"states {states}"
                return False
            if running_at is None:
                running_at = time.time()
                link_since = (link["since_ts_ms"] or 0) / 1000
            now = self.decisions()
            why = f"decisions {now} (at the restart {baseline})"
            return all(now.get(sid, 0) > baseline.get(sid, 0) for sid in self.should_run())

        deadline = time.monotonic() + timeout
        while True:
            try:
                if resumed():
                    break
            except NotResumed:
                raise
            except Exception as exc:  # noqa: BLE001 - the engine starting, the journal busy: not yet
                why = repr(exc)
            if time.monotonic() >= deadline:
                raise NotResumed(f"not running and deciding {timeout} s after the restart: {why}")
            time.sleep(0.02)  # poll interval, as tests.conftest.wait_for
        deciding_at = time.time()
        assert running_at is not None
        return Resume(
            spawn_to_running_s=round(running_at - (spawned or back), 3),
            back_to_running_s=round(running_at - back, 3),
            back_to_deciding_s=round(deciding_at - back, 3),
            link_to_running_s=round(running_at - max(link_since, back), 3),
        )

    def wait_trading(self, fills: int = 1, timeout: float = 60) -> None:
        """Wait until ``fills`` more fills of ours happened on the exchange (the strategies are trading)."""
        def count() -> int:
            return sum(len(self.sim.user_trades(inst)) for inst in INSTRUMENTS)

        start = count()
        wait_for(lambda: count() >= start + fills, timeout=timeout, what=f"{fills} more fills on the exchange")
