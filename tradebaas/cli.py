"""The ``tradebaas`` command: argparse front end; each subcommand calls into the module that owns it.

Errors meant for people (``tradebaas.errors.UserError`` and its subclasses) print as one line on stderr and exit
with the error's ``exit_code``; a traceback only with ``--debug``. Subcommands owned by other modules (``sim``,
``backtest``, ...) are imported only when used, so `tradebaas engine status` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tradebaas._version import __version__
from tradebaas.errors import UserError
from tradebaas.home import ENV_VAR, Home, get_home

#: Subcommands implemented in their own modules, imported only when used (a fast ``tradebaas engine status``):
#: name -> (module exposing add_arguments(parser) and run(args), help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("tradebaas.exchange.sim.cli", "run the Deribit-compatible simulator in the foreground"),
    "backtest": ("tradebaas.backtest.cli", "backtest a strategy over a candle file"),
    "report": ("tradebaas.reports.cli", "run a report notebook now / list report runs"),
    "strategy": ("tradebaas.commands.live", "start, stop and list strategies"),
    "trades": ("tradebaas.commands.live", "closed and open trades from the journal"),
    "positions": ("tradebaas.commands.live", "open positions of our strategies"),
    "orders": ("tradebaas.commands.live", "our orders (open ones unless --all)"),
    "kill": ("tradebaas.commands.live", "kill switch: stop every strategy, cancel entries (--flatten closes)"),
    "service": ("tradebaas.commands.live", "install the engine as a systemd service"),
    "doctor": ("tradebaas.commands.doctor", "preflight checklist against an exchange before going live"),
}

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------------------------------
def _home(args: argparse.Namespace) -> Home:
    return get_home(getattr(args, "home", None))


# -- engine ------------------------------------------------------------------------------------------------------
def _check_exchange(exchange: str, home: Home) -> None:
    """Refuse a misspelt ``--exchange`` or missing credentials now, in one line, rather than in a daemon's log.

    A local simulator that is not running yet is fine: the engine keeps trying and connects when it comes up."""
    from tradebaas.exchange.deribit.endpoints import resolve

    if exchange.strip() == "sim":
        return
    if resolve(exchange, home).credentials is None:
        raise UserError(
            f"--exchange {exchange} needs API credentials: set TRADEBAAS_DERIBIT_CLIENT_ID and "
            f"TRADEBAAS_DERIBIT_CLIENT_SECRET, or write [deribit] client_id/client_secret to "
            f"{home.root / 'secrets.toml'} (chmod 600)"
        )



def cmd_engine_start(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import daemon

    home = _home(args)
    if not args.detached_child:  # refuse here, in one line, what the engine would refuse in its log
        if daemon.engine_state(home)[0] not in ("running", "starting"):
            args.exchange = daemon.choose_exchange(home, args.exchange)
        if args.exchange:
            _check_exchange(args.exchange, home)
    if args.foreground:
        return daemon.run_foreground(home, args.exchange, detached_child=args.detached_child)
    info = daemon.start_detached(home, args.exchange, timeout_s=args.timeout)
    print(f"engine started: pid {info.pid}, {info.url} (home {home.root}, log {home.engine_log})")
    return 0


def cmd_engine_stop(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import daemon

    print(daemon.stop(_home(args), timeout_s=args.timeout))
    return 0


def cmd_engine_token(args: argparse.Namespace) -> int:
    """The token a remote client (``tb.connect(url=..., token=...)``) needs; ``--read-only`` for dashboards and
    reports: with it, only read methods answer (docs/rpc.md)."""
    from tradebaas.engine.process import daemon

    state, info = daemon.engine_state(_home(args))
    if state != "running" or info is None:
        raise UserError(f"no engine running for {_home(args).root}: start one with `tradebaas engine start`")
    print(info.readonly_token if args.read_only else info.token)
    return 0


def cmd_engine_status(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import daemon

    st = daemon.status(_home(args))
    if args.json:
        from tradebaas.commands.output import dumps

        print(dumps(st, sort_keys=True))
    else:
        print(_format_status(st))
    if not st.get("running"):
        return 1
    return 0 if st.get("health") == "ok" else 2


def _format_status(st: dict[str, Any]) -> str:
    if not st.get("running"):
        extra = f" (stale engine.json of pid {st['stale_pid']})" if st.get("stale_pid") else ""
        return f"engine: {st.get('state', 'stopped')}{extra}  home: {st['home']}"
    ex = st.get("exchange") or {}
    strat = st.get("strategies") or {}
    link = "connected" if ex.get("connected") else "not connected"
    lines = [
        f"engine:     {st.get('health', '?')}  (pid {st.get('pid')}, {st.get('url')}, version {st.get('version')})",
        f"uptime:     {_duration(float(st.get('uptime_s') or 0))}",
        f"exchange:   {ex.get('name', 'none')} {link}" + (f" ({ex['url']})" if ex.get("url") else ""),
        f"strategies: {strat.get('running', 0)} running / {strat.get('total', 0)} total",
        f"home:       {st['home']}",
    ]
    if st.get("error"):
        lines.append(f"error:      {st['error']}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


# -- up / down ---------------------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import daemon, simulator

    home = _home(args).ensure()
    exchange = args.exchange
    if exchange is None:
        print(f"simulator: {simulator.start_detached(home)} (log {home.sim_log})")
        exchange = "sim"
    state, info = daemon.engine_state(home)
    if state == "running" and info is not None:
        print(f"engine: already running (pid {info.pid}, {info.url})")
    else:
        info = daemon.start_detached(home, exchange)
        print(f"engine: started (pid {info.pid}, {info.url}, log {home.engine_log})")
    if args.no_lab:
        return 0
    return _serve_notebooks(args, home)


def _serve_notebooks(args: argparse.Namespace, home: Home) -> int:
    """JupyterLab and the cockpit (Voila) on the user's copy of the notebooks (``tradebaas/launch.py`` says why);
    the URLs once the server answers; then wait for it (Ctrl-C stops it, not the engine)."""
    import signal
    import subprocess
    import webbrowser

    from tradebaas import launch
    from tradebaas.engine.process import simulator

    if args.notebook_dir:
        root_dir = Path(args.notebook_dir).expanduser().resolve()
        if not root_dir.is_dir():
            raise UserError(f"--notebook-dir {root_dir} is not a folder")
        control = Path(launch.CONTROL).name
    else:  # the home is the root: the control notebook is notebooks/control.ipynb there, as INTERFACE.md says
        root_dir, control = home.root, launch.CONTROL
        for line in launch.copy_notebooks(REPO_ROOT / "notebooks", home.root / "notebooks").lines(
                REPO_ROOT / "notebooks"):
            print(line)
    port = simulator.free_port(8888)
    token = secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    log_path = home.logs_dir / "jupyterlab.log"
    env = dict(os.environ)
    env[ENV_VAR] = str(home.root)
    print(f"starting JupyterLab (log {log_path})…", flush=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(launch.server_argv(sys.executable, root_dir, port, token, os.geteuid() == 0,
                                                   control),
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root_dir)
    try:
        launch.wait_until_answers(base, token, proc, log_path)
    except BaseException:
        proc.terminate()
        proc.wait(15)
        raise
    cockpit, lab = launch.urls(base, token, control)
    # one write: a reader who sees the cockpit's URL sees the whole block (stdout may be unbuffered)
    print(f"the cockpit (the control panel, live): {cockpit}\n"
          f"JupyterLab (the notebooks, to work in): {lab}\n"
          "(Ctrl-C stops JupyterLab and leaves the engine running; `make stop` or `tradebaas down` stops it)",
          flush=True)
    if not args.no_browser:
        webbrowser.open(cockpit)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # a service manager stopping `up` stops the server
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached JupyterLab too: it is shutting down
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(15)
        print("JupyterLab stopped; the engine and the simulator keep running (`make stop` stops them)")
        return 0


def cmd_down(args: argparse.Namespace) -> int:
    from tradebaas.engine.process import daemon, simulator

    home = _home(args)
    print(daemon.stop(home))
    sim = simulator.stop(home)
    if sim:
        print(sim)
    return 0


# -- kernel, logs ------------------------------------------------------------------------------------------------
def cmd_kernel_install(args: argparse.Namespace) -> int:
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tradebaas",
        "language": "python",
        "metadata": {"debugger": True},
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tradebaas"
        src.mkdir()
        repo_spec = REPO_ROOT / "kernels" / "tradebaas"
        if repo_spec.is_dir():  # logos and anything else shipped with the spec
            for f in repo_spec.iterdir():
                if f.is_file() and f.name != "kernel.json":
                    (src / f.name).write_bytes(f.read_bytes())
        (src / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        kwargs: dict[str, Any] = {"kernel_name": "tradebaas"}
        if args.user:
            kwargs["user"] = True
        elif args.prefix:
            kwargs["prefix"] = args.prefix
        else:
            kwargs["prefix"] = sys.prefix
        dest = KernelSpecManager().install_kernel_spec(str(src), **kwargs)
    print(f"kernel spec 'tradebaas' installed in {dest} (python {sys.executable})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """The engine log, its last ``-n`` lines (of the strategy's, with ``--strategy``), then new ones with ``-f``.

    ``--strategy ID`` keeps the records whose strategy field is exactly ``ID`` (docs/live-loop.md, "The engine
    log"), with the lines that follow them (a traceback)."""
    from tradebaas.engine.core.labels import is_valid_id
    from tradebaas.engine.process.logs import StrategyLines

    home = _home(args)
    path = home.engine_log
    if args.strategy is not None and not is_valid_id(args.strategy):
        raise UserError(f"--strategy {args.strategy!r} is not a strategy id (see `tradebaas strategy list`)")
    if not path.exists():
        raise UserError(f"no engine log yet at {path}")
    match: Callable[[str], bool] = StrategyLines(args.strategy) if args.strategy else (lambda line: True)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f.readlines() if match(line)]
        for line in lines[-args.lines:] if args.lines > 0 else lines:
            sys.stdout.write(line)
        sys.stdout.flush()
        if not args.follow:
            return 0
        inode = os.fstat(f.fileno()).st_ino
        try:
            while True:
                line = f.readline()
                if line:
                    if match(line):
                        sys.stdout.write(line)
                        sys.stdout.flush()
                    continue
                time.sleep(0.2)
                try:
                    if os.stat(path).st_ino != inode:  # rotated: reopen the new file
                        f.close()
                        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                        inode = os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    pass
        except KeyboardInterrupt:
            return 0
        finally:
            f.close()


# -- external subcommands ----------------------------------------------------------------------------------------
def _subcommand_runner(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(SUBCOMMANDS[name][0]).run(args) or 0)

    return run


# -- parser ------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Bad usage is a one-line UserError like every other error (argparse would print usage and exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser. External subcommands get their real arguments only when they are the one invoked."""
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help=f"the instance directory (default: ${ENV_VAR} or the platform user data dir)")

    parser = _Parser(prog="tradebaas", parents=[common],
                                     description="Live trading of Deribit perpetuals from Jupyter.")
    parser.add_argument("--version", action="version", version=f"tradebaas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", parents=[common], help="start simulator + engine, then JupyterLab (make run)")
    up.add_argument("--exchange", help="engine exchange instead of the local simulator")
    up.add_argument("--no-browser", action="store_true", help="do not open a browser")
    up.add_argument("--no-lab", action="store_true", help="start the services only, not JupyterLab")
    up.add_argument("--notebook-dir", help="serve this folder of notebooks, its control.ipynb as the cockpit "
                                           "(default: TRADEBAAS_HOME, with notebooks/control.ipynb; the project's "
                                           "notebooks are copied to TRADEBAAS_HOME/notebooks on first run)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", parents=[common], help="stop engine and simulator (make stop)")
    down.set_defaults(func=cmd_down)

    engine = sub.add_parser("engine", parents=[common], help="start, stop and inspect the engine daemon")
    esub = engine.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    start = esub.add_parser("start", parents=[common], help="start the engine (detached unless --foreground)")
    start.add_argument("--exchange", help="sim | ws://host:port | deribit-testnet | deribit (default: the one "
                                          "this home's engine used last, else [engine] exchange of tradebaas.toml)")
    start.add_argument("--foreground", action="store_true", help="run in this process (systemd)")
    start.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the RPC (default 30)")
    start.set_defaults(func=cmd_engine_start)
    stop = esub.add_parser("stop", parents=[common], help="stop the engine gracefully")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    stop.set_defaults(func=cmd_engine_stop)
    st = esub.add_parser("status", parents=[common], help="health, uptime, exchange link, strategies")
    st.add_argument("--json", action="store_true", help="machine-readable (what a remote client needs)")
    st.set_defaults(func=cmd_engine_status)
    tok = esub.add_parser("token", parents=[common], help="print the engine's RPC token (for a tunnel or a dashboard)")
    tok.add_argument("--read-only", action="store_true", help="the token that may only call read methods")
    tok.set_defaults(func=cmd_engine_token)

    kernel = sub.add_parser("kernel", parents=[common], help="the project's Jupyter kernel spec")
    ksub = kernel.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    kinstall = ksub.add_parser("install", parents=[common], help="install the 'tradebaas' kernel spec")
    where = kinstall.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data dir")
    where.add_argument("--sys-prefix", action="store_true", help="into this environment (default)")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
    kinstall.set_defaults(func=cmd_kernel_install)

    logs = sub.add_parser("logs", parents=[common], help="print (and follow) the engine log")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0 = all)")
    logs.add_argument("--strategy", metavar="ID", help="only the lines about this strategy (its id field, exactly)")
    logs.set_defaults(func=cmd_logs)

    invoked = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text, add_help=name == invoked)
        if name == invoked:
            importlib.import_module(module_name).add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_subcommand_runner(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        debug = getattr(args, "debug", False)
        if getattr(args, "home", None):
            os.environ[ENV_VAR] = str(Path(args.home).expanduser().resolve())
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away is then seen (and quiet) below
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (``tradebaas trades --json | head``): nothing is wrong and nothing more can be
    said, so exit quietly with 141 (128 + SIGPIPE, what a shell reports for a writer killed by the closed pipe).

    stdout is pointed at /dev/null first, because the interpreter flushes it once more on the way out and would
    otherwise print "Exception ignored ... BrokenPipeError" on stderr (the Python docs' recipe, signal module)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's StringIO): nothing to redirect
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
