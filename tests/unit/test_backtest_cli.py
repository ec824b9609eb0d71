"""``tradebaas backtest``: the module's add_arguments/run pair, called as cli.py calls it."""

from __future__ import annotations

import argparse
import json

import pytest

from tradebaas.backtest import cli
from tradebaas.backtest.data import load_default
from tradebaas.errors import UserError


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "candles.csv"
    df = load_default().iloc[:3000]
    out = df.copy()
    out.insert(0, "timestamp", df.index.as_unit("s").asi8)
    out.to_csv(path, index=False)
    return path


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(argv)


def test_json_output_has_stats_and_trades(small_csv, capsys):
    assert cli.run(parse("razor", "--data", str(small_csv), "--set", "cooldownMinutes=0", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["trades"] == len(out["trades"]) > 0
    assert out["config"]["cooldownMinutes"] == 0
    assert {"entry_time", "net_pnl", "exit_reason"} <= set(out["trades"][0])


def test_table_output_lists_the_stats(small_csv, capsys):
    assert cli.run(parse("ema_cross", "--data", str(small_csv))) == 0
    text = capsys.readouterr().out
    assert "ema_cross on BTC_USDC-PERPETUAL" in text and "win_rate" in text


def test_intrabar_chooses_how_brackets_meet_the_price(small_csv, capsys):
    tight = ("--set", "stopLossPercent=0.1", "--set", "takeProfitPercent=0.1", "--json")
    runs = {}
    for extra in ((), ("--intrabar", "path"), ("--intrabar", "pessimistic")):
        assert cli.run(parse("razor", "--data", str(small_csv), *tight, *extra)) == 0
        runs[extra[1:]] = json.loads(capsys.readouterr().out)["trades"]
    assert runs[()] == runs[("path",)]  # the default
    path = [t["exit_reason"] for t in runs[("path",)]]
    pessimistic = [t["exit_reason"] for t in runs[("pessimistic",)]]
    assert len(path) == len(pessimistic) and path != pessimistic
    assert all(p == "sl" for p, q in zip(pessimistic, path, strict=True) if p != q)  # pessimistic only adds stops


def test_unknown_intrabar_mode_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        parse("razor", "--intrabar", "optimistic")
    assert "invalid choice: 'optimistic' (choose from 'path', 'pessimistic')" in capsys.readouterr().err


def test_bad_set_value_is_a_user_error(small_csv):
    with pytest.raises(UserError, match="stopLossPercent"):
        cli.run(parse("razor", "--data", str(small_csv), "--set", "stopLossPercent=abc"))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        cli.run(parse("razor", "--data", str(tmp_path / "none.csv")))


def test_garbage_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="missing column"):
        cli.run(parse("razor", "--data", str(bad)))
