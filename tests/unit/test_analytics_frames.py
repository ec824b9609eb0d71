"""trades_frame / equity_curve / drawdown: the analytics contract's pandas shapes (docs/architecture.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebaas.analytics import TRADE_COLUMNS, drawdown, empty_trades_frame, equity_curve, trades_frame
from tradebaas.domain import Direction

UTC = "UTC"


def _row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "trade_id": "t1",
        "strategy_id": "razor",
        "instrument": "BTC-PERPETUAL",
        "direction": "long",
        "entry_time": "2025-01-01T00:00:00Z",
        "exit_time": "2025-01-01T01:00:00Z",
        "entry_price": 100_000,
        "exit_price": 101_000,
        "amount": 1000,
        "pnl": 0.0001,
        "fees": 0.00001,
        "exit_reason": "tp",
        "currency": "BTC",
    }
    base.update(kw)
    return base


def test_empty_records_give_contract_columns_and_dtypes() -> None:
    frame = trades_frame([])
    assert list(frame.columns) == list(TRADE_COLUMNS)
    assert frame.empty
    assert str(frame["entry_time"].dtype) == "datetime64[us, UTC]"
    assert str(frame["exit_time"].dtype) == "datetime64[us, UTC]"
    for col in ("entry_price", "exit_price", "amount", "pnl", "fees", "net_pnl"):
        assert frame[col].dtype == "float64"
    assert frame.dtypes.equals(empty_trades_frame().dtypes)


def test_rows_are_normalised_to_utc_floats_and_net_pnl_recomputed() -> None:
    rows = [
        _row(
            trade_id=2,
            direction="sell",
            entry_time=1735693200000,
            exit_time=1735700400000,
            pnl="3",
            fees=1,
            net_pnl=999.0,
        ),  # fmt: skip
        _row(
            trade_id=1,
            direction=Direction.LONG,
            entry_time=pd.Timestamp("2025-01-01 00:00"),
            exit_time="2025-01-01T02:00:00+01:00",
            pnl=2.5,
            fees=None,
        ),  # fmt: skip
    ]
    frame = trades_frame(rows)
    assert list(frame.columns) == list(TRADE_COLUMNS)
    # ordered by exit: 01:00 UTC (the +01:00 string) before 03:00 UTC (the ms integer)
    assert frame["trade_id"].tolist() == ["1", "2"]
    assert frame["direction"].tolist() == ["long", "short"]
    assert frame["exit_time"].tolist() == [
        pd.Timestamp("2025-01-01 01:00", tz=UTC),
        pd.Timestamp("2025-01-01 03:00", tz=UTC),
    ]
    assert frame["entry_time"].iloc[0] == pd.Timestamp("2025-01-01 00:00", tz=UTC)  # naive means UTC
    assert frame["fees"].tolist() == [0.0, 1.0]
    assert frame["net_pnl"].tolist() == [2.5, 2.0]  # never the stale input value 999


def test_aliases_from_journal_rows_are_accepted() -> None:
    row = _row(fee=0.5, instrument_name="ETH-PERPETUAL", entry_ts_ms=1735689600000, exit_ts_ms=1735693200000)
    for key in ("fees", "instrument", "entry_time", "exit_time"):
        del row[key]
    frame = trades_frame([row])
    assert frame.loc[0, "fees"] == 0.5
    assert frame.loc[0, "instrument"] == "ETH-PERPETUAL"
    assert frame.loc[0, "exit_time"] == pd.Timestamp("2025-01-01 01:00", tz=UTC)


def test_open_trades_are_excluded_unless_asked_for() -> None:
    rows = [_row(trade_id="open", exit_time=None, exit_price=None), _row(trade_id="closed")]
    assert trades_frame(rows)["trade_id"].tolist() == ["closed"]
    with_open = trades_frame(rows, include_open=True)
    assert with_open["trade_id"].tolist() == ["closed", "open"]
    assert pd.isna(with_open.loc[1, "exit_time"])


def test_extra_keys_are_kept_after_the_contract_columns() -> None:
    frame = trades_frame([_row(sweep_params="fast=9")])
    assert list(frame.columns) == [*TRADE_COLUMNS, "sweep_params"]


def test_rows_without_pnl_are_refused() -> None:
    row = _row()
    del row["pnl"]
    with pytest.raises(ValueError, match="pnl"):
        trades_frame([row])


def test_equity_curve_starts_at_capital_and_steps_at_each_exit() -> None:
    frame = trades_frame([
        _row(trade_id="a", entry_time="2025-01-01T00:00Z", exit_time="2025-01-01T02:00Z", pnl=12, fees=2),
        _row(trade_id="b", entry_time="2025-01-01T01:00Z", exit_time="2025-01-01T03:00Z", pnl=-4, fees=1),
    ])  # fmt: skip
    equity = equity_curve(frame, 100.0)
    assert equity.name == "equity"
    assert str(equity.index.tz) == "UTC"
    assert equity.index.tolist() == [
        pd.Timestamp("2025-01-01 00:00", tz=UTC),  # first entry
        pd.Timestamp("2025-01-01 02:00", tz=UTC),
        pd.Timestamp("2025-01-01 03:00", tz=UTC),
    ]
    assert equity.tolist() == [100.0, 110.0, 105.0]
    explicit = equity_curve(frame, 100.0, start="2024-12-31")
    assert explicit.index[0] == pd.Timestamp("2024-12-31", tz=UTC)


def test_equity_curve_refuses_a_start_after_the_first_exit() -> None:
    with pytest.raises(ValueError, match="after the first trade exit"):
        equity_curve(trades_frame([_row()]), 100.0, start="2025-02-01")


def test_equity_curve_without_trades_is_the_start_point_or_empty() -> None:
    empty = trades_frame([])
    assert equity_curve(empty, 100.0).empty
    one = equity_curve(empty, 100.0, start="2025-01-01")
    assert one.tolist() == [100.0]
    assert one.index[0] == pd.Timestamp("2025-01-01", tz=UTC)


def test_equity_curve_refuses_mixed_settlement_currencies() -> None:
    frame = trades_frame([_row(trade_id="a", currency="BTC"), _row(trade_id="b", currency="USDC")])
    with pytest.raises(ValueError, match="several currencies"):
        equity_curve(frame, 1.0)


def test_drawdown_is_fraction_below_running_peak() -> None:
    idx = pd.date_range("2025-01-01", periods=6, freq="h", tz=UTC)
    equity = pd.Series([100.0, 120.0, 90.0, 108.0, 130.0, 117.0], index=idx, name="equity")
    dd = drawdown(equity)
    assert dd.name == "drawdown"
    assert (dd <= 0).all()
    assert dd.round(12).tolist() == [0.0, 0.0, -0.25, -0.1, 0.0, -0.1]
