"""``--exchange`` resolution and credentials: where keys come from, and that they never show."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from tradebaas.errors import UserError
from tradebaas.exchange.deribit.client import DeribitClient
from tradebaas.exchange.deribit.endpoints import DERIBIT_TESTNET_WS, DERIBIT_WS, normalize_ws_url, resolve
from tradebaas.secrets import ENV_CLIENT_ID, ENV_CLIENT_SECRET, Credentials, Secret, load_credentials


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CLIENT_ID, raising=False)
    monkeypatch.delenv(ENV_CLIENT_SECRET, raising=False)


def write_secrets(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / "secrets.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_never_shows_its_value() -> None:
    s = Secret("hunter2")
    shown = [repr(s), str(s), f"{s}", f"{s!r}", format(s, ">5"), repr({"k": s}), repr(Credentials("id", s))]
    assert all("hunter2" not in x for x in shown)
    assert s.reveal() == "hunter2" and s == Secret("hunter2") and s != Secret("x")
    assert Secret(s).reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_is_not_logged_by_accident(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("creds %s %r", Secret("hunter2"), Secret("hunter2"))
    assert "hunter2" not in caplog.text


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secrets(tmp_path, '[deribit]\nclient_id = "file"\nclient_secret = "fs"\n')
    monkeypatch.setenv(ENV_CLIENT_ID, "env")
    monkeypatch.setenv(ENV_CLIENT_SECRET, "es")
    creds = load_credentials(tmp_path)
    assert creds is not None and creds.client_id == "env" and creds.client_secret.reveal() == "es"
    assert creds.source == "environment"


def test_half_set_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CLIENT_ID, "env")
    with pytest.raises(UserError, match=ENV_CLIENT_SECRET):
        load_credentials(None)


def test_private_file_is_read_and_testnet_section_preferred(tmp_path: Path) -> None:
    write_secrets(tmp_path, '[deribit]\nclient_id = "live"\nclient_secret = "ls"\n'
                            '[deribit-testnet]\nclient_id = "test"\nclient_secret = "ts"\n')
    assert load_credentials(tmp_path).client_id == "live"
    assert load_credentials(tmp_path, "deribit-testnet").client_id == "test"


def test_testnet_falls_back_to_the_deribit_section(tmp_path: Path) -> None:
    write_secrets(tmp_path, '[deribit]\nclient_id = "live"\nclient_secret = "ls"\n')
    assert load_credentials(tmp_path, "deribit-testnet").client_id == "live"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_world_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_secrets(tmp_path, '[deribit]\nclient_id = "a"\nclient_secret = "b"\n', mode)
    with pytest.raises(UserError, match=f"chmod 600 {path}"):
        load_credentials(tmp_path)


def test_malformed_or_incomplete_file_is_a_clear_error(tmp_path: Path) -> None:
    write_secrets(tmp_path, "[deribit\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_credentials(tmp_path)
    write_secrets(tmp_path, '[deribit]\nclient_id = "a"\n')
    with pytest.raises(UserError, match="client_secret"):
        load_credentials(tmp_path)


def test_no_credentials_anywhere_is_none(tmp_path: Path) -> None:
    assert load_credentials(tmp_path) is None
    assert load_credentials(None) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:8123", "ws://127.0.0.1:8123/ws/api/v2"),
        ("ws://127.0.0.1:8123/", "ws://127.0.0.1:8123/ws/api/v2"),
        ("ws://host:1/custom/path", "ws://host:1/custom/path"),
        ("wss://test.deribit.com/ws/api/v2", "wss://test.deribit.com/ws/api/v2"),
    ],
)
def test_ws_urls_get_the_api_path_when_they_have_none(url: str, expected: str) -> None:
    assert normalize_ws_url(url) == expected
    assert resolve(url, Path("/nonexistent-home")).url == expected


def test_deribit_and_testnet_need_credentials(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="secrets.toml"):
        resolve("deribit", tmp_path)
    write_secrets(tmp_path, '[deribit]\nclient_id = "live"\nclient_secret = "ls"\n')
    live = resolve("deribit", tmp_path)
    assert live.url == DERIBIT_WS and live.live and live.client_id == "live"
    test = resolve("deribit-testnet", tmp_path)
    assert test.url == DERIBIT_TESTNET_WS and not test.live


def test_sim_reads_the_simulator_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tradebaas sim"):
        resolve("sim", tmp_path)
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "sim.json").write_text(json.dumps({"ws_url": "ws://127.0.0.1:5555/ws/api/v2", "port": 5555}))
    (tmp_path / "sim" / "credentials.json").write_text(json.dumps({"client_id": "paper", "client_secret": "ps"}))
    ep = resolve("sim", tmp_path)
    assert ep.url == "ws://127.0.0.1:5555/ws/api/v2" and ep.client_id == "paper" and not ep.live
    assert "ps" not in repr(ep)


def test_unknown_exchange_value_is_explained() -> None:
    with pytest.raises(UserError, match="sim, deribit-testnet, deribit or a ws:// URL"):
        resolve("binance")


def test_client_rejects_half_credentials_and_unknown_auth() -> None:
    with pytest.raises(ValueError):
        DeribitClient("ws://x", "id", None)
    with pytest.raises(ValueError):
        DeribitClient("ws://x", auth="password")


def test_client_status_works_outside_the_event_loop() -> None:
    status = DeribitClient("ws://127.0.0.1:1", "id", Secret("s")).status()
    assert status.state == "idle" and not status.connected and status.reconnects == 0
    assert status.as_dict()["channels"] == []
