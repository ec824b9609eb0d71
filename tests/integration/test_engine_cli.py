"""CLI behaviour: journal problems stop the engine start with one clear line; kernel spec; logs; usage errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli, wait_for
from tradebaas.engine.journal.database import Journal
from tradebaas.engine.journal.schema import SCHEMA_VERSION
from tradebaas.home import Home


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("mode", [["--foreground"], []], ids=["foreground", "detached"])
def test_corrupt_journal_refuses_to_start_and_is_left_untouched(tb_home: Home, mode: list[str]) -> None:
    tb_home.journal_path.write_bytes(b"garbage" * 1000)
    result = run_cli("engine", "start", *mode, home=tb_home)
    assert result.returncode == 3 or (not mode and result.returncode != 0)
    assert "corrupt" in one_line_error(result)
    assert tb_home.journal_path.read_bytes() == b"garbage" * 1000
    assert not tb_home.engine_json.exists()


def test_newer_schema_refuses_to_start(tb_home: Home) -> None:
    with Journal.open(tb_home.journal_path) as j:
        j.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    result = run_cli("engine", "start", "--foreground", home=tb_home)
    assert result.returncode == 3 and "newer" in one_line_error(result)


def test_locked_journal_refuses_to_start(tb_home: Home) -> None:
    Journal.open(tb_home.journal_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            c = sqlite3.connect({str(tb_home.journal_path)!r}, isolation_level=None)
            c.execute("PRAGMA locking_mode = EXCLUSIVE")
            c.execute("BEGIN EXCLUSIVE")
            c.execute("INSERT INTO meta VALUES ('k', '1')")
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("engine", "start", "--foreground", home=tb_home, timeout=60)
        assert result.returncode == 3 and "locked" in one_line_error(result)
    finally:
        holder.kill()
        holder.wait()
    conn = sqlite3.connect(tb_home.journal_path)
    assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0  # the holder's write never committed
    conn.close()


def test_debug_shows_the_traceback(tb_home: Home) -> None:
    tb_home.journal_path.write_bytes(b"garbage" * 1000)
    result = run_cli("--debug", "engine", "start", "--foreground", home=tb_home)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("args", [["nope"], ["engine"], ["engine", "start", "--bogus"], ["logs", "-n", "x"]])
def test_bad_usage_is_one_line_and_non_zero(tb_home: Home, args: list[str]) -> None:
    one_line_error(run_cli(*args, home=tb_home))


def test_kernel_install_writes_a_spec_with_this_python(tmp_path: Path) -> None:
    result = run_cli("kernel", "install", "--prefix", str(tmp_path / "prefix"))
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "prefix/share/jupyter/kernels/tradebaas/kernel.json").read_text())
    assert spec["display_name"] == "tradebaas" and spec["language"] == "python"
    assert spec["argv"] == [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def test_repo_kernel_spec_is_valid() -> None:
    spec = json.loads((Path(__file__).parents[2] / "kernels/tradebaas/kernel.json").read_text())
    assert spec["display_name"] == "tradebaas" and spec["language"] == "python"
    assert spec["argv"][1:] == ["-m", "ipykernel_launcher", "-f", "{connection_file}"]


def test_logs_prints_the_engine_log_and_strategy_filters_on_the_field_exactly(engine_proc, tb_home: Home) -> None:
    eng = engine_proc()
    with eng.client() as c:
        c.call("engine.log", message="abc123 did something", strategy="abc123")
        c.call("engine.log", message="a note that only mentions abc123 [abc123]: in its text")
        c.call("engine.log", message="its neighbour did something", strategy="abc1234")
    result = run_cli("logs", "--strategy", "abc123", home=tb_home)
    assert result.returncode == 0, result.stderr
    assert [ln.split(": ", 1)[1] for ln in result.stdout.splitlines()] == ["abc123 did something"]
    assert " tradebaas.user [abc123]: abc123 did something" in result.stdout
    everything = run_cli("logs", home=tb_home).stdout
    assert "ready on" in everything and "only mentions abc123" in everything and "neighbour" in everything
    assert "not a strategy id" in one_line_error(run_cli("logs", "--strategy", "abc 123", home=tb_home))


def test_logs_follow_shows_the_strategys_new_lines_as_they_are_written(engine_proc, tb_home: Home) -> None:
    import threading

    eng = engine_proc()
    c = eng.client()
    c.call("engine.log", message="before following", strategy="abc123")
    proc = subprocess.Popen([sys.executable, "-m", "tradebaas.cli", "logs", "-f", "--strategy", "abc123"],
                            env=cli_env(tb_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any("before following" in ln for ln in seen), timeout=15, what="the log's last lines")
        c.call("engine.log", message="someone else's line", strategy="other1")
        c.call("engine.log", message="written while following", strategy="abc123")
        wait_for(lambda: any("written while following" in ln for ln in seen), timeout=15, what="the new line")
    finally:
        proc.terminate()
        proc.wait(10)
    assert not any("someone else" in ln for ln in seen)


def test_engine_start_without_an_exchange_in_a_fresh_home_is_refused_with_the_fix(tb_home: Home) -> None:
    for mode in ([], ["--foreground"]):
        error = one_line_error(run_cli("engine", "start", *mode, home=tb_home))
        assert "no exchange for this engine" in error and "--exchange sim" in error
        assert "[engine] exchange" in error and str(tb_home.config_file) in error
        assert not tb_home.engine_json.exists()


def test_engine_start_uses_the_exchange_configured_in_tradebaas_toml(
        tb_home: Home, stop_detached, make_home) -> None:
    stop_detached(tb_home)
    tb_home.config_file.write_text('[engine]\nexchange = "sim"\n')
    started = run_cli("engine", "start", home=tb_home)
    assert started.returncode == 0, started.stderr
    assert json.loads(run_cli("engine", "status", "--json", home=tb_home).stdout)["exchange"]["name"] == "sim"
    bad = make_home("bad")
    bad.config_file.write_text("[engine]\nexchange = 42\n")
    assert "[engine] exchange must be one of" in one_line_error(run_cli("engine", "start", home=bad))


def test_logs_without_log_is_a_clear_error(tb_home: Home) -> None:
    assert "no engine log" in one_line_error(run_cli("logs", home=tb_home))


def test_control_notebook_connects_and_shows_status(engine_proc, tb_home: Home) -> None:
    import nbformat
    from nbclient import NotebookClient

    eng = engine_proc()
    nb = nbformat.read(Path(__file__).parents[2] / "notebooks/control.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()
    outputs = "".join(
        str(o.get("text", "")) + json.dumps(o.get("data", {}))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert str(eng.pid) in outputs and "error" not in [o.get("output_type") for c in nb.cells
                                                       for o in c.get("outputs", [])]
