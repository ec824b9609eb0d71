"""What the doctor reads on this machine: the engine of this home (over its RPC), the strategies' sizes, and the
configuration the engine and its notifications will run with (``tradebaas.toml``).

Why apart from the exchange checks: these need no exchange and no credentials, and they must work (and say what
is wrong) whether or not an engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradebaas.doctor.checks import Check, Status, StrategySize
from tradebaas.errors import UserError
from tradebaas.home import Home

#: Sizes are the defaults of this built-in strategy when no engine tells the configured ones.
DEFAULT_STRATEGY = "razor"


@dataclass(slots=True)
class EngineFacts:
    """The engine of this home as ``tradebaas engine status`` sees it, and its strategies (``strategy.list``)."""

    state: str  # running | stopped | stale | starting
    status: dict[str, Any]
    strategies: list[dict[str, Any]] | None = None
    error: str | None = None


def engine_facts(home: Home, timeout_s: float = 5.0) -> EngineFacts:
    """Ask the engine of ``home`` (if one runs) for its status and strategies; never raises."""
    from tradebaas.engine.process import daemon

    try:
        status = daemon.status(home, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a broken engine is a finding, not a crash of the doctor
        return EngineFacts("unknown", {}, error=str(exc))
    facts = EngineFacts(str(status.get("state", "stopped")), status, error=status.get("error"))
    if not status.get("running") or status.get("health") == "unresponsive":
        return facts
    from tradebaas.engine.process.daemon import engine_state
    from tradebaas.rpc.client import EngineClient

    _, info = engine_state(home)
    if info is None:
        return facts
    try:
        with EngineClient(url=info.url, token=info.token, timeout=timeout_s, reconnect=False) as client:
            facts.strategies = list(client.call("strategy.list"))
    except Exception as exc:  # noqa: BLE001
        facts.error = f"strategy.list: {exc}"
    return facts


def strategy_sizes(facts: EngineFacts, instrument: str | None) -> tuple[list[StrategySize], str]:
    """The sizes the engine will trade: its strategies that are meant to run, else the default strategy's
    defaults (on ``instrument`` when given). Returns them and where they came from."""
    rows = [r for r in facts.strategies or [] if r.get("desired_state") == "running"]
    if rows:
        out, unsized = [], []
        for r in rows:
            config = r.get("config") or {}
            size = config.get("tradeSize")
            if isinstance(size, int | float) and not isinstance(size, bool):
                out.append(StrategySize(str(r.get("id")), str(r.get("instrument") or config.get("instrument")),
                                        float(size), int(config.get("maxConcurrentTrades") or 1)))
            else:
                unsized.append(str(r.get("id")))
        note = f"; not counted, no tradeSize: {', '.join(unsized)}" if unsized else ""
        return out, f"the running engine's strategies{note}"
    from tradebaas.strategies.params import defaults
    from tradebaas.strategies.registry import get_strategy

    d = defaults(get_strategy(DEFAULT_STRATEGY))
    return ([StrategySize(f"{DEFAULT_STRATEGY} (defaults)", instrument or str(d["instrument"]), float(d["tradeSize"]),
                          int(d.get("maxConcurrentTrades") or 1))],
            f"{DEFAULT_STRATEGY}'s defaults: no engine strategies")


def engine_check(facts: EngineFacts, exchange_name: str, exchange_url: str, home: Home) -> Check:
    """The engine of this home: its state, the exchange it trades (the one checked?), its strategies' health, and
    its own configuration (``[strategies]`` budgets of ``tradebaas.toml``)."""
    from tradebaas.engine.live.budgets import load_budgets

    try:
        budgets = load_budgets(home)
    except UserError as exc:
        return Check("engine", Status.FAIL, f"configuration: {exc}", f"fix {home.config_file} and run again")
    config = f"decision budget warn {budgets.warn_ms:g} ms / stop {budgets.stop_ms:g} ms"
    if facts.state in ("stopped", "starting"):
        return Check("engine", Status.PASS, f"not running for {home.root} ({config}); start it with `tradebaas engine "
                     f"start --exchange {exchange_name}`", data={"state": facts.state})
    if facts.state == "stale":
        return Check("engine", Status.WARN, f"not running, but {home.engine_json} of a dead engine is left behind",
                     "`tradebaas engine start` replaces it (or delete it)", {"state": facts.state})
    st = facts.status
    if facts.state != "running" or st.get("health") not in ("ok", None):
        return Check("engine", Status.FAIL, f"{facts.state}, health {st.get('health')}: {facts.error or st.get('error')}",
                     "see `tradebaas logs`; restart with `tradebaas engine stop` / `tradebaas engine start`",
                     {"state": facts.state, "health": st.get("health")})
    ex = st.get("exchange") or {}
    attention = [r["id"] for r in facts.strategies or [] if r.get("state") in ("needs_attention", "error")]
    detail = (f"running (pid {st.get('pid')}, version {st.get('version')}) on {ex.get('name')} "
              f"({'connected' if ex.get('connected') else 'not connected'}), {config}")
    data = {"state": facts.state, "exchange": ex.get("name"), "strategies": len(facts.strategies or [])}
    if attention:
        return Check("engine", Status.WARN, f"{detail}; needs attention: {', '.join(attention)}",
                     "see `tradebaas strategy get <id>`, fix, then `tradebaas strategy resume <id>`", data)
    same = ex.get("name") == exchange_name or ex.get("url") == exchange_url
    if not same:
        return Check("engine", Status.WARN, f"{detail}; the doctor checked {exchange_name} instead",
                     f"run `tradebaas doctor --exchange {ex.get('name')}` to check what the engine trades on", data)
    if not ex.get("connected"):
        return Check("engine", Status.WARN, f"{detail}: its exchange link is down ({ex.get('last_error')})",
                     "see `tradebaas logs`", data)
    return Check("engine", Status.PASS, detail, data=data)


def notifications_check(home: Home) -> Check:
    """``[notify]`` and ``[reports.*]`` of ``tradebaas.toml`` as the engine will load them (secrets resolved from
    their variables or files, never shown)."""
    from tradebaas.reports.config import load_config

    try:
        cfg = load_config(home)
    except UserError as exc:
        return Check("notifications", Status.FAIL, str(exc), f"fix {home.config_file}: the engine logs this error "
                     "and sends nothing")
    n = cfg.notify
    reports = f"{len(cfg.reports)} scheduled report(s)" if cfg.reports else "no scheduled reports"
    if not n.enabled:
        return Check("notifications", Status.WARN, f"none configured ({reports}): nobody hears of a strategy that "
                     "needs attention or a kill switch", f"add a [notify] table to {home.config_file} "
                     "(docs/reports.md: telegram or webhook)", {"enabled": False})
    sinks = [s for s, on in (("telegram", n.telegram is not None), ("webhook", n.webhook is not None)) if on]
    missing = sorted({"needs_attention", "kill_switch"} - set(n.events))
    detail = f"{' and '.join(sinks)} for {len(n.events)} event kind(s), {reports}"
    data = {"enabled": True, "sinks": sinks, "events": sorted(n.events)}
    if missing:
        return Check("notifications", Status.WARN, f"{detail}; not notified: {', '.join(missing)}",
                     f"add {', '.join(missing)} to [notify] events", data)
    return Check("notifications", Status.PASS, detail, data=data)
