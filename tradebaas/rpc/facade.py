"""The user-facing methods of the engine client: ``eng.start("razor")``, ``eng.trades()``, ``eng.kill()``...

They are thin: each one is one RPC call (docs/rpc.md) plus a conversion to what a notebook user wants (pandas
for trades and equity, plain dicts elsewhere, documented shapes). They live in a mixin so that the synchronous
client (``tradebaas.rpc.client``) only has to provide ``call(method, **params)`` and the transport stays
separate from the vocabulary; any object with a ``call`` method (a test double, an async client's sync wrapper)
gets the same API.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradebaas.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EngineFacade", "Rows", "equity_series", "error_summary", "short_version", "strategy_source"]

#: How long ``deploy`` waits for the engine: it backtests a new version before it accepts it.
DEPLOY_TIMEOUT_S = 300.0
#: The length a code version is shown with (the engine accepts any unique prefix of 7 or more).
SHORT_VERSION = 12


def _ts_ms(value: Any) -> int | None:
    """Accept ms integers, datetimes, pandas Timestamps and ISO strings for ``since``/``until`` (UTC if naive)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    import pandas as pd

    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def short_version(version: Any) -> Any:
    """A code version as it is shown (its first 12 hex digits); anything that is not a string unchanged."""
    return version[:SHORT_VERSION] if isinstance(version, str) else version


def error_summary(text: Any) -> str:
    """The one line that says what went wrong in an engine error text: the exception line of a traceback (its
    last line), else the first line; "" for no error."""
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1].strip() if lines[0].startswith("Traceback") else lines[0].strip()


class Rows(list):  # a list of the engine's dicts
    """The engine's answer, unchanged (a list of dicts: ``rows[0]["id"]`` works), that shows itself as a table
    in a notebook with the columns that matter (code versions shortened to 12 characters). ``frame()`` gives
    the same table as a DataFrame."""

    def __init__(self, rows: Iterable[dict[str, Any]], columns: Mapping[str, Callable[[Mapping[str, Any]], Any]]
                 ) -> None:
        super().__init__(rows)
        self.columns = dict(columns)

    def table(self) -> list[dict[str, Any]]:
        return [{title: get(row) for title, get in self.columns.items()} for row in self]

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.table(), columns=list(self.columns))

    def _repr_html_(self) -> str:
        import html

        if not self:
            return "<i>none</i>"
        head = "".join(f"<th>{html.escape(t)}</th>" for t in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>"
                                        for v in row.values()) + "</tr>" for row in self.table())
        return f"<table><tr>{head}</tr>{body}</table>"


STRATEGY_COLUMNS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "id": lambda s: s.get("id"),
    "name": lambda s: s.get("name"),
    "instrument": lambda s: s.get("instrument"),
    "state": lambda s: s.get("state"),
    "code_version": lambda s: short_version(s.get("version")),
    "config_version": lambda s: s.get("config_version"),
    "uptime_s": lambda s: s.get("uptime_s"),
    "trades": lambda s: s.get("trades"),
    "net_pnl": lambda s: (s.get("pnl") or {}).get("net"),
    "currency": lambda s: (s.get("pnl") or {}).get("currency"),
    "why": lambda s: error_summary(s.get("error")) or s.get("state_reason") or "",
}
AVAILABLE_COLUMNS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "name": lambda a: a.get("name"),
    "source": lambda a: a.get("source"),
    "code_version": lambda a: short_version(a.get("version")),
    "versions": lambda a: len(a.get("versions") or ()) or None,
    "params": lambda a: ", ".join(str(p.get("name")) for p in a.get("params") or ()),
    "error": lambda a: error_summary(a.get("error")),
}
VERSION_COLUMNS = ("strategy_name", "code_version", "config_version")


def with_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """The trades frame with the strategy name, the code version (12 characters) and the config version right
    after the contract's columns (missing values when the engine did not send them)."""
    import pandas as pd

    from tradebaas.analytics.frames import TRADE_COLUMNS

    frame = frame.copy()
    for col in VERSION_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    frame["strategy_name"] = frame["strategy_name"].astype("str")
    frame["code_version"] = frame["code_version"].map(short_version, na_action="ignore").astype("str")
    frame["config_version"] = pd.array(pd.to_numeric(frame["config_version"], errors="coerce"), dtype="Int64")
    rest = [c for c in frame.columns if c not in TRADE_COLUMNS and c not in VERSION_COLUMNS]
    return frame[[*TRADE_COLUMNS, *VERSION_COLUMNS, *rest]]


def _is_path(value: Any) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and "\n" not in value
                                              and value.strip().endswith(".py"))


def strategy_source(strategy: Any) -> tuple[str, str | None]:
    """What ``deploy`` sends: ``(source, the strategy's name or None)`` for a strategy class, a source text or
    the path of a ``.py`` file.

    A class defined in a ``%%tradebaas_strategy`` cell sends that cell; a class from a module file sends the
    whole module (``inspect.getsource``), which must then stand on its own (absolute imports only). Anything
    else has no source we can trust (a plain notebook cell, an interactive session, the script being run), so
    it is refused with the way out instead of guessing."""
    if isinstance(strategy, type):
        from tradebaas.notebook.magic import captured
        from tradebaas.strategies.loader import is_strategy_class

        cls = strategy
        if not is_strategy_class(cls):
            raise UserError(f"{cls.__name__} is not a strategy class (it needs a `params` tuple and "
                            "`on_candle(candle, context)`; see docs/strategies.md)")
        name = getattr(cls, "name", None)
        name = name if isinstance(name, str) and name else None
        entry = captured(cls)
        if entry is not None:
            return entry.source, name
        module = sys.modules.get(cls.__module__)
        filename = getattr(module, "__file__", None)
        if (module is not None and module.__name__ != "__main__" and isinstance(filename, str)
                and filename.endswith(".py") and os.path.isfile(filename)):
            return inspect.getsource(module), name
        raise UserError(f"the source of {cls.__name__} is unknown: it was defined in a notebook cell without "
                        f"%%tradebaas_strategy (or in the script being run). Put `%%tradebaas_strategy` as the "
                        f"first line of the cell that defines it, run that cell again, then "
                        f"eng.deploy({cls.__name__}); or deploy its .py file")
    if _is_path(strategy):
        path = Path(strategy).expanduser()
        if not path.is_file():
            raise UserError(f"no such strategy file: {path}")
        try:
            return path.read_text(encoding="utf-8"), None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
    if isinstance(strategy, str):
        if not strategy.strip():
            raise UserError("the strategy source is empty")
        return strategy, None
    raise UserError(f"deploy takes a strategy class, its source text or the path of a .py file; got "
                    f"{type(strategy).__name__}")


def equity_series(points: list[dict[str, Any]]) -> pd.Series:
    """``equity.history`` points -> the contract's equity Series (name ``equity``, UTC DatetimeIndex ``time``)."""
    import pandas as pd

    times = pd.to_datetime([int(p["ts_ms"]) for p in points], unit="ms", utc=True)
    index = pd.DatetimeIndex(times, name="time").as_unit("us")
    return pd.Series([float(p["equity"]) for p in points], index=index, name="equity", dtype="float64")


class EngineFacade:
    """Mixin: the documented Python API on top of ``self.call(method, **params)``."""

    def call(self, method: str, **params: Any) -> Any:  # pragma: no cover - provided by the client
        raise NotImplementedError

    # -- engine -----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Engine health: version, uptime, the exchange link and strategy counts (``engine.status``)."""
        return self.call("engine.status")

    def ping(self) -> str:
        return self.call("engine.ping")

    # -- strategies -------------------------------------------------------------------------------------------
    def available(self) -> Rows:
        """The strategies the engine can run: built-ins, files in ``TRADEBAAS_HOME/strategies/``, packages and
        deployed versions, each with its source, code version, declared parameters and (for a file that does not
        load) its error. A list of dicts, shown as a table."""
        return Rows(self.call("strategy.available"), AVAILABLE_COLUMNS)

    def strategies(self) -> Rows:
        """Every strategy the engine knows, with state, code and config versions, uptime, trade count and PnL
        (``strategy.list``). A list of dicts, shown as a table (code versions as 12 characters)."""
        return Rows(self.call("strategy.list"), STRATEGY_COLUMNS)

    def strategy(self, id: str) -> dict[str, Any]:
        """One strategy with its config, parameters and last decision (``strategy.get``)."""
        return self.call("strategy.get", id=id)

    def start(self, name: str, instrument: str | None = None, allow_shared_instrument: bool = False,
              **config: Any) -> dict[str, Any]:
        """Start strategy ``name``; unknown or out-of-range config keys, and an order size below the instrument's
        minimum, are refused by the engine (-32602). So is an instrument another strategy of ours trades (-32002):
        Deribit nets their positions and one stop cannot protect both; ``allow_shared_instrument=True`` accepts
        that."""
        params: dict[str, Any] = {"name": name, "config": config}
        if instrument is not None:
            params["instrument"] = instrument
        if allow_shared_instrument:
            params["allow_shared_instrument"] = True
        return self.call("strategy.start", **params)

    def stop(self, id: str, flatten: bool = False) -> dict[str, Any]:
        """Stop a strategy. Its position keeps its stop and take-profit on the exchange unless ``flatten``."""
        return self.call("strategy.stop", id=id, flatten=flatten)

    def resume(self, id: str, allow_shared_instrument: bool = False) -> dict[str, Any]:
        """Run a stopped strategy again, or one in ``needs_attention`` once its cause is fixed (the engine reconciles
        first; a cause still there puts it back). Refused (-32002) like a start while another strategy of ours
        trades its instrument, unless ``allow_shared_instrument=True``."""
        params: dict[str, Any] = {"id": id}
        if allow_shared_instrument:
            params["allow_shared_instrument"] = True
        return self.call("strategy.resume", **params)

    def deploy(self, strategy: Any, name: str | None = None, timeout: float = DEPLOY_TIMEOUT_S) -> dict[str, Any]:
        """Send a strategy's source to the engine, which backtests it and stores it as a new version.

        ``strategy`` is a class (defined in a ``%%tradebaas_strategy`` cell, or in a module file), a source text
        or the path of a ``.py`` file; ``name`` deploys it under another name. Answers ``{name, version,
        class_name, warmup_candles, vetting}``. A version the engine refuses (it does not load, raises, breaks the
        strategy API, is too slow or looks ahead) raises ``RpcError`` whose message says why; ``.data["vetting"]``
        holds the report with the traceback. Vetting takes time: ``timeout`` (s) bounds the wait."""
        source, class_name = strategy_source(strategy)
        params: dict[str, Any] = {"source": source}
        if name is not None or class_name is not None:
            params["name"] = name if name is not None else class_name
        return self.call("strategy.deploy", timeout=timeout, **params)

    def upgrade(self, id: str, version: str) -> dict[str, Any]:
        """Switch running strategy ``id`` to code ``version`` (a deployed version, or a unique prefix of at least
        7 characters) from its next candle; position, brackets and counters are kept."""
        return self.call("strategy.upgrade", id=id, version=str(version).strip())

    def set(self, id: str, /, apply_to_open: bool = False, **config: Any) -> dict[str, Any]:
        """Change running strategy ``id``'s parameters from its next candle (a new config version), e.g.
        ``eng.set(sid, stopLossPercent=0.4)``. The brackets of an open position change only with
        ``apply_to_open=True``. Refused values answer -32602 with the key and the rule."""
        if not config:
            raise UserError("eng.set needs at least one parameter, e.g. eng.set(id, stopLossPercent=0.4)")
        return self.call("strategy.set", id=id, config=config, apply_to_open=bool(apply_to_open))

    def source(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The source text of strategy ``name`` (a given code version, default its current one):
        ``{name, version, source}``."""
        params: dict[str, Any] = {"name": name}
        if version is not None:
            params["version"] = str(version).strip()
        return self.call("strategy.source", **params)

    def decision(self, id: str) -> dict[str, Any] | None:
        """The strategy's latest decision: signal, scores, indicator values and reasons (None before the first)."""
        return self.strategy(id).get("last_decision")

    # -- journal views ----------------------------------------------------------------------------------------
    def positions(self) -> list[dict[str, Any]]:
        """Open positions with entry, stop, take-profit, mark and floating PnL (``positions.list``)."""
        return self.call("positions.list")

    def orders(self, open_only: bool = True) -> list[dict[str, Any]]:
        """Orders from the journal; by default only the open ones (``orders.list``)."""
        return self.call("orders.list", open_only=open_only)

    def trade_rows(self, strategy: str | None = None, since: Any = None, until: Any = None) -> list[dict[str, Any]]:
        """The raw ``trades.list`` rows (open trades included), for code that wants the JSON shape."""
        params: dict[str, Any] = {}
        if strategy is not None:
            params["strategy"] = strategy
        if (since_ms := _ts_ms(since)) is not None:
            params["since"] = since_ms
        if (until_ms := _ts_ms(until)) is not None:
            params["until"] = until_ms
        return self.call("trades.list", **params)

    def trades(self, strategy: str | None = None, since: Any = None, until: Any = None,
               include_open: bool = False) -> pd.DataFrame:
        """Closed trades as the analytics contract's DataFrame (``tb.stats`` and the plots read it), followed by
        the strategy's name, the code version (12 characters) and the config version that made each trade.

        ``since``/``until`` take ms, datetimes or ISO strings; ``include_open`` adds trades still open.
        """
        from tradebaas.analytics.frames import trades_frame

        return with_versions(trades_frame(self.trade_rows(strategy, since, until), include_open=include_open))

    def equity(self, strategy: str | None = None, capital: float | None = None) -> pd.Series:
        """Realised equity (``capital`` + cumulative net PnL, one point per closed trade) as a UTC-indexed Series
        named ``equity``. Give ``capital`` (settlement currency) for returns-based stats to mean something."""
        params: dict[str, Any] = {}
        if strategy is not None:
            params["strategy"] = strategy
        if capital is not None:
            params["capital"] = float(capital)
        return equity_series(self.call("equity.history", **params))

    def candles(self, instrument: str = "BTC_USDC-PERPETUAL", since: Any = None, until: Any = None) -> pd.DataFrame:
        """1-minute OHLCV candles (UTC index) from the engine: its recordings, else the exchange's history. What
        ``tradebaas.analytics.plots.plot_trades`` draws trades on."""
        import pandas as pd

        params: dict[str, Any] = {"instrument": instrument}
        if (since_ms := _ts_ms(since)) is not None:
            params["since"] = since_ms
        if (until_ms := _ts_ms(until)) is not None:
            params["until"] = until_ms
        rows = self.call("market.candles", **params)
        df = pd.DataFrame(rows, columns=["ts_ms", "open", "high", "low", "close", "volume"])
        df.index = pd.to_datetime(df.pop("ts_ms"), unit="ms", utc=True)
        df.index.name = "time"
        return df.astype(float)

    # -- risk -------------------------------------------------------------------------------------------------
    def kill(self, flatten: bool = False) -> dict[str, Any]:
        """The kill switch: stop every strategy and cancel entry orders; ``flatten`` also closes positions."""
        return self.call("risk.kill", flatten=flatten)
