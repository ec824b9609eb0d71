"""Your own strategy, from source text to the live engine, with real processes (issue 11).

A strategy written here (as a user writes one in a notebook cell) is deployed over RPC, vetted by the engine,
trades on the simulator, and survives SIGKILL with the same version read back from TRADEBAAS_HOME; an upgrade keeps
the open position and its stop; a raising strategy goes to ``error`` while another keeps trading; a parameter change
is journaled and on the next trades; a plug-in file and an installed entry point both appear and run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli, wait_for
from tests.integration.conftest import EngineProc, SimProc
from tests.integration.test_live_loop import orders_by_label, trades_of
from tradebaas.home import Home
from tradebaas.rpc.client import EngineClient
from tradebaas.rpc.protocol import RpcError
from tradebaas.strategies.loader import source_version

pytestmark = pytest.mark.integration

#: A deterministic strategy: on every candle whose minute is a multiple of ``every`` it enters (long on even
#: blocks, short on odd ones) with wide brackets, and leaves ``hold`` minutes later. Its decisions depend only on
#: the candle's time, so it needs no warm-up and a backtest of the same candles makes the same trades.
METRONOME = textwrap.dedent('''
    from tradebaas.domain import Direction
    from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, Param


    class Metronome(BaseStrategy):
        """Enters every `every` minutes and leaves `hold` minutes later (a test strategy)."""

        name = "metronome"
        params = (
            Param("every", int, 3, 1, 60, "enter on minutes that are a multiple of this"),
            Param("hold", int, 2, 1, 60, "minutes to hold a position"),
            Param("tradeSize", float, 100.0, 1.0, 1e6, "USD notional per trade"),
            Param("stopLossPercent", float, 5.0, 0.01, 50.0, "stop-loss distance, percent"),
            Param("takeProfitPercent", float, 5.0, 0.01, 50.0, "take-profit distance, percent"),
        )
        bracket_params = ("stopLossPercent", "takeProfitPercent")

        def on_candle(self, candle, context):
            minute = candle.ts_ms // 60_000
            if context.warming_up:
                return Decision(candle.ts_ms, "none", {}, {}, ("warming up",), (), "warming up")
            pos = context.position
            if pos is not None:
                if minute - pos.opened_ts_ms // 60_000 >= self.config["hold"]:
                    return Decision(candle.ts_ms, "none", {}, {}, ("held long enough",), (Exit("hold"),))
                return Decision(candle.ts_ms, "none", {}, {}, ("holding",), (), "position open")
            if minute % self.config["every"]:
                return Decision(candle.ts_ms, "none", {"minute": minute}, {}, ("not my minute",))
            side = Direction.LONG if (minute // self.config["every"]) % 2 == 0 else Direction.SHORT
            intent = Enter(side, self.config["tradeSize"], self.config["stopLossPercent"],
                           self.config["takeProfitPercent"], "metronome")
            return Decision(candle.ts_ms, side.value, {"minute": minute}, {}, ("my minute",), (intent,))
''')

#: Raises once the file its config names exists: vetting (default config) passes, then the test lights the fuse.
FRAGILE = textwrap.dedent('''
    import os

    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Fragile(BaseStrategy):
        name = "fragile"
        params = (Param("fuse", str, "none", help="a file whose existence breaks the strategy"),)

        def on_candle(self, candle, context):
            if not context.warming_up and os.path.exists(self.config["fuse"]):
                raise ZeroDivisionError("the strategy's own bug")
            return Decision(candle.ts_ms, "none", {}, {}, ())
''')


def deploy(c: EngineClient, source: str, name: str | None = None) -> dict[str, Any]:
    return dict(c.call("strategy.deploy", source=source, name=name, timeout=300))


def start(c: EngineClient, name: str, config: dict[str, Any] | None = None, **kw: Any) -> str:
    info = c.call("strategy.start", name=name, config=config or {}, **kw)
    sid = str(info["id"])
    # running once the engine's exchange link is up (under load the engine may still be connecting)
    wait_for(lambda: c.call("strategy.get", id=sid)["state"] == "running", timeout=60, what=f"{sid} running")
    return sid


def closed_trades(c: EngineClient, sid: str) -> list[dict[str, Any]]:
    return [t for t in trades_of(c, sid) if t["state"] == "closed"]


def trades_on(c: EngineClient, sid: str) -> None:
    """``sid`` closes another trade and is still running (the other strategy, after one went to ``error``)."""
    count = len(closed_trades(c, sid))
    wait_for(lambda: len(closed_trades(c, sid)) > count, timeout=120, what="the other strategy trading on")
    assert c.call("strategy.get", id=sid)["state"] == "running"


def test_a_deployed_strategy_trades_and_survives_sigkill_with_the_same_version(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    answer = deploy(c, METRONOME)
    version = source_version(METRONOME)
    assert answer["name"] == "metronome" and answer["version"] == version and answer["vetting"]["ok"]
    stored = tb_home.root / "strategies" / "versions" / f"{version}.py"
    assert stored.read_text() == METRONOME
    listed = {e["name"]: e for e in c.call("strategy.available")}
    assert listed["metronome"]["source"] == "deployed" and listed["metronome"]["version"] == version
    sid = start(c, "metronome", {"every": 2, "hold": 1})
    wait_for(lambda: len(closed_trades(c, sid)) >= 2, timeout=120, what="two metronome trades")
    first = closed_trades(c, sid)[0]
    assert (first["strategy_name"], first["code_version"], first["config_version"]) == ("metronome", version, 1)

    eng.kill()
    eng2 = engine_proc(exchange="sim")  # no client deploys anything: the version comes from TRADEBAAS_HOME
    c2 = eng2.client()
    wait_for(lambda: c2.call("strategy.get", id=sid)["state"] == "running", timeout=60, what="resumed after kill")
    count = len(closed_trades(c2, sid))
    wait_for(lambda: len(closed_trades(c2, sid)) > count, timeout=120, what="a trade after the restart")
    info = c2.call("strategy.get", id=sid)
    assert info["version"] == version and info["last_decision"]["code_version"] == version


def test_an_upgrade_keeps_the_open_position_and_its_stop(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=60)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    v1 = deploy(c, METRONOME)["version"]
    v2_source = METRONOME.replace("(a test strategy)", "(a test strategy, version 2)")
    v2 = deploy(c, v2_source)["version"]
    assert v1 != v2
    sid = start(c, "metronome", {"every": 1, "hold": 30}, version=v1)
    trade = wait_for(lambda: next((t for t in trades_of(c, sid) if t["state"] == "open"
                                   and t["stop_price"] is not None), None), timeout=120, what="an open position")
    stop = orders_by_label(sim)[f"tb:{sid}:{trade['trade_id']}:sl"]
    info = c.call("strategy.upgrade", id=sid, version=v2[:10])
    assert info["version"] == v2
    wait_for(lambda: (d := c.call("strategy.get", id=sid)["last_decision"]) and d["code_version"] == v2,
             timeout=60, what="a decision of version 2")
    still = next(t for t in trades_of(c, sid) if t["trade_id"] == trade["trade_id"])
    assert still["state"] == "open"
    assert orders_by_label(sim)[f"tb:{sid}:{trade['trade_id']}:sl"]["order_id"] == stop["order_id"]
    with pytest.raises(RpcError, match="not of 'metronome'|no stored version"):
        c.call("strategy.upgrade", id=sid, version="0000000")


def test_a_raising_strategy_goes_to_error_while_another_keeps_trading(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    deploy(c, METRONOME)
    deploy(c, FRAGILE)
    steady = start(c, "metronome", {"every": 2, "hold": 1}, instrument="BTC-PERPETUAL")
    fuse = tb_home.root / "fuse"
    fragile = start(c, "fragile", {"fuse": str(fuse)})
    wait_for(lambda: c.call("strategy.get", id=fragile)["decisions"] >= 1, timeout=60, what="a fragile decision")
    fuse.write_text("lit")
    info = wait_for(lambda: (i := c.call("strategy.get", id=fragile))["state"] == "error" and i, timeout=120,
                    what="the fragile strategy in error")
    assert "ZeroDivisionError" in info["state_reason"] and "the strategy's own bug" in info["error"]
    assert "Traceback" in info["error"]
    trades_on(c, steady)
    events = c.call("journal.events", kinds=["strategy.state"], strategy=fragile)
    assert any("Traceback" in (e["payload"].get("error") or "") for e in events)


#: Takes ``nap`` seconds over each decision once the file its config names exists (vetting passes at full speed).
SLUGGISH = textwrap.dedent('''
    import os
    import time

    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Sluggish(BaseStrategy):
        name = "sluggish"
        params = (Param("fuse", str, "none", help="a file whose existence slows the strategy down"),
                  Param("nap", float, 0.0, 0.0, 4.0, "seconds per decision once the fuse is lit"))

        def on_candle(self, candle, context):
            if not context.warming_up and os.path.exists(self.config["fuse"]):
                time.sleep(self.config["nap"])
            return Decision(candle.ts_ms, "none", {}, {}, ())
''')


def test_a_strategy_slower_than_its_candles_is_stopped_with_the_reason_not_left_to_trade_on_stale_prices(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """A fast replay closes a candle every 0.2 s; a strategy that needs 0.6 s per decision (within its hard
    budget, so no single decision is at fault) falls further behind with every candle. Past the backlog limit it
    goes to ``error`` saying so, the others trade on, and the engine still stops when asked."""
    sim_proc(speed=300)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    deploy(c, METRONOME)
    deploy(c, SLUGGISH)
    steady = start(c, "metronome", {"every": 2, "hold": 1}, instrument="BTC-PERPETUAL")
    fuse = tb_home.root / "fuse"
    slow = start(c, "sluggish", {"fuse": str(fuse), "nap": 0.6})
    wait_for(lambda: c.call("strategy.get", id=slow)["decisions"] >= 1, timeout=60, what="a first decision")
    fuse.write_text("lit")
    info = wait_for(lambda: (i := c.call("strategy.get", id=slow))["state"] == "error" and i, timeout=60,
                    what="the sluggish strategy stopped as too slow")
    assert "falls behind the market" in info["state_reason"] and "closed candles wait" in info["state_reason"]
    trades_on(c, steady)
    c.call("engine.shutdown")
    wait_for(lambda: not eng.alive(), timeout=30, what="the engine's process ended after engine.shutdown")


def test_a_parameter_change_is_a_new_config_version_on_the_next_trades(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    deploy(c, METRONOME)
    sid = start(c, "metronome", {"every": 2, "hold": 1})
    wait_for(lambda: closed_trades(c, sid), timeout=120, what="a first trade")
    with pytest.raises(RpcError, match="hold"):
        c.call("strategy.set", id=sid, config={"hold": 0})  # validated like a start: nothing changes
    assert c.call("strategy.get", id=sid)["config_version"] == 1
    info = c.call("strategy.set", id=sid, config={"hold": 2, "tradeSize": 200})
    assert info["config_version"] == 2 and info["config"]["hold"] == 2
    changed = c.call("journal.events", kinds=["strategy.changed"], strategy=sid)
    assert changed[-1]["payload"]["config"]["tradeSize"] == 200 and changed[-1]["payload"]["config_version"] == 2
    later = wait_for(lambda: [t for t in closed_trades(c, sid) if t["config_version"] == 2], timeout=120,
                     what="a trade under config version 2")
    assert later[0]["amount"] > closed_trades(c, sid)[0]["amount"]  # the bigger size took effect


#: A metronome that names no size parameter (so a start cannot check it) and sizes its orders at a notional that
#: rounds to no contract of BTC_USDC-PERPETUAL: the engine must not send them (they would trade 0.001 BTC).
DRIBBLE = METRONOME.replace('name = "metronome"', 'name = "dribble"\n    size_param = "none"').replace(
    "class Metronome", "class Dribble").replace('Param("tradeSize", float, 100.0, 1.0, 1e6', 'Param("tradeSize", float, 100.0, 0.0, 1e6')


def test_an_entry_below_the_minimum_order_is_not_sent_even_when_no_start_check_could_see_it(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    sim = sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    deploy(c, DRIBBLE)
    sid = start(c, "dribble", {"every": 1, "hold": 1, "tradeSize": 1.0})
    wait_for(lambda: "entry not sent: 1 USD is below the minimum order of BTC_USDC-PERPETUAL (0.001 BTC, about "
             in run_cli("logs", "--strategy", sid, home=tb_home).stdout, timeout=60, what="a refused entry")
    assert trades_of(c, sid) == [] and c.call("orders.list", open_only=False) == []
    assert sim.user_trades() == [] and sim.position_size() == 0
    assert c.call("strategy.get", id=sid)["state"] == "running"  # the strategy carries on; its next entry is judged anew


PLUGIN_FILE = METRONOME.replace('name = "metronome"', 'name = "filebeat"').replace("class Metronome", "class Filebeat")
BROKEN_FILE = "import a_module_nobody_installed\n"


def install_entry_point_package(tmp: Path) -> Path:
    """A tiny package declaring ``tradebaas.strategies`` = ``pkgbeat`` -> ``tb_pkgbeat:Pkgbeat``: a real wheel
    (written here, so no build backend is needed) installed by pip into its own target directory (the engine gets
    it on PYTHONPATH, as a user's site-packages)."""
    import zipfile

    dist = "tb_pkgbeat-0.1.0.dist-info"
    files = {
        "tb_pkgbeat/__init__.py": METRONOME.replace('name = "metronome"', 'name = "pkgbeat"').replace(
            "class Metronome", "class Pkgbeat"),
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: tb-pkgbeat\nVersion: 0.1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tradebaas-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[tradebaas.strategies]\npkgbeat = tb_pkgbeat:Pkgbeat\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    wheel = tmp / "tb_pkgbeat-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    target = tmp / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                             "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / dist / "entry_points.txt").exists()
    return target


def test_plugins_from_the_home_folder_and_an_installed_entry_point_appear_and_run(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = install_entry_point_package(tmp_path)
    monkeypatch.setenv("PYTHONPATH", f"{site}:{__import__('os').environ.get('PYTHONPATH', '')}".rstrip(":"))
    (tb_home.root / "strategies").mkdir(parents=True, exist_ok=True)
    (tb_home.root / "strategies" / "filebeat.py").write_text(PLUGIN_FILE)
    (tb_home.root / "strategies" / "broken.py").write_text(BROKEN_FILE)
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    listed = {e["name"]: e for e in c.call("strategy.available")}
    assert listed["filebeat"]["source"] == "file" and listed["filebeat"]["error"] is None
    assert listed["pkgbeat"]["source"] == "entry_point" and listed["pkgbeat"]["origin"] == "tb_pkgbeat:Pkgbeat"
    assert "a_module_nobody_installed" in listed["broken"]["error"]  # listed with its error, the engine runs on
    assert {p["name"] for p in listed["pkgbeat"]["params"]} >= {"every", "hold"}
    by_file = start(c, "filebeat", {"every": 2, "hold": 1})
    by_package = start(c, "pkgbeat", {"every": 2, "hold": 1}, instrument="BTC-PERPETUAL")
    wait_for(lambda: closed_trades(c, by_file) and closed_trades(c, by_package), timeout=150,
             what="trades of both plug-ins")
    assert c.call("strategy.get", id=by_file)["source"] == "file"
    with pytest.raises(RpcError, match="broken"):
        c.call("strategy.start", name="broken")


def test_compare_on_a_paper_session_reports_no_unexplained_difference(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """Razor trades a replayed paper session, its parameters change half-way (a swap the backtest must mirror), and
    ``strategy.compare`` backtests the engine's own recordings with the journaled versions: nothing unexplained."""
    from tests.integration.test_live_loop import RAZOR_FAST

    sim_proc(speed=300)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    sid = start(c, "razor", RAZOR_FAST)
    wait_for(lambda: len(closed_trades(c, sid)) >= 2, timeout=150, what="two razor trades")
    c.call("strategy.set", id=sid, config={"takeProfitPercent": 0.08})
    wait_for(lambda: [t for t in closed_trades(c, sid) if t["config_version"] == 2], timeout=150,
             what="a trade under the new config")
    c.call("strategy.stop", id=sid)
    answer = c.call("strategy.compare", id=sid, timeout=120)
    summary = answer["summary"]
    assert summary["trades_live"] >= 3 and summary["matched"] >= summary["trades_live"] - 1, summary
    assert summary["unexplained"] == 0, [d for d in answer["differences"] if not d["explained"]]
    assert [s["config_version"] for s in answer["segments"]][-1] == 2
    from tradebaas.analytics.compare import Comparison, format_summary

    assert "unexplained 0" in format_summary(Comparison.from_json(answer)).replace(":", "")


#: Says which process decides (its pid in the decision's indicators); once the file its config names exists it
#: computes in pure Python without end, holding the interpreter's lock all the while.
SPINNER = textwrap.dedent('''
    import os

    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Spinner(BaseStrategy):
        name = "spinner"
        params = (Param("fuse", str, "none", help="a file whose existence makes the strategy spin for ever"),)

        def on_candle(self, candle, context):
            if not context.warming_up and os.path.exists(self.config["fuse"]):
                n = 0
                while True:
                    n += 1
            return Decision(candle.ts_ms, "none", {"pid": os.getpid()}, {}, ())
''')


def strategy_processes(engine_pid: int) -> set[int]:
    """Pids of the strategy processes whose parent is ``engine_pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked
        if b"tradebaas.engine.live.strategy_process" in cmdline and ppid == engine_pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_deployed_strategy_decides_in_its_own_process_which_ends_at_its_hard_budget_and_with_the_engine(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home
) -> None:
    """Issue 15: a strategy spinning in pure Python does not share the engine's interpreter. Over its hard budget
    its process is ended (a thread could only have been abandoned, still spinning) and it goes to ``error`` while
    the other trades; resumed, it decides in a fresh process; a SIGKILLed engine leaves no strategy process."""
    tb_home.ensure()
    tb_home.config_file.write_text("[strategies]\nstop_ms = 1500\n")
    sim_proc(speed=120)
    eng = engine_proc(exchange="sim")
    c = eng.client()
    deploy(c, METRONOME)
    deploy(c, SPINNER)
    steady = start(c, "metronome", {"every": 2, "hold": 1}, instrument="BTC-PERPETUAL")
    fuse = tb_home.root / "fuse"
    spinner = start(c, "spinner", {"fuse": str(fuse)})

    def deciding_pid() -> int:
        decision = c.call("strategy.get", id=spinner)["last_decision"] or {}
        return int(decision.get("indicators", {}).get("pid") or 0)

    first = wait_for(deciding_pid, timeout=60, what="a decision of the spinner")
    assert first != eng.pid and first in strategy_processes(eng.pid)
    assert len(strategy_processes(eng.pid)) == 2  # the metronome's and the spinner's

    fuse.write_text("lit")
    info = wait_for(lambda: (i := c.call("strategy.get", id=spinner))["state"] == "error" and i, timeout=60,
                    what="the spinning strategy stopped at its hard budget")
    assert "hard budget of 1500 ms" in info["state_reason"] and "process was ended" in info["state_reason"]
    wait_for(lambda: not alive(first), timeout=10, what="the spinning process ended")
    trades_on(c, steady)

    fuse.unlink()
    c.call("strategy.resume", id=spinner)
    wait_for(lambda: c.call("strategy.get", id=spinner)["state"] == "running", timeout=60, what="resumed")
    second = wait_for(lambda: (pid := deciding_pid()) not in (0, first) and pid, timeout=60,
                      what="a decision from a fresh process")
    assert second in strategy_processes(eng.pid)

    children = strategy_processes(eng.pid)
    eng.proc.kill()
    eng.proc.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
             what="no strategy process outliving the killed engine")
