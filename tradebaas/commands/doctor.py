"""``tradebaas doctor``: the preflight checklist before going live (docs/deribit.md, "Preflight").

Prints one line per check (PASS, WARN, FAIL, SKIP) with what it found and, unless it passed, what to do; ``--json``
prints the same as one object. Exits 1 when any check failed (warnings do not fail). The checks themselves live in
``tradebaas/doctor/``: the verdicts (``checks``), the exchange side (``exchange``), this machine (``local``).
Wired in ``tradebaas/cli.py`` through ``add_arguments(parser)`` / ``run(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tradebaas.doctor import local
from tradebaas.doctor.checks import Check, Status, passed
from tradebaas.errors import UserError
from tradebaas.home import Home, get_home

TAGS = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", default=None,
                        help="sim | deribit-testnet | deribit | ws://host:port (default: the exchange of this home's "
                        "running engine, else sim)")
    parser.add_argument("--allow-trade", action="store_true",
                        help="also open a minimum-size position with its stop and take-profit as the engine places "
                        "them, check them on the exchange, and close it (costs two taker fees)")
    parser.add_argument("--instrument", default=None,
                        help="instrument of the order checks (default: the first strategy's)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="per request and for connecting (default 10)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args: argparse.Namespace) -> int:
    from tradebaas.doctor import exchange as ex

    if args.timeout <= 0:
        raise UserError("--timeout must be > 0")
    home = get_home(getattr(args, "home", None))
    facts = local.engine_facts(home)
    engine_ex = (facts.status.get("exchange") or {}) if facts.state == "running" else {}
    name = (args.exchange or engine_ex.get("name") or "sim").strip()
    sizes, source = local.strategy_sizes(facts, args.instrument)
    instrument = args.instrument or (sizes[0].instrument if sizes else "BTC_USDC-PERPETUAL")
    endpoint, problem = _endpoint(name, home)
    checks: list[Check] = []
    if endpoint is None:
        checks.append(problem or Check("connection", Status.FAIL, f"cannot resolve {name}"))
        url = ""
    else:
        url = endpoint.url
        same = engine_ex and (engine_ex.get("name") == name or engine_ex.get("url") == url)
        traded = frozenset(str(r.get("instrument")) for r in facts.strategies or []
                           if same and r.get("desired_state") == "running")
        plan = ex.Plan(endpoint, instrument, sizes, source, allow_trade=args.allow_trade, engine_instruments=traded,
                       timeout_s=args.timeout, credentials_error=problem.detail if problem else None)
        checks += asyncio.run(ex.run(plan))
    checks.append(local.engine_check(facts, name, url, home))
    checks.append(local.notifications_check(home))
    ok = passed(checks)
    if args.json:
        print(json.dumps({"exchange": name, "url": url, "home": str(home.root), "ok": ok,
                          "checks": [c.as_dict() for c in checks]}, indent=2, default=str))
    else:
        print(render(name, url, home, checks))
    return 0 if ok else 1


def _endpoint(name: str, home: Home) -> tuple[Any, Check | None]:
    """``--exchange`` -> (endpoint, None); a missing key for Deribit -> (endpoint without credentials, the reason);
    a simulator that is not running -> (None, a failing connection line). A misspelt value is bad input."""
    from tradebaas.exchange.deribit import endpoints

    try:
        return endpoints.resolve(name, home), None
    except UserError as exc:
        if name in ("deribit", "deribit-testnet"):
            url = endpoints.DERIBIT_WS if name == "deribit" else endpoints.DERIBIT_TESTNET_WS
            return (endpoints.Endpoint(name, url, None, live=name == "deribit"),
                    Check("credentials", Status.FAIL, str(exc)))
        if name == "sim":
            return None, Check("connection", Status.FAIL, str(exc), "start the simulator: `tradebaas sim` (or "
                               "`tradebaas up`), or give --exchange")
        raise


def render(name: str, url: str, home: Home, checks: list[Check]) -> str:
    """The checklist as people read it: one line per check, its fix indented below."""
    width = max(len(c.name) for c in checks)
    lines = [f"tradebaas doctor: {name}" + (f" ({url})" if url and url != name else "") + f", home {home.root}"]
    for c in checks:
        lines.append(f"  {TAGS[c.status]}  {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.status is not Status.PASS:
            lines.append(f"        {' ' * width}  fix: {c.fix}")
    failed = sum(c.status is Status.FAIL for c in checks)
    warned = sum(c.status is Status.WARN for c in checks)
    if failed:
        lines.append(f"{failed} check(s) failed, {warned} warning(s): fix the FAIL lines before going live")
    else:
        lines.append(f"all checks passed ({warned} warning(s))" if warned else "all checks passed")
    return "\n".join(lines)
