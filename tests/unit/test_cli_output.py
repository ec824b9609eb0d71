"""What the CLI prints: numbers without float noise, closed trades like eng.trades(), quiet on a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env
from tradebaas.commands.live import closed_unless
from tradebaas.commands.output import dumps
from tradebaas.numbers import clean_number, number_text


def test_numbers_lose_their_float_noise_and_nothing_else() -> None:
    assert number_text(0.28625500000000004) == "0.286255"
    assert number_text(0.1 + 0.2) == "0.3"
    assert number_text(97001.50000000001) == "97001.5"
    assert number_text(4.85e-05) == "0.0000485"  # positional, not 4.85e-05
    assert number_text(100.0) == "100" and number_text(-0.0) == "0"
    assert number_text(0.00000013751207192712) == "0.000000137512071927"  # satoshis and below survive
    assert clean_number(123456.123456) == 123456.123456


def test_json_output_carries_the_same_clean_numbers() -> None:
    text = dumps({"rows": [{"net_pnl": 0.28625500000000004, "amount": 1, "id": "x"}]})
    assert json.loads(text) == {"rows": [{"net_pnl": 0.286255, "amount": 1, "id": "x"}]}
    assert "0.28625500000000004" not in text


def test_trades_shows_closed_ones_like_eng_trades_and_says_what_it_left_out() -> None:
    rows = [{"trade_id": "a", "state": "closed", "exit_ts_ms": 5}, {"trade_id": "b", "state": "open", "exit_ts_ms": None},
            {"trade_id": "c", "state": "pending_entry"}, {"trade_id": "d", "state": "failed", "exit_ts_ms": None}]
    shown, note = closed_unless(rows, include_open=False)
    assert [r["trade_id"] for r in shown] == ["a"]
    assert note == "(2 open trades and 1 failed entry not shown: closed trades only; --include-open shows them too)"
    assert closed_unless(rows, include_open=True) == (rows, "")
    assert closed_unless(rows[:1], include_open=False) == (rows[:1], "")


def run_into_head(argv: list[str], home: Path) -> tuple[int, str]:
    """``tradebaas ARGV | head -c 1`` in a real shell (pipefail: the CLI's own exit code) -> (code, its stderr)."""
    err = home / "stderr.txt"
    cmd = " ".join([sys.executable, "-m", "tradebaas.cli", *argv]) + f" 2>{err} | head -c 1 >/dev/null"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=cli_env(home), timeout=60)
    return done.returncode, err.read_text()


def test_output_into_a_pipe_closed_early_exits_quietly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "engine.log").write_text(
        "".join(f"2025-01-01 00:00:00,000 INFO    tradebaas.engine: line {i}\n" for i in range(50_000)))
    for argv in (["logs", "-n", "0"], ["engine", "status", "--json"]):  # a long output, and one flushed at the end
        code, stderr = run_into_head(argv, home)
        assert stderr == "", (argv, stderr)
        assert code in (141, 1), argv  # 141: the closed pipe, as a shell reports it; status exits 1 (no engine)
