"""The user-facing methods of the engine client: ``eng.start("razor")``, ``eng.trades()``, ``eng.kill()``...

They are thin: each one is one RPC call (docs/rpc.md) plus a conversion to what a notebook user wants (pandas
for trades and equity, plain dicts elsewhere, documented shapes). They live in a mixin so that the synchronous
client (``tradebaas.rpc.client``) only has to provide ``call(method, **params)`` and the transport stays
separate from the vocabulary; any object with a ``call`` method (a test double, an async client's sync wrapper)
gets the same API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EngineFacade", "equity_series"]


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
    def available(self) -> list[dict[str, Any]]:
        """The strategies the engine can run, each with its declared parameters (name, type, default, range)."""
        return self.call("strategy.available")

    def strategies(self) -> list[dict[str, Any]]:
        """Every strategy the engine knows, with state, uptime, trade count and PnL (``strategy.list``)."""
        return self.call("strategy.list")

    def strategy(self, id: str) -> dict[str, Any]:
        """One strategy with its config, parameters and last decision (``strategy.get``)."""
        return self.call("strategy.get", id=id)

    def start(self, name: str, instrument: str | None = None, **config: Any) -> dict[str, Any]:
        """Start strategy ``name``; unknown or out-of-range config keys are refused by the engine (-32602)."""
        params: dict[str, Any] = {"name": name, "config": config}
        if instrument is not None:
            params["instrument"] = instrument
        return self.call("strategy.start", **params)

    def stop(self, id: str, flatten: bool = False) -> dict[str, Any]:
        """Stop a strategy. Its position keeps its stop and take-profit on the exchange unless ``flatten``."""
        return self.call("strategy.stop", id=id, flatten=flatten)

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
        """Closed trades as the analytics contract's DataFrame (``tb.stats`` and the plots read it).

        ``since``/``until`` take ms, datetimes or ISO strings; ``include_open`` adds trades still open.
        """
        from tradebaas.analytics.frames import trades_frame

        return trades_frame(self.trade_rows(strategy, since, until), include_open=include_open)

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
