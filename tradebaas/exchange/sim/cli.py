"""``tradebaas sim``: run the Deribit-compatible simulator in the foreground.

Prints ``ws://...`` and ``http://...`` as its first two stdout lines (flushed: tests and ``tradebaas up`` parse
them), writes ``TRADEBAAS_HOME/sim/sim.json`` (0600) for the engine, journals every change before acknowledging it
(``durable``: ``sim/state.json`` + ``sim/journal.log``) and writes a final snapshot on SIGTERM/SIGINT before
exiting 0. Wired into ``tradebaas/cli.py`` through ``add_arguments`` and ``run``; also runnable as
``python -m tradebaas.exchange.sim.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradebaas.collector import freeze_long_lived
from tradebaas.errors import UserError
from tradebaas.exchange.sim import auth as auth_mod
from tradebaas.exchange.sim import durable, marketdata, state
from tradebaas.exchange.sim.clock import CLOCK_MODES, SimClock, present_offset
from tradebaas.exchange.sim.faults import Faults
from tradebaas.exchange.sim.ratelimit import RateLimitConfig, RateLimiter
from tradebaas.instruments import DEFAULT_INSTRUMENTS

DEFAULT_BALANCE_USD = 100_000.0
log = logging.getLogger("tradebaas.sim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = a free port; see the printed URLs)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, help="candle CSV(.gz)/Parquet or the tick-sample feed (default: "
                     "bundled Bitstamp BTC/USD 1m candles)")
    src.add_argument("--synthetic", type=int, default=None, metavar="SEED", help="seeded random-walk market")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (e.g. 60)")
    parser.add_argument("--clock", choices=CLOCK_MODES, default="replay",
                        help="replay: the data's own timestamps (default); present: the replay shifted to the wall "
                        "clock, so clients that compute 'since' from their own clock see data (speed 1; what "
                        "`tradebaas up` runs)")
    parser.add_argument("--start", default=None, help="simulated start: ISO time or Unix ms within the data "
                        "(default: data start + 300 min of history; a saved state's clock wins unless given)")
    parser.add_argument("--account", action="append", default=[], metavar="ID:SECRET[:BALANCE[:SCOPES]]",
                        help="API key with a starting balance in USD (credited as USDC and as BTC) and the key's "
                        "maximal scope, comma-separated KIND:LEVEL (default account:read_write,trade:read_write; "
                        "e.g. account:read,trade:read for a read-only key); repeatable")
    parser.add_argument("--clock-offset", type=float, default=0.0, metavar="SECONDS",
                        help="run the simulator's wall clock SECONDS ahead of the host's (negative: behind): the "
                        "answers' usIn/usOut and signature windows follow it (tests of clock-skew checks); the "
                        "simulated market clock is not affected")
    parser.add_argument("--rate-limits", default=os.environ.get("TRADEBAAS_SIM_RATE_LIMITS", "default"),
                        help="off | deribit | default | cost=..,pool=..,refill_per_s=..,me_burst=..,me_rate_per_s=..")
    parser.add_argument("--min-heartbeat", type=float,
                        default=float(os.environ.get("TRADEBAAS_SIM_MIN_HEARTBEAT", "10")),
                        help=argparse.SUPPRESS)
    parser.add_argument("--no-persist", action="store_true",
                        help="do not read or write sim/state.json and sim/journal.log (nothing survives a restart)")
    parser.add_argument("--history", type=int, default=None, metavar="N",
                        help="closed orders and user trades kept per account and instrument (default 2000); "
                        "older ones are forgotten, which keeps the state and its saves small")


def parse_time(text: str) -> int:
    """ISO 8601 (naive = UTC) or Unix ms/s -> Unix ms."""
    t = text.strip()
    if t.isdigit():
        v = int(t)
        return v * 1000 if v < 10**11 else v
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--start: cannot parse {text!r} (use ISO time like 2025-01-10T12:00 or Unix ms)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _load_data(args: argparse.Namespace) -> marketdata.MarketData:
    try:
        if args.synthetic is not None:
            return marketdata.synthetic(args.synthetic)
        return marketdata.load(args.data)
    except (OSError, ValueError) as exc:
        raise UserError(f"sim: {exc}") from None


def _sim_home() -> Path:
    from tradebaas.home import get_home

    return get_home().ensure().sim_dir


def _make_exchange(saved: state.SavedState | None, keep: int) -> Any:
    from tradebaas.exchange.sim.matching import SimExchange

    instruments = dict(DEFAULT_INSTRUMENTS)
    if saved is not None and saved.exchange:
        return SimExchange.from_state(saved.exchange, instruments, keep)
    return SimExchange(instruments, keep)


def _has_account(exchange: Any, account_id: str) -> bool:
    accounts = getattr(exchange, "accounts", None)
    if isinstance(accounts, dict):
        return account_id in accounts
    return False


def _setup_accounts(sim_dir: Path, specs: list[str], price: float) -> list[auth_mod.Account]:
    path = sim_dir / "accounts.json"
    accounts = auth_mod.load_accounts(path)
    by_id = {a.client_id: a for a in accounts}
    for spec in specs:
        try:
            parsed = auth_mod.parse_account(spec, price, DEFAULT_BALANCE_USD)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        acc = parsed.account
        old = by_id.get(acc.client_id)
        if old is not None:
            old.client_secret = acc.client_secret
            if parsed.has_balance:
                old.balances = acc.balances
            if parsed.has_scopes:
                old.scopes = acc.scopes
        else:
            accounts.append(acc)
            by_id[acc.client_id] = acc
    if not accounts:
        accounts.append(auth_mod.new_paper_account(price, DEFAULT_BALANCE_USD))
    auth_mod.save_accounts(path, accounts)
    first = accounts[0]
    auth_mod.write_private_json(sim_dir / "credentials.json", {
        "client_id": first.client_id, "client_secret": first.client_secret, "account_id": first.account_id})
    return accounts


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.speed <= 0:
        raise UserError("--speed must be > 0")
    if args.history is not None and args.history < 1:
        raise UserError("--history must be >= 1")
    if not abs(args.clock_offset) < 10 * 365 * 86400:
        raise UserError("--clock-offset must be a number of seconds within 10 years")
    try:
        rl = RateLimitConfig.parse(args.rate_limits)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    data = _load_data(args)
    sim_dir = _sim_home()
    from tradebaas.exchange.sim.matching import DEFAULT_HISTORY

    keep = DEFAULT_HISTORY if args.history is None else args.history
    try:
        recovered = None if args.no_persist else durable.recover(sim_dir, keep)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    saved = recovered.saved if recovered is not None else None

    start_arg = None
    if args.start is not None:
        start_arg = parse_time(args.start)
        if not data.start_ms <= start_arg <= data.end_ms:
            raise UserError(f"--start {args.start} is outside the data ({_iso(data.start_ms)} .. {_iso(data.end_ms)})")
    if args.clock == "present":
        if args.speed != 1:
            raise UserError("--clock present runs at the wall clock's pace: leave --speed at 1")
        data, start_ms, extra = _present(data, saved, start_arg)
    else:
        extra = {"clock": "replay"}
        if start_arg is not None:
            start_ms = start_arg
        elif saved is not None and saved.data_name == data.name and data.start_ms <= saved.clock_ms <= data.end_ms:
            start_ms = saved.clock_ms
        else:
            start_ms = data.default_start_ms()

    first_tick = data.last_tick_before(start_ms + 1)
    price = first_tick.price if first_tick is not None else float(data.candles.close[0])
    accounts = _setup_accounts(sim_dir, args.account, price)
    exchange = _make_exchange(saved, keep)
    for acc in accounts:
        if not _has_account(exchange, acc.account_id):
            exchange.create_account(acc.account_id, dict(acc.balances))

    from tradebaas.exchange.sim.server import ServerConfig, SimServer

    # present: the host's clock itself, so "now" stays the wall clock's over days of running
    clock = (SimClock.wall(end_ms=data.end_ms) if args.clock == "present"
             else SimClock(start_ms, args.speed, end_ms=data.end_ms))
    offset_s = float(args.clock_offset)
    auth_store = auth_mod.AuthStore(accounts, wall=lambda: time.time() + offset_s)
    store = None if recovered is None else durable.SimStore(sim_dir, exchange, clock, data.name, recovered,
                                                            extra)
    server = SimServer(exchange, data, clock, auth_store, RateLimiter(rl), Faults(), dict(DEFAULT_INSTRUMENTS),
                       ServerConfig(min_heartbeat_s=args.min_heartbeat, clock_offset_s=offset_s), store)
    server.prime()
    try:
        asyncio.run(_serve(server, args.host, args.port, sim_dir))
    except OSError as exc:
        raise UserError(f"sim: cannot listen on {args.host}:{args.port}: {exc}") from None
    return 0


def _present(data: marketdata.MarketData, saved: state.SavedState | None,
             start_ms: int | None) -> tuple[marketdata.MarketData, int, dict[str, Any]]:
    """``--clock present``: the data shifted to the wall clock, the clock's start (now) and what the state keeps.

    The offset of a previous present-mode run of the same data is kept (``clock.present_offset``) unless
    ``--start`` asks for another replay position."""
    wall_ms = int(time.time() * 1000)
    saved_offset = None
    if saved is not None and start_ms is None and saved.data_name == data.name and saved.extra.get("clock") == "present":
        saved_offset = int(saved.extra.get("offset_ms", 0))
    offset = present_offset(wall_ms, data.start_ms, data.end_ms,
                            start_ms if start_ms is not None else data.default_start_ms(), saved_offset)
    return data.shifted(offset), wall_ms, {"clock": "present", "offset_ms": offset}


async def _serve(server: Any, host: str, port: int, sim_dir: Path) -> None:
    from aiohttp import web

    runner = web.AppRunner(server.app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = [s for s in runner.addresses]
    bound_port = int(sockets[0][1]) if sockets else port
    url_host = host if host not in ("0.0.0.0", "::", "") else socket.gethostname()
    ws_url = f"ws://{url_host}:{bound_port}/ws/api/v2"
    http_url = f"http://{url_host}:{bound_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {"pid": os.getpid(), "host": host, "port": bound_port, "ws_url": ws_url, "http_url": http_url}
    auth_mod.write_private_json(sim_dir / "sim.json", info)
    print(ws_url, flush=True)  # last: whoever reads the URLs may rely on sim.json and SIGTERM handling
    print(http_url, flush=True)
    freeze_long_lived(asyncio.get_running_loop())  # full collections walk only what is new (tradebaas.collector)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # on_shutdown flushes the state
        with contextlib.suppress(OSError):
            cur = (sim_dir / "sim.json").read_text()
            if f'"pid": {os.getpid()}' in cur:
                (sim_dir / "sim.json").unlink()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradebaas sim", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
