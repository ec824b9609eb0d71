"""CLI commands of the live loop: ``strategy``, ``trades``, ``positions``, ``orders``, ``kill``, ``service``.

They are thin clients of the engine's RPC (docs/rpc.md): the engine holds the truth, the CLI prints it. Each
command is wired in ``tradebaas/cli.py`` through ``add_arguments(parser)`` / ``run(args)``; one module serves
the group, so it reads the command's name from ``parser.prog`` / ``args.command``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from typing import Any

from tradebaas.commands.output import clean, dumps, number_text
from tradebaas.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    name = parser.prog.split()[-1]
    if name == "strategy":
        sub = parser.add_subparsers(dest="strategy_command", metavar="ACTION", required=True)
        start = sub.add_parser("start", help="validate the config and start a strategy (prints its id)")
        start.add_argument("name", help="strategy name, e.g. razor or ema_cross")
        start.add_argument("--instrument", help="e.g. BTC_USDC-PERPETUAL (default: the strategy's)")
        start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config value (repeatable)")
        start.add_argument("--allow-shared-instrument", action="store_true",
                           help="start even if another strategy of ours trades this instrument (Deribit nets their "
                                "positions: one stop cannot protect both)")
        start.add_argument("--json", action="store_true")
        stop = sub.add_parser("stop", help="stop a strategy (brackets stay on the exchange unless --flatten)")
        stop.add_argument("id")
        stop.add_argument("--flatten", action="store_true", help="also close its position at market")
        lst = sub.add_parser("list", help="strategies with state and PnL")
        lst.add_argument("--json", action="store_true")
        get = sub.add_parser("get", help="one strategy with its last decision")
        get.add_argument("id")
        resume = sub.add_parser("resume", help="run a stopped strategy again, or one in needs_attention once fixed")
        resume.add_argument("id")
        resume.add_argument("--allow-shared-instrument", action="store_true",
                            help="resume although another strategy of ours trades the instrument (Deribit nets "
                            "their positions)")
        avail = sub.add_parser("available", help="every strategy the engine can start, with its parameters")
        avail.add_argument("--json", action="store_true")
        deploy = sub.add_parser("deploy", help="vet a strategy file and store it in the engine as a new version")
        deploy.add_argument("file", help="a .py file defining one strategy class")
        deploy.add_argument("--name", help="the name to deploy it under (default: the class's `name`)")
        deploy.add_argument("--json", action="store_true")
        upgrade = sub.add_parser("upgrade", help="switch a running strategy to another version from its next candle")
        upgrade.add_argument("id")
        upgrade.add_argument("version", help="a stored version (at least 7 hex characters)")
        setp = sub.add_parser("set", help="change a running strategy's parameters from its next candle")
        setp.add_argument("id")
        setp.add_argument("values", nargs="+", metavar="KEY=VALUE")
        setp.add_argument("--apply-to-open", action="store_true", help="also move the open position's brackets")
        compare = sub.add_parser("compare", help="live trading vs a backtest of the engine's own candles")
        compare.add_argument("id")
        compare.add_argument("--since", help="ISO time or Unix ms")
        compare.add_argument("--until", help="ISO time or Unix ms")
        compare.add_argument("--json", action="store_true")
    elif name == "trades":
        parser.add_argument("--mark-closed", metavar="TRADE_ID",
                            help="record that this open trade was closed outside tradebaas (needs --price)")
        parser.add_argument("--price", type=float, help="the exit price of --mark-closed")
        parser.add_argument("--strategy", help="only this strategy id")
        parser.add_argument("--since", help="ISO time or Unix ms (exit time)")
        parser.add_argument("--include-open", action="store_true",
                            help="also trades not closed yet (as eng.trades(include_open=True)); default: closed ones")
        fmt = parser.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true")
        fmt.add_argument("--csv", action="store_true")
    elif name in ("positions", "orders"):
        parser.add_argument("--json", action="store_true")
        if name == "orders":
            parser.add_argument("--all", action="store_true", help="closed orders too")
    elif name == "kill":
        parser.add_argument("--flatten", action="store_true", help="also close every position of ours at market")
    elif name == "service":
        sub = parser.add_subparsers(dest="service_command", metavar="ACTION", required=True)
        install = sub.add_parser("install", help="write (and enable) a systemd unit for the engine")
        install.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
        install.add_argument("--exchange", default="sim", help="the engine's --exchange (default sim)")
        install.add_argument("--no-enable", action="store_true", help="only write the unit file")


def run(args: argparse.Namespace) -> int:
    command = args.command
    if command == "service":
        return _service(args)
    import tradebaas

    with tradebaas.connect(timeout=30.0) as eng:
        if command == "strategy":
            return _strategy(eng, args)
        if command == "trades":
            if args.mark_closed:
                if args.price is None:
                    raise UserError("--mark-closed needs --price (the price the position was closed at)")
                row = eng.call("trades.mark_closed", trade_id=args.mark_closed, exit_price=args.price)
                print(f"{row['trade_id']}: {row['state']} at {_fmt(row['exit_price'])} ({row['exit_reason']})")
                return 0
            rows = eng.call("trades.list", strategy=args.strategy, since=_parse_time(args.since))
            shown, note = closed_unless(rows, args.include_open)
            code = _print_rows(shown, args, ("trade_id", "strategy_id", "direction", "state", "amount",
                                             "entry_price", "exit_price", "net_pnl", "fees", "exit_reason",
                                             "currency", "code_version", "config_version"))
            if note:
                print(note, file=sys.stderr)
            return code
        if command == "positions":
            return _print_rows(eng.call("positions.list"), args, ("strategy_id", "trade_id", "instrument", "direction",
                                                                  "amount", "entry_price", "stop_price", "take_price",
                                                                  "mark_price", "floating_pnl", "currency"))
        if command == "orders":
            return _print_rows(eng.call("orders.list", open_only=not args.all), args,
                               ("order_id", "strategy_id", "role", "side", "type", "amount", "price", "trigger_price",
                                "state"))
        if command == "kill":
            result = eng.call("risk.kill", flatten=args.flatten)
            print(f"kill switch: stopped {len(result['stopped'])} strateg{'y' if len(result['stopped']) == 1 else 'ies'}, "
                  f"cancelled {result['cancelled']} order(s), flattened {len(result['flattened'])} position(s)")
            return 0
    raise UserError(f"unknown command {command!r}")


def _strategy(eng: Any, args: argparse.Namespace) -> int:
    action = args.strategy_command
    if action == "start":
        from tradebaas.strategies.params import parse_set_options

        config = parse_set_options(args.set)
        info = eng.call("strategy.start", name=args.name, instrument=args.instrument, config=config,
                        allow_shared_instrument=args.allow_shared_instrument)
        print(dumps(info) if args.json else info["id"])
        return 0
    if action == "stop":
        info = eng.call("strategy.stop", id=args.id, flatten=args.flatten)
        print(f"{info['id']}: {info['state']}")
        return 0
    if action == "resume":
        info = eng.call("strategy.resume", id=args.id, allow_shared_instrument=args.allow_shared_instrument)
        reason = f" ({info['state_reason']})" if info["state_reason"] else ""
        print(f"{info['id']}: {info['state']}{reason}")
        return 0 if info["state"] in ("running", "starting") else 1
    if action == "get":
        print(dumps(eng.call("strategy.get", id=args.id), default=str))
        return 0
    if action == "available":
        entries = eng.call("strategy.available")
        if args.json:
            print(dumps(entries))
            return 0
        for e in entries:
            status = f"error: {(e['error'] or '').strip().splitlines()[-1]}" if e.get("error") else \
                ", ".join(f"{p['name']}={_fmt(p['default'])}" for p in e["params"])
            print(f"{e['name']:<16} {e['source']:<11} {(e['version'] or '')[:12]:<12}  {status}")
        return 0
    if action == "deploy":
        from pathlib import Path

        path = Path(args.file)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        answer = eng.call("strategy.deploy", source=source, name=args.name)
        if args.json:
            print(dumps(answer))
        else:
            v = answer["vetting"]
            print(f"{answer['name']} {answer['version'][:12]} accepted: {v.get('candles')} candles, "
                  f"{v.get('entries')} entries, {(v.get('per_candle_ms') or {}).get('mean', 0):.3f} ms per candle, "
                  f"warm-up {answer['warmup_candles']} candles")
        return 0
    if action == "upgrade":
        info = eng.call("strategy.upgrade", id=args.id, version=args.version)
        print(f"{info['id']}: version {info['version'][:12]} from its next candle")
        return 0
    if action == "set":
        from tradebaas.strategies.params import parse_set_options

        info = eng.call("strategy.set", id=args.id, config=parse_set_options(args.values),
                        apply_to_open=args.apply_to_open)
        print(f"{info['id']}: config version {info['config_version']} from its next candle")
        return 0
    if action == "compare":
        from tradebaas.analytics.compare import Comparison, format_summary

        answer = eng.call("strategy.compare", id=args.id, since=_parse_time(args.since), until=_parse_time(args.until))
        print(dumps(answer) if args.json else format_summary(Comparison.from_json(answer)))
        return 0
    rows = eng.call("strategy.list")
    if args.json:
        print(dumps(rows))
        return 0
    flat = [{"id": r["id"], "name": r["name"], "version": (r.get("version") or "")[:12],
             "config": r.get("config_version"), "instrument": r["instrument"], "state": r["state"],
             "trades": r["trades"], "net_pnl": r["pnl"]["net"], "floating": r["pnl"]["floating"],
             "currency": r["pnl"]["currency"], "reason": r["state_reason"]} for r in rows]
    return _print_rows(flat, argparse.Namespace(json=False), tuple(flat[0]) if flat else ("id",))


def _service(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import systemd
    from tradebaas.home import get_home

    home = get_home(getattr(args, "home", None)).ensure()
    path = systemd.install(home=home.root, exchange=args.exchange, user_mode=args.user, enable=not args.no_enable)
    print(f"wrote {path}" + ("" if args.no_enable else " and enabled it"))
    return 0


def closed_unless(rows: list[dict[str, Any]], include_open: bool) -> tuple[list[dict[str, Any]], str]:
    """The trades ``tradebaas trades`` shows: those with an exit (closed), as ``eng.trades()`` does, unless
    ``include_open``; and a note saying how many were left out and how to see them ("" when none were)."""
    if include_open:
        return rows, ""
    shown = [r for r in rows if r.get("exit_ts_ms")]
    left = [r for r in rows if not r.get("exit_ts_ms")]
    if not left:
        return shown, ""
    failed = sum(r.get("state") == "failed" for r in left)
    opened = len(left) - failed
    parts = ([f"{opened} open trade{'s' if opened != 1 else ''}"] if opened else []) + (
        [f"{failed} failed entr{'ies' if failed != 1 else 'y'}"] if failed else [])
    return shown, f"({' and '.join(parts)} not shown: closed trades only; --include-open shows them too)"


def _print_rows(rows: list[dict[str, Any]], args: argparse.Namespace, columns: tuple[str, ...]) -> int:
    if getattr(args, "json", False):
        print(dumps(rows))
        return 0
    if getattr(args, "csv", False):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(clean(rows))
        sys.stdout.write(out.getvalue())
        return 0
    if not rows:
        print("(none)")
        return 0
    table = [[_fmt(r.get(c))[:12] if c == "code_version" else _fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return number_text(value)
    return str(value)


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r} is neither Unix ms nor an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
