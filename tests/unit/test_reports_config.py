"""tradebaas.toml [reports.*] and [notify]: what is accepted, and the one-line errors for what is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebaas.errors import UserError
from tradebaas.home import Home
from tradebaas.reports.config import EVENT_KINDS, load_config, parse_config
from tradebaas.reports.execute import check_params, notebook_parameters

DAILY = Path(__file__).resolve().parents[2] / "notebooks" / "reports" / "daily.ipynb"


def write(home: Home, text: str) -> None:
    home.config_file.write_text(text)


def test_no_config_file_means_no_reports_and_no_notifier(tb_home: Home) -> None:
    cfg = load_config(tb_home)
    assert cfg.reports == {} and not cfg.notify.enabled


def test_a_daily_report_by_name(tb_home: Home) -> None:
    write(tb_home, '[reports.daily]\ncron = "0 7 * * *"\nparams = { period_days = 2 }\ncatch_up = false\n')
    rep = load_config(tb_home).reports["daily"]
    assert rep.notebook == DAILY
    assert rep.cron == "0 7 * * *" and rep.params == {"period_days": 2} and rep.catch_up is False
    assert rep.timeout_s == 600 and rep.tz == "UTC"


def test_a_notebook_path_is_relative_to_the_home(tb_home: Home) -> None:
    (tb_home.root / "mine.ipynb").write_text(DAILY.read_text())
    write(tb_home, '[reports.mine]\nnotebook = "mine.ipynb"\n')
    assert load_config(tb_home).reports["mine"].notebook == tb_home.root / "mine.ipynb"


@pytest.mark.parametrize(("toml", "message"), [
    ('[reports.daily]\ncron = "0 7 * *"\n', "cron must have 5 fields"),
    ('[reports.daily]\ncron = "61 7 * * *"\n', "invalid cron expression"),
    ('[reports.daily]\nnotebook = "nope"\n', "no report notebook named 'nope'"),
    ('[reports.daily]\nnotebook = "x/nope.ipynb"\n', "does not exist"),
    ('[reports.daily]\ntimeout_s = 0\n', "timeout_s must be > 0"),
    ('[reports.daily]\ncatch_up = "yes"\n', "catch_up must be true or false"),
    ('[reports.daily]\ncronn = "0 7 * * *"\n', "unknown key(s) cronn"),
    ('[reports.daily]\ntz = "Mars/Olympus"\n', "unknown time zone"),
    ('[reports.daily]\nparams = 3\n', "params must be a table"),
    ('[notify]\ntelegram = { token = "123:abc", chat_id = 1 }\n', "do not put the token in tradebaas.toml"),
    ('[notify]\ntelegram = { token_env = "TB_TEST_UNSET_TOKEN", chat_id = 1 }\n', "TB_TEST_UNSET_TOKEN"),
    ('[notify]\ntelegram = { token_env = "TB_TEST_TOKEN" }\n', "chat_id is required"),
    ('[notify]\nwebhook = { url = "ftp://x" }\n', "must be an http(s) URL"),
    ('[notify]\nevents = ["trade_opened", "moon_landing"]\n', "unknown event(s) moon_landing"),
    ('[notify]\nretries = -1\n', "retries must be an integer"),
    ('[reports.daily\n', "not valid TOML"),
])
def test_bad_config_is_a_one_line_user_error_naming_the_key(
    tb_home: Home, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    monkeypatch.setenv("TB_TEST_TOKEN", "123456:secret-token")
    monkeypatch.delenv("TB_TEST_UNSET_TOKEN", raising=False)
    write(tb_home, toml)
    with pytest.raises(UserError) as err:
        load_config(tb_home)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_secrets_come_from_the_environment_and_never_show(tb_home: Home) -> None:
    data = {"notify": {"telegram": {"token_env": "TB_TOKEN", "chat_id": 42},
                       "webhook": {"url": "http://127.0.0.1:9/h", "secret_env": "TB_HOOK"}}}
    cfg = parse_config(data, tb_home, environ={"TB_TOKEN": "123456:very-secret", "TB_HOOK": "hook-secret"})
    assert cfg.notify.telegram is not None and cfg.notify.telegram.token.reveal() == "123456:very-secret"
    assert cfg.notify.telegram.chat_id == "42"
    assert set(cfg.notify.secrets()) == {"123456:very-secret", "hook-secret"}
    assert set(cfg.notify.secret_envs) == {"TB_TOKEN", "TB_HOOK"}
    assert "very-secret" not in repr(cfg) and "hook-secret" not in repr(cfg)
    assert cfg.notify.events == frozenset(EVENT_KINDS)


def test_a_token_file_must_be_private(tb_home: Home) -> None:
    token = tb_home.root / "telegram.token"
    token.write_text("123456:from-file\n")
    token.chmod(0o644)
    data = {"notify": {"telegram": {"token_file": "telegram.token", "chat_id": "@desk"}}}
    with pytest.raises(UserError, match="chmod 600"):
        parse_config(data, tb_home, environ={})
    token.chmod(0o600)
    cfg = parse_config(data, tb_home, environ={})
    assert cfg.notify.telegram is not None and cfg.notify.telegram.token.reveal() == "123456:from-file"


def test_the_daily_notebook_declares_its_parameters() -> None:
    params = notebook_parameters(DAILY)
    assert {"period_days", "strategies", "engine_url", "engine_token"} <= set(params)
    assert params["period_days"] == "1" and params["strategies"] == "None"
    nb = json.loads(DAILY.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


def test_unknown_parameter_names_are_refused_before_running(tb_home: Home) -> None:
    write(tb_home, "[reports.daily]\n")
    rep = load_config(tb_home).reports["daily"]
    check_params(rep, {"period_days": 3})
    with pytest.raises(UserError, match="unknown parameter.*period_dayz.*the notebook takes: period_days"):
        check_params(rep, {"period_dayz": 3})
